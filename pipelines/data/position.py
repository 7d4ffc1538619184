"""The data position: what of the current epoch has been consumed, as a small JSON-able state.

Modelled on MosaicML Streaming's ``{epoch, sample_in_epoch, shuffle_seed}`` but exact under a
change of worker count: instead of one counter it keeps the consumed positions of the
epoch's global order as intervals (one or a few per worker). See ``partition`` for the
arithmetic and the guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from augtrain.pipelines.data.bad_data import SkipReport
from augtrain.pipelines.data.partition import Interval, normalize, size


@dataclass
class RankProgress:
    """What one worker consumed of its assignment in the current epoch."""

    epoch: int
    seed: int
    world_size: int
    consumed: list[Interval]
    skipped: SkipReport = field(default_factory=SkipReport)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "world_size": self.world_size,
                "consumed": [list(i) for i in self.consumed], "skipped": self.skipped.to_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "RankProgress":
        return cls(state["epoch"], state["seed"], state["world_size"], [tuple(i) for i in state["consumed"]],
                   SkipReport.from_dict(state.get("skipped", {})))


@dataclass
class DataPosition:
    """``consumed``: positions of this epoch's global order already read. ``world_size`` and
    ``base``: the worker count reading the epoch and what was consumed when it started, so
    that a resume with the same count gives every worker the rest of its own slice."""

    epoch: int = 0
    seed: int = 0
    consumed: list[Interval] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)  # this epoch, consumed part only
    world_size: int | None = None
    base: list[Interval] = field(default_factory=list)

    def base_for(self, world_size: int) -> list[Interval]:
        """Where slices are cut from for ``world_size`` workers."""
        return self.base if world_size == self.world_size else self.consumed

    @property
    def samples_consumed(self) -> int:
        return size(self.consumed)

    def merged(self, progress: list[RankProgress]) -> "DataPosition":
        """This position plus every worker's progress (all workers' progress must be given)."""
        if not progress:
            return self
        consumed = list(self.consumed)
        skipped = self.skipped
        worlds = {p.world_size for p in progress}
        if len(worlds) != 1 or len(progress) != next(iter(worlds)):
            raise ValueError(f"need the progress of every worker once, got {len(progress)} for world sizes {sorted(worlds)}")
        world = worlds.pop()
        for p in progress:
            if (p.epoch, p.seed) != (self.epoch, self.seed):
                raise ValueError(f"progress of epoch {p.epoch} seed {p.seed} cannot merge into epoch {self.epoch} seed {self.seed}")
            consumed += p.consumed
            skipped = skipped.merge(p.skipped)
        return DataPosition(self.epoch, self.seed, normalize(consumed), skipped, world, list(self.base_for(world)))

    def next_epoch(self) -> "DataPosition":
        return DataPosition(self.epoch + 1, self.seed)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "consumed": [list(i) for i in self.consumed],
                "samples_consumed": self.samples_consumed, "skipped": self.skipped.to_dict(),
                "world_size": self.world_size, "base": [list(i) for i in self.base]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "DataPosition":
        for key in ("epoch", "seed", "consumed"):
            if key not in state:
                raise ValueError(f"data position is missing {key!r}")
        return cls(int(state["epoch"]), int(state["seed"]), normalize([tuple(i) for i in state["consumed"]]),
                   SkipReport.from_dict(state.get("skipped", {})), state.get("world_size"),
                   normalize([tuple(i) for i in state.get("base", [])]))
