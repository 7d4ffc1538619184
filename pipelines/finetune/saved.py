"""Fine-tuned classifiers saved on disk: loading one (an ``augtrain finetune`` output folder or a
fine-tune checkpoint), checking that several were trained on the same data, and their mean class
probabilities on a batch of values. Distillation's teachers, an ensemble's members, a generator's
judge and labeller are all such classifiers.

    model = load_classifier("runs/ft-s0")
    probs = mean_probabilities([model], values, num_classes)     # float32 [N, classes]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.finetune.model import build_classifier
from augtrain.pipelines.modalities import get_modality
from augtrain.pipelines.train.engine import resolve_precision

# what classifiers combined into one (a student's teachers, an ensemble's members) must share
SAME_DATA = ("train", "labels", "val_labels", "val_group_key", "label_seed", "label_key", "modality")


@dataclass(frozen=True)
class SavedClassifier:
    """A fine-tuned classifier: its config, weights and pretraining checkpoint."""

    cfg: FinetuneConfig
    weights: str  # model.safetensors of a fine-tune checkpoint
    pretrained: str | None
    source: Any = None  # its policy (spec or schedule) when the checkpoint recorded it
    test_acc: float | None = None
    control: dict[str, Any] | None = None  # its fine-tune's raw-feature control, on the same labels and test split
    path: str | None = None  # the folder it was loaded from

    @property
    def num_classes(self) -> int:
        """The classes its linear head predicts (read from the weights file's header)."""
        from safetensors import safe_open

        with safe_open(self.weights, "pt") as f:
            if "fc.bias" not in f.keys():
                raise ValueError(f"{self.weights}: no classifier head (fc.bias) in the weights")
            return int(f.get_slice("fc.bias").get_shape()[0])


def load_classifier(path: str | os.PathLike, pretrained: str | None = None) -> SavedClassifier:
    """A classifier from an ``augtrain finetune`` output folder (its ``finetune.json`` names the
    model and the pretraining checkpoint) or from a fine-tune checkpoint folder (then the
    pretraining checkpoint is ``pretrained``, unless it was trained from scratch)."""
    path = Path(path).absolute()
    record_file = path / "finetune.json"
    if not record_file.is_file():
        raise FileNotFoundError(f"{path}: not a fine-tune output or checkpoint (no finetune.json)")
    record = json.loads(record_file.read_text())
    if "model" in record and "finetune" in record:  # an `augtrain finetune` output folder
        if not record.get("model"):
            raise ValueError(f"{record_file}: the fine-tune saved no model")
        model_dir = Path(str(record["model"]))
        cfg = FinetuneConfig.model_validate(record["finetune"])
        test_acc = (record.get("metrics") or {}).get("test_acc")
        return SavedClassifier(cfg, str(model_dir / "model.safetensors"), record.get("checkpoint") or pretrained,
                               cfg.policy, test_acc, record.get("control"), str(path))
    if "config" not in record:
        raise ValueError(f"{record_file}: neither a fine-tune output (model, finetune) nor a checkpoint (config)")
    cfg = FinetuneConfig.model_validate(record["config"])
    if cfg.mode != "scratch" and pretrained is None:
        raise ValueError(f"{path}: a {cfg.mode} fine-tune needs its pretraining checkpoint (--checkpoint)")
    return SavedClassifier(cfg, str(path / "model.safetensors"), pretrained, record.get("source", cfg.policy),
                           path=str(path))


def check_same_data(models: list[SavedClassifier], what: str, keys: tuple[str, ...] = SAME_DATA) -> None:
    """Classifiers combined into one (``what``: "distill: the teachers", "ensemble: the members")
    must have been fine-tuned on the same labelled and validation subsets, with the same classes."""
    if not models:
        raise ValueError(f"{what}: none given")
    first = {k: getattr(models[0].cfg, k) for k in keys}
    for model in models[1:]:
        other = {k: getattr(model.cfg, k) for k in keys}
        if other != first:
            diff = {k: (first[k], other[k]) for k in keys if first[k] != other[k]}
            raise ValueError(f"{what} were fine-tuned on different data: {diff}")


@torch.no_grad()
def mean_probabilities(models: list[SavedClassifier], values: np.ndarray, num_classes: int,
                       temperature: float = 1.0, batch_size: int = 512) -> np.ndarray:
    """The classifiers' mean class probabilities (softmax of logits / ``temperature``) on
    ``values`` (clean inputs, resized as each classifier was tested), float32 [N, classes]."""
    total = np.zeros((len(values), num_classes), dtype=np.float64)
    for model in models:
        total += _probabilities(model, values, num_classes, temperature, batch_size)
    return (total / len(models)).astype(np.float32)


@torch.no_grad()
def member_probabilities(models: list[SavedClassifier], values: np.ndarray, num_classes: int,
                         batch_size: int = 512) -> list[np.ndarray]:
    """Each classifier's class probabilities on ``values``, float64 [N, classes] apiece."""
    return [_probabilities(model, values, num_classes, 1.0, batch_size) for model in models]


def _probabilities(model: SavedClassifier, values: np.ndarray, num_classes: int, temperature: float,
                   batch_size: int) -> np.ndarray:
    device = torch.device("cpu")
    cfg = model.cfg
    modality = get_modality(cfg.modality)
    net = build_classifier(cfg, model.pretrained, num_classes)
    net.load_state_dict(load_file(model.weights), strict=True)
    net.eval().to(memory_format=torch.channels_last)  # oneDNN's faster layout (as in training)
    bf16 = resolve_precision(cfg.precision, device) == "bf16"
    out = np.zeros((len(values), num_classes), dtype=np.float64)
    for lo in range(0, len(values), batch_size):
        batch = values[lo:lo + batch_size]
        if cfg.size is not None:
            batch = modality.stack([modality.resize(v, cfg.size) for v in batch], "predict")
        x = modality.to_tensor(batch, cfg.mean, cfg.std)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).float()
        out[lo:lo + len(batch)] = torch.softmax(logits / temperature, dim=1).double().numpy()
    return out
