"""Accounting for samples that were skipped: counted by reason, listed by shard and key.

By default a bad sample is skipped and recorded here; in strict mode the first one raises
``BadSampleError`` naming shard and key. Counts are always complete; the list of individual
records is capped (``MAX_RECORDS``) so that a badly broken corpus cannot exhaust memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

MAX_RECORDS = 1000


class BadSampleError(RuntimeError):
    """Raised in strict mode: the message names the shard and the sample key."""

    def __init__(self, shard: str, key: str, reason: str) -> None:
        super().__init__(f"bad sample in {shard}, key {key!r}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason


@dataclass(frozen=True)
class SkipRecord:
    shard: str
    key: str
    reason: str  # a stable category, counted by: 'undecodable image', 'missing label', ...
    detail: str = ""
    index: int = -1  # position in the epoch's global order, -1 where it has none


@dataclass
class SkipReport:
    counts: Counter = field(default_factory=Counter)
    records: list[SkipRecord] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, record: SkipRecord) -> None:
        self.counts[record.reason] += 1
        if len(self.records) < MAX_RECORDS:
            self.records.append(record)

    def merge(self, other: "SkipReport") -> "SkipReport":
        merged = SkipReport(self.counts + other.counts, list(self.records))
        merged.records.extend(other.records[: max(0, MAX_RECORDS - len(merged.records))])
        return merged

    def to_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts), "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, data: dict) -> "SkipReport":
        return cls(Counter(data.get("counts", {})), [SkipRecord(**r) for r in data.get("records", [])])

    def format(self, limit: int = 20) -> str:
        """The counts by reason, then at most ``limit`` records (0: the counts alone)."""
        if not self.total:
            return "skipped samples: 0"
        lines = [f"skipped samples: {self.total} (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) + ")"]
        lines += [f"  {r.shard} key={r.key}: {r.reason}" + (f" ({r.detail})" if r.detail else "") for r in self.records[:limit]]
        if limit and self.total > limit:
            lines.append(f"  ... {self.total - min(limit, len(self.records))} more")
        return "\n".join(lines)
