"""The time-series modality: ``npy`` members (a numeric array saved with ``numpy.save``) or ``json``
members (a list of numbers, or a list of rows), decoded to float32 ``[T, C]``; batches become
``[B, C, T]`` float tensors normalised per channel; the raw features are the flattened values."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from augtrain.pipelines.modalities.base import DecodeSpec, Modality, SampleError, register_modality


def as_series(array: Any) -> np.ndarray:
    """A numeric array of 1 or 2 dimensions -> float32 ``[T, C]``; SampleError otherwise."""
    try:
        x = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise SampleError("non-numeric series", str(exc)[:80]) from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise SampleError("bad series shape", f"expected [T] or [T, C] with T >= 1, got {list(x.shape)}")
    if not np.isfinite(x).all():
        raise SampleError("non-finite series values", f"{int((~np.isfinite(x)).sum())} of {x.size}")
    return x


class SeriesModality(Modality):
    name = "series"
    raw_features_name = "raw series values"
    members = ("npy", "json")
    column = "series"
    formats = ("npy",)

    def decode(self, ext: str, data: bytes, spec: DecodeSpec) -> np.ndarray:
        if ext == "npy":
            try:
                return as_series(np.load(io.BytesIO(data), allow_pickle=False))
            except (ValueError, OSError) as exc:
                if isinstance(exc, SampleError):
                    raise
                raise SampleError("unreadable npy array", str(exc)) from None
        try:
            return as_series(json.loads(data))
        except json.JSONDecodeError as exc:
            raise SampleError("unreadable json", str(exc)) from None

    def encode(self, value: np.ndarray, fmt: str | None = None) -> tuple[str, bytes]:
        if fmt not in (None, "npy"):
            raise ValueError(f"series format must be 'npy', got {fmt!r}")
        buf = io.BytesIO()
        np.save(buf, np.asarray(value, dtype=np.float32), allow_pickle=False)
        return "npy", buf.getvalue()

    def preview(self, values: Sequence[Any], policy: Any, *, size: int | None = None, per_sample: int = 4,
                seed: int = 0, backend: str = "auto") -> np.ndarray:
        """Each series (its first channel) with ``per_sample`` augmented copies, one panel each."""
        if backend != "auto":
            raise ValueError(f"--backend {backend!r}: series previews apply the ops themselves (auto)")
        from augtrain.augment.series.preview import render_series_preview

        values = [self.resize(v, size) if size else v for v in values]
        return render_series_preview(values, self.parse_policy(policy), per_sample=per_sample, seed=seed)

    def manifest_fields(self, fmt: str, source: Any = None) -> dict[str, Any]:
        """The series' length (None when lengths differ) and channel count."""
        if source is None:
            return {}
        from augtrain.pipelines.data.series_sources import shape_summary

        return shape_summary(source)

    def to_tensor(self, column: np.ndarray, mean: Sequence[float], std: Sequence[float]):
        """float [B, T, C] -> float [B, C, T], ``(x - mean) / std`` per channel (one value: all);
        a batch of unequal lengths is resampled to its longest series first."""
        import torch

        lengths = {len(v) for v in column}
        if len(lengths) > 1:  # series of unequal lengths: each resampled to the batch's longest
            column = [self.resize(np.asarray(v, dtype=np.float32), max(lengths)) for v in column]
        x = torch.as_tensor(np.asarray(column, dtype=np.float32)).permute(0, 2, 1)
        m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1)
        s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1)
        return ((x - m) / s).contiguous()

    def resize(self, value: np.ndarray, size: int) -> np.ndarray:
        """Linear interpolation of every channel to ``size`` time steps."""
        if len(value) == size:
            return value
        old, new = np.linspace(0.0, 1.0, len(value)), np.linspace(0.0, 1.0, size)
        return np.stack([np.interp(new, old, value[:, c]) for c in range(value.shape[1])], axis=1).astype(np.float32)


SERIES = register_modality(SeriesModality())
