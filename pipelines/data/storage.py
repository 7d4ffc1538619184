"""Where shards live: local paths, ``file://``, and remote URLs through pyarrow or fsspec.

Only this module knows about filesystems. URLs with a scheme that pyarrow understands
(``s3://``, ``gs://``, ``hdfs://``, ``file://``) use pyarrow's native filesystems; any other
scheme that fsspec knows (``memory://``, ``http://``, ...) goes through fsspec.
"""

from __future__ import annotations

import fnmatch
import os
from typing import BinaryIO

import braceexpand

_PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file")


def is_url(path: str) -> bool:
    return "://" in path


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a local ``path`` under a temporary name, then rename it into place: a
    reader sees the old file or the whole new one, never a part."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def open_binary(path: str) -> BinaryIO:
    """Open a local path or URL for sequential binary reading."""
    if not is_url(path):
        return open(path, "rb")
    if _scheme(path) in _PYARROW_SCHEMES:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        return fs.open_input_stream(inner)
    import fsspec

    return fsspec.open(path, "rb").open()


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return fs.exists(inner)


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return fs.isdir(inner)


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if is_url(base) else os.path.join(base, name)


def list_files(directory: str) -> list[str]:
    """File names (not paths) directly inside a directory, sorted."""
    if not is_url(directory):
        return sorted(e.name for e in os.scandir(directory) if e.is_file())
    import fsspec

    fs, inner = fsspec.core.url_to_fs(directory)
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False) if fs.isfile(p))


def expand_pattern(spec: str) -> list[str]:
    """Expand ``{000..009}`` brace ranges and ``*``/``?`` globs in the file name part."""
    paths: list[str] = []
    for item in braceexpand.braceexpand(spec):
        head, _, name = item.rpartition("/")
        if any(ch in name for ch in "*?["):
            directory = head or "."
            paths.extend(join(directory, n) if head else n for n in list_files(directory) if fnmatch.fnmatch(n, name))
        else:
            paths.append(item)
    return paths


def read_bytes(path: str) -> bytes:
    with open_binary(path) as f:
        return f.read()
