"""Pictures of series and their augmented copies (``augtrain augment preview`` on series shards;
the op previews in ``docs/series/ops``): one panel per series, the original drawn thick and black,
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
    from augtrain.augment.plan import apply_plan

    out = []
    for _ in range(per_sample):
        x, names = apply_plan(policy, value, rng)
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
