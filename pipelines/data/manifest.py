"""``manifest.json``: what augtrain's shard writer records beside the shards.

Readers use a manifest when one is present (sample counts without a scan, class names) and
never require one: shards written by other tools are counted by reading them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

MANIFEST_NAME = "manifest.json"
FORMAT = "augtrain.shards/1"


@dataclass
class ShardEntry:
    name: str
    samples: int
    sha256: str | None = None
    bytes: int | None = None


@dataclass
class Manifest:
    shards: list[ShardEntry]
    modality: str = "image"
    split: str | None = None
    source: str | None = None
    class_names: list[str] | None = None
    extensions: list[str] = field(default_factory=list)
    image_format: str | None = None
    length: int | None = None  # series: the length every series has (None: unequal lengths)
    channels: int | None = None  # series: channels per time step
    dali_index: bool = False
    # generated samples: where they came from (generating checkpoint, labeller, seed, filter); such
    # shards may be mixed into training, never used as a validation or test split
    synthetic: dict | None = None
    format: str = FORMAT

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def to_json(self) -> str:
        data = asdict(self)
        data["num_samples"] = self.num_samples
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_NAME) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
            raise ValueError(f"{where}: expected an object with a 'shards' list")
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"{where}: unsupported manifest format {data.get('format')!r} (expected {FORMAT!r})")
        shards = []
        for i, entry in enumerate(data["shards"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ValueError(f"{where}: shards[{i}] needs a string 'name'")
            samples = entry.get("samples")
            if not isinstance(samples, int) or samples < 0:
                raise ValueError(f"{where}: shards[{i}].samples must be a non-negative integer, got {samples!r}")
            shards.append(ShardEntry(entry["name"], samples, entry.get("sha256"), entry.get("bytes")))
        known = {f for f in cls.__dataclass_fields__} | {"num_samples"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}")
        kwargs = {k: v for k, v in data.items() if k not in ("shards", "num_samples")}
        return cls(shards=shards, **kwargs)
