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


BLOCK = 512
_REGULAR = (b"0", b"\0", b"7")  # regular file types (``7``: contiguous file)


class TarFormatError(ValueError):
    """The archive is truncated or a header is not a tar header; ``member``: the name being read."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"invalid {what} field {field!r} in tar header") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156], "checksum")
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == unsigned


def _pax_records(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for the regular files of a tar stream (ustar, GNU, pax).

    A sequential reader much lighter than ``tarfile`` for many small members. Raises
    ``TarFormatError`` for a truncated archive or a block that is not a valid header.
    """
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(BLOCK)
        if not header or header == bytes(BLOCK):  # end of archive (or EOF at a member boundary)
            return
        if len(header) < BLOCK:
            raise TarFormatError(f"truncated tar header ({len(header)} of {BLOCK} bytes)")
        if not _checksum_ok(header):
            raise TarFormatError("invalid tar header (checksum mismatch)")
        kind = header[156:157]
        size = int(pax["size"]) if "size" in pax else _octal(header[124:136], "size")
        padded = -(-size // BLOCK) * BLOCK
        data = stream.read(padded) if padded else b""
        if len(data) < size:
            name = long_name or pax.get("path") or _header_name(header)
            raise TarFormatError(f"truncated tar: member {name!r} has {len(data)} of {size} bytes", name)
        data = data[:size]
        if kind == b"L":
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if kind == b"x":
            pax = _pax_records(data)
            continue
        if kind in _REGULAR:
            yield long_name or pax.get("path") or _header_name(header), data
        long_name, pax = None, {}


def _header_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def iter_raw_samples(stream: BinaryIO) -> Iterator[RawSample]:
    """Yield the samples of a tar stream in file order, never raising for bad data.

    A truncated or garbled archive ends the iteration with one final sample carrying the
    error (the key of the member being read when it broke, or ``<end of shard>``).
    """
    current: RawSample | None = None
    members = iter_tar_members(stream)
    while True:
        try:
            item = next(members, None)
        except (TarFormatError, OSError) as exc:
            parts = split_member_name(getattr(exc, "member", None) or "")
            broken_key = parts[0] if parts else None
            if current is not None and broken_key not in (None, current.key):
                yield current
                current = None
            current = current or RawSample(key=broken_key or "<end of shard>")
            current.error = f"unreadable tar: {exc}"
            yield current
            return
        if item is None:
            break
        name, data = item
        parts = split_member_name(name)
        if parts is None or parts[0].rsplit("/", 1)[-1].startswith("__"):
            continue
        key, ext = parts
        if current is not None and current.key != key:
            yield current
            current = None
        if current is None:
            current = RawSample(key=key)
        if ext in current.members:
            current.error = f"duplicate member {name!r}"
        current.members[ext] = data
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
