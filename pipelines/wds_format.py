"""The WebDataset tar format: sample grouping, tolerant reading, deterministic writing.

A WebDataset shard is a POSIX tar file; a sample is the run of consecutive members that
share a key, where a member's name is ``<key>.<ext>`` and the key is everything before the
first dot of the file name (the convention of the ``webdataset`` library). Readers here never
stop at the first problem: a member that cannot be read turns into a sample carrying an
``error`` string, so callers can skip, count and report it (or fail, in strict mode).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class RawSample:
    """One sample of a shard: its key and member bytes by extension, or why it is unreadable."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


def split_member_name(name: str) -> tuple[str, str] | None:
    """``'dir/abc.seg.png'`` -> ``('dir/abc', 'seg.png')``; None for names without an extension."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:  # no dot, or a hidden file such as '.DS_Store'
        return None
    return name[:dot], name[dot + 1 :].lower()


def iter_raw_samples(stream: BinaryIO) -> Iterator[RawSample]:
    """Yield the samples of a tar stream in file order, never raising for bad data.

    A truncated or garbled archive ends the iteration with one final sample carrying the
    error (the key of the member being read when it broke, or ``<end of shard>``).
    """
    current: RawSample | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                parts = split_member_name(info.name)
                if parts is None or parts[0].rsplit("/", 1)[-1].startswith("__"):
                    continue
                key, ext = parts
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = RawSample(key=key)
                try:
                    handle = tar.extractfile(info)
                    data = handle.read() if handle is not None else b""
                except (tarfile.TarError, EOFError, OSError) as exc:
                    current.error = f"truncated tar while reading member {info.name!r}: {exc}"
                    yield current
                    return
                if len(data) != info.size:
                    current.error = f"truncated tar: member {info.name!r} has {len(data)} of {info.size} bytes"
                    yield current
                    return
                if ext in current.members:
                    current.error = f"duplicate member {info.name!r}"
                current.members[ext] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        if current is not None:
            current.error = current.error or f"unreadable tar after member of this key: {exc}"
            yield current
            return
        yield RawSample(key="<end of shard>", error=f"unreadable tar: {exc}")
        return
    if current is not None:
        yield current


def sample_tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A tar header with fixed owner, mode and time, so that shard bytes are reproducible."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o444
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardTarWriter:
    """Writes samples into one tar file, members of a sample kept together in a fixed order."""

    def __init__(self, stream: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if "." in key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample key {key!r} contains a dot; WebDataset keys end at the first dot")
        for ext in sorted(members):
            data = members[ext]
            self._tar.addfile(sample_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()
