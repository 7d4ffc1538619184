"""Corpora that ``augtrain shards write`` can turn into shards, all available offline.

A source yields ``(value, label)`` pairs of one modality: for images ``value`` is uint8 ``[H, W]``
(grayscale) or ``[H, W, 3]`` (RGB), for text a ``str`` (``text_sources``), for series float32
``[T, C]`` (``series_sources``); ``label`` is an int
index into ``class_names``, or None in an unlabelled corpus.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from augtrain.pipelines.data.source_base import Source, SourceError

FASHION_MNIST_DIR = os.environ.get("AUGTRAIN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_FILE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
__all__ = ["Source", "SourceError", "open_source"]


def _read_idx(path: str) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise SourceError(
            f"{path}: not found; install the Debian package 'dataset-fashion-mnist' "
            "(make does this) or set AUGTRAIN_FASHION_MNIST_DIR"
        ) from exc
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise SourceError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise SourceError(f"{path}: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


def fashion_mnist(split: str) -> Source:
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(os.path.join(FASHION_MNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(FASHION_MNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    return _arrays("fashion-mnist", images, labels, FASHION_MNIST_CLASSES)


def digits(split: str) -> Source:
    """scikit-learn's 1,797 8x8 digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=bunch.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    return _arrays("digits", images[chosen], bunch.target[chosen], [str(d) for d in range(10)])


def npz(path: str) -> Source:
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: not found") from exc
    for key in ("x", "y"):
        if key not in data:
            raise SourceError(f"{path}: missing array {key!r} (found {sorted(data.files)})")
    x, y = data["x"], data["y"]
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise SourceError(f"{path}: 'y' must be an integer vector of length {len(x)}, got {y.dtype} {y.shape}")
    names = [str(n) for n in data["class_names"]] if "class_names" in data else [str(c) for c in range(int(y.max()) + 1)]
    if np.issubdtype(x.dtype, np.floating):  # float arrays are series; images are uint8
        from augtrain.pipelines.data.series_sources import series_npz

        return series_npz(path, x, y, names)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise SourceError(f"{path}: 'x' must be uint8 images [N,H,W] or [N,H,W,1|3], or float series [N,T] or "
                          f"[N,T,C], got {x.dtype} {x.shape}")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    return _arrays(f"npz:{path}", x, y, names)


def imagefolder(root: str) -> Source:
    """One sub-folder per class (sorted names are the classes), images inside each."""
    import cv2

    if not os.path.isdir(root):
        raise SourceError(f"{root}: not a directory (imagefolder needs one sub-folder per class)")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise SourceError(f"{root}: no class sub-folders")
    files: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(os.path.join(root, name))):
            files += [(os.path.join(dirpath, n), label) for n in sorted(names) if n.lower().endswith(IMAGE_FILE_EXTENSIONS)]
    if not files:
        raise SourceError(f"{root}: no image files under the class folders")

    def item(i: int) -> tuple[np.ndarray, int]:
        path, label = files[i]
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"{path}: cannot decode image")
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        return image, label

    return Source(f"imagefolder:{root}", classes, len(files), item)


def _arrays(name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Source:
    return Source(name, class_names, len(images), lambda i: (images[i], int(labels[i])))


def open_source(spec: str, split: str, **fields: str | None) -> Source:
    """``fashion-mnist`` | ``digits`` | ``imagefolder:PATH`` | ``npz:PATH`` (images, or series when
    its ``x`` is float); ``rotten-tomatoes`` | ``text:PATH`` (text; ``fields``: ``text_field``,
    ``label_field``, ``group_field``); ``ucr:NAME`` (series bundled with aeon)."""
    if spec == "rotten-tomatoes":
        from augtrain.pipelines.data.text_sources import rotten_tomatoes

        return rotten_tomatoes(split)
    if spec.startswith("ucr:") and len(spec) > 4:
        from augtrain.pipelines.data.series_sources import ucr

        return ucr(spec[4:], split)
    if spec.startswith("text:") and len(spec) > 5:
        from augtrain.pipelines.data.text_sources import text_file

        return text_file(spec[5:], **fields)
    if split not in ("train", "test"):
        raise SourceError(f"split must be 'train' or 'test', got {split!r}")
    if spec == "fashion-mnist":
        return fashion_mnist(split)
    if spec == "digits":
        return digits(split)
    kind, _, path = spec.partition(":")
    if kind == "imagefolder" and path:
        return imagefolder(path)
    if kind == "npz" and path:
        return npz(path)
    raise SourceError(f"unknown source {spec!r}: use fashion-mnist, digits, imagefolder:PATH, npz:PATH, "
                      f"rotten-tomatoes, text:PATH or ucr:NAME")
