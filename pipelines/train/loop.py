"""The per-worker pretraining loop: streamed shards -> augmented views -> DeepSpeed steps.

Every worker runs `pretrain(...)` inside one process group (Ray Train's, torchrun's, or a
one-process group). Each worker reads its own slice of the epoch (`ShardReader`), turns the
views into the encoder's tensors through the reader's modality (images: uint8 `[B, H, W, C]`
-> float `[B, C, H, W]`), and takes one `train_step` per micro-batch.
All workers stop an epoch together when any of them runs out of batches (DeepSpeed's steps
are collective). Checkpoints are taken at optimizer-step boundaries and hold the merged data
position of all workers, so a resume continues both the loss curve and the sample order.

    result = pretrain(objective, reader, EngineConfig(...), LoopConfig(epochs=1, checkpoint_dir=d))

`train_loop_per_worker(config)` is the same loop as a Ray Train `TorchTrainer` entry.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from augtrain.pipelines.train.checkpoint import (RetentionConfig, ensure_universal, latest_checkpoint, needs_universal,
                                                resume, save_checkpoint)
from augtrain.pipelines.train.engine import EngineConfig, TrainEngine, build_engine, effective_batch_size, train_step
from augtrain.pipelines.data.position import DataPosition, RankProgress
from augtrain.pipelines.data.reader import ShardReader
from augtrain.pipelines.modalities import Modality

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 1
    checkpoint_dir: str | None = None  # shared by all workers; None: no checkpoints
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0: at epoch ends only
    log_every: int = 10  # micro-batches between metric records
    max_steps: int | None = None  # stop after this many optimizer steps (a checkpoint is taken)
    mean: tuple[float, ...] = (0.5,)  # per-channel normalization of the views (images: of uint8 pixels)
    std: tuple[float, ...] = (0.5,)
    metrics_dir: str | None = None  # rank 0 writes metrics.csv and TensorBoard events here
    seed: int = 0  # model init (same on every rank) and each rank's torch generator
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def validate(self) -> LoopConfig:
        if self.epochs < 1:
            raise ValueError("loop.epochs must be >= 1")
        if self.checkpoint_every < 0 or self.log_every < 1:
            raise ValueError("loop.checkpoint_every must be >= 0 and loop.log_every >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("loop.max_steps must be >= 1 or null")
        return self


@dataclass(frozen=True)
class StepRecord:
    """What one micro-batch did (passed to `on_step`)."""

    epoch: int
    optimizer_step: int  # optimizer steps completed after this micro-batch
    loss: float
    lr: float
    keys: list[str]


class Meter:
    """Loss, throughput and data-wait fraction over the micro-batches since the last read."""

    def __init__(self, terms: tuple[str, ...] = ()) -> None:
        self.terms = tuple(terms)  # the objective's loss parts (every rank has the same)
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.batches, self.samples = 0.0, 0, 0
        self.data_s, self.total_s = 0.0, 0.0
        self.term_sums = dict.fromkeys(self.terms, 0.0)

    def add(self, loss: float, samples: int, data_s: float, total_s: float,
            terms: dict[str, float] | None = None) -> None:
        self.loss_sum += loss
        self.batches += 1
        self.samples += samples
        self.data_s += data_s
        self.total_s += total_s
        for name in self.terms:
            self.term_sums[name] += (terms or {}).get(name, 0.0)

    def read(self, world_size: int) -> dict[str, float]:
        """Means over all workers (one all-reduce): loss (and its parts, ``loss_<term>``),
        samples/s, data-wait fraction."""
        t = torch.tensor([self.loss_sum, self.batches, self.samples, self.data_s, self.total_s,
                          *(self.term_sums[n] for n in self.terms)], dtype=torch.float64)
        if world_size > 1:
            dist.all_reduce(t)
        loss_sum, batches, samples, data_s, total_s, *term_sums = t.tolist()
        self.reset()
        return {"loss": loss_sum / max(batches, 1),
                **{f"loss_{n}": v / max(batches, 1) for n, v in zip(self.terms, term_sums)},
                "samples_per_s": samples / max(total_s / world_size, 1e-9),
                "data_wait": data_s / max(total_s, 1e-9)}


class MetricsWriter:
    """Rank 0's metrics.csv (one row per step record and per epoch), ``epochs.jsonl`` (a line per
    epoch, its skipped samples counted by reason) and TensorBoard events."""

    FIELDS = ("kind", "epoch", "step", "lr", "loss", "samples_per_s", "data_wait", "samples",
              "skipped")

    def __init__(self, directory: str | None, rank: int, terms: tuple[str, ...] = ()) -> None:
        self.enabled = directory is not None and rank == 0
        self.fields = self.FIELDS + tuple(f"loss_{n}" for n in terms)  # the objective's loss parts last
        self._csv, self._writer, self._tb = None, None, None
        if self.enabled:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self._path = Path(directory) / "metrics.csv"
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(directory) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._csv is None:
            new = not self._path.exists()
            self._csv = open(self._path, "a", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=self.fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow(record)
        self._csv.flush()
        if record.get("kind") == "epoch":
            with open(self._path.with_name("epochs.jsonl"), "a") as f:
                f.write(json.dumps({k: v for k, v in record.items() if k != "kind"}, default=str) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch", "kind") and isinstance(value, (int, float)):
                self._tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
        if self._tb is not None:
            self._tb.close()


def _all_have(has_batch: bool, world_size: int) -> bool:
    """True while every worker still has a batch (one tiny all-reduce)."""
    if world_size == 1:
        return has_batch
    flag = torch.tensor([int(has_batch)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _merged_position(base: DataPosition, progress: RankProgress, world_size: int) -> DataPosition:
    states = [progress.state_dict()]
    if world_size > 1:
        states = [None] * world_size
        dist.all_gather_object(states, progress.state_dict())
    return base.merged([RankProgress.from_state_dict(s) for s in states])


# A batch from the reader -> the objective's views (the encoder's input tensors).
ViewMaker = Callable[[dict[str, np.ndarray], int], list[torch.Tensor]]


def _views(batch: dict[str, np.ndarray], modality: Modality, keys: list[str], cfg: LoopConfig) -> list[torch.Tensor]:
    """The view columns (augmented in the reader) -> the encoder's input tensors."""
    return [modality.to_tensor(batch[k], cfg.mean, cfg.std) for k in keys]


@dataclass
class _Run:
    engine: TrainEngine
    reader: ShardReader
    cfg: LoopConfig
    position: DataPosition
    extra: dict[str, Any]  # config / policy stored in checkpoints
    on_metrics: Callable[[dict[str, Any]], None] | None
    on_step: Callable[[StepRecord], None] | None
    writer: MetricsWriter
    make_views: ViewMaker | None = None  # None: the reader's uint8 views, normalised here
    meter: Meter = field(default_factory=Meter)
    last_checkpoint: str | None = None

    @property
    def step(self) -> int:
        return self.engine.optimizer_steps

    def done(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def checkpoint(self, position: DataPosition, metrics: dict[str, float]) -> None:
        if self.cfg.checkpoint_dir is None:
            return
        path = save_checkpoint(self.engine, self.cfg.checkpoint_dir, self.step,
                               config=self.extra.get("config"), policy=self.extra.get("policy"),
                               data_position=position.state_dict(), metrics=metrics,
                               retention=self.cfg.retention)
        self.last_checkpoint = str(path)

    def emit(self, record: dict[str, Any]) -> None:
        self.writer.write(record)
        if self.on_metrics is not None:
            self.on_metrics(record)
        if self.engine.rank == 0:
            log.info("%s", " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in record.items()))


def _epoch_end_records(run: _Run, epoch: int, position: DataPosition, loss_sum: float,
                       term_sums: dict[str, float], micro: int) -> None:
    """The epoch's metrics row (its mean loss and each term's over this run's `micro` batches; none
    when this run trained none of the epoch's, only counted its dropped tail) and, for objectives
    that sample, its sample grid."""
    engine, cfg = run.engine, run.cfg
    run.emit({"kind": "epoch", "epoch": epoch, "step": run.step, "loss": loss_sum / micro if micro else None,
              **{f"loss_{n}": v / micro if micro else None for n, v in term_sums.items()},
              "samples": position.samples_consumed, "skipped": position.skipped.total,
              "skipped_by_reason": dict(position.skipped.counts)})
    if cfg.metrics_dir is not None and hasattr(engine.module, "sample"):  # every rank samples (ZeRO-3 gathers)
        from augtrain.pipelines.train.samples import write_sample_grid

        write_sample_grid(engine.module, Path(cfg.metrics_dir) / "samples" / f"epoch-{epoch:03d}.png",
                          cfg.mean, cfg.std, seed=cfg.seed, write=engine.rank == 0)


def _run_epoch(run: _Run, epoch: int) -> bool:
    """One epoch (or its rest, from `run.position`) on this worker's slice; True when the
    epoch's data ran out (False when `max_steps` stopped it)."""
    engine, cfg = run.engine, run.cfg
    modality = run.reader.modality
    names = modality.view_keys(engine.module.num_views)
    labelled = bool(getattr(engine.module, "uses_labels", False))  # a conditional VAE: the reader's labels too
    iterator = run.reader.epoch_iterator(epoch, engine.rank, engine.world_size,
                                         engine.config.micro_batch_size, run.position, drop_last=True)
    batches = iter(iterator)
    micro, loss_sum, at_boundary = 0, 0.0, True
    term_sums = dict.fromkeys(run.meter.terms, 0.0)
    while not run.done():
        t0 = time.perf_counter()
        batch = next(batches, None)
        t_data = time.perf_counter() - t0
        if not _all_have(batch is not None, engine.world_size):
            if batch is not None:  # another worker ran out first: the rest is reported, not lost
                for unused in (batch, *batches):
                    iterator.drop(unused, "dropped: epoch ended on another worker")
            break
        views = run.make_views(batch, epoch) if run.make_views else _views(batch, modality, names, cfg)
        out = train_step(engine, views, torch.from_numpy(np.asarray(batch["label"])) if labelled else None)
        run.meter.add(out.loss, len(batch["__index__"]), t_data, time.perf_counter() - t0, out.terms)
        micro, loss_sum, at_boundary = micro + 1, loss_sum + out.loss, out.stepped
        for name in term_sums:
            term_sums[name] += out.terms.get(name, 0.0)
        if run.on_step is not None:
            run.on_step(StepRecord(epoch, run.step, out.loss, out.lr, [str(k) for k in batch["__key__"]]))
        if micro % cfg.log_every == 0:
            run.emit({"kind": "step", "epoch": epoch, "step": run.step, "lr": out.lr,
                      **run.meter.read(engine.world_size)})
        due = cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0
        if out.stepped and (due or run.done()):
            position = _merged_position(run.position, iterator.progress(), engine.world_size)
            run.checkpoint(position, {"loss": out.loss})

    position = _merged_position(run.position, iterator.progress(), engine.world_size)
    if micro == 0 and position.samples_consumed == run.position.samples_consumed:
        # resumed from a checkpoint taken after the epoch's last sample (a resize between it and the
        # epoch-end checkpoint): nothing new to train or count, and the run before wrote its row
        if engine.rank == 0:
            log.info("epoch %d: resumed at its end (%d samples consumed before the checkpoint); going on "
                     "to the next", epoch, position.samples_consumed)
    else:
        _epoch_end_records(run, epoch, position, loss_sum, term_sums, micro)
    if run.done():
        run.position = position
        return False
    if position.skipped.total and engine.rank == 0:
        log.warning("epoch %d: %s", epoch, position.skipped.format())
    run.position = position.next_epoch()
    if at_boundary:
        run.checkpoint(run.position, {"loss": loss_sum / micro} if micro else {})
    else:
        log.warning("epoch %d ended inside a gradient accumulation: no epoch-end checkpoint", epoch)
    return True


def pretrain(objective: nn.Module, reader: ShardReader, engine_cfg: EngineConfig,
             loop_cfg: LoopConfig, *, resume_from: str | None = None,
             config: dict[str, Any] | None = None, policy: Any = None,
             on_metrics: Callable[[dict[str, Any]], None] | None = None,
             on_step: Callable[[StepRecord], None] | None = None,
             make_views: ViewMaker | None = None) -> dict[str, Any]:
    """Pretrain `objective` (forward(views) -> loss) on `reader`'s shards; every worker calls it.

    resume_from: a checkpoint directory, or "latest" (the newest under `checkpoint_dir`, if
    any). `config` and `policy` are stored in every checkpoint. `make_views(batch, epoch)`
    turns a reader batch into views when augmentation runs in the worker (DALI on the GPU);
    by default the reader's views become tensors through its modality. Returns the final step, data
    position and last checkpoint path.
    """
    loop_cfg.validate()
    source = _resume_source(resume_from, loop_cfg)
    # a checkpoint of another world size (an elastic run resized, or a rerun on another cluster):
    # its ZeRO shards are re-partitioned through a universal checkpoint, which DeepSpeed must
    # know of when the engine is built
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))
    universal = source is not None and needs_universal(source, engine_cfg.zero_stage, world)
    engine = build_engine(objective, engine_cfg, load_universal=universal)
    torch.manual_seed(1_000_003 * loop_cfg.seed + engine.rank)  # dropout, MAE masks, per rank
    position = DataPosition(epoch=0, seed=reader.config.seed)
    if source is not None:
        if universal:
            ensure_universal(source, engine.rank)
        meta = resume(engine, source, universal=universal)
        position = DataPosition.from_state_dict(meta["data_position"])
        log.info("resumed from %s (step %d, epoch %d, %d samples of it consumed)",
                 source, engine.optimizer_steps, position.epoch, position.samples_consumed)
        saved = meta.get("engine") or {}
        if saved.get("world_size", engine.world_size) != engine.world_size:
            log.info("world size %s -> %d: %d micro-batches of %d per optimizer step (were %s), %d samples per "
                     "step (were %s); the epoch's remaining samples are split over the new workers",
                     saved.get("world_size"), engine.world_size, engine.config.grad_accum_steps,
                     engine.config.micro_batch_size, saved.get("grad_accum_steps"),
                     effective_batch_size(engine.config, engine.world_size), saved.get("effective_batch_size"))
    terms = tuple(getattr(objective, "loss_term_names", ()))
    run = _Run(engine, reader, loop_cfg, position, {"config": config, "policy": policy},
               on_metrics, on_step, MetricsWriter(loop_cfg.metrics_dir, engine.rank, terms), make_views=make_views,
               meter=Meter(terms))
    try:
        while run.position.epoch < loop_cfg.epochs and not run.done():
            _run_epoch(run, run.position.epoch)
    finally:
        run.writer.close()
    return {"step": run.step, "data_position": run.position.state_dict(),
            "checkpoint": run.last_checkpoint, "engine": engine.describe()}


def _resume_source(resume_from: str | None, cfg: LoopConfig) -> Path | None:
    if resume_from is None:
        return None
    if resume_from == "latest":
        if cfg.checkpoint_dir is None:
            raise ValueError("resume 'latest' needs loop.checkpoint_dir")
        return latest_checkpoint(cfg.checkpoint_dir)  # None on a first start
    return Path(resume_from)


def report_epochs(record: dict[str, Any]) -> None:
    """Hand epoch records to Ray Train; step records go only to rank 0's metrics.csv, which the
    driver follows. In Train V2 every ``ray.train.report`` is a barrier of all workers through an
    actor (about 2 s a call measured on 2 busy cores), which a report per logged step paid each time."""
    if record.get("kind") == "epoch":
        import ray.train

        ray.train.report(dict(record))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry. config: objective (a models spec), reader (ShardReader), engine
    (EngineConfig), loop (LoopConfig), and optional resume_from, config, policy."""
    import ray.train

    from augtrain.models import build_from_spec

    torch.manual_seed(config["loop"].seed)
    result = pretrain(build_from_spec(config["objective"]), config["reader"], config["engine"],
                      config["loop"], resume_from=config.get("resume_from"),
                      config=config.get("config"), policy=config.get("policy"),
                      on_metrics=report_epochs)
    ray.train.report({"kind": "done", "step": result["step"], "checkpoint": result["checkpoint"]})
