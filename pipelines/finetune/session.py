"""One worker's fine-tuning: the policy in force per epoch, training and evaluation on
in-memory arrays, and the session's own checkpoint (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from augtrain.augment import Policy, Schedule, augment_rng, parse_policy
from augtrain.augment.registry import catalogue
from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.finetune.data import FinetuneData
from augtrain.pipelines.finetune.model import build_classifier, lr_at, param_groups
from augtrain.pipelines.finetune.unlabelled import fixmatch_loss, unlabelled_order
from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.train.engine import resolve_precision

STATE_FILE = "finetune.json"
BEST_FILE = "best-val.safetensors"  # keep: best-val: the best validation pass's weights
PolicySource = str | dict[str, Any] | Policy | Schedule


def policy_source_to_json(source: PolicySource) -> str | dict[str, Any]:
    """A policy spec string, or a JSON dict (policy or schedule), for configs and checkpoints."""
    if isinstance(source, Schedule):
        return source.to_dict()
    if isinstance(source, Policy):
        return source.to_dict()
    return source


def policy_at(source: PolicySource, epoch: int, modality: str = "image") -> Policy:
    """The policy in force at ``epoch``: a fixed policy, or a schedule's entry (a spec string
    names a policy of ``modality``)."""
    if isinstance(source, Schedule):
        return source.policy_at(epoch)
    if isinstance(source, dict) and "schedule" in source:
        return Schedule.from_dict(source).policy_at(epoch)
    return parse_policy(source, modality)


# ---------------------------------------------------------------- one worker's training


def synthetic_order(n: int, count: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """``count`` generated samples (of ``n``) for this rank's epoch: a seeded permutation dealt
    round-robin over the ranks, so no two ranks and no two slots of an epoch share one while
    there are enough; repeated in the same order when there are not."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, epoch, 17])).permutation(n)
    mine = perm[rank::world_size] if n >= world_size else perm
    return np.resize(mine, count) if count else np.zeros(0, dtype=np.int64)


def mixup_draw(alpha: float, n: int, seed: int, epoch: int, step: int, rank: int) -> tuple[float, np.ndarray]:
    """Mixup's weight lam ~ Beta(alpha, alpha) and the partner of each of a batch's ``n`` samples
    (a permutation), drawn from the fine-tune's seed, so a resumed run mixes the same pairs."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, step, rank, 19]))
    return float(rng.beta(alpha, alpha)), rng.permutation(n)


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
        self.modality = get_modality(data.modality)
        self.device = torch.device(device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.model = build_classifier(cfg, checkpoint, data.num_classes).to(self.device)
        # NHWC: oneDNN's and cuDNN's fast bf16 convolutions want it, and so do oneDNN's fp32 ones
        # (benchmarks/precision.py: 1.06-1.95 times the training steps/s of the default layout on a CPU)
        self.channels_last = self.precision == "bf16" or self.device.type == "cpu"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.module = self.model  # unwrapped, for saving
        # e.g. ray.train.torch.prepare_model (DDP); a wrapper passes keywords through (``mix=``)
        if wrap is not None:
            self.model = wrap(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.module, cfg), lr=cfg.lr)
        self.epoch = 0
        # keep: best-val: the best validation pass so far ({"epoch", "val_acc", "val_loss"}) and a
        # CPU copy of its weights
        self.best: dict[str, Any] | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def _inputs(self, values: np.ndarray) -> torch.Tensor:
        """A batch of the modality's values (images: uint8 [B, H, W, C]) -> the encoder's input
        tensor on the device."""
        x = self.modality.to_tensor(values, self.cfg.mean, self.cfg.std).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _autocast(self) -> torch.autocast:
        """bf16 autocast of the forward pass (weights, optimizer and loss stay fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _augment(self, policy: Policy, indices: np.ndarray, values: np.ndarray | None = None,
                 stream: int = 0) -> np.ndarray:
        """The epoch's training values (of ``values[indices]``; default: the labelled subset). With
        ``policy.copies = c`` (EDA's augmented copies beside each original) a slot holds the
        original with probability 1 / (c + 1) and an augmented copy otherwise: the epoch mixes
        originals and copies in EDA's proportion at the same number of steps, so policies with and
        without copies train for equal compute. ``stream``: another random stream (the generated
        samples' own)."""
        values = self.data.train[0] if values is None else values
        transform = self.modality.sample_transform(policy, size=self.cfg.size, views=1, backend=self.cfg.backend)
        key = self.modality.view_keys(1)[0]
        rng = augment_rng(self.cfg.seed, self.epoch, self.rank, stream)
        if not policy.copies:
            return self.modality.stack([transform(values[i], rng)[key] for i in indices], "finetune.train (augmented)")
        plain = self.modality.sample_transform(parse_policy("none", self.modality.name), size=self.cfg.size, views=1,
                                               backend=self.cfg.backend)
        original = rng.random(len(indices)) < 1.0 / (policy.copies + 1)
        return self.modality.stack([(plain if keep else transform)(values[i], rng)[key]
                                    for i, keep in zip(indices, original)], "finetune.train (augmented)")

    def _set_lr(self, progress: float) -> float:
        factor = lr_at(self.cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * group["lr_scale"] * factor
        return self.cfg.lr * factor

    def _epoch_samples(self, policy: Policy) -> tuple[np.ndarray, np.ndarray, int]:
        """This rank's augmented values and labels for the epoch, and how many are generated: with
        ``synthetic_fraction`` f, exactly round(f x slots) of the rank's slots (chosen by a seeded
        draw) hold generated samples instead of real ones, the rest real samples in the epoch's order."""
        cfg = self.cfg
        order = epoch_order(len(self.data.train[1]), cfg.seed, self.epoch, self.rank, self.world_size)
        if self.data.synthetic is None or cfg.synthetic_fraction <= 0:
            return self._augment(policy, order), self.data.train[1][order], 0
        count = int(round(cfg.synthetic_fraction * len(order)))
        generated = synthetic_order(len(self.data.synthetic[1]), count, cfg.seed, self.epoch, self.rank,
                                    self.world_size)
        slots = np.random.default_rng(np.random.SeedSequence([cfg.seed, self.epoch, 13, self.rank])).permutation(
            len(order))
        real_slots, fake_slots = np.sort(slots[count:]), np.sort(slots[:count])
        real, fake = order[real_slots], generated
        values = self._augment(policy, real)
        mixed = np.empty((len(order), *values.shape[1:]), dtype=values.dtype)
        mixed[real_slots] = values
        if count:
            mixed[fake_slots] = self._augment(policy, fake, self.data.synthetic[0], stream=1)
        labels = np.empty(len(order), dtype=np.int64)
        labels[real_slots], labels[fake_slots] = self.data.train[1][real], self.data.synthetic[1][fake]
        return mixed, labels, count

    def _unlabelled_stream(self, policy: Policy, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
        """Per step of the epoch, ``unlabelled.ratio`` x ``batch_size`` pool samples as (weak view,
        strong view) with FixMatch enabled (the strong view: ``policy``, without EDA's copies);
        None without. Views are made step by step, so a large pool never sits augmented in memory."""
        cfg, u = self.cfg, self.cfg.unlabelled
        if not u.enabled:
            return None
        pool = self.data.unlabelled
        if pool is None:
            raise ValueError(f"finetune.unlabelled.method {u.method!r}: no unlabelled pool was loaded")
        per_step = u.ratio * cfg.batch_size
        order = unlabelled_order(len(pool), steps * per_step, cfg.seed, self.epoch, self.rank, self.world_size)
        weak_spec = u.weak or catalogue(self.modality.name).weak_default
        key = self.modality.view_keys(1)[0]
        views = []
        for stream, view in ((2, parse_policy(weak_spec, self.modality.name)), (3, policy)):
            transform = self.modality.sample_transform(view, size=cfg.size, views=1, backend=cfg.backend)
            views.append((transform, augment_rng(cfg.seed, self.epoch, self.rank, stream)))

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for step in range(steps):
                indices = order[step * per_step:(step + 1) * per_step]
                yield tuple(self.modality.stack([transform(pool[i], rng)[key] for i in indices],
                                                "finetune.unlabelled") for transform, rng in views)

        return batches()

    def train_epoch(self, policy: Policy) -> dict[str, float]:
        """One pass over this rank's share of the labelled subset with ``policy`` (a fraction of
        its slots filled with generated samples when ``synthetic_fraction`` is set; with
        ``unlabelled.method: fixmatch`` each step also trains on pool samples' pseudo-labels)."""
        cfg = self.cfg
        values, labels, generated = self._epoch_samples(policy)
        n = len(labels)
        steps = max(1, math.ceil(n / cfg.batch_size))
        unlabelled = self._unlabelled_stream(policy, steps)
        self.model.train()
        loss_sum, correct, lr = 0.0, 0, cfg.lr
        kept, seen, u_loss_sum = 0.0, 0, 0.0
        mix_layer = cfg.mixup_layer
        for step in range(steps):
            lo, hi = step * cfg.batch_size, min((step + 1) * cfg.batch_size, n)
            lr = self._set_lr(self.epoch + step / steps)
            batch = values[lo:hi]
            if unlabelled is not None:  # one batch: shared BatchNorm statistics, one padding (text)
                batch = np.concatenate([batch, *next(unlabelled)])
            x_all, y = self._inputs(batch), torch.as_tensor(labels[lo:hi], device=self.device)
            x = x_all[:hi - lo]
            mix = None
            if cfg.mixup > 0:
                lam, order = mixup_draw(cfg.mixup, hi - lo, cfg.seed, self.epoch, step, self.rank)
                partner = torch.as_tensor(order, device=self.device)
                if mix_layer == "input":
                    x = lam * x + (1 - lam) * x[partner]
                mix = lam, partner
            if unlabelled is not None:  # the weak then the strong views of the pool's samples
                x = torch.cat([x, x_all[hi - lo:]])
            with self._autocast():
                if mix is not None and mix_layer == "features":  # the labelled rows' features
                    all_logits = self.model(x, mix=mix).float()
                else:
                    all_logits = self.model(x).float()
            logits = all_logits[:hi - lo]
            # y: class indices, or a distribution per sample (a distillation student's targets)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if mix is not None:
                lam, partner = mix
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=cfg.label_smoothing)
            if unlabelled is not None:
                weak_logits, strong_logits = all_logits[hi - lo:].chunk(2)
                u_loss, mask = fixmatch_loss(weak_logits, strong_logits, cfg.unlabelled.threshold)
                loss = loss + cfg.unlabelled.weight * u_loss
                kept, seen, u_loss_sum = kept + float(mask.sum()), seen + len(mask), u_loss_sum + float(u_loss.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += float(loss.detach()) * (hi - lo)
            correct += int((logits.argmax(1) == (y if y.ndim == 1 else y.argmax(1))).sum())
        self.epoch += 1
        metrics = {"train_loss": loss_sum / max(n, 1), "train_acc": correct / max(n, 1), "lr": lr}
        if self.data.synthetic is not None and cfg.synthetic_fraction > 0:
            metrics["synthetic_samples"] = generated * self.world_size  # every rank mixes the same count
        if unlabelled is not None:  # this rank's: the share of confident pseudo-labels, their loss
            metrics["unlabelled_kept"] = kept / max(seen, 1)
            metrics["unlabelled_loss"] = u_loss_sum / steps
        return metrics

    @torch.no_grad()
    def _held_out_logits(self, split: Literal["val", "test"]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, labels) per evaluation batch of a held-out split, in the split's order."""
        values, labels = getattr(self.data, split)
        self.module.eval()
        for lo in range(0, len(labels), self.cfg.eval_batch_size):
            x = self._inputs(values[lo:lo + self.cfg.eval_batch_size])
            y = torch.as_tensor(labels[lo:lo + self.cfg.eval_batch_size], device=self.device)
            with self._autocast():
                logits = self.module(x).float()
            yield logits, y

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
        metrics row also goes to ``history``. With ``keep: best-val`` the validation split is also
        read every ``resolved_validate_every`` epochs, and after the last epoch the model takes the
        weights of the best pass (``selected_epoch``; its ``val_acc`` and ``val_loss`` are the
        selected weights', the last epoch's are ``last_val_acc`` and ``last_val_loss``) before it
        is tested."""
        start = time.perf_counter()
        selecting = self.cfg.keep == "best-val"
        final = self.epoch + 1 == self.cfg.resolved_epochs
        validate = validate or (selecting and self.cfg.validates_after(self.epoch + 1))
        policy = policy_at(source, self.epoch, self.modality.name)
        metrics: dict[str, Any] = {"epoch": self.epoch + 1, **self.train_epoch(policy)}
        if validate:
            metrics.update(self.evaluate("val"))
            if selecting:
                self._remember(metrics)
        if selecting and final and self.best is not None:
            metrics.update(last_val_acc=metrics.get("val_acc"), last_val_loss=metrics.get("val_loss"),
                           selected_epoch=self.best["epoch"], val_acc=self.best["val_acc"],
                           val_loss=self.best["val_loss"])
            if self.best["epoch"] != self.epoch:
                self.module.load_state_dict(self.best_weights, strict=True)
        if test:
            metrics.update(self.evaluate("test"))
        metrics["epoch_s"] = time.perf_counter() - start
        metrics["policy"] = policy.to_string()
        self.history.append(metrics)
        return metrics

    def _remember(self, metrics: dict[str, Any]) -> None:
        """Keep this epoch's weights when its validation accuracy beats every earlier pass (ties:
        the earlier epoch, the shorter training)."""
        if self.best is not None and metrics["val_acc"] <= self.best["val_acc"]:
            return
        self.best = {"epoch": self.epoch, "val_acc": metrics["val_acc"], "val_loss": metrics["val_loss"]}
        self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}

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
        if self.best_weights is not None:
            save_file({k: v.contiguous() for k, v in self.best_weights.items()}, str(tmp / BEST_FILE))
        state = {"epoch": self.epoch, "history": self.history, "optimizer": meta, "best": self.best,
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
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        if optimizer:  # a run resumed: its optimizer and its selection (keep: best-val) go on
            tensors = load_file(str(directory / "optimizer.safetensors"))
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
            self.best = state.get("best")
            self.best_weights = load_file(str(directory / BEST_FILE)) if self.best is not None else None
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
