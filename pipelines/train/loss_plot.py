"""The pretraining curve as a PNG: loss, throughput and data-wait per logged step."""

from __future__ import annotations

import csv


def read_steps(metrics_csv: str) -> list[dict[str, float]]:
    with open(metrics_csv) as f:
        return [{k: float(v) for k, v in row.items() if k != "kind" and v not in ("", None)}
                for row in csv.DictReader(f) if row["kind"] == "step"]


def plot_loss_curve(metrics_csv: str, out_png: str, title: str = "pretraining") -> str | None:
    """Write ``out_png`` from rank 0's ``metrics.csv``; None when there is no step to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_steps(metrics_csv)
    if not rows:
        return None
    step = [r["step"] for r in rows]
    fig, (ax_loss, ax_rate) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=[2, 1])
    ax_loss.plot(step, [r["loss"] for r in rows], color="tab:blue")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(title)
    ax_loss.grid(alpha=0.3)
    ax_rate.plot(step, [r.get("samples_per_s", float("nan")) for r in rows], color="tab:green")
    ax_rate.set_ylabel("samples/s", color="tab:green")
    ax_rate.set_xlabel("optimizer step")
    ax_wait = ax_rate.twinx()
    ax_wait.plot(step, [100 * r.get("data_wait", float("nan")) for r in rows], color="tab:red", alpha=0.7)
    ax_wait.set_ylabel("data wait %", color="tab:red")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
