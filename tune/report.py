"""What a search leaves in its output folder:

    best_policy.json / best_policy.txt   the searched schedule's final policy (JSON, string form)
    best_policy.dali.json / .txt         the same as an ``nvidia.dali.auto_aug`` Policy (see ``dali_export``)
    schedule.json, schedule.png          the searched schedule; probability and magnitude per op over epochs
    trials.csv                           every trial of every stage
    comparison.csv, comparison.md        accuracy and compute (trial-epochs) per baseline and the searched schedule,
                                         each model against the RandAugment grid's best on the same test samples
    search.json                          all of the above in one file, with the resolved config
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from augtrain.augment import Op, Policy, Schedule, to_dali_policy
from augtrain.augment.plan import op_rates
from augtrain.tune.pba import schedule_table
from augtrain.tune.search import StageResult
from augtrain.tune.significance import compare

DALI_OPS = {
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "contrast", "color",
    "sharpness", "posterize", "solarize", "equalize", "auto_contrast", "invert", "identity",
}  # fmt: skip


def dali_export(policy: Policy) -> tuple[Any, dict[str, Any]]:
    """An ``nvidia.dali.auto_aug`` Policy for ``policy``'s ``choices``, and a description of it.

    auto_aug applies exactly one sub-policy per sample. A policy that already draws one entry per
    sample (and not PBA's ``until_applied`` rule) exports entry for entry. Any other (PBA's 0/1/2
    ops) exports as every pair of its entries, each op's probability set so that it fires as often
    per sample as in the searched policy: each entry's rate is p * E[k] / entries for uniform
    draws, or measured from the policy's own rule (``op_rates``, copies of an op sharing their
    op's rate by probability) under ``until_applied``; a pair of n entries then holds each entry
    in 2 / n of the samples. The count of ops per sample becomes up to 2. Ops DALI lacks (cutout),
    entries with probability 0 and rates a pair cannot carry (capped at probability 1) are listed.
    """
    dropped = sorted({op.name for e in policy.choices for op in e if op.name not in DALI_OPS})
    kept = [e for e in policy.choices if all(op.name in DALI_OPS for op in e) and any(op.p > 0 for op in e)]
    rates, capped = None, []
    if (policy.num_ops == (0.0, 1.0) and not policy.until_applied) or not kept:
        entries = kept or [(Op("identity"),)]
    else:
        rates = _op_rates(policy, kept)
        share = 1.0 if len(kept) == 1 else len(kept) / 2.0  # a pair of n entries holds each in 2 / n of samples
        scaled = []
        for entry, entry_rates in zip(kept, rates):
            ops = []
            for op, rate in zip(entry, entry_rates):
                if rate * share > 1.0 + 1e-9:
                    capped.append(op.name)
                ops.append(Op(op.name, p=round(min(1.0, rate * share), 4), magnitude=op.magnitude))
            scaled.append(tuple(ops))
        entries = scaled if len(scaled) == 1 else [a + b for a, b in itertools.combinations(scaled, 2)]
    single = Policy(name=f"{policy.name}-dali", choices=tuple(entries), num_ops=(0.0, 1.0))
    dali = to_dali_policy(single)
    info = {"sub_policies": [[[op.name, op.p, op.magnitude] for op in e] for e in single.choices],
            "op_rates": None if rates is None else [[round(r, 4) for r in e] for e in rates],
            "capped_ops": sorted(set(capped)), "dropped_ops": dropped, "num_magnitude_bins": dali.num_magnitude_bins,
            "source_num_ops": list(policy.num_ops), "source_until_applied": policy.until_applied}
    return dali, info


def _op_rates(policy: Policy, kept: list[tuple[Op, ...]]) -> list[list[float]]:
    """Per op of each kept entry: how often it runs per sample in ``policy``. Uniform draws:
    p * E[k] / entries. ``until_applied``: measured (``op_rates``), copies of an op sharing
    their op's rate in proportion to their probabilities."""
    if not policy.until_applied:
        return [[policy.mean_num_ops / len(policy.choices) * op.p for op in e] for e in kept]
    measured = op_rates(policy)
    weight: dict[str, float] = {}
    for entry in policy.choices:
        for op in entry:
            weight[op.name] = weight.get(op.name, 0.0) + op.p
    return [[measured[op.name] * op.p / weight[op.name] if weight[op.name] else 0.0 for op in e] for e in kept]


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


def _rand_nm(spec: str) -> tuple[int, float] | None:
    match = re.fullmatch(r"rand-n(\d+)-m([\d.]+)", spec)
    return (int(match[1]), float(match[2])) if match else None


def comparison_rows(results: dict[str, StageResult]) -> list[dict[str, Any]]:
    """Accuracy and trial-epochs per method. The RandAugment row is the grid's best point by
    validation accuracy, charged for the whole grid; the searched row is the replay's test
    accuracy (mean over seeds), charged for the PBT population and the replay."""
    rows: list[dict[str, Any]] = []
    base = results.get("baselines")
    if base is not None:
        by_spec = {t["config"].get("policy"): t for t in base.trials}
        for spec, trial in by_spec.items():
            if _rand_nm(spec) is None:
                rows.append(_row(spec, "baselines", [trial], trial["epochs_trained"]))
        grid = [t for s, t in by_spec.items() if _rand_nm(s) is not None and t["val_acc"] is not None]
        if grid:
            best = max(grid, key=lambda t: t["val_acc"])
            n, m = _rand_nm(best["config"]["policy"])
            rows.append(_row(f"RandAugment best (N={n}, M={m:g}) of {len(grid)}-point grid", "baselines", [best],
                             sum(t["epochs_trained"] for t in grid)))
    pbt, replay = results.get("pbt"), results.get("replay")
    if pbt is not None:
        population = f"population {len(pbt.trials)}"
        stretch = float(pbt.extra.get("stretch", 1.0))
        if stretch != 1.0:  # a shorter search, its schedule stretched for the replay
            epochs = max(int(t["epoch"] or 0) for t in pbt.trials)
            population += f", {epochs} epochs, schedule stretched x{stretch:g}"
    if pbt is not None and "pbt_best" in results:
        rows.append(_row(f"PBT best member, as trained in the search ({population})", "pbt_best",
                         results["pbt_best"].trials, pbt.trial_epochs, search_epochs=pbt.trial_epochs))
    if pbt is not None and replay is not None:
        rows.append(_row(f"PBA schedule (PBT {population}, replayed)", "replay", replay.trials,
                         pbt.trial_epochs + replay.trial_epochs, search_epochs=pbt.trial_epochs))
    if "evaluate" in results:
        by_method: dict[str, list[dict[str, Any]]] = {}
        for t in results["evaluate"].trials:
            by_method.setdefault(t["config"]["method"], []).append(t)
        for method, trials in by_method.items():
            name = "searched schedule" if method == "searched" else method
            row = _row(f"evaluation: {name}, {len(trials)} seeds (not search compute)", "evaluate", trials,
                       sum(t["epochs_trained"] for t in trials))
            rows.append(row)
    for stage in ("hpo", "hpo_after"):
        if stage in results:
            hpo = results[stage]
            rows.append({"method": f"{stage}: ASHA + Optuna ({len(hpo.trials)} trials, best "
                                   f"{json.dumps(hpo.extra.get('best_hparams', {}), default=float)})",
                         "val_acc": hpo.extra.get("best_val_acc"), "test_acc": None, "test_acc_sd": None,
                         "trial_epochs": hpo.trial_epochs, "runs": len(hpo.trials)})
    _add_paired(rows, results.get("predictions"))
    return rows


def _row(method: str, stage: str, trials: list[dict[str, Any]], trial_epochs: int,
         search_epochs: int | None = None) -> dict:
    tests = [t["test_acc"] for t in trials if t.get("test_acc") is not None]
    vals = [t["val_acc"] for t in trials if t.get("val_acc") is not None]
    return {"method": method, "val_acc": float(np.mean(vals)) if vals else None,
            "test_acc": float(np.mean(tests)) if tests else None,
            "test_acc_sd": float(np.std(tests)) if len(tests) > 1 else None,
            "trial_epochs": int(trial_epochs), "runs": len(trials),
            "models": [f"{stage}/{t['trial_id']}" for t in trials],
            **({"search_epochs": search_epochs} if search_epochs is not None else {})}


def _add_paired(rows: list[dict[str, Any]], predictions: StageResult | None) -> None:
    """Each single-model row against the RandAugment grid's best on the same test samples
    (``significance.compare``: difference, its 95 % interval, McNemar's p), as ``row["paired"]``."""
    if predictions is None or not predictions.extra.get("labels"):
        return
    files = {f"{p['stage']}/{p['trial_id']}": p["predictions"] for p in predictions.trials if p["matches"]}
    reference = next((r for r in rows if r["method"].startswith("RandAugment best")), None)
    if reference is None or len(reference["models"]) != 1 or reference["models"][0] not in files:
        return
    labels = np.load(predictions.extra["labels"])
    against = np.load(files[reference["models"][0]])
    for row in rows:
        models = row.get("models", [])
        if row is reference:
            row["paired"] = {"reference": True}
        elif len(models) == 1 and models[0] in files:
            row["paired"] = {"against": reference["method"],
                             **compare(labels, np.load(files[models[0]]), against).to_dict()}


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if pct else str(value)


def _fmt_paired(paired: dict[str, Any] | None) -> str:
    if not paired:
        return "-"
    if paired.get("reference"):
        return "reference"
    low, high = paired["ci95"]
    return f"{100 * paired['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}], p = {paired['p_value']:.2g}"


def comparison_markdown(rows: list[dict[str, Any]], title: str) -> str:
    paired = any(r.get("paired") for r in rows)
    header = "| method | val acc (%) | test acc (%) | trial-epochs |"
    if paired:
        header += " test vs RandAugment best: difference (points) [95 % CI], McNemar p |"
    lines = [f"# {title}", "", header, "|---|---|---|---|" + ("---|" if paired else "")]
    for r in rows:
        test = _fmt(r["test_acc"]) + (f" ± {100 * r['test_acc_sd']:.2f}" if r.get("test_acc_sd") else "")
        line = f"| {r['method']} | {_fmt(r['val_acc'])} | {test} | {r['trial_epochs']} |"
        lines.append(line + (f" {_fmt_paired(r.get('paired'))} |" if paired else ""))
    if paired:
        lines += ["", "The last column compares each model with the RandAugment grid's best on the same test images "
                      "(test-set noise only, not training noise: a model trained again with another seed moves too, "
                      "which search.evaluate_seeds measures)."]
    return "\n".join(lines) + "\n"


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
                policy = config.pop("policy", None) or config.pop("method", None) or (
                    "pba:" + ",".join(map(str, config.pop("pba"))) if "pba" in config
                    else "schedule" if stage in ("replay", "hpo_after") else "")
                writer.writerow({"stage": stage, "trial_id": t["trial_id"], "policy": policy,
                                 "hparams": json.dumps(config, default=str), "epochs_trained": t["epochs_trained"],
                                 "epoch": t["epoch"], "val_acc": t["val_acc"], "best_val_acc": t["best_val_acc"],
                                 "test_acc": t["test_acc"], "error": t["error"] or ""})


def write_results(results: dict[str, StageResult], out_dir: str | Path, epochs: int,
                  resolved: dict[str, Any] | None = None, title: str = "augmentation search") -> dict[str, Any]:
    """Write every result file (module docstring) and return the summary written to search.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"stages": {k: {"trials": len(v.trials), "trial_epochs": v.trial_epochs,
                                              "seconds": round(v.seconds, 1), "extra": v.extra}
                                          for k, v in results.items()}}
    if "pbt" in results:
        schedule = Schedule.from_dict(results["pbt"].extra["schedule"])
        final = schedule.policy_at(epochs - 1)
        final = Policy(name="pba-searched", choices=final.choices, num_ops=final.num_ops, replace=final.replace)
        _write(out / "schedule.json", json.dumps(schedule.to_dict(), indent=1))
        _write(out / "best_policy.json", json.dumps(final.to_dict(), indent=1, sort_keys=True))
        _write(out / "best_policy.txt", final.to_string() + "\n")
        plot_schedule(schedule, epochs, out / "schedule.png")
        try:
            dali, info = dali_export(final)
            _write(out / "best_policy.dali.json", json.dumps(info, indent=1))
            _write(out / "best_policy.dali.txt", str(dali) + "\n")
            summary["dali_export"] = {"sub_policies": len(info["sub_policies"]), "dropped_ops": info["dropped_ops"]}
        except ImportError as exc:  # DALI not installed: the JSON policy is still there
            summary["dali_export"] = {"error": str(exc)}
        summary["best_policy"] = final.to_string()
    write_trials_csv(results, out / "trials.csv")
    rows = comparison_rows(results)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "val_acc", "test_acc", "test_acc_sd", "trial_epochs", "runs",
                                               "search_epochs", "diff_vs_reference", "diff_ci95_low",
                                               "diff_ci95_high", "p_vs_reference"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            paired = row.get("paired") or {}
            if "difference" in paired:
                row = {**row, "diff_vs_reference": paired["difference"], "diff_ci95_low": paired["ci95"][0],
                       "diff_ci95_high": paired["ci95"][1], "p_vs_reference": paired["p_value"]}
            writer.writerow(row)
    _write(out / "comparison.md", comparison_markdown(rows, title))
    summary["comparison"] = rows
    summary["config"] = resolved
    _write(out / "search.json", json.dumps(summary, indent=1, default=str))
    return summary


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
