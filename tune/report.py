"""What a search leaves in its output folder:

    best_policy.json / best_policy.txt   the searched policy (JSON, string form; PBT: its schedule's final policy)
    best_point.json                      the searched point of the joint space: policy and fine-tune hyperparameters
    best_policy.dali.json / .txt         the policy as an ``nvidia.dali.auto_aug`` Policy (see ``dali_export``)
    schedule.json, schedule.png          PBT: the searched schedule; probability and magnitude per op over epochs
    trials.csv                           every trial of every stage
    comparison.csv, comparison.md        the comparison with its controls, seeds and compute, each model against
                                         the RandAugment grid's best on the same test samples, and its verdict
                                         (``tune.comparison``)
    search.json                          all of the above in one file, with the resolved config
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from augtrain.augment import Policy, Schedule
from augtrain.pipelines.data.storage import write_text_atomic
from augtrain.tune.comparison import comparison_markdown, comparison_rows
from augtrain.tune.dali_export import dali_export
from augtrain.tune.pba import schedule_table
from augtrain.pipelines.modalities import get_modality
from augtrain.tune.space import JointSpace, describe
from augtrain.tune.stages import StageResult

__all__ = ["comparison_markdown", "comparison_rows", "dali_export", "plot_schedule", "write_results"]


def plot_schedule(schedule: Schedule, epochs: int, path: str | Path) -> None:
    """PNG: per op, summed probability (top) and probability-weighted magnitude (bottom) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = schedule_table(schedule, epochs)
    names = sorted({k.rsplit(".", 1)[0] for k in table if "." in k})
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        axes[0].plot(table["epochs"], table[f"{name}.p"], label=name, color=cmap(i % 20), drawstyle="steps-post")
        axes[1].plot(table["epochs"], table[f"{name}.m"], color=cmap(i % 20), drawstyle="steps-post")
    axes[0].plot(table["epochs"], table["count"], label="count drawn (mean)", color="black", linestyle="--",
                 drawstyle="steps-post")
    axes[0].set_ylabel("probability (copies summed)")
    axes[1].set_ylabel("magnitude (0-10)")
    axes[1].set_xlabel("epoch")
    axes[0].set_title("searched augmentation schedule (PBT, PBA encoding)")
    axes[0].legend(ncol=4, fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_trials_csv(results: dict[str, StageResult], path: Path) -> None:
    fields = ["stage", "trial_id", "policy", "hparams", "epochs_trained", "epoch", "val_acc", "best_val_acc",
              "test_acc", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for stage, result in results.items():
            if stage == "predictions":  # models predicting again, not trials
                continue
            for t in result.trials:
                config = dict(t["config"])
                config.update(config.pop("case", {}))
                if "point" in config or JointSpace.is_point(config):  # a joint-space point
                    point = config.pop("point", None) or {k: config.pop(k) for k in list(config)
                                                          if k not in ("epochs", "seed")}
                    config.update(hparams=JointSpace.hparams(point))
                    config["policy"] = JointSpace.policy(point).to_string()
                policy = config.pop("policy", None) or config.pop("method", None) or (
                    "pba:" + ",".join(map(str, config.pop("pba"))) if "pba" in config
                    else "schedule" if stage in ("replay", "hpo_after") else "")
                writer.writerow({"stage": stage, "trial_id": t["trial_id"], "policy": policy,
                                 "hparams": json.dumps(config, default=str), "epochs_trained": t["epochs_trained"],
                                 "epoch": t["epoch"], "val_acc": t["val_acc"], "best_val_acc": t["best_val_acc"],
                                 "test_acc": t["test_acc"], "error": t["error"] or ""})


class _NoExport(Exception):
    """A policy DALI cannot run (another modality's ops)."""


def write_results(results: dict[str, StageResult], out_dir: str | Path, epochs: int,
                  resolved: dict[str, Any] | None = None, title: str = "augmentation search") -> dict[str, Any]:
    """Write every result file (module docstring) and return the summary written to search.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"stages": {k: {"trials": len(v.trials), "trial_epochs": v.trial_epochs,
                                              "seconds": round(v.seconds, 1), "extra": v.extra}
                                          for k, v in results.items()}}
    final = None
    if "searched" in results:  # a point of the joint space: the policy and its fine-tune hyperparameters
        point = results["searched"].extra["best_point"]
        final, hparams = JointSpace.decode(point)
        _write(out / "best_point.json", json.dumps({"point": point, "hparams": hparams, "policy": final.to_dict(),
                                                    "summary": describe(point)}, indent=1, default=float))
    elif "pbt" in results:
        schedule = Schedule.from_dict(results["pbt"].extra["schedule"])
        final = schedule.policy_at(epochs - 1)
        final = Policy(name="pba-searched", choices=final.choices, num_ops=final.num_ops, replace=final.replace)
        _write(out / "schedule.json", json.dumps(schedule.to_dict(), indent=1))
        plot_schedule(schedule, epochs, out / "schedule.png")
    if final is not None:
        _write(out / "best_policy.json", json.dumps(final.to_dict(), indent=1, sort_keys=True))
        _write(out / "best_policy.txt", final.to_string() + "\n")
        try:
            if not get_modality(final.modality).worker_augment:  # DALI augments images only
                raise _NoExport
            dali, info = dali_export(final)
            _write(out / "best_policy.dali.json", json.dumps(info, indent=1))
            _write(out / "best_policy.dali.txt", str(dali) + "\n")
            summary["dali_export"] = {"sub_policies": len(info["sub_policies"]), "dropped_ops": info["dropped_ops"]}
        except ImportError as exc:  # DALI not installed: the JSON policy is still there
            summary["dali_export"] = {"error": str(exc)}
        except _NoExport:
            summary["dali_export"] = {"error": f"DALI has no {final.modality} ops"}
        summary["best_policy"] = final.to_string()
    write_trials_csv(results, out / "trials.csv")
    rows = comparison_rows(results)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "val_acc", "test_acc", "test_acc_sd", "seeds", "trial_epochs",
                                               "trial_minutes", "runs", "search_epochs", "diff_vs_reference", "diff_ci95_low",
                                               "diff_ci95_high", "p_vs_reference"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            paired = row.get("paired") or {}
            if "difference" in paired:
                row = {**row, "diff_vs_reference": paired["difference"], "diff_ci95_low": paired["ci95"][0],
                       "diff_ci95_high": paired["ci95"][1], "p_vs_reference": paired["p_value"]}
            writer.writerow(row)
    _write(out / "comparison.md", comparison_markdown(rows, title,
                                                      from_scratch=(resolved or {}).get("checkpoint", "") is None))
    summary["comparison"] = rows
    summary["config"] = resolved
    _write(out / "search.json", json.dumps(summary, indent=1, default=str))
    return summary


def _write(path: Path, text: str) -> None:
    write_text_atomic(path, text)
