"""The time-series ops: the magnitude-domain, time-domain and frequency-domain augmentations of
Um et al. 2017 and Iwana and Uchida 2021 (their reference settings at magnitude 5), and
frequency masking and amplitude/phase perturbation (Gao et al. 2020, RobustTAD). ``OPS`` is the
series catalogue's op table (``augtrain.augment.series`` registers it).

A series is float32 ``[T, C]``; every op returns the same shape and dtype. Parameters are floats
like every op's: ``sample`` draws the op's strength from the magnitude and a ``seed`` from which
``apply`` draws its random curves and positions, so one draw gives the same series on every
backend and in every process. Noise and offsets scale with each channel's standard deviation,
so the ops mean the same on raw and on standardised series. Magnitude 0 is the identity for
every op.

==============  ==========================================================  ========================
op              at magnitude m (s = m / 5)                                  m = 5 (reference)
==============  ==========================================================  ========================
jitter          + N(0, (0.03 s * std)^2) per value                          sigma 0.03
scaling         x N(1, (0.1 s)^2) per channel                               sigma 0.1
magnitude_warp  x a cubic spline through 4 knots ~ N(1, (0.2 s)^2)          sigma 0.2, 4 knots
time_warp       time re-indexed by the cumulative sum of a cubic spline     sigma 0.2, 4 knots
                through 4 knots ~ N(1, (0.2 s)^2), rescaled to [0, T-1]
window_slice    a random window of (1 - 0.1 s) T steps, resampled to T      ratio 0.9
window_warp     a random window of 0.1 s T steps sped up (x0.5) or          ratio 0.1, scales 0.5, 2
                slowed down (x2), the whole resampled to T
permutation     cut into 1 + round(0.8 m) segments, shuffled (5 at m = 5)    5 segments
freq_mask       a random band of 0.1 s of the rFFT bins (not the mean) set   10 % of the bins
                to zero
freq_perturb    rFFT amplitude x N(1, (0.1 s)^2) and phase + N(0, (0.1 s    sigma 0.1, 0.1 pi
                pi)^2) on each bin but the mean
==============  ==========================================================  ========================

Mixing two series in the frequency domain needs a second sample of the batch, which a
per-sample op does not have; it is left out.
"""

from __future__ import annotations

import numpy as np

from augtrain.augment.registry import OpDef, Params

MAX_MAGNITUDE = 10.0
KNOTS = 4
MAX_SEED = 2**31 - 1


def _rng(params: Params) -> np.random.Generator:
    return np.random.default_rng(int(params["seed"]))


def _std(x: np.ndarray) -> np.ndarray:
    """Per-channel standard deviation [1, C] (1 for a constant channel)."""
    std = x.std(axis=0, keepdims=True)
    return np.where(std > 0, std, 1.0)


def _resample(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``x`` [T, C] read at fractional time ``positions`` [T'] by linear interpolation."""
    grid = np.arange(len(x), dtype=np.float64)
    return np.stack([np.interp(positions, grid, x[:, c]) for c in range(x.shape[1])], axis=1)


def _spline(rng: np.random.Generator, length: int, sigma: float, channels: int) -> np.ndarray:
    """Smooth random curves [T, C] through ``KNOTS`` + 2 evenly spaced knots ~ N(1, sigma^2)."""
    from scipy.interpolate import CubicSpline

    knots_x = np.linspace(0, length - 1, KNOTS + 2)
    knots_y = rng.normal(1.0, sigma, size=(KNOTS + 2, channels))
    return CubicSpline(knots_x, knots_y, axis=0)(np.arange(length))


def _out(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=like.dtype)


# ---------------------------------------------------------------- sampling


def _seeded(strength: str, scale: float):
    """A sampler drawing ``strength = scale * m / 5`` and a seed."""

    def sample(rng: np.random.Generator, magnitude: float, args: dict, h: int, w: int, size: int | None) -> Params:
        return {strength: scale * float(magnitude) / 5.0, "seed": float(rng.integers(0, MAX_SEED))}

    return sample


def _sample_permutation(rng, magnitude, args, h, w, size) -> Params:
    return {"segments": float(1 + round(0.8 * float(magnitude))), "seed": float(rng.integers(0, MAX_SEED))}


# ---------------------------------------------------------------- applying


def jitter(x: np.ndarray, p: Params) -> np.ndarray:
    if p["sigma"] <= 0:
        return x
    return _out(x + _rng(p).normal(0.0, p["sigma"], size=x.shape) * _std(x), x)


def scaling(x: np.ndarray, p: Params) -> np.ndarray:
    if p["sigma"] <= 0:
        return x
    return _out(x * _rng(p).normal(1.0, p["sigma"], size=(1, x.shape[1])), x)


def magnitude_warp(x: np.ndarray, p: Params) -> np.ndarray:
    if p["sigma"] <= 0 or len(x) < 2:
        return x
    return _out(x * _spline(_rng(p), len(x), p["sigma"], x.shape[1]), x)


def time_warp(x: np.ndarray, p: Params) -> np.ndarray:
    if p["sigma"] <= 0 or len(x) < 2:
        return x
    speed = np.clip(_spline(_rng(p), len(x), p["sigma"], 1)[:, 0], 1e-3, None)  # one warp for all channels
    warped = np.cumsum(speed)
    warped = (warped - warped[0]) / (warped[-1] - warped[0]) * (len(x) - 1)
    return _out(_resample(x, warped), x)


def window_slice(x: np.ndarray, p: Params) -> np.ndarray:
    n = len(x)
    width = int(round((1.0 - min(p["cut"], 0.95)) * n))
    if p["cut"] <= 0 or width >= n or width < 2:
        return x
    start = int(_rng(p).integers(0, n - width + 1))
    return _out(_resample(x, np.linspace(start, start + width - 1, n)), x)


def window_warp(x: np.ndarray, p: Params) -> np.ndarray:
    n = len(x)
    width = int(round(min(p["ratio"], 0.9) * n))
    if p["ratio"] <= 0 or width < 2:
        return x
    rng = _rng(p)
    scale = (0.5, 2.0)[int(rng.integers(0, 2))]
    start = int(rng.integers(0, n - width + 1))
    # the window's time runs at 1 / scale: a window of `width` steps becomes `width * scale` steps
    positions = np.concatenate([np.arange(start, dtype=np.float64),
                                np.linspace(start, start + width - 1, max(2, int(round(width * scale)))),
                                np.arange(start + width, n, dtype=np.float64)])
    warped = _resample(x, positions)
    return _out(_resample(warped, np.linspace(0, len(warped) - 1, n)), x)


def permutation(x: np.ndarray, p: Params) -> np.ndarray:
    n, segments = len(x), int(min(p["segments"], len(x)))
    if segments <= 1:
        return x
    rng = _rng(p)
    cuts = np.sort(rng.choice(np.arange(1, n), size=segments - 1, replace=False))
    pieces = np.split(x, cuts)
    order = rng.permutation(segments)
    return _out(np.concatenate([pieces[i] for i in order]), x)


def freq_mask(x: np.ndarray, p: Params) -> np.ndarray:
    spectrum = np.fft.rfft(x, axis=0)
    bins = spectrum.shape[0] - 1  # the mean (bin 0) is kept
    width = int(round(min(p["fraction"], 1.0) * bins))
    if p["fraction"] <= 0 or width < 1:
        return x
    start = 1 + int(_rng(p).integers(0, bins - width + 1))
    spectrum[start:start + width] = 0
    return _out(np.fft.irfft(spectrum, n=len(x), axis=0), x)


def freq_perturb(x: np.ndarray, p: Params) -> np.ndarray:
    if p["sigma"] <= 0 or len(x) < 3:
        return x
    rng = _rng(p)
    spectrum = np.fft.rfft(x, axis=0)
    shape = (spectrum.shape[0] - 1, x.shape[1])
    amplitude = np.abs(spectrum[1:]) * np.clip(rng.normal(1.0, p["sigma"], size=shape), 0.0, None)
    phase = np.angle(spectrum[1:]) + rng.normal(0.0, p["sigma"] * np.pi, size=shape)
    spectrum[1:] = amplitude * np.exp(1j * phase)
    return _out(np.fft.irfft(spectrum, n=len(x), axis=0), x)


def _op(name: str, sample, apply, params: tuple[str, ...], kind: str) -> OpDef:
    return OpDef(name, sample, apply, params + ("seed",), uses_magnitude=True, kind=kind)


OPS: dict[str, OpDef] = {op.name: op for op in (
    _op("jitter", _seeded("sigma", 0.03), jitter, ("sigma",), "magnitude"),
    _op("scaling", _seeded("sigma", 0.1), scaling, ("sigma",), "magnitude"),
    _op("magnitude_warp", _seeded("sigma", 0.2), magnitude_warp, ("sigma",), "magnitude"),
    _op("time_warp", _seeded("sigma", 0.2), time_warp, ("sigma",), "time"),
    _op("window_slice", _seeded("cut", 0.1), window_slice, ("cut",), "time"),
    _op("window_warp", _seeded("ratio", 0.1), window_warp, ("ratio",), "time"),
    _op("permutation", _sample_permutation, permutation, ("segments",), "time"),
    _op("freq_mask", _seeded("fraction", 0.1), freq_mask, ("fraction",), "frequency"),
    _op("freq_perturb", _seeded("sigma", 0.1), freq_perturb, ("sigma",), "frequency"),
)}
