"""Resolve a shard spec to a list of shards with sample counts, before any cluster work.

A spec is a directory (its ``manifest.json`` when present, else every ``*.tar`` in it), a
manifest path, a tar path or URL, a ``{000..099}`` brace pattern or glob, or a list of these.
Counts come from the manifest; without one every shard is read once to count its samples
(shards written by other tools: ``webdataset.ShardWriter``, GNU tar). Given the modality a
config expects, a manifest recording another one is refused, naming the file and the field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from augtrain.pipelines.data import storage
from augtrain.pipelines.data.manifest import MANIFEST_NAME, Manifest
from augtrain.pipelines.data.wds_format import iter_raw_samples


class ShardSpecError(ValueError):
    """The spec names nothing readable; the message names the path."""


@dataclass(frozen=True)
class ShardSet:
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    manifest: Manifest | None = None

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.rstrip("/").rsplit("/", 1)[-1] for u in self.urls)

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest.class_names if self.manifest else None


def count_samples(url: str) -> int:
    """Samples in one shard, corrupt ones included (each is one position in the epoch)."""
    with storage.open_binary(url) as f:
        return sum(1 for _ in iter_raw_samples(f))


def _from_manifest(directory: str, manifest_path: str, modality: str | None) -> tuple[list[str], list[int], Manifest]:
    manifest = Manifest.from_json(storage.read_bytes(manifest_path).decode(), where=manifest_path)
    if modality is not None and manifest.modality != modality:
        raise ShardSpecError(f"{manifest_path}: field 'modality' is {manifest.modality!r}, but {modality!r} "
                             f"samples were asked for (data.modality)")
    urls = [storage.join(directory, s.name) for s in manifest.shards]
    for url in urls:
        if not storage.is_url(url) and not os.path.exists(url):
            raise ShardSpecError(f"{manifest_path} lists {os.path.basename(url)}, which does not exist in {directory}")
    return urls, [s.samples for s in manifest.shards], manifest


def _expand(item: str, modality: str | None) -> tuple[list[str], Manifest | None, list[int] | None]:
    if item.endswith(MANIFEST_NAME):
        directory = item[: -len(MANIFEST_NAME)].rstrip("/") or "."
        urls, counts, manifest = _from_manifest(directory, item, modality)
        return urls, manifest, counts
    if storage.isdir(item):
        manifest_path = storage.join(item, MANIFEST_NAME)
        if storage.exists(manifest_path):
            urls, counts, manifest = _from_manifest(item, manifest_path, modality)
            return urls, manifest, counts
        tars = [storage.join(item, n) for n in storage.list_files(item) if n.endswith(".tar")]
        if not tars:
            raise ShardSpecError(f"{item}: directory has no .tar shards and no {MANIFEST_NAME}")
        return tars, None, None
    urls = storage.expand_pattern(item)
    if not urls:
        raise ShardSpecError(f"{item}: pattern matches no shard")
    for url in urls:
        if not storage.is_url(url) and not os.path.isfile(url):
            raise ShardSpecError(f"{url}: no such shard file")
    return urls, None, None


def check_modality(spec: str | Sequence[str], modality: str) -> None:
    """Refuse (``ShardSpecError`` naming the file and the field) a shard spec whose manifests
    record another modality than ``modality``; reads manifests only, never the shards."""
    for item in [spec] if isinstance(spec, str) else list(spec):
        _expand(item, modality)


def check_real(spec: str | Sequence[str], role: str) -> None:
    """Refuse (``ShardSpecError`` naming the manifest) generated samples where only real ones may
    go: a validation or test split, or the pool a validation subset is drawn from."""
    for item in [spec] if isinstance(spec, str) else list(spec):
        _, manifest, _ = _expand(item, None)
        if manifest is not None and manifest.synthetic:
            where = item if item.endswith(MANIFEST_NAME) else storage.join(item, MANIFEST_NAME)
            raise ShardSpecError(f"{where}: generated samples (synthetic, from {manifest.synthetic.get('generator')}) "
                                 f"cannot be {role}; mix them into training instead")


def open_shards(spec: str | Sequence[str], scan_threads: int = 8, modality: str | None = None) -> ShardSet:
    """Resolve ``spec`` and learn every shard's sample count (manifest, else a counting read).
    With ``modality``, every manifest found must record that modality."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ShardSpecError("no shards given")
    urls: list[str] = []
    counts: list[int | None] = []
    manifest: Manifest | None = None
    for item in items:
        found, item_manifest, item_counts = _expand(item, modality)
        urls += found
        counts += item_counts if item_counts is not None else [None] * len(found)
        if item_manifest is not None and len(items) == 1:
            manifest = item_manifest
    missing = [i for i, c in enumerate(counts) if c is None]
    if missing:
        with ThreadPoolExecutor(scan_threads) as pool:
            for i, n in zip(missing, pool.map(count_samples, [urls[i] for i in missing])):
                counts[i] = n
    return ShardSet(tuple(urls), tuple(int(c) for c in counts), manifest)
