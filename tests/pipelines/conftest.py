"""Tiny real shards written by the tests themselves."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest

from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.modalities.image import encode_image
from augtrain.pipelines.data.sources import open_source


@pytest.fixture(scope="session")
def digits_shards(session_tmp):
    """600 scikit-learn digits as 6 PNG shards of 100, with manifest."""
    out = os.path.join(session_tmp, "digits")
    write_shards(open_source("digits", "train"), out, "train",
                 WriteOptions(samples_per_shard=100, limit=600), progress=lambda _: None)
    return out


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def corrupt_shards(tmp_path):
    """Three shards (no manifest) holding one of each kind of bad sample among good ones.

    shard-a: key a03 has an undecodable image, a05 no label, a07 a non-integer label.
    shard-b: fine.
    shard-c: truncated in the middle of its 4th sample's image.
    """
    good = encode_image(np.full((8, 8), 128, np.uint8), "png")
    paths = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"shard-{name}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(10):
                key = f"{name}{i:02d}"
                image = b"not an image at all" if (name, i) == ("a", 3) else good
                add_member(tar, f"{key}.png", image)
                if (name, i) != ("a", 5):
                    add_member(tar, f"{key}.cls", b"seven" if (name, i) == ("a", 7) else str(i % 3).encode())
        paths.append(str(path))
    data = open(paths[2], "rb").read()
    cut = data.index(b"c03.png") + 512 + 10  # header of c03.png, then 10 bytes of its data
    open(paths[2], "wb").write(data[:cut])
    return tmp_path
