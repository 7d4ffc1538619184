"""The Tune trial: fine-tune with the trial's policy and hyperparameters, reporting (and
checkpointing) every ``epochs_per_iteration`` epochs, resuming from Tune's checkpoint.

A trial's config holds only what is searched: a policy (``policy``: a spec; ``pba``: PBA's
integers; ``schedule``: a schedule dict; ``point``, or its keys at the top level: a point of the
joint space, policy and hyperparameters together, ``tune.space``; ``method``: a row of the
evaluation, looked up in the context's ``methods``) and fine-tune hyperparameters (``lr``,
``weight_decay``, ``label_smoothing``, ``layer_decay``, ``epochs``, ``seed``). Everything else
comes in a ``TrialContext`` bound with ``tune.with_parameters`` (so PBT's logs hold only the
searched values).

Two executors run the same ``FinetuneSession``:

- ``train``: each iteration builds and fits a Ray Train ``TorchTrainer`` (``finetune.workers``
  workers) from the trial's last checkpoint; the trial function itself asks for 0.01 CPU.
  With Train V2, Tune cannot take a Trainer, and the Train-to-Tune callback forwards metrics
  only, so the function reports the Train result's checkpoint to Tune itself (PBT's exploit
  needs Tune checkpoints).
- ``local``: the trial process trains itself (one worker): no Train start-up per iteration.

Either way the validation split is evaluated only at the epochs Tune gets a report for (every
``epochs_per_iteration``-th and the last), so a large validation split costs one pass per report.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augtrain.pipelines.finetune import (
    DataPaths,
    FinetuneConfig,
    FinetuneSession,
    PolicySource,
    load_data,
    run_finetune,
)
from augtrain.tune.pba import PBASpace
from augtrain.tune.space import JointSpace

HPARAMS = ("lr", "weight_decay", "label_smoothing", "layer_decay", "epochs", "seed")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a stage shares."""

    cfg: FinetuneConfig
    paths: DataPaths
    checkpoint: str | None  # pretraining checkpoint
    executor: str = "train"
    epochs_per_iteration: int = 1
    storage: str | None = None  # where the train executor's TorchTrainer runs write
    test: bool = False  # evaluate the test split after the last epoch
    space: PBASpace | None = None
    max_failures: int = 0
    source: Any = None  # policy source when trial configs carry none (a replayed schedule)
    # evaluation rows by name: {"overrides": fine-tune fields (mode, lr, ...), "source": policy}
    methods: dict[str, dict[str, Any]] | None = None
    # further labelled/validation splits every trial also trains on (search.folds; local executor)
    folds: tuple[DataPaths, ...] = ()


def trial_setup(config: dict[str, Any], ctx: TrialContext) -> tuple[FinetuneConfig, PolicySource]:
    """The fine-tune config (context's, with the trial's hyperparameters) and the policy source."""
    if "case" in config:  # an evaluation trial: {"case": {"method": ..., "seed": ...}}
        config = {**config["case"], **{k: v for k, v in config.items() if k != "case"}}
    if "point" in config:
        config = {**config["point"], **{k: v for k, v in config.items() if k != "point"}}
    if ctx.methods is not None and config.get("method") in ctx.methods:
        method = ctx.methods[config["method"]]
        cfg = ctx.cfg.with_updates(**method.get("overrides", {}))
        cfg = cfg.with_updates(**{k: config[k] for k in HPARAMS if k in config})
        return cfg, method["source"]
    if JointSpace.is_point(config):
        policy, hparams = JointSpace.decode(config)
        cfg = ctx.cfg.with_updates(**{k: v for k, v in {**hparams, **config}.items() if k in HPARAMS})
        return cfg, policy
    cfg = ctx.cfg.with_updates(**{k: config[k] for k in HPARAMS if k in config})
    if "pba" in config:
        if ctx.space is None:
            raise ValueError("a 'pba' trial config needs the context's PBA space")
        return cfg, ctx.space.decode(config["pba"])
    if "schedule" in config:
        return cfg, config["schedule"]
    if "policy" in config:
        return cfg, config["policy"]
    if config.get("method", "searched") != "searched":  # evaluation stage: a baseline's policy spec
        return cfg, config["method"]
    return cfg, ctx.source if ctx.source is not None else cfg.policy


def _report(metrics: dict[str, Any], checkpoint: Any) -> None:
    """Report to Tune with a checkpoint: a directory, or a Ray Train ``Checkpoint``."""
    from ray import tune

    if isinstance(checkpoint, str):
        checkpoint = tune.Checkpoint.from_directory(checkpoint)
    elif checkpoint is not None:
        checkpoint = tune.Checkpoint(path=checkpoint.path, filesystem=checkpoint.filesystem)
    tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, checkpoint=checkpoint)


def _run_local(cfg: FinetuneConfig, source: PolicySource, ctx: TrialContext) -> None:
    """The trial in this process: one session per labelled/validation split (the context's, then
    its ``folds``), trained in step; the report holds the first split's metrics with ``val_acc``
    and ``val_loss`` their mean over the splits (each split's accuracy as ``val_acc_split{k}``).
    A checkpoint holds the first split's session, the others' in ``split-{k}`` inside it."""
    from ray import tune

    splits = ("train", "val", "test") if ctx.test else ("train", "val")
    sessions = [FinetuneSession(cfg, load_data(paths, cfg, splits if k == 0 else ("train", "val")), ctx.checkpoint)
                for k, paths in enumerate((ctx.paths, *ctx.folds))]
    session = sessions[0]
    cfg = session.cfg  # its schedule fixed for the labelled count
    trial_id = tune.get_context().get_trial_id()
    restored_from = ""  # the trial that wrote the checkpoint this run started from (a PBT donor, or itself)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restored_from = session.restore(d).get("trial_id", "")
            for k, other in enumerate(sessions[1:], 1):
                other.restore(Path(d) / f"split-{k}")
    while session.epoch < cfg.epochs:
        start_epoch = session.epoch
        target = min(cfg.epochs, start_epoch + ctx.epochs_per_iteration)
        while session.epoch < target:  # validated only where Tune gets a report
            validate = session.epoch + 1 == target
            metrics = session.run_epoch(source, test=ctx.test and session.epoch + 1 == cfg.epochs, validate=validate)
            others = [other.run_epoch(source, validate=validate) for other in sessions[1:]]
        if others:
            every = [metrics, *others]
            metrics = dict(metrics)  # the first session's history keeps its own split's figures
            metrics.update({f"val_acc_split{k}": m["val_acc"] for k, m in enumerate(every)})
            metrics.update(val_acc=sum(m["val_acc"] for m in every) / len(every),
                           val_loss=sum(m["val_loss"] for m in every) / len(every))
        metrics.update(epochs_run=(target - start_epoch) * len(sessions), restored_from=restored_from)
        restored_from = ""
        with tempfile.TemporaryDirectory() as d:
            session.save(Path(d) / "ckpt", extra={"trial_id": trial_id})
            for k, other in enumerate(sessions[1:], 1):
                other.save(Path(d) / "ckpt" / f"split-{k}", extra={"trial_id": trial_id})
            _report(metrics, str(Path(d) / "ckpt"))


def _run_train(cfg: FinetuneConfig, source: PolicySource, ctx: TrialContext) -> None:
    from ray import tune

    if ctx.folds:
        raise ValueError("search.folds needs search.resources.executor: local")

    cfg = cfg.for_labelled(ctx.paths.num_labelled or 0) if cfg.epochs is None else cfg
    trial_id = tune.get_context().get_trial_id()
    resume = tune.get_checkpoint()
    state = _state_of(resume)
    epoch, restored_from = int(state.get("epoch", 0)), state.get("trial_id", "")
    storage = ctx.storage or tempfile.gettempdir()
    while epoch < cfg.epochs:
        target = min(cfg.epochs, epoch + ctx.epochs_per_iteration)
        result = run_finetune(cfg, ctx.paths, ctx.checkpoint, source, storage_path=storage,
                              name=f"trial-{trial_id}-{uuid.uuid4().hex[:6]}-e{target}", resume_from=resume,
                              until_epoch=target, test=ctx.test and target == cfg.epochs,
                              max_failures=ctx.max_failures, extra_state={"trial_id": trial_id},
                              periodic_validation=False)
        _report(dict(result.metrics, epochs_run=target - epoch, restored_from=restored_from),
                result.extra["checkpoint"])
        resume, epoch, restored_from = result.extra["checkpoint"], target, ""


def _state_of(checkpoint: Any) -> dict[str, Any]:
    """The ``finetune.json`` of a fine-tune checkpoint (empty without one)."""
    if checkpoint is None:
        return {}
    import json

    from augtrain.pipelines.finetune import STATE_FILE

    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / STATE_FILE).read_text())


def finetune_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function: one trial of a search stage (see the module docstring)."""
    cfg, source = trial_setup(config, ctx)
    if ctx.executor == "local":
        _run_local(cfg, source, ctx)
    elif ctx.executor == "train":
        _run_train(cfg, source, ctx)
    else:
        raise ValueError(f"search.resources.executor must be 'train' or 'local', got {ctx.executor!r}")
