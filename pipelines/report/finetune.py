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
    per_class = record.get("test_per_class")
    if per_class:
        names = _class_names(run_dir)
        result.add(Table(["class", f"test {metric} (%)"],
                         [[names[c] if c < len(names) else str(c), percent(a)] for c, a in enumerate(per_class)],
                         note="Per class: the share of the class's test samples the model predicts as it."))
    data = Section("Labelled data")
    data.add(*subset_blocks(run_dir / "data"))
    labelled = run_dir / "data" / "labelled"
    if labelled.is_dir():
        data.add(policy_preview(str(labelled), cfg.get("policy"), cfg.get("modality", "image"),
                                "finetune-policy.png", f"the fine-tuning policy {cfg.get('policy')}", cfg.get("size")))
    sections = [result, data]
    if cfg.get("synthetic"):
        sections.append(generated_section(cfg["synthetic"], cfg))
    files = Section("Model and files")
    files.add(Files([(label, str(p)) for label, p in (("the fine-tuned model (last checkpoint)", record.get("model")),
                                                      ("metrics of every epoch", run_dir / "finetune.json"),
                                                      ("progress, one line per epoch", run_dir / "progress.jsonl"))
                     if p and Path(p).exists()]))
    return [*sections, files]


def _class_names(run_dir: Path) -> list[str]:
    record_path = run_dir / "data" / "subset.json"
    return list(json.loads(record_path.read_text()).get("class_names") or []) if record_path.is_file() else []


def generated_section(spec: Any, cfg: dict[str, Any]) -> Section:
    """Generated samples mixed into the fine-tune: their provenance, quality measures and a grid,
    a row per class."""
    section = Section("Generated samples")
    specs = spec if isinstance(spec, list) else [spec]
    for index, one in enumerate(specs):
        manifest_path = Path(one) / "manifest.json"
        if not manifest_path.is_file():
            section.add(Text(f"No manifest at {manifest_path}: the generated shards were moved or removed."))
            continue
        manifest = json.loads(manifest_path.read_text())
        record = manifest.get("synthetic") or {}
        labelled_by = record.get("labeller")
        facts = [("shards", str(one)),
                 ("generator", f"{record.get('generator')} (step {record.get('generator_step')})"),
                 ("samples", f"{record.get('kept', manifest.get('num_samples'))} kept of {record.get('drawn')} drawn "
                             f"(seed {record.get('seed')})"),
                 ("labels", "class-conditional draws (the class drawn)" if labelled_by == "class-conditional"
                  else "the class given to the conditional decoder" if labelled_by == "conditional decoder"
                  else f"pseudo-labels of {labelled_by}" if labelled_by else "none")]
        if labelled_by == "conditional decoder":
            facts.append(("prior", f"standard normal (temperature {record.get('temperature')})"))
        if record.get("filtered_by"):
            facts.append(("filtered by", f"{record['filtered_by']}: kept the samples it assigns to their class with "
                                         f"probability >= {record.get('min_confidence', 0):g}, dropped "
                                         f"{record.get('dropped_by_filter')}"))
        if record.get("conditioned_on"):
            facts.append(("class prior fitted on", f"{record['conditioned_on']} (temperature "
                                                   f"{record.get('temperature')})"))
        if record.get("label_fidelity") is not None:
            facts.append(("label fidelity", f"{percent(record['label_fidelity'])} % of the labels agree with "
                                            f"{record.get('judge')} (its test accuracy "
                                            f"{percent(record.get('judge_test_acc'))} %)"))
        facts.append(("share of each epoch", f"{cfg.get('synthetic_fraction', 0):g} of the slots, labels of "
                                             f"confidence >= {cfg.get('synthetic_min_confidence', 0):g}"))
        section.add(Facts(facts))
        section.add(_generated_grid(str(one), manifest, f"generated-samples-{index}.png"))
    return section


def _generated_grid(spec: str, manifest: dict[str, Any], name: str) -> Any:
    """Up to ten generated samples per class, a row per class (or a Text saying why not)."""
    from augtrain.pipelines.finetune.subsets import load_arrays
    from augtrain.pipelines.generate import class_grid
    from augtrain.pipelines.report.figures import image_png

    names = manifest.get("class_names") or []
    if manifest.get("modality", "image") != "image" or not names:
        return Text("No grid: the generated samples are not labelled images.")
    try:
        values, labels, _ = load_arrays(spec, channels=None, limit=min(2000, int(manifest.get("num_samples", 0)) or 1))
    except Exception as exc:  # noqa: BLE001 -- unreadable shards: say so, keep the report
        return Text(f"No grid of {spec}: {type(exc).__name__}: {exc}")
    return Figure(image_png(class_grid(values, labels, len(names))),
                  f"Generated samples of {spec}, a row per class ({', '.join(names)}).", name)


register_run_kind(RunKind("finetune", "finetune.json", "fine-tuning", finetune_sections, priority=2))
