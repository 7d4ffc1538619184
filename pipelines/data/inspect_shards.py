"""``augtrain shards inspect``: read every sample of every shard and report what is there.

Per shard: sample count, classes, extensions, and every bad sample with its key and reason;
against the manifest when present: missing shards, count and sha256 mismatches.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from augtrain.pipelines.data import storage
from augtrain.pipelines.data.bad_data import SkipRecord, SkipReport
from augtrain.pipelines.data.decode import DecodeSpec, SampleError, decode_sample
from augtrain.pipelines.data.shard_set import ShardSet
from augtrain.pipelines.data.wds_format import iter_raw_samples


@dataclass
class ShardSummary:
    name: str
    samples: int = 0
    classes: Counter = field(default_factory=Counter)
    extensions: Counter = field(default_factory=Counter)
    bad: list[SkipRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # shard-level: manifest mismatches


class _HashingReader:
    """A file wrapper that hashes what is read through it."""

    def __init__(self, f) -> None:
        self.f, self.digest = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data


def inspect_shard(url: str, name: str, spec: DecodeSpec, expected: int | None, sha256: str | None) -> ShardSummary:
    summary = ShardSummary(name)
    try:
        f = storage.open_binary(url)
    except (FileNotFoundError, OSError) as exc:
        summary.problems.append(f"cannot open: {exc}")
        return summary
    with f:
        reader = _HashingReader(f)
        for raw in iter_raw_samples(reader):
            summary.samples += 1
            summary.extensions.update(raw.members.keys())
            try:
                out = decode_sample(raw, spec)
                if "label" in out:
                    summary.classes[out["label"]] += 1
            except SampleError as exc:
                summary.bad.append(SkipRecord(name, raw.key, exc.reason, exc.detail))
        while reader.read(1 << 20):
            pass
    if expected is not None and expected != summary.samples:
        summary.problems.append(f"manifest lists {expected} samples, shard has {summary.samples}")
    if sha256 and reader.digest.hexdigest() != sha256:
        summary.problems.append("sha256 differs from the manifest")
    return summary


@dataclass
class InspectReport:
    shards: list[ShardSummary]
    class_names: list[str] | None

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def skipped(self) -> SkipReport:
        report = SkipReport()
        for s in self.shards:
            for record in s.bad:
                report.add(record)
        return report

    @property
    def ok(self) -> bool:
        return not any(s.bad or s.problems for s in self.shards)

    def to_dict(self) -> dict:
        return {
            "samples": self.samples, "ok": self.ok, "class_names": self.class_names,
            "classes": {str(k): v for k, v in sorted(sum((s.classes for s in self.shards), Counter()).items())},
            "skipped": self.skipped.to_dict(),
            "shards": [{"name": s.name, "samples": s.samples, "classes": {str(k): v for k, v in sorted(s.classes.items())},
                        "extensions": dict(s.extensions), "bad": len(s.bad), "problems": s.problems} for s in self.shards],
        }

    def format(self) -> str:
        lines = [f"{len(self.shards)} shards, {self.samples} samples"]
        for s in self.shards:
            exts = ",".join(sorted(s.extensions))
            flag = "" if not (s.bad or s.problems) else f"  BAD: {len(s.bad)} samples" + "".join(f"; {p}" for p in s.problems)
            lines.append(f"  {s.name}: {s.samples} samples [{exts}] {len(s.classes)} classes{flag}")
        totals = sum((s.classes for s in self.shards), Counter())
        if totals:
            names = self.class_names or []
            lines.append("per class:")
            for label, n in sorted(totals.items()):
                label_name = f" {names[label]}" if 0 <= label < len(names) else ""
                lines.append(f"  {label}{label_name}: {n}")
        lines.append(self.skipped.format(limit=50))
        for s in self.shards:
            lines += [f"problem: {s.name}: {p}" for p in s.problems]
        return "\n".join(lines)


def inspect_shards(shards: ShardSet, label_key: str | None = "cls", threads: int = 4,
                   modality: str | None = None) -> InspectReport:
    """Decode every sample of every shard (through ``modality``: default the manifest's, else
    image) and check counts and checksums against the manifest."""
    modality = modality or (shards.manifest.modality if shards.manifest else "image")
    spec = DecodeSpec(label_key=label_key, channels=None, modality=modality)
    entries = {e.name: e for e in shards.manifest.shards} if shards.manifest else {}
    jobs = [(url, name, spec, entries[name].samples if name in entries else None, entries[name].sha256 if name in entries else None)
            for url, name in zip(shards.urls, shards.names)]
    with ThreadPoolExecutor(threads) as pool:
        summaries = list(pool.map(lambda job: inspect_shard(*job), jobs))
    return InspectReport(summaries, shards.class_names)
