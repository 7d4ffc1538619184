"""Report sections of a fine-tuning run (``augtrain finetune``): the labelled subset, the
training and validation curves, the result beside its control, the model's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augtrain.pipelines.report.common import percent, policy_preview
from augtrain.pipelines.report.document import Facts, Figure, Files, Section, Table, Text
from augtrain.pipelines.report.figures import curves_png
from augtrain.pipelines.report.kinds import RunKind, register_run_kind


def history_figure(history: list[dict[str, Any]], metric: str, title: str, name: str) -> Figure | None:
    """Training loss and validation score per epoch of one fine-tune."""
    loss = [(h["epoch"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    val = [(h["epoch"], 100 * h["val_acc"]) for h in history if h.get("val_acc") is not None]
    if not loss and not val:
        return None
    panels = [("training loss", {"train": ([e for e, _ in loss], [v for _, v in loss])})]
    if val:
        panels.append((f"validation {metric} (%)", {"validation": ([e for e, _ in val], [v for _, v in val])}))
    return Figure(curves_png(panels, "epoch", title), f"{title}: training loss per epoch and the validation "
                                                      f"{metric} where it was measured.", name)


def subset_blocks(data_dir: Path) -> list[Any]:
    """What the labelled and validation subsets hold (``subset.json``)."""
    record_path = data_dir / "subset.json"
    if not record_path.is_file():
        return [Text(f"No subset record in {data_dir}.")]
    record = json.loads(record_path.read_text())
    names = record.get("class_names") or []
    per_class = record.get("labelled_per_class", {})
    facts = [("labelled samples", f"{record['labelled']:,} drawn (stratified, seeded) from {record['pool_samples']:,}"),
             ("validation samples", f"{record['val']:,}, disjoint from the labelled ones"),
             ("unusable samples in the pool", f"{record.get('pool_unusable', 0):,} (skipped: undecodable or unlabelled)")]
    blocks: list[Any] = [Facts(facts)]
    if per_class:
        blocks.append(Table(["class", "labelled"], [[names[int(c)] if int(c) < len(names) else c, str(n)]
                                                    for c, n in sorted(per_class.items(), key=lambda kv: int(kv[0]))]))
    return blocks


def finetune_sections(run_dir: Path) -> list[Section]:
    record = json.loads((run_dir / "finetune.json").read_text())
    cfg, metrics, control = record.get("finetune", {}), record.get("metrics", {}), record.get("control")
    metric = record.get("metric", "accuracy")
    result = Section("Fine-tuning")
    facts = [("mode", f"{cfg.get('mode')} from {record.get('checkpoint') or 'random initialisation'}"),
             ("policy", str(cfg.get("policy"))),
             ("schedule", f"{cfg.get('epochs')} epochs of batch {cfg.get('batch_size')}, lr {cfg.get('lr')}"),
             (f"test {metric} (%)", percent(metrics.get("test_acc"))),
             (f"validation {metric} (%)", percent(metrics.get("val_acc"))),
             ("time", f"{record.get('seconds', 0):.0f} s")]
    distill = record.get("distill")
    if distill:  # an `augtrain distill` student
        accs = [percent(a) for a in distill.get("teachers_test_acc", []) if a is not None]
        facts.append(("distillation", f"student of {len(distill.get('teachers', []))} teacher(s)"
                                      + (f" (test {', '.join(accs)} %)" if accs else "")
                                      + f", trained on {distill.get('labelled')} labelled and "
                                        f"{distill.get('unlabelled')} pseudo-labelled samples (temperature "
                                        f"{distill.get('temperature')}, mean teacher confidence "
                                        f"{distill.get('mean_confidence', 0):.3f})"))
    if control:
        gap = None if metrics.get("test_acc") is None else 100 * (metrics["test_acc"] - control["test_acc"])
        facts.append(("control", f"{control['method']} on the same labels: {percent(control['test_acc'])} %"
                                 + ("" if gap is None else f"; the fine-tune is {gap:+.2f} points from it")))
    result.add(Facts(facts))
    figure = history_figure(record.get("history", []), metric, "fine-tune", "finetune-curves.png")
    if figure is not None:
        result.add(figure)
    data = Section("Labelled data")
    data.add(*subset_blocks(run_dir / "data"))
    labelled = run_dir / "data" / "labelled"
    if labelled.is_dir():
        data.add(policy_preview(str(labelled), cfg.get("policy"), cfg.get("modality", "image"),
                                "finetune-policy.png", f"the fine-tuning policy {cfg.get('policy')}", cfg.get("size")))
    files = Section("Model and files")
    files.add(Files([(label, str(p)) for label, p in (("the fine-tuned model (last checkpoint)", record.get("model")),
                                                      ("metrics of every epoch", run_dir / "finetune.json"),
                                                      ("progress, one line per epoch", run_dir / "progress.jsonl"))
                     if p and Path(p).exists()]))
    return [result, data, files]


register_run_kind(RunKind("finetune", "finetune.json", "fine-tuning", finetune_sections, priority=2))
