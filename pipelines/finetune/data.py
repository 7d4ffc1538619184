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
    # the pool's samples outside the labelled and validation subsets (``unlabelled.UNLABELLED_DATA``),
    # read when finetune.unlabelled is enabled
    unlabelled: str | None = None


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
    # generated samples to mix into training (finetune.synthetic), those confident enough: values, labels
    synthetic: tuple[np.ndarray, np.ndarray] | None = None
    synthetic_dropped: int = 0  # generated samples below finetune.synthetic_min_confidence
    unlabelled: np.ndarray | None = None  # the pool's other samples' values (finetune.unlabelled)


def prepare_data(cfg: FinetuneConfig, out_dir: str) -> DataPaths:
    """Choose and write the labelled and validation subsets under ``out_dir`` (reused when present)."""
    if cfg.synthetic is not None:
        check_modality(cfg.synthetic, cfg.modality)
    if cfg.train is None:
        raise ValueError("finetune.train: no shards for the labelled pool (set finetune.train or data.train)")
    if cfg.test is not None:
        check_modality(cfg.test, cfg.modality)  # the pool is checked where it is opened
        check_real(cfg.test, "the test split (finetune.test)")
    if cfg.val_labels:
        check_real(cfg.train, "the pool the validation subset is drawn from (finetune.train)")
    subsets: SubsetPaths = prepare_subsets(cfg.train, os.path.abspath(out_dir), cfg.labels, cfg.label_seed,
                                           cfg.val_labels, cfg.label_key, cfg.modality, cfg.val_group_key)
    names = subsets.record["class_names"]
    unlabelled = None
    if cfg.unlabelled.enabled:
        from augtrain.pipelines.finetune.unlabelled import prepare_unlabelled

        unlabelled, _ = prepare_unlabelled(cfg.train, subsets.labelled, cfg.channels, cfg.modality)
    return DataPaths(subsets.labelled, subsets.val, _absolute(cfg.test), len(names), names,
                     int(subsets.record["labelled"]), unlabelled=unlabelled)


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
    synthetic, dropped = None, 0
    if "train" in splits and cfg.synthetic is not None and cfg.synthetic_fraction > 0:
        if train[1].ndim != 1:
            raise ValueError("finetune.synthetic: generated samples mix with class labels, not with a "
                             "distillation student's target distributions")
        synthetic, dropped = load_synthetic(cfg, paths.num_classes)
    unlabelled = None
    if "train" in splits and cfg.unlabelled.enabled:
        from augtrain.pipelines.finetune.unlabelled import load_unlabelled

        if paths.unlabelled is None:
            raise ValueError(f"finetune.unlabelled.method {cfg.unlabelled.method!r}: the data was prepared "
                             "without the unlabelled pool (prepare_data with this config writes it)")
        if train[1].ndim != 1:
            raise ValueError("finetune.unlabelled: a distillation student's training set holds the pool "
                             "already (with its teachers' targets); train it without unlabelled.method")
        unlabelled = load_unlabelled(paths.unlabelled)
    return FinetuneData(train, read(paths.val, True) if "val" in splits else None,
                        read(paths.test, True) if "test" in splits else None, paths.num_classes, cfg.modality,
                        cfg.size, synthetic, dropped, unlabelled)


def load_synthetic(cfg: FinetuneConfig, num_classes: int) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """The generated samples of ``cfg.synthetic`` whose label confidence (``<key>.conf``; 1 when
    absent) reaches ``cfg.synthetic_min_confidence``, and how many fell below it."""
    from augtrain.pipelines.data import storage
    from augtrain.pipelines.data.decode import DecodeSpec, decode_sample
    from augtrain.pipelines.data.shard_set import open_shards
    from augtrain.pipelines.data.wds_format import iter_raw_samples
    from augtrain.pipelines.modalities import get_modality

    kind = get_modality(cfg.modality)
    shards = open_shards(cfg.synthetic, modality=kind.name)
    decode = DecodeSpec(label_key=cfg.label_key, channels=cfg.channels, modality=kind.name)
    values, labels, dropped = [], [], 0
    for url in shards.urls:
        with storage.open_binary(url) as f:
            for raw in iter_raw_samples(f):
                try:  # generated shards are written by augtrain: a bad sample is an error, not a skip
                    sample = decode_sample(raw, decode, kind)
                    confidence = float(raw.members["conf"]) if "conf" in raw.members else 1.0
                except ValueError as exc:
                    raise ValueError(f"{url}: generated sample {raw.key} cannot be read ({exc})") from None
                if confidence < cfg.synthetic_min_confidence:
                    dropped += 1
                    continue
                if not 0 <= sample["label"] < num_classes:
                    raise ValueError(f"{url}: sample {raw.key} has label {sample['label']}, outside the "
                                     f"{num_classes} classes of the labelled data")
                values.append(kind.resize(sample[kind.column], cfg.size) if cfg.size else sample[kind.column])
                labels.append(sample["label"])
    if not values:
        raise ValueError(f"finetune.synthetic {cfg.synthetic}: no generated sample left ({dropped} below "
                         f"synthetic_min_confidence {cfg.synthetic_min_confidence})")
    return (kind.stack(values, str(cfg.synthetic)), np.asarray(labels, dtype=np.int64)), dropped
