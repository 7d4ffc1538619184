"""Stream one epoch of shards to N Ray Train workers and summarise what each one saw.

This is the data path of training without the model: the same reader, transform and worker
assignment that pretraining uses, run under a real ``TorchTrainer``. It backs
``augtrain data stream`` and the quickstart, and measures the input side on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from augtrain.pipelines.data.position import DataPosition, RankProgress
from augtrain.pipelines.data.reader import ShardReader
from augtrain.pipelines.trainer import fit, torch_trainer


@dataclass
class StreamOptions:
    workers: int = 2
    cpus_per_worker: float = 1.0
    batch_size: int = 256
    epoch: int = 0
    position: DataPosition | None = None  # resume inside the epoch
    stop_after_batches: int | None = None  # stop each worker early (for resume checks)
    collect_keys: bool = False
    storage_path: str | None = None


@dataclass
class StreamSummary:
    epoch: int
    workers: list[dict]
    position: DataPosition
    seconds: float
    keys: dict[int, list[str]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(w["samples"] for w in self.workers)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "samples": self.samples, "seconds": self.seconds, "workers": self.workers,
                "position": self.position.state_dict(), "skipped": self.position.skipped.to_dict()}

    def format(self, class_names: list[str] | None = None, skipped_limit: int = 20) -> str:
        """The summary in a few lines; at most ``skipped_limit`` skipped samples listed (their
        counts by reason always)."""
        lines = [f"epoch {self.epoch}: {self.samples} samples to {len(self.workers)} workers in {self.seconds:.1f} s "
                 f"({self.samples / max(self.seconds, 1e-9):.0f} samples/s end to end, Ray Train start-up included)"]
        for w in self.workers:
            lines.append(f"  worker {w['rank']}: {w['samples']} samples, {w['batches']} batches, "
                         f"{w['samples'] / max(w['seconds'], 1e-9):.0f} samples/s while streaming, "
                         f"first batch after {w['first_batch_s']:.1f} s")
        classes = sum((Counter({int(k): v for k, v in w["classes"].items()}) for w in self.workers), Counter())
        if classes:
            names = class_names or []
            lines.append("per class: " + ", ".join(
                f"{names[k] if k < len(names) else k}={v}" for k, v in sorted(classes.items())))
        lines.append(f"position: {self.position.samples_consumed} of the epoch consumed")
        lines.append(self.position.skipped.format(limit=skipped_limit))
        return "\n".join(lines)


def _worker(config: dict) -> None:
    import ray.train
    import torch.distributed as dist

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    reader: ShardReader = config["reader"]
    options: StreamOptions = config["options"]
    iterator = reader.epoch_iterator(options.epoch, rank, world, options.batch_size, options.position)
    classes: Counter = Counter()
    keys: list[str] = []
    batches, first_batch = 0, None
    start = time.perf_counter()
    for batch in iterator:
        first_batch = first_batch or time.perf_counter() - start
        batches += 1
        if "label" in batch:
            classes.update(batch["label"].tolist())
        if options.collect_keys:
            keys += [str(k) for k in batch["__key__"]]
        if options.stop_after_batches is not None and batches >= options.stop_after_batches:
            break
    seconds = time.perf_counter() - start
    stats = {"rank": rank, "samples": iterator.samples_delivered, "batches": batches, "seconds": seconds,
             "first_batch_s": first_batch or seconds, "classes": dict(classes),
             "progress": iterator.progress().state_dict(), "keys": keys}
    gathered = [None] * world
    dist.all_gather_object(gathered, stats)
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "summary.json"), "w") as f:
                json.dump(gathered, f)
            ray.train.report({"samples": sum(s["samples"] for s in gathered)},
                             checkpoint=ray.train.Checkpoint.from_directory(d))
    else:
        ray.train.report({}, checkpoint=None)


def stream_epoch(reader: ShardReader, options: StreamOptions) -> StreamSummary:
    """Run one epoch (or the rest of one, from ``options.position``) on ``options.workers`` workers."""
    with tempfile.TemporaryDirectory(prefix="augtrain-stream-") as scratch:  # Ray Train's run folder, unless given
        trainer = torch_trainer(_worker, {"reader": reader, "options": options}, workers=options.workers,
                                cpus_per_worker=options.cpus_per_worker, storage_path=options.storage_path or scratch,
                                name=f"stream-{uuid.uuid4().hex[:8]}")
        start = time.perf_counter()
        result = fit(trainer)
        seconds = time.perf_counter() - start
        with result.checkpoint.as_directory() as d, open(os.path.join(d, "summary.json")) as f:
            workers = json.load(f)
    base = options.position or DataPosition(epoch=options.epoch, seed=reader.config.seed)
    position = base.merged([RankProgress.from_state_dict(w.pop("progress")) for w in workers])
    keys = {w["rank"]: w.pop("keys") for w in workers}
    return StreamSummary(options.epoch, workers, position, seconds, keys if options.collect_keys else {})
