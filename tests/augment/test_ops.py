"""Every registered op: its reference semantics, and albumentations/DALI CPU parity on the
same sampled parameters.

Parity tolerances (absolute, in uint8 levels), DALI CPU and albumentations against the
numpy/cv2 reference:
- exact (0): identity, flips, crop without scaling, invert, solarize, posterize, cutout,
  equalize, auto_contrast (and every op albumentations runs through the reference);
- at most 1 level per pixel, mean under 0.25: interpolating ops (resize, random resized crop,
  rotate, shear, translate, blur) and color ops (brightness, contrast, color, sharpness,
  grayscale, color_jitter): rounding differs between kernels;
- gaussian_noise: DALI draws its own noise, so only the noise statistics are compared.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from augtrain.augment.image.albumentations_backend import AlbumentationsBackend
from augtrain.augment.image.ops import OPS, Params
from augtrain.augment.plan import Step, sample_op
from augtrain.augment.policy import Op
from augtrain.augment.registry import list_catalogues, ops
from augtrain.augment.image.transform import NumpyBackend


def _photo(h: int = 60, w: int = 80, c: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random image (edges and flat areas, like a photo)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (h // 5, w // 5, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return image if c == 3 else image[:, :, :1].copy()


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, (a.shape, b.shape, a.dtype, b.dtype)
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _shift_x(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    shift = -p["m02"]
    assert abs(abs(shift) - 0.7 * 0.45 * img.shape[1]) < 1e-6
    forward = np.array([[1.0, 0.0, shift], [0.0, 1.0, 0.0]])
    expected = cv2.warpAffine(img, forward, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
    assert _diff(out, expected.reshape(img.shape)).max() <= 1
    edge = slice(0, int(abs(shift))) if shift > 0 else slice(img.shape[1] - int(abs(shift)), None)
    assert (out[:, edge] == 128).all()


def _shift_y(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    _shift_x(np.ascontiguousarray(np.swapaxes(img, 0, 1)), np.ascontiguousarray(np.swapaxes(out, 0, 1)), {"m02": p["m12"]})


def _rotated(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    angle = np.degrees(np.arctan2(p["m10"], p["m00"]))
    assert 20.9 < abs(angle) < 21.1  # magnitude 7 -> 21 degrees
    assert (out[0, 0] == 128).all() and (out[-1, -1] == 128).all()  # corners leave the frame
    h, w = img.shape[:2]
    forward = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)  # counter-clockwise for angle > 0
    expected = cv2.warpAffine(img, forward, (w, h), flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128)).reshape(img.shape)
    assert _diff(out, expected).max() <= 1


def _sheared(axis: int):
    def check(img: np.ndarray, out: np.ndarray, p: Params) -> None:
        s = p["m01"] if axis == 0 else p["m10"]
        assert abs(abs(s) - 0.21) < 1e-9
        assert (out == 128).all(axis=2).any()

    return check


def _enhance(blend_with):
    def check(img: np.ndarray, out: np.ndarray, p: Params) -> None:
        base = blend_with(img)
        expected = np.clip(np.rint(base + p["factor"] * (img.astype(np.float32) - base)), 0, 255)
        assert _diff(out, expected.astype(np.uint8)).max() <= 1

    return check


def _gray_of(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None] if img.shape[2] == 3 else img.astype(np.float32)


def _check_rrc(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    assert out.shape[:2] == (32, 32)
    crop = img[int(p["y"]) : int(p["y"] + p["h"]), int(p["x"]) : int(p["x"] + p["w"])]
    expected = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_LINEAR).reshape(out.shape)
    np.testing.assert_array_equal(out, expected)
    assert 0.08 * img.shape[0] * img.shape[1] <= p["h"] * p["w"] * 1.05


def _check_noise(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    assert p["std"] == pytest.approx(0.7 * 25.5)
    _noise_stats(img, out, p)


def _noise_stats(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    d = out.astype(np.float32) - img
    inside = (img > 60) & (img < 195)
    assert abs(d[inside].std() - p["std"]) < 0.1 * p["std"] and abs(d[inside].mean()) < 1.5


def _check_blur(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    assert p["sigma"] == pytest.approx(0.1 + 0.7 * 1.9)
    k = 2 * int(np.ceil(3 * p["sigma"])) + 1
    expected = cv2.GaussianBlur(img, (k, k), p["sigma"], borderType=cv2.BORDER_REFLECT_101).reshape(img.shape)
    np.testing.assert_array_equal(out, expected)
    lap = lambda x: np.abs(cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)).mean()  # noqa: E731
    assert lap(out) < 0.8 * lap(img)


def _check_jitter(img: np.ndarray, out: np.ndarray, p: Params) -> None:
    assert all(1 - 0.56 <= p[k] <= 1 + 0.56 for k in ("brightness", "contrast", "saturation"))
    assert abs(p["hue"]) <= 0.14
    assert not np.array_equal(out, img)


# Op name -> (magnitude, check(img, out, params)) on the numpy reference. Every registered op
# needs an entry (test_every_op_has_a_case fails otherwise).
OP_CASES = {
    "identity": (0, lambda img, out, p: np.testing.assert_array_equal(out, img)),
    "resize": (0, lambda img, out, p: (out.shape[:2] == (32, 32)) or pytest.fail("resize shape")),
    "random_resized_crop": (0, _check_rrc),
    "hflip": (0, lambda img, out, p: np.testing.assert_array_equal(out, img[:, ::-1])),
    "vflip": (0, lambda img, out, p: np.testing.assert_array_equal(out, img[::-1])),
    "rotate": (7, _rotated),
    "shear_x": (7, _sheared(0)),
    "shear_y": (7, _sheared(1)),
    "translate_x": (7, _shift_x),
    "translate_y": (7, _shift_y),
    "auto_contrast": (0, lambda img, out, p: (out.reshape(-1, img.shape[2]).min(0) == 0).all() and (out.reshape(-1, img.shape[2]).max(0) == 255).all() or pytest.fail("auto_contrast range")),
    "equalize": (0, lambda img, out, p: np.testing.assert_array_equal(out[:, :, 0], cv2.equalizeHist(np.ascontiguousarray(img[:, :, 0])))),
    "invert": (0, lambda img, out, p: np.testing.assert_array_equal(out, 255 - img)),
    "solarize": (7, lambda img, out, p: np.testing.assert_array_equal(out, np.where(img >= 256 - 0.7 * 256, 255 - img, img))),
    "posterize": (7, lambda img, out, p: np.testing.assert_array_equal(out, img & 0xF0)),  # 8 - round(2.8) = 5 bits? see below
    "brightness": (7, _enhance(lambda img: np.zeros_like(img, dtype=np.float32))),
    "contrast": (7, _enhance(lambda img: np.float32(_gray_of(img).mean()))),
    "color": (7, _enhance(_gray_of)),
    "sharpness": (7, _enhance(lambda img: cv2.filter2D(img.astype(np.float32), -1, np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13, borderType=cv2.BORDER_REFLECT_101).reshape(img.shape))),
    "cutout": (7, lambda img, out, p: ((out[int(p["y0"]) : int(p["y1"]), int(p["x0"]) : int(p["x1"])] == 128).all() and int(p["y1"] - p["y0"]) > 0 and np.array_equal(out[: int(p["y0"])], img[: int(p["y0"])])) or pytest.fail("cutout")),
    "grayscale": (0, lambda img, out, p: img.shape[2] == 1 or (np.array_equal(out[:, :, 0], out[:, :, 2]) and _diff(out[:, :, :1], np.rint(_gray_of(img)).astype(np.uint8)).max() <= 1) or pytest.fail("grayscale")),
    "gaussian_noise": (7, _check_noise),
    "gaussian_blur": (7, _check_blur),
    "color_jitter": (7, _check_jitter),
}
# posterize at magnitude 7 keeps 8 - round(2.8) = 5 bits: mask 0xF8
OP_CASES["posterize"] = (7, lambda img, out, p: np.testing.assert_array_equal(out, img & 0xF8))

EXACT = {"identity", "hflip", "vflip", "invert", "solarize", "posterize", "cutout", "equalize", "auto_contrast"}
NOISY = {"gaussian_noise"}


# Each modality's catalogue that the package ships -> its table of op cases. A catalogue added to
# augtrain.augment without its table, or an op without its entry, fails the tests below.
from test_text_ops import APPLY as TEXT_OP_CASES  # noqa: E402  (tests/augment is on sys.path under pytest)
from test_series_ops import OP_CASES as SERIES_OP_CASES  # noqa: E402

OP_CASES_BY_MODALITY = {"image": OP_CASES, "text": TEXT_OP_CASES, "series": SERIES_OP_CASES}


def _shipped_catalogues() -> list[str]:
    """Catalogues whose ops are augtrain's own (plug-ins registered by other tests are not)."""
    return [m for m in list_catalogues() if all(op.apply.__module__.startswith("augtrain.") for op in ops(m).values())]


def test_every_op_has_a_case() -> None:
    assert set(OP_CASES) == set(OPS), f"missing test entries: {sorted(set(OPS) - set(OP_CASES))}"


def test_every_shipped_modality_has_a_case_for_each_op() -> None:
    shipped = _shipped_catalogues()
    assert "image" in shipped
    for modality in shipped:
        assert modality in OP_CASES_BY_MODALITY, f"no op test table for the {modality!r} catalogue"
        cases = OP_CASES_BY_MODALITY[modality]
        assert set(cases) == set(ops(modality)), f"{modality}: missing test entries {sorted(set(ops(modality)) - set(cases))}"


def _step(name: str, img: np.ndarray, seed: int, magnitude: float | None = None) -> Step:
    m = OP_CASES[name][0] if magnitude is None else magnitude
    return sample_op(Op(name, magnitude=m), np.random.default_rng(seed), img.shape[0], img.shape[1], 32)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [3, 1])
def test_reference_op_semantics(name: str, channels: int) -> None:
    img = _photo(c=channels)
    for seed in range(3):
        step = _step(name, img, seed)
        out = OPS[name].apply(img, step.params)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == channels
        OP_CASES[name][1](img, out, step.params)


def _assert_parity(name: str, ref: np.ndarray, other: np.ndarray, img: np.ndarray, step: Step) -> None:
    if name in NOISY:
        _noise_stats(img, other, step.params)
        return
    d = _diff(ref, other)
    if name in EXACT:
        assert d.max() == 0, f"{name}: {int((d > 0).sum())} pixels differ"
    else:
        assert d.max() <= 1 and d.mean() < 0.25, f"{name}: max {d.max()} mean {d.mean():.3f}"


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [3, 1])
def test_albumentations_matches_reference(name: str, channels: int) -> None:
    img = _photo(c=channels, seed=1)
    backend, ref = AlbumentationsBackend(), NumpyBackend()
    for seed, magnitude in ((0, 3.0), (1, 7.0), (2, 10.0)):
        step = _step(name, img, seed, magnitude)
        expected = ref.apply(img, [step])
        out = backend.apply(img, [step])
        if name in NOISY:
            np.testing.assert_array_equal(out, expected)  # albumentations runs the seeded reference
        else:
            _assert_parity(name, expected, out, img, step)


@pytest.fixture(scope="module")
def dali_backend():
    pytest.importorskip("nvidia.dali")
    from augtrain.augment.image.dali_backend import DaliSampleBackend

    return DaliSampleBackend()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [3, 1])
def test_dali_cpu_matches_albumentations(dali_backend, name: str, channels: int) -> None:
    img = _photo(c=channels, seed=2)
    albu = AlbumentationsBackend()
    for seed, magnitude in ((0, 3.0), (1, 7.0), (2, 10.0)):
        step = _step(name, img, seed, magnitude)
        _assert_parity(name, albu.apply(img, [step]), dali_backend.apply(img, [step]), img, step)


def test_unscaled_crop_is_exact_in_every_backend(dali_backend) -> None:
    img = _photo()
    step = Step("random_resized_crop", {"y": 7, "x": 11, "h": 32, "w": 32, "out_h": 32, "out_w": 32})
    expected = img[7:39, 11:43]
    for backend in (NumpyBackend(), AlbumentationsBackend(), dali_backend):
        np.testing.assert_array_equal(backend.apply(img, [step]), expected)
