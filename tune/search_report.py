"""Report sections of a search (``augtrain search``), read from the files ``tune.report`` wrote:
the verdict and the comparison with its controls, the fine-tuning curves of the finalists, the
searched policy (its ops, a picture of samples it augmented, the PBT schedule), every trial,
and where the best model and policy are."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from augtrain.pipelines.report.common import data_section, percent, policy_preview, read_yaml, resolve_path
from augtrain.pipelines.report.document import Facts, Figure, Files, Section, Table, Text
from augtrain.pipelines.report.figures import curves_png
from augtrain.pipelines.report.finetune import subset_blocks
from augtrain.pipelines.report.kinds import RunKind, register_run_kind
from augtrain.tune.comparison import paired_text, test_text, verdict
from augtrain.tune.stages import StageResult, final_checkpoint, read_history


def comparison_table(rows: list[dict[str, Any]]) -> Table:
    """The comparison with its controls, as ``comparison.md`` has it."""
    body = [[r["method"], percent(r.get("val_acc")), test_text(r), str(r.get("seeds", "-")), str(r.get("trial_epochs", "-")),
             "-" if r.get("trial_minutes") is None else f"{r['trial_minutes']:.1f}", paired_text(r.get("paired"))]
            for r in rows]
    grid = next((r["grid"] for r in rows if r.get("grid")), "the grid's")
    return Table(["method", "val acc (%)", "test acc (%)", "seeds", "trial-epochs", "trial-minutes",
                  f"vs {grid} best: points [95 % CI], McNemar p"], body,
                 note="Test accuracy: mean ± sample sd over the row's seeds on the whole test split. Trial-epochs and "
                      "trial-minutes: the training a row is charged for (the whole grid for its best point, every "
                      "stage of a search for its product). The last column compares each row's first model with "
                      "the grid's best on the same test samples.")


def _finalist_histories(out: Path, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each comparison row's first trained model's reports, by row name. A model is found by its
    trial id in every stage's history (the searched model was trained in the last rung's stage)."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "stages").glob("*.results.jsonl")):
        for report in read_history(path):
            if report.get("val_acc") is not None:
                by_trial.setdefault(report.get("trial_id"), []).append(report)
    curves = {}
    for row in rows:
        models = row.get("models") or []
        if models and not models[0].startswith("controls/") and models[0].split("/", 1)[1] in by_trial:
            curves[row["method"]] = by_trial[models[0].split("/", 1)[1]]
    return curves


def finalists_figure(out: Path, rows: list[dict[str, Any]]) -> Figure | None:
    curves = _finalist_histories(out, rows)
    if not curves:
        return None
    series = {name[:60]: ([r.get("epoch", i + 1) for i, r in enumerate(reports)], [100 * r["val_acc"] for r in reports])
              for name, reports in curves.items()}
    return Figure(curves_png([("validation accuracy (%)", series)], "epoch", "fine-tuning curves of the finalists"),
                  "Validation accuracy over the epochs of each row's first model (the curves of a row's other seeds "
                  "are in stages/*.results.jsonl).", "search-finalists.png")


def _op_row(where: str, op: dict[str, Any]) -> list[str]:
    magnitude = op.get("magnitude_range", op.get("magnitude", 0.0))
    args = ", ".join(f"{k}={v}" for k, v in sorted(op.get("args", {}).items()))
    return [where, op["name"], f"{op.get('p', 1.0):.2f}", str(magnitude), args]


def _ops_table(policy: dict[str, Any]) -> Table:
    rows = [_op_row("every sample, first", op) for op in policy.get("pre", [])]
    rows += [_op_row(f"choice {i + 1}", op) for i, entry in enumerate(policy.get("choices", [])) for op in entry]
    num_ops = policy.get("num_ops")
    return Table(["applied", "op", "probability", "magnitude (0-10)", "arguments"], rows,
                 note=f"After the first ops, {num_ops} of the choices per sample (drawn"
                      f"{' with replacement' if policy.get('replace') else ' without replacement'}); each op then "
                      "applies with its probability at its magnitude.")


def _policy_section(out: Path, summary: dict[str, Any], config: dict[str, Any]) -> Section:
    section = Section("Searched policy")
    point_file, policy_file = out / "best_point.json", out / "best_policy.json"
    facts = [("policy", summary.get("best_policy", "none searched"))]
    if point_file.is_file():
        point = json.loads(point_file.read_text())
        facts += [(f"fine-tune {k}", f"{v:.4g}" if isinstance(v, float) else str(v))
                  for k, v in sorted(point.get("hparams", {}).items())]
    section.add(Facts(facts))
    if policy_file.is_file():
        policy = json.loads(policy_file.read_text())
        section.add(_ops_table(policy))
        finetune = config.get("finetune") or {}
        labelled = out / "data" / "labelled"
        if labelled.is_dir():
            section.add(policy_preview(str(labelled), policy, finetune.get("modality", "image"), "searched-policy.png",
                                       "the searched policy", finetune.get("size")))
    schedule = out / "schedule.png"
    if schedule.is_file():
        section.add(Figure(schedule.read_bytes(), "The searched schedule (PBT): probability and magnitude of every "
                                                  "op over the epochs.", "schedule.png"))
    return section


def _trials_section(out: Path, summary: dict[str, Any]) -> Section:
    section = Section("Trials")
    stages = summary.get("stages", {})
    section.add(Table(["stage", "trials", "trial-epochs", "wall time (min)"],
                      [[name, str(s["trials"]), str(s["trial_epochs"]), f"{s['seconds'] / 60:.1f}"]
                       for name, s in stages.items()],
                      note="Every stage is one Ray Tune run (the controls are computed on the driver)."))
    trials_csv = out / "trials.csv"
    if trials_csv.is_file():
        with open(trials_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        shown = ["stage", "trial_id", "policy", "epochs_trained", "val_acc", "test_acc", "error"]
        body = [[row.get("stage", ""), row.get("trial_id", ""), row.get("policy", "")[:90], row.get("epochs_trained", ""),
                 _pct_text(row.get("val_acc")), _pct_text(row.get("test_acc")), row.get("error", "")[:80]] for row in rows]
        section.add(Table(shown, body, collapsed=f"all {len(rows)} trials (trials.csv has their hyperparameters)"))
    return section


def _pct_text(value: str | None) -> str:
    try:
        return percent(float(value)) if value not in (None, "") else "-"
    except ValueError:
        return value or "-"


def _best_model(out: Path) -> str | None:
    searched = out / "stages" / "searched.json"
    if not searched.is_file():
        return None
    result = StageResult.from_dict(json.loads(searched.read_text()))
    tested = [t for t in result.trials if t.get("test_acc") is not None]
    if not tested:
        return None
    checkpoint = final_checkpoint(max(tested, key=lambda t: t["val_acc"] or 0))
    return str(checkpoint) if checkpoint is not None else None


def _files_section(out: Path, summary: dict[str, Any]) -> Section:
    files = [("best policy (JSON; load with augtrain.augment.Policy.from_dict)", out / "best_policy.json"),
             ("best point: policy and fine-tune hyperparameters", out / "best_point.json"),
             ("the policy as an nvidia.dali.auto_aug Policy", out / "best_policy.dali.txt"),
             ("comparison (Markdown, CSV)", out / "comparison.md"), ("every trial", out / "trials.csv"),
             ("everything above in one file", out / "search.json")]
    best = _best_model(out)
    if best:
        files.insert(0, ("the searched model (final checkpoint of the search's own trial)", Path(best)))
    section = Section("Best model and files")
    return section.add(Files([(label, str(p)) for label, p in files if p.exists()]))


def search_sections(out: Path) -> list[Section]:
    summary = json.loads((out / "search.json").read_text())
    config = summary.get("config") or read_yaml(out / "config.yaml")
    rows = summary.get("comparison", [])
    result = Section("Result")
    answers = verdict(rows)
    if answers:
        result.add(Facts([(q, a) for q, a in answers]))
    result.add(comparison_table(rows))
    figure = finalists_figure(out, rows)
    if figure is not None:
        result.add(figure)
    data = Section("Data")
    data.add(*subset_blocks(out / "data"))
    finetune = config.get("finetune") or {}
    if finetune.get("test"):
        test = data_section(resolve_path(finetune["test"], out), "Test split", finetune.get("modality"))
        data.sections.append(test)
    return [result, _policy_section(out, summary, config), data, _trials_section(out, summary),
            _files_section(out, summary)]


register_run_kind(RunKind("search", "search.json", "augmentation search", search_sections, priority=3))
