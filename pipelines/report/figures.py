"""Figures for run reports, as PNG bytes (matplotlib's Agg backend; nothing is shown)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """A matplotlib figure -> PNG bytes (the figure is closed)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def image_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 ``[H, W, 3]`` array -> PNG bytes."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode an image of shape {rgb.shape} as PNG")
    return data.tobytes()


def curves_png(panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]],
               xlabel: str, title: str = "") -> bytes:
    """One panel per (y label, {series name: (x, y)}), sharing the x axis."""
    plt = _pyplot()
    legends = max(len(series) for _, series in panels) > 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(11 if legends else 8, 2.6 * len(panels) + 0.6), sharex=True,
                             squeeze=False)
    for ax, (ylabel, series) in zip(axes[:, 0], panels):
        for name, (x, y) in series.items():
            ax.plot(x, y, label=name, marker="o" if len(x) <= 30 else None, markersize=3)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:  # beside the plot, never over the curves
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1, 0].set_xlabel(xlabel)
    if title:
        axes[0, 0].set_title(title)
    return figure_png(fig)
