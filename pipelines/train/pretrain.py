"""The pretraining driver: an experiment config -> a ``TorchTrainer`` of DeepSpeed workers.

Everything that can be wrong with the input (config keys, missing shards, unknown model or
policy, an output folder that already holds another run) is found by ``plan_pretraining``
on the driver, before any cluster work. ``run_pretraining`` then starts one Ray Train
worker per ``cluster.workers``; each runs ``train_loop.pretrain`` on its own slice of the
streamed shards. A worker or node lost mid-run makes Ray Train restart the group
(``FailureConfig``); the workers then resume from the newest complete checkpoint in the
shared output folder, data position included.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from augtrain.pipelines.train.checkpoint import latest_checkpoint, list_checkpoints, read_metadata
from augtrain.pipelines.train.config import ClusterSection, ExperimentConfig, save_resolved
from augtrain.pipelines.train.engine import EngineConfig, for_world, resolve_schedule
from augtrain.pipelines.data.reader import ReaderConfig, ShardReader
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.modalities import DecodeSpec, get_modality
from augtrain.pipelines.train.loop import LoopConfig, pretrain, report_epochs
from augtrain.pipelines.train.progress import MetricsWatcher
from augtrain.pipelines.train.worker_augment import WorkerAugment, choose_placement
from augtrain.pipelines.trainer import fit, torch_trainer

log = logging.getLogger(__name__)


@dataclass
class PretrainPlan:
    """What the workers run, resolved and checked on the driver."""

    config: ExperimentConfig
    reader: ShardReader  # augments in its read tasks (CPU)
    encoded_reader: ShardReader  # passes encoded images through, for augmentation in the worker
    objective_spec: dict[str, Any]
    engine: EngineConfig
    loop: LoopConfig
    policy: dict[str, Any]
    num_views: int
    parameters: int
    steps_per_epoch: int
    resume_from: str | None
    init_from: str | None = None  # model.init, resolved to one checkpoint
    started: dict[str, Any] = dataclasses.field(default_factory=dict)  # weights started from the data, after it

    def _accumulation(self) -> str:
        """Micro-batches per optimizer step: one count, or one per worker count of an elastic run."""
        cluster = self.config.cluster
        if not cluster.elastic:
            return str(for_world(self.engine, cluster.workers).grad_accum_steps)
        counts = [f"{for_world(self.engine, w).grad_accum_steps} on {w}"
                  for w in range(cluster.min_workers, cluster.max_workers + 1)]
        return f"({', '.join(counts)}; {self.engine.global_batch_size} samples a step)"

    def describe(self) -> str:
        c = self.config
        return (f"{c.name}: {c.model.objective} on {c.model.encoder} ({self.parameters / 1e6:.2f} M parameters), "
                f"{self.reader.shards.num_samples} samples in {len(self.reader.shards.urls)} shards, policy "
                f"{c.augment.policy} ({self.num_views} view{'s' * (self.num_views > 1)}), {c.cluster.describe_workers()} workers x "
                f"micro-batch {self.engine.micro_batch_size} x accumulation {self._accumulation()}, "
                f"ZeRO-{self.engine.zero_stage}, {self.steps_per_epoch} steps/epoch x {self.loop.epochs} epochs"
                + (f", resuming from {self.resume_from}" if self.resume_from else "")
                + (f", starting from the weights of {self.init_from}" if self.init_from and not self.resume_from else ""))


def plan_pretraining(config: ExperimentConfig, resume: str | None = None) -> PretrainPlan:
    """Resolve and check everything; raises ValueError naming what is wrong."""
    from augtrain.models import create_objective

    modality = get_modality(config.data.modality)
    shards = open_shards(config.data.train, modality=modality.name)
    modality.check_model(config.model.encoder, config.model.objective)
    objective = create_objective(config.model.objective, encoder=config.model.encoder,
                                 encoder_kwargs=dict(config.model.encoder_kwargs),
                                 **_class_count(config, shards.class_names))
    if getattr(objective, "uses_labels", False) and config.data.label_key is None:
        raise ValueError(f"model.objective {config.model.objective!r} trains on labelled samples: set data.label_key "
                         "(cls for shards written by augtrain)")
    init_from, started = _initial_weights(config, objective)
    views = int(objective.num_views)
    policy = modality.parse_policy(config.augment.policy)
    transform = modality.sample_transform(policy, size=config.augment.size, views=views,
                                          backend=config.augment.backend)
    decode = DecodeSpec(label_key=config.data.label_key, channels=config.data.channels, modality=modality.name)
    reader = ShardReader(shards, ReaderConfig(seed=config.seed, strict=config.data.strict, decode=decode,
                                              block_rows=config.data.block_rows, read_cpus=config.data.read_cpus),
                         transform)
    encoded_reader = ShardReader(shards, dataclasses.replace(reader.config, decode=dataclasses.replace(
        decode, decode_images=False)))
    engine = batch_for_workers(config.engine_config(), config.cluster)
    if engine.global_batch_size is not None:  # the same optimizer steps at any worker count
        steps_per_epoch = max(1, shards.num_samples // engine.global_batch_size)
    else:
        per_worker = shards.num_samples // config.cluster.workers
        steps_per_epoch = max(1, per_worker // engine.micro_batch_size // engine.grad_accum_steps)
    epochs = int(config.loop.get("epochs", LoopConfig.epochs))
    if "total_steps" not in config.engine:  # the LR schedule spans the whole run
        try:
            engine = resolve_schedule(engine, steps_per_epoch * epochs)
        except ValueError as exc:
            raise ValueError(f"{exc} ({shards.num_samples} samples, {config.cluster.describe_workers()} workers: "
                             f"{steps_per_epoch} steps/epoch x {epochs} epochs)") from None
    out = config.output_dir
    loop = config.loop_config(checkpoint_dir=os.path.abspath(os.path.join(out, "checkpoints")),
                              metrics_dir=os.path.abspath(os.path.join(out, "metrics")))
    if config.augment.placement == "worker" and not modality.worker_augment:
        raise ValueError(f"augment.placement 'worker': the {modality.name} modality augments in the reader only")
    if config.augment.placement == "worker" and config.augment.size is None:
        raise ValueError("augment.placement 'worker' needs augment.size (DALI batches have one shape)")
    resume_from = _resume_source(loop.checkpoint_dir, resume)
    return PretrainPlan(config, reader, encoded_reader, objective.spec, engine, loop, policy.to_dict(), views,
                        sum(p.numel() for p in objective.parameters()), steps_per_epoch, resume_from, init_from,
                        started)


def _class_count(config: ExperimentConfig, class_names: list[str] | None) -> dict[str, Any]:
    """The objective's arguments, with ``num_classes`` from the shards' manifest for an objective
    that takes one (a conditional VAE) when the config leaves it out; a count that disagrees with
    the manifest's classes is refused."""
    from augtrain.models.registry import OBJECTIVES

    kwargs = dict(config.model.kwargs)
    if "num_classes" not in inspect.signature(OBJECTIVES.get(config.model.objective)).parameters:
        return kwargs
    if class_names and kwargs.get("num_classes", len(class_names)) != len(class_names):
        raise ValueError(f"model.kwargs.num_classes is {kwargs['num_classes']} but {config.data.train} has "
                         f"{len(class_names)} classes")
    if "num_classes" not in kwargs:
        if not class_names:
            raise ValueError(f"model.objective {config.model.objective!r} needs model.kwargs.num_classes: "
                             f"{config.data.train} names no classes in its manifest")
        kwargs["num_classes"] = len(class_names)
    return kwargs


def _initial_weights(config: ExperimentConfig, objective: Any) -> tuple[str | None, dict[str, torch.Tensor]]:
    """``model.init`` resolved to one checkpoint and checked against the objective (every weight
    of it is the objective's, same shape); the weights it leaves at their initialisation are logged.
    An objective that starts its class embeddings from the labelled images (a conditional VAE's
    ``start_classes``) gets them here, from the training shards read on the driver: they are
    returned, to be loaded after the checkpoint's weights."""
    if config.model.init is None:
        return None, {}
    from augtrain.pipelines.train.checkpoint import initial_weights, resolve_checkpoint

    try:
        path = resolve_checkpoint(config.model.init)
        state, fresh = initial_weights(path, objective)
    except FileNotFoundError as exc:
        raise ValueError(f"model.init: {exc}") from None
    started: dict[str, torch.Tensor] = {}
    if hasattr(objective, "start_classes"):
        from augtrain.pipelines.finetune.subsets import load_arrays
        from augtrain.pipelines.modalities import get_modality

        objective.load_state_dict(state, strict=False)
        loop = config.loop_config()
        values, labels, _ = load_arrays(config.data.train, channels=config.data.channels,
                                        label_key=config.data.label_key or "cls", size=config.augment.size)
        try:
            started = objective.start_classes(get_modality("image").to_tensor(values, loop.mean, loop.std),
                                              torch.from_numpy(labels))
        except ValueError as exc:
            raise ValueError(f"{config.data.train}: {exc}") from None
        fresh = [name for name in fresh if name not in started]
        log.info("model.init: %s started from the %d labelled images of %s", ", ".join(started), len(labels),
                 config.data.train)
    log.info("model.init %s: every weight but %s", path, ", ".join(fresh) if fresh else "none")
    return str(path), started


def batch_for_workers(engine: EngineConfig, cluster: ClusterSection) -> EngineConfig:
    """The engine config with its global batch checked against the worker counts the run may have.
    An elastic run keeps its global batch at every count: ``global_batch_size`` (when the config
    leaves it out, micro-batch x accumulation x MAX workers) must be whole micro-batches on each
    count from MIN to MAX, so that the peak LR and the schedule do not depend on the count and a
    resize changes only how many micro-batches each worker accumulates. A fixed count with
    ``global_batch_size`` set is checked the same way, before Ray starts."""
    if cluster.elastic and engine.global_batch_size is None:
        engine = replace(engine, global_batch_size=engine.micro_batch_size * engine.grad_accum_steps
                         * cluster.max_workers)
    for world in range(cluster.min_workers, cluster.max_workers + 1):
        try:
            for_world(engine, world)
        except ValueError as exc:
            raise ValueError(f"cluster.workers {cluster.describe_workers()}: {exc}") from None
    return engine


def _resume_source(checkpoint_dir: str, resume: str | None) -> str | None:
    existing = list_checkpoints(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []
    if resume is None:
        if existing:
            raise ValueError(f"{checkpoint_dir} already holds {len(existing)} checkpoint(s) of an earlier run: "
                             "pass --resume latest to continue it, or choose another name or output")
        return None
    if resume == "latest":
        latest = latest_checkpoint(checkpoint_dir) if existing else None
        if latest is None:
            log.warning("--resume latest: no checkpoint in %s yet, starting from scratch", checkpoint_dir)
        return str(latest) if latest else None
    if not os.path.isfile(os.path.join(resume, "augtrain.json")):
        raise ValueError(f"--resume {resume}: not a checkpoint directory (no augtrain.json)")
    return os.path.abspath(resume)


def starting_objective(spec: dict[str, Any], init_from: str | None, resuming: bool,
                       started: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The objective a worker trains: built from its spec, with the weights of ``init_from``
    (``model.init``) and then those ``started`` from the data on the driver, unless the run
    resumes, whose checkpoint holds every weight."""
    from augtrain.models import build_from_spec
    from augtrain.pipelines.train.checkpoint import initial_weights

    objective = build_from_spec(spec)
    if init_from is not None and not resuming:
        objective.load_state_dict(initial_weights(init_from, objective)[0], strict=False)
        objective.load_state_dict(dict(started or {}), strict=False)
    return objective


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from the newest checkpoint (after a failure too) and train."""
    import ray.train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    loop: LoopConfig = config["loop"]
    latest = latest_checkpoint(loop.checkpoint_dir) if os.path.isdir(loop.checkpoint_dir) else None
    source = str(latest) if latest is not None else config["resume_from"]
    reader, make_views = config["reader"], None
    experiment: ExperimentConfig = config["experiment"]
    cuda = torch.cuda.is_available() and experiment.augment.size is not None and reader.modality.worker_augment
    if choose_placement(experiment.augment.placement, cuda) == "worker":
        engine: EngineConfig = config["engine"]
        reader = config["encoded_reader"]
        make_views = WorkerAugment(config["policy"], size=experiment.augment.size, views=config["num_views"],
                                   batch_size=engine.micro_batch_size, channels=experiment.data.channels or 3,
                                   seed=experiment.seed, mean=loop.mean, std=loop.std,
                                   local_rank=ray.train.get_context().get_local_rank())
        log.info("augmenting in the worker with DALI (%s)", "GPU" if torch.cuda.is_available() else "CPU")
    torch.manual_seed(loop.seed)  # the model's initial weights: the same on every rank and in every run
    pretrain(starting_objective(config["objective"], config["init_from"], resuming=source is not None,
                                started=config["started"]),
             reader, config["engine"], loop,
             resume_from=source, config=config["config"], policy=config["policy"],
             on_metrics=report_epochs, make_views=make_views)


def run_pretraining(plan: PretrainPlan) -> dict[str, Any]:
    """Run the plan on the connected Ray cluster; returns where the results are."""
    import ray

    cluster = plan.config.cluster
    use_gpu = bool(ray.cluster_resources().get("GPU", 0)) if cluster.use_gpu == "auto" else bool(cluster.use_gpu)
    out = os.path.abspath(plan.config.output_dir)
    save_resolved(plan.config, os.path.join(out, "config.yaml"))
    trainer = torch_trainer(
        _worker,
        {"objective": plan.objective_spec, "reader": plan.reader, "encoded_reader": plan.encoded_reader,
         "num_views": plan.num_views, "engine": plan.engine, "loop": plan.loop, "resume_from": plan.resume_from,
         "init_from": plan.init_from, "started": plan.started,
         "experiment": plan.config, "config": plan.config.resolved(), "policy": plan.policy},
        workers=cluster.workers, cpus_per_worker=cluster.cpus_per_worker, use_gpu=use_gpu,
        extra_resources=cluster.worker_resources, placement_strategy=cluster.placement_strategy,
        storage_path=os.path.join(out, "ray"), name="train", max_failures=cluster.max_failures,
        resize_interval_s=cluster.resize_interval_s)
    metrics_csv = os.path.join(plan.loop.metrics_dir, "metrics.csv")
    total = plan.steps_per_epoch * plan.loop.epochs
    if plan.loop.max_steps is not None:
        total = min(total, plan.loop.max_steps)
    start = read_metadata(plan.resume_from)["optimizer_steps"] if plan.resume_from else 0
    with MetricsWatcher(metrics_csv, total, plan.loop.epochs, start_step=start, desc=plan.config.name):
        fit(trainer)
    latest = latest_checkpoint(plan.loop.checkpoint_dir)
    plot = None
    if os.path.exists(metrics_csv):
        from augtrain.pipelines.train.loss_plot import plot_loss_curve

        plot = plot_loss_curve(metrics_csv, os.path.join(plan.loop.metrics_dir, "loss.png"), title=plan.config.name)
    return {"output": out, "checkpoint": str(latest) if latest else None, "metrics": metrics_csv, "loss_plot": plot}
