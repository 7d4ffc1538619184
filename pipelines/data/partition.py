"""Epoch order, worker assignment and resume arithmetic: pure functions of integers.

The order of an epoch is fixed by ``(seed, epoch)`` and the per-shard sample counts alone:
shards are permuted, and the samples inside each shard are permuted, giving one global
sequence ``0 .. total-1``. A data position is the set of global positions already consumed
(a list of half-open intervals). Workers get contiguous, balanced slices of what remains, so:

* with the same seed and epoch, every worker's order is reproducible;
* workers' slices are disjoint and their union is everything not yet consumed;
* on resume with the same worker count each worker continues its own slice, so the resumed
  run reads exactly what an uninterrupted one would have; with another worker count, what
  remains is re-split over the new workers: every sample of the epoch is still seen exactly
  once, though not in the order an uninterrupted run would have used.

Nothing here imports Ray; these functions are what the tests check without processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

Interval = tuple[int, int]  # half-open [start, end)


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(n_shards)
    return np.random.default_rng([seed, epoch, 0x5A4D]).permutation(n_shards)


def sample_order(n: int, seed: int, epoch: int, shard: int, shuffle: bool = True) -> np.ndarray:
    """Order of a shard's samples (positions in file order) for one epoch."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch, shard, 0x5A4E]).permutation(n)


def normalize(intervals: list[Interval]) -> list[Interval]:
    """Sorted, merged, without empty intervals."""
    merged: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in intervals if b > a):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def size(intervals: list[Interval]) -> int:
    return sum(b - a for a, b in intervals)


def subtract(total: int, consumed: list[Interval]) -> list[Interval]:
    """``[0, total)`` minus ``consumed``."""
    remaining, cursor = [], 0
    for start, end in normalize(consumed):
        start, end = max(start, 0), min(end, total)
        if start > cursor:
            remaining.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < total:
        remaining.append((cursor, total))
    return remaining


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Positions in both (inputs sorted and disjoint)."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def take_prefix(intervals: list[Interval], n: int) -> list[Interval]:
    """The first ``n`` positions of an ordered interval list."""
    out = []
    for start, end in intervals:
        if n <= 0:
            break
        take = min(n, end - start)
        out.append((start, start + take))
        n -= take
    return out


def drop_prefix(intervals: list[Interval], n: int) -> list[Interval]:
    out = []
    for start, end in intervals:
        skip = min(n, end - start)
        n -= skip
        if start + skip < end:
            out.append((start + skip, end))
    return out


def split_balanced(intervals: list[Interval], world_size: int) -> list[list[Interval]]:
    """Contiguous slices of an ordered interval list; slice sizes differ by at most one."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    total = size(intervals)
    bounds = [total * r // world_size for r in range(world_size + 1)]
    return [take_prefix(drop_prefix(intervals, bounds[r]), bounds[r + 1] - bounds[r]) for r in range(world_size)]


@dataclass(frozen=True)
class Piece:
    """Samples ``[start, end)`` of one shard, in that shard's epoch order."""

    shard: int
    start: int
    end: int
    global_start: int  # position of ``start`` in the epoch's global order


@dataclass(frozen=True)
class EpochLayout:
    """The global order of one epoch over shards with known sample counts."""

    counts: tuple[int, ...]
    seed: int
    epoch: int
    shuffle: bool = True

    @cached_property
    def order(self) -> np.ndarray:
        return shard_order(len(self.counts), self.seed, self.epoch, self.shuffle)

    @cached_property
    def starts(self) -> np.ndarray:
        """``starts[k]``: global position of the first sample of the k-th shard in ``order``."""
        sizes = np.asarray(self.counts, dtype=np.int64)[self.order]
        return np.concatenate([[0], np.cumsum(sizes)])

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def pieces(self, intervals: list[Interval]) -> list[Piece]:
        """Split global intervals (in the given order) into per-shard pieces."""
        out = []
        for start, end in intervals:
            k = int(np.searchsorted(self.starts, start, side="right")) - 1
            while start < end:
                shard_start, shard_end = int(self.starts[k]), int(self.starts[k + 1])
                stop = min(end, shard_end)
                if stop > start:
                    out.append(Piece(int(self.order[k]), start - shard_start, stop - shard_start, start))
                start = max(start, stop)
                k += 1
        return out

    def assignment(self, consumed: list[Interval], rank: int, world_size: int,
                   base: list[Interval] | None = None) -> list[Interval]:
        """The global intervals that ``rank`` of ``world_size`` reads for the rest of this epoch.

        Slices are cut from what remained at ``base`` (the consumed set when this worker count
        started on the epoch; default ``consumed``), minus what has been consumed since.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        base = consumed if base is None else base
        mine = split_balanced(subtract(self.total, base), world_size)[rank]
        return intersect(mine, subtract(self.total, consumed))
