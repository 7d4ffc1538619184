"""Fine-tuning a pretrained encoder on a labelled subset, and evaluating it on a held-out split.

Three modes: ``full`` (every weight trains, optionally with layer-wise LR decay), ``linear``
(a linear probe: the encoder is frozen, BatchNorm statistics included) and ``scratch`` (the
same architecture from random weights: the control). The labelled subset (a count or a
fraction of the pool, stratified and seeded) is written once as a small shard set
(``finetune_data.prepare_subsets``) and held in each worker's memory; every epoch it goes
through the augmentation policy in force at that epoch (a policy, or a schedule of them),
with a generator derived from (seed, epoch, rank).

    cfg = FinetuneConfig(labels=600, val_labels=1000, mode="full", policy="trivialaugment")
    paths = prepare_data(cfg, out_dir)                       # driver, once
    session = FinetuneSession(cfg, load_data(paths, cfg), checkpoint="runs/fmnist-simclr")
    for epoch in range(cfg.epochs):
        metrics = session.run_epoch(policy_source)          # train, then validate
    session.evaluate("test")

``run_finetune`` runs the same session under a Ray Train ``TorchTrainer`` (N workers, DDP on
gloo or NCCL); ``finetune_worker`` is its per-worker entry. Checkpoints are small directories
(``model.safetensors``, ``optimizer.safetensors``, ``finetune.json``) read back without
unpickling anything.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from augtrain.augment import Policy, Schedule, augment_rng, make_sample_transform, normalize_batch, parse_policy
from augtrain.models import Classifier, build_from_spec, create_model
from augtrain.pipelines.checkpoint import latest_checkpoint, load_model, read_metadata
from augtrain.pipelines.engine import lr_factor
from augtrain.pipelines.finetune_data import SubsetPaths, load_arrays, prepare_subsets

STATE_FILE = "finetune.json"
PolicySource = str | dict[str, Any] | Policy | Schedule


class FinetuneConfig(BaseModel):
    """The ``finetune`` section of an experiment file (see ``configs/finetune-*.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: str | list[str] | None = None  # pool of labelled shards (default: the experiment's data.train)
    test: str | list[str] | None = None  # held-out evaluation split (default: data.test)
    labels: int | float = 0.01  # labelled subset: a count (int) or a fraction of the pool (float in (0, 1])
    val_labels: int | float = 0  # validation subset drawn from the rest of the pool (0: none)
    label_seed: int = 0
    label_key: str = "cls"
    mode: Literal["full", "linear", "scratch"] = "full"
    encoder: str | None = None  # registered encoder when no checkpoint is given (scratch)
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    probe_batch_norm: bool = False  # linear mode: BatchNorm (no affine) before the linear layer, as MAE
    # keep the first k layers of the pretrained projection head on the encoder (SimCLRv2's
    # fine-tuning from the head's middle layer; objectives with a projection head only)
    head_layers: int = Field(0, ge=0)
    channels: Literal[1, 3] = 3
    size: int | None = Field(None, ge=1)  # input side; None keeps the stored size
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    policy: str = "basic"  # augmentation of the labelled subset (any parse_policy spec)
    backend: Literal["auto", "albumentations", "numpy", "dali"] = "auto"
    # the schedule's length: ``epochs`` when given, else ``steps`` optimizer steps rounded up to
    # whole epochs; ``steps: auto`` scales them with the labelled-set size (``auto_steps``)
    epochs: int | None = Field(None, ge=1)
    steps: int | Literal["auto"] = "auto"
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    layer_decay: float = Field(1.0, gt=0, le=1)  # LR of block i = lr * layer_decay ** (blocks - i)
    warmup_epochs: float | None = Field(None, ge=0)  # absolute; when None, warmup_fraction of the run
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False

    @field_validator("labels", "val_labels")
    @classmethod
    def _count_or_fraction(cls, value: int | float, info: ValidationInfo) -> int | float:
        if isinstance(value, float) and value > 1.0 and not value.is_integer():
            raise ValueError(f"{value} is neither a fraction in (0, 1] nor a whole count")
        if value < 0 or (info.field_name == "labels" and value == 0):
            raise ValueError(f"must be {'> 0' if info.field_name == 'labels' else '>= 0'}, got {value}")
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        parse_policy(value)  # raises PolicyError naming the op
        return value

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if isinstance(self.steps, int) and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or 'auto', got {self.steps}")
        if self.epochs is not None and self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be <= epochs ({self.epochs})")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} need the same number of entries")
        return self

    def with_updates(self, **values: Any) -> FinetuneConfig:
        """A validated copy with ``values`` replaced."""
        return FinetuneConfig.model_validate({**self.model_dump(), **values})

    def for_labelled(self, n: int) -> FinetuneConfig:
        """This config with its length fixed for ``n`` labelled samples: ``epochs`` from
        ``steps`` unless ``epochs`` is given."""
        return self if self.epochs is not None else self.with_updates(
            epochs=budget_epochs(self.steps, n, self.batch_size))

    @property
    def resolved_epochs(self) -> int:
        """``epochs`` of a config that ``for_labelled`` has fixed."""
        if self.epochs is None:
            raise ValueError("finetune: the schedule is not fixed yet (call for_labelled with the labelled count)")
        return self.epochs

    @property
    def resolved_warmup_epochs(self) -> float:
        """Warmup in epochs: ``warmup_epochs`` when given, else ``warmup_fraction`` of the run."""
        if self.warmup_epochs is not None:
            return min(self.warmup_epochs, self.resolved_epochs)
        return self.warmup_fraction * self.resolved_epochs


def auto_steps(n: int, batch_size: int) -> int:
    """Optimizer steps for ``n`` labelled samples: 30 passes over the data, at least 500 steps
    and at most 10,000 (the idea of BiT-HyperRule, Kolesnikov et al. 2020: the schedule's length
    from the dataset's size, 500 steps below 20k examples and 10k above, so that 100 labels
    and 60,000 both get a sensible run without tuning). 100 or 600 labels at batch 64: 500
    steps; 10,000: 4,688; 60,000: 10,000."""
    return int(min(10_000, max(500, round(30 * n / batch_size))))


def budget_epochs(steps: int | str, n: int, batch_size: int) -> int:
    """Whole epochs that hold ``steps`` optimizer steps (``auto``: ``auto_steps``) over ``n``
    labelled samples at ``batch_size`` (the last batch of an epoch may be short)."""
    if n < 1:
        raise ValueError(f"finetune: no labelled samples to plan a schedule for (n={n})")
    steps = auto_steps(n, batch_size) if steps == "auto" else int(steps)
    return max(1, math.ceil(steps / math.ceil(n / batch_size)))


def parse_finetune_config(data: dict[str, Any] | None, where: str = "<config>", **defaults: Any) -> FinetuneConfig:
    """Validate a ``finetune`` mapping; ``defaults`` fill keys it leaves out. Errors name the key."""
    values = {**{k: v for k, v in defaults.items() if v is not None}, **(data or {})}
    try:
        return FinetuneConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("int", "float")))
        key = f"finetune.{path}" if path else "finetune"
        raise ValueError(f"{where}: {key}: {error['msg']}") from None


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class DataPaths:
    """Where a fine-tuning run reads: the labelled subset, the validation subset, the test split."""

    labelled: str
    val: str | None
    test: str | list[str] | None
    num_classes: int
    class_names: list[str] | None = None
    num_labelled: int | None = None  # samples in the labelled subset


@dataclass
class FinetuneData:
    """Arrays held by one worker: ``images`` uint8 [N, H, W, C], ``labels`` int64 [N] per split."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None
    num_classes: int


def prepare_data(cfg: FinetuneConfig, out_dir: str) -> DataPaths:
    """Choose and write the labelled and validation subsets under ``out_dir`` (reused when present)."""
    if cfg.train is None:
        raise ValueError("finetune.train: no shards for the labelled pool (set finetune.train or data.train)")
    subsets: SubsetPaths = prepare_subsets(cfg.train, os.path.abspath(out_dir), cfg.labels, cfg.label_seed,
                                           cfg.val_labels, cfg.label_key)
    names = subsets.record["class_names"]
    return DataPaths(subsets.labelled, subsets.val, _absolute(cfg.test), len(names), names,
                     int(subsets.record["labelled"]))


def _absolute(spec: str | list[str] | None) -> str | list[str] | None:
    """Local paths made absolute (trials run in their own working directories); URLs kept."""
    from augtrain.pipelines.storage import is_url

    if isinstance(spec, list):
        return [_absolute(s) for s in spec]
    return spec if spec is None or is_url(spec) else os.path.abspath(spec)


def load_data(paths: DataPaths, cfg: FinetuneConfig, splits: tuple[str, ...] = ("train", "val", "test")) -> FinetuneData:
    """Decode the splits named in ``splits`` into memory (the test split is 10,000 images at most
    for the datasets this is meant for; larger ones should be evaluated by streaming)."""
    def read(spec: str | list[str] | None, resize: bool) -> tuple[np.ndarray, np.ndarray] | None:
        if spec is None:
            return None
        images, labels, _ = load_arrays(spec, cfg.channels, cfg.label_key, size=cfg.size if resize else None)
        return images, labels

    train = read(paths.labelled, resize=False)
    return FinetuneData(train, read(paths.val, True) if "val" in splits else None,
                        read(paths.test, True) if "test" in splits else None, paths.num_classes)


# ---------------------------------------------------------------- model


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a pretraining output root (its ``latest``)."""
    path = Path(path).absolute()
    if (path / "augtrain.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: not a checkpoint (no augtrain.json) and no complete checkpoint under it")
    return found


def load_encoder(checkpoint: str | os.PathLike, pretrained: bool = True, head_layers: int = 0) -> nn.Module:
    """The encoder of a pretraining checkpoint (``forward_features: [B, C, H, W] -> [B, D]``), with
    the first ``head_layers`` layers of its projection head; ``pretrained=False`` rebuilds the
    same architecture with fresh weights."""
    path = resolve_checkpoint(checkpoint)
    if pretrained:
        model = load_model(path)
    else:
        spec = read_metadata(path)["model"]
        if spec is None:
            raise ValueError(f"{path}: no model spec saved, so the architecture cannot be rebuilt")
        if "objective" in spec and not head_layers:
            return create_model(spec["encoder"], **spec.get("encoder_kwargs", {}))
        model = build_from_spec(spec)
    export = getattr(model, "export_encoder", None)
    if head_layers and (export is None or "head_layers" not in inspect.signature(export).parameters):
        raise ValueError(f"{path}: finetune.head_layers needs an objective with a projection head (SimCLR), "
                         f"not {type(model).__name__}")
    if export is None:
        return model
    return export(head_layers=head_layers) if head_layers else export()


def build_classifier(cfg: FinetuneConfig, checkpoint: str | None, num_classes: int) -> Classifier:
    """Encoder (pretrained, or fresh for ``scratch``) + linear head, seeded by ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    if checkpoint is not None:
        encoder = load_encoder(checkpoint, pretrained=cfg.mode != "scratch", head_layers=cfg.head_layers)
    elif cfg.mode == "scratch" and cfg.encoder:
        encoder = create_model(cfg.encoder, **cfg.encoder_kwargs)
    else:
        raise ValueError(f"finetune.mode {cfg.mode!r} needs a pretraining checkpoint (--checkpoint)"
                         + ("" if cfg.mode != "scratch" else " or finetune.encoder"))
    linear = cfg.mode == "linear"
    return Classifier(encoder, num_classes, freeze_encoder=linear, batch_norm=linear and cfg.probe_batch_norm)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's blocks from input to output: top-level children, with containers of blocks
    (``Sequential``/``ModuleList`` whose children are themselves modules with children) opened."""
    blocks: list[nn.Module] = []
    for child in encoder.children():
        inner = list(child.children())
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and inner and all(list(c.children()) for c in inner):
            blocks += inner
        elif any(p.numel() for p in child.parameters()):
            blocks.append(child)
    return blocks


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Optimizer groups: LR scale ``layer_decay ** (blocks - i)`` for encoder block i (head: 1),
    no weight decay on 1-d parameters (biases, norms). Frozen parameters are left out."""
    blocks = encoder_blocks(model.encoder)
    depth_of: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth_of[id(p)] = i
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = len(blocks) if not name.startswith("encoder.") else depth_of.get(id(p), 0)
        scale = cfg.layer_decay ** (len(blocks) - depth)
        groups.setdefault((scale, p.ndim <= 1), []).append(p)
    return [{"params": ps, "lr_scale": scale, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
            for (scale, no_decay), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))]


def lr_at(cfg: FinetuneConfig, progress: float) -> float:
    """Peak-relative LR at ``progress`` epochs: linear warmup, then cosine to 0 at ``cfg.epochs``
    (a config fixed by ``for_labelled``)."""
    steps = 1000  # resolution of the epoch-continuous schedule
    return lr_factor(int(progress * steps), int(cfg.resolved_warmup_epochs * steps), cfg.resolved_epochs * steps)


# ---------------------------------------------------------------- policies per epoch


def policy_source_to_json(source: PolicySource) -> str | dict[str, Any]:
    """A policy spec string, or a JSON dict (policy or schedule), for configs and checkpoints."""
    if isinstance(source, Schedule):
        return source.to_dict()
    if isinstance(source, Policy):
        return source.to_dict()
    return source


def policy_at(source: PolicySource, epoch: int) -> Policy:
    """The policy in force at ``epoch``: a fixed policy, or a schedule's entry."""
    if isinstance(source, Schedule):
        return source.policy_at(epoch)
    if isinstance(source, dict) and "schedule" in source:
        return Schedule.from_dict(source).policy_at(epoch)
    return parse_policy(source)


# ---------------------------------------------------------------- one worker's training


def epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's sample order for ``epoch``: one seeded permutation, dealt round-robin, every
    rank getting the same count (``n // world_size``) so that DDP steps stay in lockstep."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, epoch, 7])).permutation(n)
    per_rank = n // world_size
    return perm[rank::world_size][:per_rank]


class FinetuneSession:
    """Model, optimizer and epoch counter of one worker; trains and evaluates on in-memory arrays."""

    def __init__(self, cfg: FinetuneConfig, data: FinetuneData, checkpoint: str | None, *,
                 rank: int = 0, world_size: int = 1, wrap: Any = None, device: str | torch.device = "cpu") -> None:
        cfg = cfg.for_labelled(len(data.train[1]))
        self.cfg, self.data, self.rank, self.world_size = cfg, data, rank, world_size
        self.device = torch.device(device)
        self.model = build_classifier(cfg, checkpoint, data.num_classes).to(self.device)
        self.module = self.model  # unwrapped, for saving
        if wrap is not None:  # e.g. ray.train.torch.prepare_model (DDP)
            self.model = wrap(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.module, cfg), lr=cfg.lr)
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, C] -> float [B, C, H, W] on the device."""
        return normalize_batch(images, self.cfg.mean, self.cfg.std).to(self.device)

    def _augment(self, policy: Policy, indices: np.ndarray) -> np.ndarray:
        images = self.data.train[0]
        transform = make_sample_transform(policy, size=self.cfg.size, views=1, backend=self.cfg.backend)
        rng = augment_rng(self.cfg.seed, self.epoch, self.rank)
        return np.stack([transform(images[i], rng)["image"] for i in indices])

    def _set_lr(self, progress: float) -> float:
        factor = lr_at(self.cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * group["lr_scale"] * factor
        return self.cfg.lr * factor

    def train_epoch(self, policy: Policy) -> dict[str, float]:
        """One pass over this rank's share of the labelled subset with ``policy``."""
        cfg = self.cfg
        order = epoch_order(len(self.data.train[1]), cfg.seed, self.epoch, self.rank, self.world_size)
        images, labels = self._augment(policy, order), self.data.train[1][order]
        steps = max(1, math.ceil(len(order) / cfg.batch_size))
        self.model.train()
        loss_sum, correct, lr = 0.0, 0, cfg.lr
        for step in range(steps):
            lo, hi = step * cfg.batch_size, min((step + 1) * cfg.batch_size, len(order))
            lr = self._set_lr(self.epoch + step / steps)
            x, y = self._inputs(images[lo:hi]), torch.as_tensor(labels[lo:hi], device=self.device)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss.detach()) * (hi - lo)
            correct += int((logits.argmax(1) == y).sum())
        self.epoch += 1
        return {"train_loss": loss_sum / max(len(order), 1), "train_acc": correct / max(len(order), 1), "lr": lr}

    @torch.no_grad()
    def _held_out_logits(self, split: Literal["val", "test"]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, labels) per evaluation batch of a held-out split, in the split's order."""
        images, labels = getattr(self.data, split)
        self.module.eval()
        for lo in range(0, len(labels), self.cfg.eval_batch_size):
            x = self._inputs(images[lo:lo + self.cfg.eval_batch_size])
            y = torch.as_tensor(labels[lo:lo + self.cfg.eval_batch_size], device=self.device)
            yield self.module(x), y

    def evaluate(self, split: Literal["val", "test"]) -> dict[str, float]:
        """Accuracy and loss on a whole held-out split (every rank computes it; it is small)."""
        if getattr(self.data, split) is None:
            return {}
        correct, loss_sum, n = 0, 0.0, 0
        for logits, y in self._held_out_logits(split):
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return {f"{split}_acc": correct / n, f"{split}_loss": loss_sum / n}

    def predict(self, split: Literal["val", "test"]) -> np.ndarray:
        """The predicted class of every sample of a held-out split, in the split's order."""
        if getattr(self.data, split) is None:
            raise ValueError(f"no {split} split was loaded")
        return np.concatenate([logits.argmax(1).cpu().numpy() for logits, _ in self._held_out_logits(split)])

    def run_epoch(self, source: PolicySource, test: bool = False, validate: bool = True) -> dict[str, float]:
        """Train one epoch with the policy in force, validate (unless ``validate`` is False: a
        search that reads the validation split only when it reports) and test when asked; the
        metrics row also goes to ``history``."""
        start = time.perf_counter()
        policy = policy_at(source, self.epoch)
        metrics: dict[str, Any] = {"epoch": self.epoch + 1, **self.train_epoch(policy)}
        if validate:
            metrics.update(self.evaluate("val"))
        if test:
            metrics.update(self.evaluate("test"))
        metrics["epoch_s"] = time.perf_counter() - start
        metrics["policy"] = policy.to_string()
        self.history.append(metrics)
        return metrics

    # ------------------------------------------------------------ checkpoints

    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write model, optimizer and state to ``directory`` (created; written under a temporary
        name and renamed)."""
        directory = Path(directory)
        tmp = directory.with_name(f".tmp-{directory.name}-{uuid.uuid4().hex[:6]}")
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()},
                  str(tmp / "model.safetensors"))
        tensors, meta = _flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {"epoch": self.epoch, "history": self.history, "optimizer": meta,
                 "config": self.cfg.model_dump(mode="json"), **(extra or {})}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
        return directory

    def restore(self, directory: str | os.PathLike, optimizer: bool = True) -> dict[str, Any]:
        """Load what ``save`` wrote; returns the state (epoch, history, extras). ``optimizer=False``
        loads the weights only (to evaluate a checkpoint of another mode: a linear probe's
        optimizer holds the head alone)."""
        directory = Path(directory)
        self.module.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        state = json.loads((directory / STATE_FILE).read_text())
        if optimizer:
            tensors = load_file(str(directory / "optimizer.safetensors"))
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        return state


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors by name, JSON remainder): stored without pickle."""
    tensors, per_param = {}, {}
    for pid, values in state["state"].items():
        entry = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                entry[key] = value
        per_param[str(pid)] = entry
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"state": per_param, "param_groups": groups}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(entry) for pid, entry in meta["state"].items()}
    for name, value in tensors.items():
        pid, _, key = name.partition(".")
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- running a whole fine-tune


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
    every_epoch = bool(config.get("validate_every_epoch", True))
    while session.epoch < until:
        last = session.epoch + 1 == until
        metrics = session.run_epoch(config["source"], test=bool(config.get("test")) and last,
                                    validate=every_epoch or last)
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
                 extra_state: dict[str, Any] | None = None, validate_every_epoch: bool = True) -> FinetuneResult:
    """Fine-tune on ``cfg.workers`` Ray Train workers (a ``TorchTrainer``) up to ``until_epoch``
    (default ``cfg.epochs``), from ``resume_from`` (a fine-tune checkpoint: directory or Ray
    ``Checkpoint``) when given. Returns the last epoch's metrics, the history and the last
    checkpoint (in ``storage_path``; the Ray ``Checkpoint`` is ``extra["checkpoint"]``).
    ``extra_state`` (JSON values) is stored in every checkpoint's ``finetune.json``.
    ``validate_every_epoch=False``: the validation split is evaluated at ``until_epoch`` only."""
    from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if isinstance(resume_from, (str, Path)):
        resume_from = Checkpoint.from_directory(str(resume_from))
    elif resume_from is not None and not isinstance(resume_from, Checkpoint):  # a Tune checkpoint (also path-like)
        resume_from = Checkpoint(path=resume_from.path, filesystem=resume_from.filesystem)

    start = time.perf_counter()
    trainer = TorchTrainer(
        finetune_worker,
        train_loop_config={"cfg": cfg, "paths": paths, "checkpoint": str(checkpoint) if checkpoint else None,
                           "source": policy_source_to_json(source), "until_epoch": until_epoch, "test": test,
                           "resume_from": resume_from, "extra_state": dict(extra_state or {}),
                           "validate_every_epoch": validate_every_epoch},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=name or f"finetune-{uuid.uuid4().hex[:8]}", storage_path=os.path.abspath(storage_path),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    ckpt = result.checkpoint
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        with ckpt.as_directory() as d:
            history = json.loads((Path(d) / STATE_FILE).read_text())["history"]
    return FinetuneResult(dict(result.metrics or {}), history, ckpt.path if ckpt else None,
                          time.perf_counter() - start, {"checkpoint": ckpt})


def finetune_config_from_experiment(experiment: Any, where: str = "<config>", **overrides: Any) -> FinetuneConfig:
    """The ``finetune`` section of an experiment (``pipelines.config.ExperimentConfig``), with the
    keys it leaves out taken from the experiment: data.train/test/channels, augment.size,
    loop.mean/std and seed. ``overrides`` (command-line values) win over both."""
    loop = experiment.loop or {}
    defaults = {"train": experiment.data.train, "test": experiment.data.test, "channels": experiment.data.channels,
                "size": experiment.augment.size, "mean": loop.get("mean"), "std": loop.get("std"),
                "seed": experiment.seed}
    section = dict(experiment.finetune or {})
    section.update({k: v for k, v in overrides.items() if v is not None})
    return parse_finetune_config(section, where, **defaults)
