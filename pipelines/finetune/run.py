"""A whole fine-tune: in this process, or under a Ray Train ``TorchTrainer`` (N workers, DDP on
gloo or NCCL) with ``finetune_worker`` as its per-worker entry; evaluating and predicting with
saved fine-tune checkpoints."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.finetune.data import DataPaths, load_data
from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.trainer import fit, torch_trainer
from augtrain.pipelines.finetune.session import STATE_FILE, FinetuneSession, PolicySource, policy_source_to_json


@dataclass
class FinetuneResult:
    """Final metrics, per-epoch history and the last checkpoint directory."""

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint: str | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def finetune_local(cfg: FinetuneConfig, paths: DataPaths, checkpoint: str | None, source: PolicySource, *,
                   out_dir: str | None = None, test: bool = True) -> FinetuneResult:
    """Fine-tune in this process (one worker): ``cfg.epochs`` epochs, the test split at the end."""
    start = time.perf_counter()
    session = FinetuneSession(cfg, load_data(paths, cfg, ("train", "val", "test") if test else ("train", "val")),
                              checkpoint)
    epochs = session.cfg.resolved_epochs
    for epoch in range(epochs):
        session.run_epoch(source, test=test and epoch == epochs - 1)
    saved = str(session.save(Path(out_dir) / "final")) if out_dir else None
    return FinetuneResult(session.history[-1], session.history, saved, time.perf_counter() - start)


def evaluate_checkpoint(cfg: FinetuneConfig, paths: DataPaths, pretrained: str | None, directory: str | os.PathLike,
                        split: Literal["val", "test"] = "test") -> dict[str, Any]:
    """Accuracy and loss of a fine-tune checkpoint on ``split``, with its epoch."""
    session = FinetuneSession(cfg, load_data(paths, cfg, ("train", split)), pretrained)
    state = session.restore(directory, optimizer=False)
    return {"epoch": state["epoch"], **session.evaluate(split)}


def predict_checkpoints(cfg: FinetuneConfig, paths: DataPaths, pretrained: str | None,
                        directories: list[str | os.PathLike], split: Literal["val", "test"] = "test"
                        ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The labels of ``split`` and, per fine-tune checkpoint, its epoch and predicted classes
    (the data is read once; every checkpoint must share ``cfg``'s architecture, in any mode)."""
    session = FinetuneSession(cfg, load_data(paths, cfg, ("train", split)), pretrained)
    out = []
    for directory in directories:
        state = session.restore(directory, optimizer=False)
        out.append({"checkpoint": str(directory), "epoch": state["epoch"], "predictions": session.predict(split)})
    return getattr(session.data, split)[1], out


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[float | None]:
    """The share of each class's samples predicted as that class (None for a class with none)."""
    return [float((predictions[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(num_classes)]


def finetune_worker(config: dict[str, Any]) -> None:
    """Ray Train entry. config: cfg (FinetuneConfig), paths (DataPaths), checkpoint (pretraining
    checkpoint or None), source (policy spec or schedule dict), until_epoch, test (evaluate the
    test split at the last epoch), resume_from (a Ray ``Checkpoint`` of a fine-tune, or None;
    Train's own latest checkpoint wins after a worker failure restarted the run)."""
    import ray.train
    from ray.train import Checkpoint

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg: FinetuneConfig = config["cfg"]
    wrap = None
    device: str | torch.device = "cpu"
    if world > 1 or cfg.use_gpu:
        import ray.train.torch

        wrap, device = ray.train.torch.prepare_model, ray.train.torch.get_device()
    splits = ("train", "val", "test") if config.get("test") else ("train", "val")
    session = FinetuneSession(cfg, load_data(config["paths"], cfg, splits), config.get("checkpoint"),
                              rank=rank, world_size=world, wrap=wrap, device=device)
    checkpoint = ray.train.get_checkpoint() or config.get("resume_from")
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            session.restore(d)
    until = int(config.get("until_epoch") or session.cfg.resolved_epochs)
    periodic = bool(config.get("periodic_validation", True))
    while session.epoch < until:
        last = session.epoch + 1 == until
        validate = last or (periodic and session.cfg.validates_after(session.epoch + 1))
        metrics = session.run_epoch(config["source"], test=bool(config.get("test")) and last, validate=validate)
        if rank == 0 and config.get("progress_file"):  # the driver's bar follows it (finetune.progress)
            with open(config["progress_file"], "a") as f:
                f.write(json.dumps({"until": until, **metrics}) + "\n")
        if not validate:  # reported (and checkpointed) with its validation pass only
            continue
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                session.save(Path(d) / "ckpt", extra={"source": policy_source_to_json(config["source"]),
                                                      **config.get("extra_state", {})})
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(Path(d) / "ckpt")))
        else:
            ray.train.report(metrics, checkpoint=None)


def run_finetune(cfg: FinetuneConfig, paths: DataPaths, checkpoint: str | None, source: PolicySource, *,
                 storage_path: str, name: str | None = None, resume_from: Any = None,
                 until_epoch: int | None = None, test: bool = True, max_failures: int = 0,
                 extra_state: dict[str, Any] | None = None, periodic_validation: bool = True,
                 progress_file: str | None = None) -> FinetuneResult:
    """Fine-tune on ``cfg.workers`` Ray Train workers (a ``TorchTrainer``) up to ``until_epoch``
    (default ``cfg.epochs``), from ``resume_from`` (a fine-tune checkpoint: directory or Ray
    ``Checkpoint``) when given. Returns the last epoch's metrics, the history and the last
    checkpoint (in ``storage_path``; the Ray ``Checkpoint`` is ``extra["checkpoint"]``).
    ``extra_state`` (JSON values) is stored in every checkpoint's ``finetune.json``.
    The validation split is evaluated, and the run reported and checkpointed, every
    ``cfg.validate_every`` epochs and at ``until_epoch``; ``periodic_validation=False``: at
    ``until_epoch`` only. ``progress_file``: rank 0 appends every epoch's metrics to it as a JSON
    line, and the driver shows them as a bar (``pipelines.finetune.progress``) while it runs."""
    from ray.train import Checkpoint

    from augtrain.pipelines.finetune.progress import EpochWatcher

    if isinstance(resume_from, (str, Path)):
        resume_from = Checkpoint.from_directory(str(resume_from))
    elif resume_from is not None and not isinstance(resume_from, Checkpoint):  # a Tune checkpoint (also path-like)
        resume_from = Checkpoint(path=resume_from.path, filesystem=resume_from.filesystem)

    start = time.perf_counter()
    trainer = torch_trainer(
        finetune_worker,
        {"cfg": cfg, "paths": paths, "checkpoint": str(checkpoint) if checkpoint else None,
         "source": policy_source_to_json(source), "until_epoch": until_epoch, "test": test,
         "resume_from": resume_from, "extra_state": dict(extra_state or {}),
         # the object: a worker unpickling it registers a plug-in modality it never imported
         "modality": get_modality(cfg.modality), "periodic_validation": periodic_validation,
         "progress_file": str(Path(progress_file).absolute()) if progress_file else None},
        workers=cfg.workers, cpus_per_worker=cfg.cpus_per_worker, use_gpu=cfg.use_gpu,
        storage_path=storage_path, name=name or f"finetune-{uuid.uuid4().hex[:8]}", max_failures=max_failures)
    if progress_file:
        with EpochWatcher(progress_file, int(until_epoch or cfg.resolved_epochs)):
            result = fit(trainer)
    else:
        result = fit(trainer)
    if result.error is not None:
        raise result.error
    ckpt = result.checkpoint
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        with ckpt.as_directory() as d:
            history = json.loads((Path(d) / STATE_FILE).read_text())["history"]
    return FinetuneResult(dict(result.metrics or {}), history, ckpt.path if ckpt else None,
                          time.perf_counter() - start, {"checkpoint": ckpt})
