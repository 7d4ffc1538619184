"""Labelled subsets for fine-tuning: stratified, seeded selection written once as a small shard set.

    counts = subset_size(0.01, 60000)                  # 600
    chosen = stratified_indices(labels, 600, seed=0)   # pure: same labels + seed, same indices
    paths = prepare_subsets(pool="data/fmnist/train", out_dir="runs/x/data", labels=0.01, val=1000, seed=0)
    images, labels = load_arrays(paths.labelled, channels=1)   # uint8 [N, H, W, C], int64 [N]

Streaming all 60,000 training images every epoch to use 600 of them would be waste, so the
chosen samples are copied (decoded and re-encoded by their modality: images losslessly as PNG)
into ``<out_dir>/labelled`` and
``<out_dir>/val`` with a manifest each, and ``subset.json`` records the keys, per-class counts,
seed and source. A second call with the same arguments reuses them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augtrain.pipelines.data import storage
from augtrain.pipelines.data.decode import DecodeSpec, decode_sample, parse_label
from augtrain.pipelines.data.shard_set import ShardSet, open_shards
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.data.sources import Source
from augtrain.pipelines.data.wds_format import RawSample, iter_raw_samples
from augtrain.pipelines.modalities import Modality, get_modality

SUBSET_FILE = "subset.json"

log = logging.getLogger(__name__)


def subset_size(labels: int | float, pool: int, field: str = "finetune.labels") -> int:
    """A count (int >= 1) or a fraction (float in (0, 1]) of ``pool`` -> a count."""
    if isinstance(labels, bool) or not isinstance(labels, (int, float)):
        raise ValueError(f"{field} must be a count or a fraction, got {labels!r}")
    if isinstance(labels, float) and labels <= 1.0:
        if labels <= 0.0:
            raise ValueError(f"{field}: a fraction must be in (0, 1], got {labels}")
        return max(1, int(round(labels * pool)))
    if isinstance(labels, float) and not labels.is_integer():
        raise ValueError(f"{field}: {labels} is neither a fraction in (0, 1] nor a whole count")
    count = int(labels)
    if count < 1:
        raise ValueError(f"{field}: a count must be >= 1, got {count}")
    if count > pool:
        raise ValueError(f"{field}: asked for {count} samples but the pool has {pool}")
    return count


def stratified_indices(labels: np.ndarray, count: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``count`` positions of ``labels`` [N] with class proportions kept (largest remainders),
    drawn with ``seed``; positions in ``exclude`` are never chosen. Sorted int64 [count]."""
    labels = np.asarray(labels)
    available = np.ones(len(labels), dtype=bool)
    if exclude is not None and len(exclude):
        available[np.asarray(exclude, dtype=np.int64)] = False
    pool = np.flatnonzero(available)
    if count > len(pool):
        raise ValueError(f"cannot draw {count} samples from {len(pool)} available")
    classes, freq = np.unique(labels[pool], return_counts=True)
    exact = freq * (count / len(pool))
    take = np.floor(exact).astype(np.int64)
    remainder = count - int(take.sum())
    order = np.lexsort((classes, -(exact - take)))  # largest fractional part first, ties by class
    take[order[:remainder]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(pool[labels[pool] == c], size=int(k), replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(chosen).astype(np.int64)) if chosen else np.zeros(0, np.int64)


@dataclass(frozen=True)
class SubsetPaths:
    """Shard directories of the labelled subset and of the validation subset (None when not asked)."""

    labelled: str
    val: str | None
    record: dict


def _raw_samples(shards: ShardSet) -> list[tuple[str, RawSample]]:
    out = []
    for url, name in zip(shards.urls, shards.names):
        with storage.open_binary(url) as f:
            out += [(name, raw) for raw in iter_raw_samples(f)]
    return out


def _pool_labels(samples: list[tuple[str, RawSample]], label_key: str, modality: Modality) -> np.ndarray:
    """Label per sample (-1 for a sample without a readable label or a member of the modality:
    never chosen)."""
    labels = np.full(len(samples), -1, dtype=np.int64)
    for i, (_, raw) in enumerate(samples):
        if raw.error is None and label_key in raw.members and modality.find_member(raw.members):
            try:
                labels[i] = parse_label(raw.members[label_key])
            except ValueError:
                pass
    return labels


def _source(samples: list[tuple[str, RawSample]], chosen: np.ndarray, label_key: str, name: str,
            class_names: list[str], modality: Modality) -> Source:
    stored = DecodeSpec(label_key=None, channels=None, modality=modality.name)  # values as they are stored

    def item(i: int) -> tuple[object, int]:
        raw = samples[int(chosen[i])][1]
        ext = modality.find_member(raw.members)
        return modality.decode(ext, raw.members[ext], stored), parse_label(raw.members[label_key])

    return Source(name, class_names, len(chosen), item, modality.name)


def _pool_groups(samples: list[tuple[str, RawSample]], usable: np.ndarray, group_key: str) -> np.ndarray:
    """The group (the ``group_key`` member, as text) of every usable sample; object [N], None
    elsewhere. A usable sample without the member fails, naming its shard and key."""
    groups = np.full(len(samples), None, dtype=object)
    for i in usable:
        name, raw = samples[int(i)]
        if group_key not in raw.members:
            raise ValueError(f"finetune.val_group_key {group_key!r}: sample {raw.key!r} of {name} has no "
                             f".{group_key} member (members: {', '.join(sorted(raw.members))}); write the "
                             "shards with their groups (rotten-tomatoes writes each film; text:PATH takes "
                             "--group-field)")
        groups[i] = raw.members[group_key].decode("utf-8", errors="replace")
    return groups


def group_held_out(labels: np.ndarray, groups: np.ndarray, usable: np.ndarray, count: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups drawn in a seeded order until they hold ``count`` usable samples, and
    ``count`` of those samples, stratified: (chosen, every usable sample of the drawn groups).
    The labelled subset excludes all of the latter, so no group is on both sides."""
    names, sizes = np.unique(groups[usable].astype(str), return_counts=True)
    order = np.random.default_rng(np.random.SeedSequence([seed, 23])).permutation(len(names))
    held = np.cumsum(sizes[order])
    if held[-1] < count:
        raise ValueError(f"finetune.val_labels: asked for {count} validation samples, the pool's {len(names)} "
                         f"groups hold {held[-1]}")
    taken = names[order[:int(np.searchsorted(held, count)) + 1]]  # the fewest groups in order that hold count
    inside = usable[np.isin(groups[usable].astype(str), taken)].astype(np.int64)
    outside = np.setdiff1d(np.arange(len(labels)), inside)
    return stratified_indices(labels, count, seed, exclude=outside), inside


def prepare_subsets(pool: str | list[str], out_dir: str, labels: int | float, seed: int,
                    val: int | float = 0, label_key: str = "cls", modality: str = "image",
                    val_group_key: str | None = None) -> SubsetPaths:
    """Choose the labelled (and validation) samples of ``pool`` (shards of ``modality``) and
    write them under ``out_dir``.

    The validation subset is drawn from what the labelled subset left, so the two never overlap.
    With ``val_group_key`` (a member naming each sample's group: a film, a speaker, a patient) it
    is drawn first, as whole groups (``group_held_out``), and the labelled subset from the other
    groups: validation then measures what a group-disjoint test split does.
    """
    wanted = {"pool": pool, "labels": labels, "val": val, "seed": seed, "label_key": label_key, "modality": modality}
    if val_group_key:  # absent otherwise, so earlier records still match
        wanted["val_group_key"] = val_group_key
    record_path = Path(out_dir) / SUBSET_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("request") == wanted:  # paths from out_dir: the folder may have been moved or copied
            return SubsetPaths(str(Path(out_dir) / "labelled"), str(Path(out_dir) / "val") if record["val"] else None,
                               record)
    kind = get_modality(modality)
    shards = open_shards(pool, modality=kind.name)
    samples = _raw_samples(shards)
    pool_labels = _pool_labels(samples, label_key, kind)
    usable = np.flatnonzero(pool_labels >= 0)
    n_labelled = subset_size(labels, len(usable))
    bad = np.flatnonzero(pool_labels < 0)
    n_val = subset_size(val, len(usable) - n_labelled, field="finetune.val_labels") if val else 0
    val_chosen, held = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if val and val_group_key:
        groups = _pool_groups(samples, usable, val_group_key)
        val_chosen, held = group_held_out(pool_labels, groups, usable, n_val, seed + 1)
    try:
        chosen = stratified_indices(pool_labels, n_labelled, seed, exclude=np.concatenate([bad, held]))
    except ValueError as exc:
        raise ValueError(f"finetune.labels: {exc} (outside the validation groups)") from None
    class_names = shards.class_names or [str(c) for c in range(int(pool_labels.max()) + 1)]
    options = WriteOptions(samples_per_shard=1000, shuffle_seed=seed)
    quiet = lambda _: None  # noqa: E731
    write_shards(_source(samples, chosen, label_key, "labelled", class_names, kind), str(Path(out_dir) / "labelled"),
                 "train", options, progress=quiet)
    val_dir = None
    if val:
        if not val_group_key:
            val_chosen = stratified_indices(pool_labels, n_val, seed + 1, exclude=np.concatenate([bad, chosen]))
        val_dir = str(Path(out_dir) / "val")
        write_shards(_source(samples, val_chosen, label_key, "val", class_names, kind), val_dir, "train", options,
                     progress=quiet)
    record = {
        "request": wanted,
        "pool_samples": len(samples),
        "pool_unusable": len(bad),
        "labelled": len(chosen),
        "val": len(val_chosen),
        "val_dir": val_dir,
        "class_names": class_names,
        "labelled_per_class": {str(c): int(n) for c, n in zip(*np.unique(pool_labels[chosen], return_counts=True))},
        "labelled_keys": [f"{samples[i][0]}/{samples[i][1].key}" for i in chosen],
        "val_keys": [f"{samples[i][0]}/{samples[i][1].key}" for i in val_chosen],
    }
    if val and val_group_key:
        record["val_groups"] = len({groups[i] for i in held})
        record["val_group_samples"] = len(held)  # held out of the labelled draw (and of an unlabelled pool)
        record["val_group_keys"] = [f"{samples[i][0]}/{samples[i][1].key}" for i in np.setdiff1d(held, val_chosen)]
    storage.write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    return SubsetPaths(str(Path(out_dir) / "labelled"), val_dir, record)


def load_arrays(spec: str | list[str], channels: int | None, label_key: str = "cls",
                limit: int | None = None, size: int | None = None, modality: str = "image"
                ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Read a small shard set into memory, without Ray: (values, int64 [N], class names); the
    values of images are uint8 [N, H, W, C].

    Bad samples are skipped, and their count logged as a warning naming the shard set (and given
    in the error raised when nothing is left). With ``size`` every value is resized by its modality
    (images to ``size x size``); without it all values must share one shape.
    """
    kind = get_modality(modality)
    shards = open_shards(spec, modality=kind.name)
    decode = DecodeSpec(label_key=label_key, channels=channels, modality=kind.name)
    values, labels, skipped = [], [], 0
    for url in shards.urls:
        with storage.open_binary(url) as f:
            for raw in iter_raw_samples(f):
                try:
                    sample = decode_sample(raw, decode, kind)
                except ValueError:
                    skipped += 1
                    continue
                value = sample[kind.column]
                values.append(kind.resize(value, size) if size is not None else value)
                labels.append(sample["label"])
                if limit is not None and len(values) >= limit:
                    break
        if limit is not None and len(values) >= limit:
            break
    if not values:
        raise ValueError(f"{spec}: no readable labelled sample ({skipped} skipped)")
    if skipped:
        log.warning("%s: %d unreadable sample(s) skipped, %d read", spec, skipped, len(values))
    return kind.stack(values, str(spec)), np.asarray(labels, dtype=np.int64), shards.class_names
