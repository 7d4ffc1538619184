"""What a fine-tune reads: the labelled and validation subsets (chosen once by the driver) and
the test split, decoded into each worker's memory."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from augtrain.pipelines.data.shard_set import check_modality, check_real
from augtrain.pipelines.data.storage import is_url
from augtrain.pipelines.finetune.config import FinetuneConfig
from augtrain.pipelines.finetune.subsets import SubsetPaths, load_arrays, prepare_subsets


@dataclass(frozen=True)
class DataPaths:
    """Where a fine-tuning run reads: the labelled subset, the validation subset, the test split."""

    labelled: str
    val: str | None
    test: str | list[str] | None
    num_classes: int
    class_names: list[str] | None = None
    num_labelled: int | None = None  # samples in the labelled subset (or in train_targets' set)
    # a distillation student's training set (``distill.STUDENT_DATA``: values and a target
    # distribution per sample) read instead of the labelled subset
    train_targets: str | None = None


@dataclass
class FinetuneData:
    """Arrays held by one worker, per split: the modality's values (images: uint8 [N, H, W, C])
    and int64 labels [N]."""

    train: tuple[np.ndarray, np.ndarray]  # labels int64 [N], or target distributions float32 [N, classes]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None
    num_classes: int
    modality: str = "image"
    size: int | None = None  # the held-out splits were resized to it (the labelled one keeps its own)


def prepare_data(cfg: FinetuneConfig, out_dir: str) -> DataPaths:
    """Choose and write the labelled and validation subsets under ``out_dir`` (reused when present)."""
    if cfg.train is None:
        raise ValueError("finetune.train: no shards for the labelled pool (set finetune.train or data.train)")
    if cfg.test is not None:
        check_modality(cfg.test, cfg.modality)  # the pool is checked where it is opened
        check_real(cfg.test, "the test split (finetune.test)")
    if cfg.val_labels:
        check_real(cfg.train, "the pool the validation subset is drawn from (finetune.train)")
    subsets: SubsetPaths = prepare_subsets(cfg.train, os.path.abspath(out_dir), cfg.labels, cfg.label_seed,
                                           cfg.val_labels, cfg.label_key, cfg.modality)
    names = subsets.record["class_names"]
    return DataPaths(subsets.labelled, subsets.val, _absolute(cfg.test), len(names), names,
                     int(subsets.record["labelled"]))


def _absolute(spec: str | list[str] | None) -> str | list[str] | None:
    """Local paths made absolute (trials run in their own working directories); URLs kept."""
    if isinstance(spec, list):
        return [_absolute(s) for s in spec]
    return spec if spec is None or is_url(spec) else os.path.abspath(spec)


def load_data(paths: DataPaths, cfg: FinetuneConfig, splits: tuple[str, ...] = ("train", "val", "test")) -> FinetuneData:
    """Decode the splits named in ``splits`` into memory (the test split is 10,000 images at most
    for the datasets this is meant for; larger ones should be evaluated by streaming)."""
    def read(spec: str | list[str] | None, resize: bool) -> tuple[np.ndarray, np.ndarray] | None:
        if spec is None:
            return None
        values, labels, _ = load_arrays(spec, cfg.channels, cfg.label_key, size=cfg.size if resize else None,
                                        modality=cfg.modality)
        return values, labels

    if paths.train_targets is not None:
        with np.load(paths.train_targets) as stored:
            train = (stored["values"], stored["targets"])
    else:
        train = read(paths.labelled, resize=False)
    return FinetuneData(train, read(paths.val, True) if "val" in splits else None,
                        read(paths.test, True) if "test" in splits else None, paths.num_classes, cfg.modality,
                        cfg.size)
