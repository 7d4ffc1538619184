"""Time-series corpora for ``augtrain shards write``: the UCR/UEA classification problems bundled
inside the aeon wheel, and a user's own arrays.

``ucr:NAME`` (``GunPoint``, ``ArrowHead``, ``ItalyPowerDemand``, ``OSULeaf``, ``BasicMotions``,
``JapaneseVowels``, ...; ``list_ucr()`` names every one installed): the problem's standard TRAIN
or TEST split, read by aeon's ``.ts`` loader (``aeon.datasets.load_from_ts_file``) from the
wheel's own files. aeon's ``load_classification`` is never called: without a local copy it
downloads. Classes are numbered in the order the file's header lists them. aeon returns
``[N, C, T]`` (or a list of ``[C, T]`` for unequal lengths); samples are float32 ``[T, C]``, the
series modality's layout. Unequal lengths are kept (fine-tuning resamples to ``finetune.size``);
missing values are refused, naming the problem and the series.

``npz:PATH`` with a float array ``x`` of ``[N, T]`` or ``[N, T, C]`` (an integer vector ``y`` and,
optionally, ``class_names``) is a user's own series; a uint8 ``x`` is read as images instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from augtrain.pipelines.data.source_base import Source, SourceError

SPLITS = {"train": "TRAIN", "test": "TEST"}


def ucr_dir() -> Path:
    """The folder of problems inside the installed aeon wheel (found without importing aeon)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("source 'ucr:NAME' reads the UCR problems bundled in the aeon wheel, and aeon is not "
                          "installed: pip install --no-deps aeon==1.6.0 (`make` does)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def list_ucr() -> list[str]:
    """The bundled classification problems: those with both a TRAIN and a TEST ``.ts`` file."""
    root = ucr_dir()
    return sorted(d.name for d in root.iterdir()
                  if (d / f"{d.name}_TRAIN.ts").is_file() and (d / f"{d.name}_TEST.ts").is_file())


def _series_list(data, name: str) -> list[np.ndarray]:
    """aeon's ``[N, C, T]`` array or list of ``[C, T]`` -> float32 ``[T, C]`` per series."""
    out = []
    for i, x in enumerate(data):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise SourceError(f"{name}: series {i} has shape {list(x.shape)}, expected [channels, length]")
        if not np.isfinite(x).all():
            raise SourceError(f"{name}: series {i} has {int((~np.isfinite(x)).sum())} missing or non-finite "
                              f"values; augtrain does not impute them")
        out.append(np.ascontiguousarray(x.T))
    return out


def ucr(name: str, split: str) -> Source:
    """A bundled UCR/UEA problem's standard ``split`` (train or test)."""
    if split not in SPLITS:
        raise SourceError(f"ucr:{name}: split must be 'train' or 'test' (the problem's own), got {split!r}")
    path = ucr_dir() / name / f"{name}_{SPLITS[split]}.ts"
    if not path.is_file():
        raise SourceError(f"ucr:{name}: no {path.name} in the aeon wheel; bundled problems: {', '.join(list_ucr())}")
    from aeon.datasets import load_from_ts_file

    data, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    if not meta.get("classlabel"):
        raise SourceError(f"ucr:{name}: {path.name} holds no class labels (not a classification problem)")
    classes = [str(c) for c in meta["class_values"]]
    index = {c: i for i, c in enumerate(classes)}
    try:
        labels = np.array([index[str(v)] for v in y], dtype=np.int64)
    except KeyError as exc:
        raise SourceError(f"ucr:{name}: label {exc.args[0]!r} is not among the header's classes {classes}") from None
    series = _series_list(data, f"ucr:{name} {split}")
    return Source(f"ucr:{name}", classes, len(series), lambda i: (series[i], int(labels[i])), modality="series")


def series_npz(path: str, x: np.ndarray, y: np.ndarray, names: list[str]) -> Source:
    """Float ``x`` [N, T] or [N, T, C] with integer labels ``y`` as series."""
    if x.ndim not in (2, 3):
        raise SourceError(f"{path}: a float 'x' holds series and must be [N, T] or [N, T, C], got {list(x.shape)}")
    values = x[:, :, None] if x.ndim == 2 else x
    series = _series_list(np.transpose(values, (0, 2, 1)), path)
    return Source(f"npz:{path}", names, len(series), lambda i: (series[i], int(y[i])), modality="series")


def shape_summary(source: Source) -> dict[str, int | None]:
    """``{"length": T or None (unequal lengths), "channels": C}`` of a series source."""
    lengths, channels = set(), set()
    for i in range(len(source)):
        value, _ = source[i]
        lengths.add(int(value.shape[0]))
        channels.add(int(value.shape[1]))
    if len(channels) > 1:
        raise SourceError(f"{source.name}: series have different channel counts {sorted(channels)}")
    return {"length": lengths.pop() if len(lengths) == 1 else None, "channels": channels.pop() if channels else None}
