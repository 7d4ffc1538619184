"""Generated samples as shards: a generative checkpoint's draws from its prior, labelled by a
classifier (pseudo-labels with their confidence) or left unlabelled, written with their
provenance in the manifest (``synthetic``) so that no split a model is judged on can hold them.

    source, record = generated_source("runs/fmnist-vae/checkpoints", n=10_000, seed=0,
                                      labeller="runs/ft-s0", min_confidence=0.9)
    write_shards(source, "data/fmnist-vae-gen", "train", WriteOptions(), synthetic=record)

Each labelled sample carries its label (``.cls``) and the labeller's confidence in it (``.conf``,
the classifier's softmax probability); samples below ``min_confidence`` are dropped and counted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augtrain.pipelines.data.source_base import Source, SourceError
from augtrain.pipelines.train.checkpoint import load_model, read_metadata
from augtrain.pipelines.train.samples import to_uint8


def _normalisation(checkpoint: Path) -> tuple[list[float], list[float]]:
    """The mean and std the generative model was trained with (its experiment's ``loop``)."""
    config = read_metadata(checkpoint).get("config") or {}
    loop = config.get("loop") or {}
    if "mean" not in loop or "std" not in loop:
        raise ValueError(f"{checkpoint}: its config records no loop.mean/loop.std, so its samples cannot be "
                         "turned back into pixels")
    return list(loop["mean"]), list(loop["std"])


def draw(checkpoint: str | os.PathLike, n: int, seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """``n`` images (uint8 [N, H, W, C]) from a generative checkpoint's prior, reproducible for ``seed``."""
    from augtrain.pipelines.finetune.model import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    model = load_model(path).eval()
    if not hasattr(model, "sample"):
        raise ValueError(f"{path}: a {type(model).__name__} checkpoint cannot generate samples (no sample(); "
                         "pretrain a generative objective such as 'vae')")
    mean, std = _normalisation(path)
    generator = torch.Generator().manual_seed(seed)
    chunks = [to_uint8(model.sample(min(batch_size, n - lo), generator=generator), mean, std)
              for lo in range(0, n, batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 1, 1, 1), np.uint8)


def generated_source(checkpoint: str | os.PathLike, n: int, seed: int = 0, labeller: str | None = None,
                     labeller_checkpoint: str | None = None, min_confidence: float = 0.0
                     ) -> tuple[Source, dict[str, Any]]:
    """The samples as a ``Source`` for ``write_shards`` and their provenance record (the manifest's
    ``synthetic``): generator checkpoint and step, seed, labeller and its filter, counts."""
    from augtrain.pipelines.finetune.distill import load_teacher, teacher_probabilities
    from augtrain.pipelines.finetune.model import resolve_checkpoint

    if n < 1:
        raise SourceError(f"generate: --n must be >= 1, got {n}")
    if not 0.0 <= min_confidence < 1.0:
        raise SourceError(f"generate: --min-confidence must be in [0, 1), got {min_confidence}")
    path = resolve_checkpoint(checkpoint)
    images = draw(path, n, seed)
    record: dict[str, Any] = {"generator": str(path), "generator_step": read_metadata(path).get("step"),
                              "seed": seed, "drawn": n, "labeller": None}
    if labeller is None:
        record["kept"] = n
        return Source("generated", [], n, lambda i: (_squeeze(images[i]), None)), record
    teacher = load_teacher(labeller, labeller_checkpoint)
    from augtrain.pipelines.data.shard_set import open_shards

    class_names = open_shards(teacher.cfg.train, modality="image").class_names if teacher.cfg.train else None
    if not class_names:
        raise SourceError(f"{labeller}: the labeller's training shards ({teacher.cfg.train}) record no class names")
    num_classes = len(class_names)
    probs = teacher_probabilities([teacher], images, num_classes)
    labels, confidence = probs.argmax(1), probs.max(1)
    kept = np.flatnonzero(confidence >= min_confidence)
    record.update({"labeller": str(Path(labeller).absolute()), "labeller_test_acc": teacher.test_acc,
                   "min_confidence": min_confidence, "kept": int(len(kept)), "dropped_below_confidence":
                   int(n - len(kept)), "mean_confidence": float(confidence[kept].mean()) if len(kept) else None,
                   "per_class": np.bincount(labels[kept], minlength=num_classes).tolist()})
    if not len(kept):
        raise SourceError(f"generate: no sample reached --min-confidence {min_confidence} "
                          f"(the best had {confidence.max():.3f})")
    return Source("generated", list(class_names), len(kept),
                  lambda i: (_squeeze(images[kept[i]]), int(labels[kept[i]])),
                  extras=lambda i: {"conf": f"{confidence[kept[i]]:.6f}".encode()}), record


def _squeeze(image: np.ndarray) -> np.ndarray:
    """[H, W, 1] -> [H, W] (a grayscale source's images); RGB kept."""
    return image[..., 0] if image.shape[-1] == 1 else image
