"""Write a labelled image corpus as WebDataset shards plus ``manifest.json``.

Samples are shuffled with a fixed seed before sharding (so every shard mixes classes), keys
are zero-padded sample indices, and tar headers carry no time or owner, so the same input
and arguments give byte-identical shards and sha256 sums.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from augtrain.pipelines.data.manifest import MANIFEST_NAME, Manifest, ShardEntry
from augtrain.pipelines.data.sources import Source
from augtrain.pipelines.data.wds_format import ShardTarWriter

JPEG_QUALITY = 95


@dataclass
class WriteOptions:
    samples_per_shard: int = 1000
    image_format: str = "png"  # png (lossless) or jpg
    limit: int | None = None
    shuffle_seed: int | None = 0  # None keeps source order
    dali_index: bool = False
    prefix: str = "shard"

    def check(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"format must be 'png' or 'jpg', got {self.image_format!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """uint8 [H, W] or [H, W, 3] RGB -> PNG or JPEG bytes."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + image_format, image, params)
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as {image_format}")
    return buf.tobytes()


def write_shards(
    source: Source,
    out_dir: str,
    split: str,
    options: WriteOptions,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Write ``source`` into ``out_dir`` and return the manifest (also written there)."""
    options.check()
    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    os.makedirs(out_dir, exist_ok=True)
    order = np.arange(len(source))
    if options.shuffle_seed is not None:
        order = np.random.default_rng(options.shuffle_seed).permutation(len(source))
    if options.limit is not None:
        order = order[: options.limit]
    n_shards = max(1, -(-len(order) // options.samples_per_shard))
    shards: list[ShardEntry] = []
    for shard_index in range(n_shards):
        chunk = order[shard_index * options.samples_per_shard : (shard_index + 1) * options.samples_per_shard]
        name = f"{options.prefix}-{shard_index:06d}.tar"
        shards.append(_write_one(source, chunk, os.path.join(out_dir, name), options))
        progress(f"[{shard_index + 1}/{n_shards}] {name}: {len(chunk)} samples")
    manifest = Manifest(
        shards=shards,
        modality="image",
        split=split,
        source=source.name,
        class_names=list(source.class_names),
        extensions=sorted([options.image_format, "cls"]),
        image_format=options.image_format,
        dali_index=options.dali_index,
    )
    tmp = os.path.join(out_dir, MANIFEST_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
    os.replace(tmp, os.path.join(out_dir, MANIFEST_NAME))
    return manifest


def _write_one(source: Source, indices: np.ndarray, path: str, options: WriteOptions) -> ShardEntry:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        writer = ShardTarWriter(f)
        for index in indices:
            image, label = source[int(index)]
            members = {options.image_format: encode_image(image, options.image_format), "cls": str(label).encode()}
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
