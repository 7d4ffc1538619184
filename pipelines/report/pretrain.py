"""Report sections of a pretraining run (``augtrain pretrain``) and of one epoch streamed
through the data path (``augtrain data stream``, the quickstart's first stage)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from augtrain.pipelines.report.common import data_section, read_yaml, resolve_path, skipped_table
from augtrain.pipelines.report.document import Facts, Figure, Files, Section, Table, Text
from augtrain.pipelines.report.kinds import RunKind, register_run_kind

METRICS = Path("metrics") / "metrics.csv"


def _rows(metrics_csv: Path) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(step rows, epoch rows) of rank 0's ``metrics.csv``, values as floats."""
    steps, epochs = [], []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k != "kind" and v not in ("", None)}
            (steps if row.get("kind") == "step" else epochs).append(values)
    return steps, epochs


def _curves(run_dir: Path, name: str) -> Figure | None:
    """The run's loss curve (``metrics/loss.png``; drawn again from the CSV when older than it, as
    after an interrupted run)."""
    from augtrain.pipelines.train.loss_plot import plot_loss_curve

    png, metrics = run_dir / "metrics" / "loss.png", run_dir / METRICS
    if (not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime) and \
            plot_loss_curve(str(metrics), str(png), title=name) is None:
        return None
    return Figure(png.read_bytes(), "Pretraining loss, throughput (samples/s per worker) and the share of step "
                                          "time spent waiting for data (red), per logged optimizer step (rank 0).",
                  "pretrain-loss.png")


def _epochs_text(meta: dict[str, Any] | None, planned: Any) -> str:
    """Finished epochs, from the latest checkpoint's data position (the epoch it would read next)."""
    position = (meta or {}).get("data_position") or {}
    done = int(position.get("epoch", 0))
    consumed = int(position.get("samples_consumed", 0))
    return f"{done} finished of {planned}" + (f", and {consumed:,} samples of the next" if consumed else "")


def _engine_text(e: dict[str, Any]) -> str:
    """DeepSpeed's settings in one line."""
    return (f"DeepSpeed ZeRO-{e.get('zero_stage')}, {e.get('precision')} on {e.get('device')}, {e.get('world_size')} "
            f"workers x micro-batch {e.get('micro_batch_size')} x accumulation {e.get('grad_accum_steps')} (batch "
            f"{e.get('effective_batch_size')}), peak lr {e.get('peak_lr'):.3g} after {e.get('warmup_steps')} warmup "
            f"steps, cosine to step {e.get('total_steps')}")


def _checkpoints(run_dir: Path) -> tuple[list[Path], dict[str, Any] | None]:
    from augtrain.pipelines.train.checkpoint import list_checkpoints, read_metadata

    folder = run_dir / "checkpoints"
    found = list_checkpoints(folder) if folder.is_dir() else []
    return found, (read_metadata(found[-1]) if found else None)


def pretrain_sections(run_dir: Path) -> list[Section]:
    config = read_yaml(run_dir / "config.yaml")
    steps, epochs = _rows(run_dir / METRICS) if (run_dir / METRICS).is_file() else ([], [])
    found, meta = _checkpoints(run_dir)
    model, loop = config.get("model", {}), config.get("loop", {})
    summary = Section("Pretraining")
    facts = [("model", f"{model.get('objective')} on {model.get('encoder')}"),
             ("policy", str(config.get("augment", {}).get("policy"))),
             ("epochs", _epochs_text(meta, loop.get("epochs", "?"))),
             ("optimizer steps", str(meta["optimizer_steps"]) if meta else "none checkpointed")]
    if meta and isinstance(meta.get("engine"), dict):
        facts.append(("engine", _engine_text(meta["engine"])))
    rates = [r["samples_per_s"] for r in steps if "samples_per_s" in r]
    waits = [r["data_wait"] for r in steps if "data_wait" in r]
    if rates:
        facts.append(("throughput", f"median {np.median(rates):.0f} samples/s per worker x "
                                    f"{config.get('cluster', {}).get('workers', '?')} workers; data wait median "
                                    f"{100 * np.median(waits):.1f} %" if waits else ""))
    summary.add(Facts(facts))
    figure = _curves(run_dir, config.get("name", run_dir.name)) if steps else None
    if figure is not None:
        summary.add(figure)
    grids = sorted((run_dir / "metrics" / "samples").glob("epoch-*.png"), key=lambda p: int(p.stem[6:]))
    if grids:  # a generative objective's draws from its prior after its first and its latest epoch
        for png in dict.fromkeys([grids[0], grids[-1]]):
            summary.add(Figure(png.read_bytes(), f"Samples from the prior after epoch {int(png.stem[6:]) + 1} "
                                                 "(the same 64 latents every epoch).", f"samples-{png.name}"))
    reasons = _epoch_reasons(run_dir)
    merged: dict[int, dict[str, float]] = {}
    for r in epochs:  # a resumed epoch's row updates the first (its loss only where it trained a batch)
        merged.setdefault(int(r.get("epoch", 0)), {}).update(r)
    epochs = list(merged.values())
    if epochs:
        summary.add(Table(["epoch", "mean loss", "samples read", "skipped or dropped", "why"],
                          [[str(int(r.get("epoch", 0)) + 1), f"{r.get('loss', float('nan')):.4f}",
                            f"{int(r.get('samples', 0)):,}", str(int(r.get("skipped", 0))),
                            reasons.get(int(r.get("epoch", 0)), "")] for r in epochs],
                          note="Samples read: positions of the epoch consumed. Skipped: bad samples (counted by "
                               "reason, listed by shard and key in the workers' log) and the few left over when "
                               "the workers stop together at the last full batch."))
    elif not steps:
        summary.add(Text("No metrics were written yet: the run stopped before its first logged step."))
    data_cfg = config.get("data", {})
    data = data_section(resolve_path(data_cfg.get("train"), run_dir), "Data", data_cfg.get("modality"))
    return [summary, data, _checkpoint_section(run_dir, found)]


def _epoch_reasons(run_dir: Path) -> dict[int, str]:
    """Epoch -> its skipped samples by reason, from ``metrics/epochs.jsonl``."""
    path = run_dir / "metrics" / "epochs.jsonl"
    if not path.is_file():
        return {}
    reasons = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            counts = row.get("skipped_by_reason") or {}
            reasons[int(row.get("epoch", 0))] = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return reasons


def _checkpoint_section(run_dir: Path, found: list[Path]) -> Section:
    section = Section("Checkpoints and files")
    if not found:
        return section.add(Text("No complete checkpoint."))
    latest = found[-1]
    section.add(Text(f"{len(found)} complete checkpoint(s); the latest is what fine-tuning and search take "
                     f"(--checkpoint {run_dir / 'checkpoints'} picks it)."))
    files = [("latest checkpoint", str(latest))]
    files += [(f"its {name}", str(latest / name)) for name in ("model.safetensors", "config.json", "augtrain.json")
              if (latest / name).exists()]
    files += [(label, str(run_dir / rel)) for label, rel in (("metrics (CSV)", METRICS),
                                                             ("TensorBoard events", Path("metrics") / "tensorboard"))
              if (run_dir / rel).exists()]
    return section.add(Files(files))


def stream_sections(run_dir: Path) -> list[Section]:
    """One epoch through Ray Data to the train workers: what each worker saw."""
    record = json.loads((run_dir / "data-path.json").read_text())
    section = Section("Data path: one epoch through Ray Data")
    workers = record.get("workers", [])
    section.add(Facts([("samples", f"{record.get('samples', 0):,} in {record.get('seconds', 0):.1f} s "
                                   f"({record.get('samples', 0) / max(record.get('seconds', 1e-9), 1e-9):,.0f} samples/s)"),
                       ("workers", str(len(workers)))]))
    if workers:
        classes = sorted({c for w in workers for c in w.get("classes", {})}, key=lambda c: int(c) if c.isdigit() else c)
        section.add(Table(["rank", "samples", "batches", "first batch (s)", "seconds"] + [f"class {c}" for c in classes],
                          [[str(w.get("rank")), f"{w.get('samples', 0):,}", str(w.get("batches")),
                            f"{w.get('first_batch_s', 0):.2f}", f"{w.get('seconds', 0):.2f}"]
                           + [str(w.get("classes", {}).get(c, 0)) for c in classes] for w in workers],
                          note="Each worker reads its own contiguous slice of the epoch's seeded order."))
    skipped = record.get("skipped") or {}
    section.add(*skipped_table(skipped.get("counts", {}), skipped.get("records", []), "in this epoch"))
    return [section]


register_run_kind(RunKind("pretrain", str(METRICS), "pretraining", pretrain_sections, priority=1))
register_run_kind(RunKind("stream", "data-path.json", "one epoch of the data path", stream_sections))
