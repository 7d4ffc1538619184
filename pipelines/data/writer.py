"""Write a labelled corpus as WebDataset shards plus ``manifest.json``; each value is encoded by
its source's modality (images as PNG or JPEG).

Samples are shuffled with a fixed seed before sharding (so every shard mixes classes), keys
are zero-padded sample indices, and tar headers carry no time or owner, so the same input
and arguments give byte-identical shards and sha256 sums.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from augtrain.pipelines.console import Progress
from augtrain.pipelines.data.manifest import MANIFEST_NAME, Manifest, ShardEntry
from augtrain.pipelines.data.sources import Source
from augtrain.pipelines.data.storage import write_text_atomic
from augtrain.pipelines.data.wds_format import ShardTarWriter
from augtrain.pipelines.modalities import Modality, get_modality


@dataclass
class WriteOptions:
    samples_per_shard: int = 1000
    format: str | None = None  # member format: images png (lossless, the default) or jpg; None: the modality's first
    limit: int | None = None
    shuffle_seed: int | None = 0  # None keeps source order
    dali_index: bool = False
    prefix: str = "shard"

    def check(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def write_shards(
    source: Source,
    out_dir: str,
    split: str,
    options: WriteOptions,
    progress: Callable[[str], None] | None = None,
    synthetic: dict | None = None,
) -> Manifest:
    """Write ``source`` into ``out_dir`` and return the manifest (also written there). ``progress``
    gets a line per shard; by default a bar over the shards is shown (one line at the end on a pipe).
    ``synthetic``: the provenance of generated samples, recorded in the manifest."""
    options.check()
    modality = get_modality(source.modality)
    fmt = options.format or modality.formats[0]
    if fmt not in modality.formats:
        raise ValueError(f"format {fmt!r} cannot hold {modality.name} samples; choose one of {', '.join(modality.formats)}")
    os.makedirs(out_dir, exist_ok=True)
    order = np.arange(len(source))
    if options.shuffle_seed is not None:
        order = np.random.default_rng(options.shuffle_seed).permutation(len(source))
    if options.limit is not None:
        order = order[: options.limit]
    n_shards = max(1, -(-len(order) // options.samples_per_shard))
    shards: list[ShardEntry] = []
    bar = None if progress is not None else Progress(f"write {source.name} {split}", n_shards, "shards")
    for shard_index in range(n_shards):
        chunk = order[shard_index * options.samples_per_shard : (shard_index + 1) * options.samples_per_shard]
        name = f"{options.prefix}-{shard_index:06d}.tar"
        shards.append(_write_one(source, chunk, os.path.join(out_dir, name), options, modality, fmt))
        if bar is not None:
            bar.update(advance=1, samples=sum(s.samples for s in shards))
        else:
            progress(f"[{shard_index + 1}/{n_shards}] {name}: {len(chunk)} samples")
    if bar is not None:
        bar.close()
    manifest = Manifest(
        shards=shards,
        modality=source.modality,
        split=split,
        source=source.name,
        class_names=list(source.class_names) or None,  # None: an unlabelled corpus
        extensions=sorted([fmt, *(["cls"] if source.class_names else []),
                           *(source.extras(int(order[0])) if source.extras is not None and len(order) else ())]),
        dali_index=options.dali_index,
        synthetic=synthetic,
        **modality.manifest_fields(fmt, source),
    )
    write_text_atomic(os.path.join(out_dir, MANIFEST_NAME), manifest.to_json())
    return manifest


def _write_one(source: Source, indices: np.ndarray, path: str, options: WriteOptions, modality: Modality,
               fmt: str) -> ShardEntry:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        writer = ShardTarWriter(f)
        for index in indices:
            value, label = source[int(index)]
            ext, data = modality.encode(value, fmt)
            members = {ext: data} if label is None else {ext: data, "cls": str(label).encode()}
            if source.extras is not None:
                members.update(source.extras(int(index)))
            writer.write(f"{int(index):09d}", members)
        writer.close()
    os.replace(tmp, path)
    if options.dali_index:
        write_dali_index(path, path[: -len(".tar")] + ".idx")
    return ShardEntry(os.path.basename(path), len(indices), sha256_file(path), os.path.getsize(path))


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dali_index(tar_path: str, idx_path: str) -> None:
    """DALI's ``fn.readers.webdataset`` index, made with the ``wds2idx`` module DALI ships."""
    from wds2idx import IndexCreator

    with IndexCreator(tar_path, idx_path, verbose=False) as creator:
        creator.create_index()
