"""Pictures of series and their augmented copies (``augtrain augment preview`` on series shards,
and the op gallery in ``docs/series``): one panel per series, the original drawn thick and black,
each augmented copy thin and coloured, labelled with the ops it went through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _figure_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return rgb


def _copies(value: np.ndarray, policy: Any, rng: np.random.Generator, per_sample: int) -> list[tuple[np.ndarray, str]]:
    from augtrain.augment import sample_plan
    from augtrain.augment.registry import catalogue

    ops = catalogue(policy.modality).ops
    out = []
    for _ in range(per_sample):
        x, names = value, []
        for step in sample_plan(policy, rng, value.shape[0], value.shape[1], None):
            x = ops[step.name].apply(x, step.params)
            names.append(step.name)
        out.append((x, " + ".join(names) or "unchanged"))
    return out


def render_series_preview(values: Sequence[np.ndarray], policy: Any, *, per_sample: int = 4, seed: int = 0,
                          title: str | None = None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``: a panel per series (its first channel), original and copies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from augtrain.augment import augment_rng

    rng = augment_rng(seed, 0)
    n = len(values)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n + 0.4), squeeze=False)
    for ax, value in zip(axes[:, 0], values):
        for k, (x, names) in enumerate(_copies(np.asarray(value, dtype=np.float32), policy, rng, per_sample)):
            ax.plot(x[:, 0], lw=0.9, color=f"C{k}", label=names)
        ax.plot(np.asarray(value)[:, 0], lw=2.0, color="black", label="original")
        ax.legend(fontsize=6, loc="upper right", ncol=2, framealpha=0.6)
        ax.tick_params(labelsize=6)
    fig.suptitle(title or f"policy {policy.to_string()}", fontsize=8)
    fig.tight_layout()
    return _figure_rgb(fig)


def render_op_gallery(value: np.ndarray, magnitudes: Sequence[float] = (2.0, 5.0, 10.0), per_magnitude: int = 2,
                      seed: int = 0, title: str = "") -> np.ndarray:
    """RGB uint8: a panel per series op, one series with copies at each of ``magnitudes``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from augtrain.augment.registry import ops

    table = ops("series")
    value = np.asarray(value, dtype=np.float32)
    fig, axes = plt.subplots(len(table), 1, figsize=(9, 1.7 * len(table) + 0.4), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, (name, op) in zip(axes[:, 0], sorted(table.items())):
        for k, m in enumerate(magnitudes):
            for j in range(per_magnitude):
                x = op.apply(value, op.sample(rng, m, dict(op.default_args), value.shape[0], value.shape[1], None))
                ax.plot(x[:, 0], lw=0.9, color=f"C{k}", alpha=0.9, label=f"m={m:g}" if j == 0 else None)
        ax.plot(value[:, 0], lw=2.0, color="black", label="original")
        ax.set_title(name, fontsize=8, loc="left")
        ax.legend(fontsize=6, loc="upper right", ncol=4, framealpha=0.6)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _figure_rgb(fig)
