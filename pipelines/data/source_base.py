"""What every corpus source is: a labelled (or unlabelled) corpus of one modality, read by index,
and the error a bad source spec or file raises."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Source:
    """An in-memory or lazily read labelled corpus of one modality."""

    name: str
    class_names: list[str]
    length: int
    _items: object  # callable(index) -> (value, label)
    modality: str = "image"
    # callable(index) -> more members of the sample (e.g. {"conf": b"0.93"}: a pseudo-label's confidence)
    extras: object | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, int | None]:
        return self._items(index)

    def __iter__(self) -> Iterator[tuple[Any, int | None]]:
        for i in range(self.length):
            yield self[i]


class SourceError(ValueError):
    """A source spec or its files are unusable; the message names the spec or file."""
