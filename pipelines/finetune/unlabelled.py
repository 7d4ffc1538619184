"""The unlabelled pool in fine-tuning: the pool's samples outside the labelled and validation
subsets, read once by the driver, and FixMatch's consistency loss on them (Sohn et al. 2020,
"FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence").

    path, record = prepare_unlabelled(cfg, paths)      # driver, once: unlabelled.npz beside the subsets
    loss_u, mask = fixmatch_loss(weak_logits, strong_logits, threshold)   # per step, in the session

In each optimizer step a FixMatch fine-tune reads ``ratio`` x ``batch_size`` pool samples besides
the labelled batch: the model's prediction on a weakly augmented view (``unlabelled.weak``) is the
pseudo-label of a strongly augmented view (the policy in force), kept only where its confidence
reaches ``threshold``. The validation subset is never in the pool (it stays an honest selection
signal), nor is any sample of the test split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from augtrain.pipelines import console
from augtrain.pipelines.data import storage
from augtrain.pipelines.data.decode import DecodeSpec, decode_sample
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.data.wds_format import iter_raw_samples
from augtrain.pipelines.finetune.subsets import SUBSET_FILE
from augtrain.pipelines.modalities import get_modality

UNLABELLED_DATA = "unlabelled.npz"


def pool_values(spec: str | list[str], channels: int, modality: str, exclude: set[str]
                ) -> tuple[np.ndarray, list[str], int]:
    """The pool's values whose ``shard/key`` is not in ``exclude`` (labels ignored: the pool may be
    unlabelled), their keys, and the count of unreadable samples skipped."""
    kind = get_modality(modality)
    shards = open_shards(spec, modality=kind.name)
    decode = DecodeSpec(label_key=None, channels=channels, modality=kind.name)
    values, keys, skipped = [], [], 0
    for url, name in zip(shards.urls, shards.names):
        with storage.open_binary(url) as f:
            for raw in iter_raw_samples(f):
                key = f"{name}/{raw.key}"
                if key in exclude:
                    continue
                try:
                    sample = decode_sample(raw, decode, kind)
                except ValueError:
                    skipped += 1
                    continue
                values.append(sample[kind.column])
                keys.append(key)
    if not values:
        raise ValueError(f"{spec}: no readable sample left outside the labelled and validation subsets "
                         f"({skipped} skipped)")
    return kind.stack(values, str(spec)), keys, skipped


def held_out_keys(labelled: str) -> tuple[set[str], dict[str, Any]]:
    """The ``shard/key`` of every labelled and validation sample, and of every other sample of the
    validation groups (``val_group_key``: their texts stay out of training too), from the subsets'
    record beside the labelled subset ``labelled``; and the record."""
    subsets = json.loads((Path(labelled).parent / SUBSET_FILE).read_text())
    return set(subsets["val_keys"]) | set(subsets["labelled_keys"]) | set(subsets.get("val_group_keys", [])), subsets


def prepare_unlabelled(pool: str | list[str], labelled: str, channels: int, modality: str
                       ) -> tuple[str, dict[str, Any]]:
    """Write the pool's samples outside the labelled and validation subsets as ``unlabelled.npz``
    (``values``) beside the subsets and return its path and a record (counts; unreadable samples
    are counted, not hidden). Reused when present for the same request."""
    out = Path(labelled).parent.absolute()  # workers read it from their own working directories
    request = {"pool": pool, "labelled": str(Path(labelled).absolute()), "channels": channels}
    record_file = out / "unlabelled.json"
    if record_file.is_file() and (out / UNLABELLED_DATA).is_file():
        record = json.loads(record_file.read_text())
        if record.get("request") == request:
            return str(out / UNLABELLED_DATA), record
    exclude, subsets = held_out_keys(labelled)
    console.say(f"unlabelled pool: reading {pool} (less {len(subsets['val_keys'])} validation and "
                f"{len(subsets['labelled_keys'])} labelled samples)")
    values, _, skipped = pool_values(pool, channels, modality, exclude)
    save_values(out / UNLABELLED_DATA, values)
    record = {"request": request, "unlabelled": len(values), "skipped": skipped}
    if skipped:
        console.say(f"unlabelled pool: {skipped} unreadable samples skipped")
    storage.write_text_atomic(record_file, json.dumps(record, indent=1) + "\n")
    return str(out / UNLABELLED_DATA), record


def save_values(path: Path, values: np.ndarray) -> None:
    """``values`` as ``path`` (``.npz``, written atomically). Text (an object array of strings)
    is stored as a fixed-width unicode array, so that it loads without unpickling."""
    if values.dtype == object:
        odd = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if odd is not None:
            raise TypeError(f"{path}: value {odd} of the unlabelled pool is a {type(values[odd]).__name__}, "
                            f"not an array or a string")
        values = values.astype(str)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, values=values)
    os.replace(tmp, path)


def load_unlabelled(path: str) -> np.ndarray:
    """The values ``prepare_unlabelled`` wrote (text as an object array of ``str``, as the text
    modality stacks it)."""
    with np.load(path) as stored:
        values = stored["values"]
    return values.astype(object) if values.dtype.kind == "U" else values


def unlabelled_order(n: int, count: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """``count`` pool positions (of ``n``) for this rank's epoch: a seeded permutation dealt
    round-robin over the ranks, continued with the next epoch's when one pass is not enough, so
    that successive epochs walk through the whole pool before a sample repeats."""
    out, needed = [], count
    # the pool is read as one long stream of permutations: epoch e starts where e - 1 stopped
    per_rank = n // world_size if n >= world_size else n
    cycle, offset = divmod(epoch * count, per_rank)
    while needed > 0:
        perm = np.random.default_rng(np.random.SeedSequence([seed, cycle, 23])).permutation(n)
        mine = perm[rank::world_size][:per_rank] if n >= world_size else perm
        take = mine[offset:offset + needed]
        out.append(take)
        needed -= len(take)
        cycle, offset = cycle + 1, 0
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled loss: cross-entropy of the strong view's logits against the weak
    view's hard pseudo-label (no gradient through it), averaged over all unlabelled samples with
    those below ``threshold`` confidence masked out; and the mask (float, 1 where kept)."""
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(strong_logits.float(), pseudo, reduction="none") * mask).mean()
    return loss, mask
