"""The image ops: how each op turns a 0-10 magnitude into parameters (``sample``) and the
reference numpy/cv2 implementation that applies those parameters (``apply``). ``OPS`` is the
image catalogue's op table (``augtrain.augment.image`` registers it).

Images are uint8 ``[H, W, C]`` with C = 1 or 3 (RGB). Parameters are a flat dict of floats
(``param_names`` fixes their order), so that every backend can apply the very same draw.

Magnitude tables (``level = magnitude / 10``; "±" means a random sign, as in DALI's
``auto_aug`` and torchvision's RandAugment, whose ranges these follow):

=================  ===========================================================  =============
op                 parameter at magnitude m                                     magnitude 10
=================  ===========================================================  =============
rotate             angle = ± level * 30 degrees                                 ±30°
shear_x, shear_y   shear = ± level * 0.3                                        ±0.3
translate_x, _y    shift = ± level * 0.45 * width (height)                      ±45 %
brightness         factor = 1 ± level * 0.9 (PIL ImageEnhance semantics)        0.1 or 1.9
contrast           factor = 1 ± level * 0.9, blend with the mean gray level     0.1 or 1.9
color              factor = 1 ± level * 0.9, blend with the grayscale image     0.1 or 1.9
sharpness          factor = 1 ± level * 0.9, blend with a 3x3 smoothed image    0.1 or 1.9
solarize           threshold = 256 - level * 256 (pixels >= threshold invert)  0 (all)
posterize          bits kept = 8 - round(level * 4)                             4 bits
cutout             square side = level * 0.5 * min(H, W), filled with 128       half the side
gaussian_noise     std = level * 0.1 * 255                                      25.5
gaussian_blur      sigma = 0.1 + level * 1.9, window 2*ceil(3 sigma)+1          sigma 2.0
color_jitter       s = level: brightness/contrast/saturation factors in         SimCLR's
                   [1 - 0.8 s, 1 + 0.8 s], hue shift in [-0.2 s, 0.2 s] turns    (0.8,0.8,0.8,0.2)
=================  ===========================================================  =============

Ops without a magnitude: identity, hflip, vflip, auto_contrast, equalize, invert, grayscale,
random_resized_crop (args ``scale``, ``ratio``), resize (to the transform's size).
Geometric ops fill uncovered pixels with 128 (DALI ``auto_aug``'s default).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from augtrain.augment.registry import OpDef, Params

FILL = 128
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _level(m: float) -> float:
    return float(m) / 10.0


def _sign(rng: np.random.Generator) -> float:
    return -1.0 if rng.random() < 0.5 else 1.0


def _chw(image: np.ndarray) -> tuple[int, int, int]:
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"augment ops take uint8 [H, W, 1|3] images, got {image.dtype} {image.shape}")
    return image.shape  # type: ignore[return-value]


def _keep_channels(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """cv2 drops a single channel axis; put it back."""
    return out[:, :, None] if out.ndim == 2 and like.ndim == 3 else out


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return _keep_channels(cv2.LUT(image, table.astype(np.uint8)), image)


def _gray(image: np.ndarray) -> np.ndarray:
    """Float32 luma ``[H, W, 1]`` (ITU-R 601)."""
    if image.shape[2] == 1:
        return image.astype(np.float32)
    return (image.astype(np.float32) @ LUMA)[:, :, None]


def _no_params(rng: np.random.Generator, m: float, args: dict, h: int, w: int, size: int | None) -> Params:
    return {}


# ---------------------------------------------------------------------------- size ops


def _sample_resize(rng, m, args, h, w, size) -> Params:
    if size is None:
        raise ValueError("op 'resize' needs an output size")
    return {"out_h": float(size), "out_w": float(size)}


def _apply_resize(image: np.ndarray, p: Params) -> np.ndarray:
    out_h, out_w = int(p["out_h"]), int(p["out_w"])
    if image.shape[:2] == (out_h, out_w):
        return image
    return _keep_channels(cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR), image)


def _sample_rrc(rng, m, args, h, w, size) -> Params:
    """torchvision's RandomResizedCrop draw: 10 tries at (scale, ratio), then a center crop."""
    if size is None:
        raise ValueError("op 'random_resized_crop' needs an output size (size=None was given)")
    scale = args.get("scale", (0.08, 1.0))
    ratio = args.get("ratio", (3 / 4, 4 / 3))
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            return {"y": y, "x": x, "h": ch, "w": cw, "out_h": float(size), "out_w": float(size)}
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return {"y": (h - ch) // 2, "x": (w - cw) // 2, "h": ch, "w": cw, "out_h": float(size), "out_w": float(size)}


def _apply_rrc(image: np.ndarray, p: Params) -> np.ndarray:
    y, x, h, w = int(p["y"]), int(p["x"]), int(p["h"]), int(p["w"])
    return _apply_resize(np.ascontiguousarray(image[y : y + h, x : x + w]), p)


# ---------------------------------------------------------------------------- geometric

AFFINE = ("m00", "m01", "m02", "m10", "m11", "m12")


def _affine_params(inverse: np.ndarray) -> Params:
    """2x3 matrix mapping output pixel (x, y) to input pixel (pixel centers at integers)."""
    return {k: float(v) for k, v in zip(AFFINE, inverse.reshape(-1))}


def _about_center(linear: np.ndarray, h: int, w: int) -> np.ndarray:
    """src = linear @ (dst - c) + c, as a 2x3 matrix."""
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    return np.hstack([linear, (c - linear @ c)[:, None]])


def _sample_rotate(rng, m, args, h, w, size) -> Params:
    angle = _sign(rng) * _level(m) * 30.0
    t = math.radians(angle)
    linear = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return _affine_params(_about_center(linear, h, w))


def _sample_shear(axis: int):
    def sample(rng, m, args, h, w, size) -> Params:
        s = _sign(rng) * _level(m) * 0.3
        linear = np.array([[1.0, s], [0.0, 1.0]]) if axis == 0 else np.array([[1.0, 0.0], [s, 1.0]])
        return _affine_params(_about_center(linear, h, w))

    return sample


def _sample_translate(axis: int):
    def sample(rng, m, args, h, w, size) -> Params:
        shift = _sign(rng) * _level(m) * 0.45 * (w if axis == 0 else h)
        t = np.array([-shift, 0.0]) if axis == 0 else np.array([0.0, -shift])
        return _affine_params(np.hstack([np.eye(2), t[:, None]]))

    return sample


def _apply_affine(image: np.ndarray, p: Params) -> np.ndarray:
    h, w, c = _chw(image)
    matrix = np.array([p[k] for k in AFFINE], dtype=np.float64).reshape(2, 3)
    out = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(FILL,) * c,
    )  # fmt: skip
    return _keep_channels(out, image)


def _apply_hflip(image: np.ndarray, p: Params) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def _apply_vflip(image: np.ndarray, p: Params) -> np.ndarray:
    return np.ascontiguousarray(image[::-1])


def _apply_identity(image: np.ndarray, p: Params) -> np.ndarray:
    return image


# ---------------------------------------------------------------------------- color (LUT-style)


def _apply_auto_contrast(image: np.ndarray, p: Params) -> np.ndarray:
    out = np.empty_like(image)
    for ch in range(image.shape[2]):
        plane = image[:, :, ch]
        lo, hi = int(plane.min()), int(plane.max())
        if hi > lo:
            table = _to_u8((np.arange(256, dtype=np.float32) - lo) * (255.0 / (hi - lo)))
            out[:, :, ch] = cv2.LUT(plane, table)
        else:
            out[:, :, ch] = plane
    return out


def _apply_equalize(image: np.ndarray, p: Params) -> np.ndarray:
    out = np.empty_like(image)
    for ch in range(image.shape[2]):
        out[:, :, ch] = cv2.equalizeHist(np.ascontiguousarray(image[:, :, ch]))
    return out


def _apply_invert(image: np.ndarray, p: Params) -> np.ndarray:
    return 255 - image


def _sample_solarize(rng, m, args, h, w, size) -> Params:
    return {"threshold": 256.0 - _level(m) * 256.0}


def _apply_solarize(image: np.ndarray, p: Params) -> np.ndarray:
    v = np.arange(256)
    return _lut(image, np.where(v >= p["threshold"], 255 - v, v))


def _sample_posterize(rng, m, args, h, w, size) -> Params:
    return {"bits": float(8 - int(round(_level(m) * 4)))}


def _apply_posterize(image: np.ndarray, p: Params) -> np.ndarray:
    mask = np.uint8((0xFF << (8 - int(p["bits"]))) & 0xFF)
    return image & mask


def _sample_enhance(rng, m, args, h, w, size) -> Params:
    return {"factor": 1.0 + _sign(rng) * _level(m) * 0.9}


def _apply_brightness(image: np.ndarray, p: Params) -> np.ndarray:
    return _lut(image, _to_u8(np.arange(256, dtype=np.float32) * p["factor"]))


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(_gray(image).mean())
    return _lut(image, _to_u8(mean + factor * (np.arange(256, dtype=np.float32) - mean)))


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    if image.shape[2] == 1:
        return image
    gray = _gray(image)
    return _to_u8(gray + factor * (image.astype(np.float32) - gray))


def _apply_contrast(image: np.ndarray, p: Params) -> np.ndarray:
    return _contrast(image, p["factor"])


def _apply_color(image: np.ndarray, p: Params) -> np.ndarray:
    return _saturation(image, p["factor"])


SHARPEN_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0


def _apply_sharpness(image: np.ndarray, p: Params) -> np.ndarray:
    smooth = _keep_channels(cv2.filter2D(image.astype(np.float32), -1, SHARPEN_SMOOTH, borderType=cv2.BORDER_REFLECT_101), image)
    return _to_u8(smooth + p["factor"] * (image.astype(np.float32) - smooth))


def _sample_cutout(rng, m, args, h, w, size) -> Params:
    side = int(round(_level(m) * 0.5 * min(h, w)))
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
    return {"y0": y0, "x0": x0, "y1": min(h, y0 + side), "x1": min(w, x0 + side)}


def _apply_cutout(image: np.ndarray, p: Params) -> np.ndarray:
    out = image.copy()
    out[int(p["y0"]) : int(p["y1"]), int(p["x0"]) : int(p["x1"])] = FILL
    return out


def _apply_grayscale(image: np.ndarray, p: Params) -> np.ndarray:
    if image.shape[2] == 1:
        return image
    gray = _keep_channels(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), image)
    return np.repeat(gray, 3, axis=2)


# ---------------------------------------------------------------------------- noise, blur, jitter


def _sample_noise(rng, m, args, h, w, size) -> Params:
    return {"std": _level(m) * 0.1 * 255.0, "seed": float(rng.integers(0, 2**24))}


def _apply_noise(image: np.ndarray, p: Params) -> np.ndarray:
    if p["std"] <= 0:
        return image
    noise = np.random.default_rng(int(p["seed"])).standard_normal(image.shape, dtype=np.float32) * p["std"]
    return _to_u8(image.astype(np.float32) + noise)


def blur_window(sigma: float) -> int:
    """Odd Gaussian window covering +-3 sigma."""
    return 2 * int(math.ceil(3.0 * sigma)) + 1


def _sample_blur(rng, m, args, h, w, size) -> Params:
    return {"sigma": 0.1 + _level(m) * 1.9}


def _apply_blur(image: np.ndarray, p: Params) -> np.ndarray:
    k = blur_window(p["sigma"])
    out = cv2.GaussianBlur(image, (k, k), sigmaX=p["sigma"], sigmaY=p["sigma"], borderType=cv2.BORDER_REFLECT_101)
    return _keep_channels(out, image)


def _sample_jitter(rng, m, args, h, w, size) -> Params:
    s = _level(m)
    return {
        "brightness": rng.uniform(1 - 0.8 * s, 1 + 0.8 * s),
        "contrast": rng.uniform(1 - 0.8 * s, 1 + 0.8 * s),
        "saturation": rng.uniform(1 - 0.8 * s, 1 + 0.8 * s),
        "hue": rng.uniform(-0.2 * s, 0.2 * s),
    }


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64)


def hue_matrix(turns: float) -> np.ndarray:
    """3x3 RGB matrix rotating hue by ``turns`` of a full circle (rotation in YIQ space)."""
    t = 2 * math.pi * turns
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    return (np.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ).astype(np.float32)


def _hue(image: np.ndarray, turns: float) -> np.ndarray:
    if image.shape[2] == 1 or turns == 0:
        return image
    return _to_u8(cv2.transform(image.astype(np.float32), hue_matrix(turns)))


def _apply_jitter(image: np.ndarray, p: Params) -> np.ndarray:
    """Brightness, contrast, saturation, hue in this fixed order (uint8 between steps)."""
    out = _apply_brightness(image, {"factor": p["brightness"]})
    out = _contrast(out, p["contrast"])
    out = _saturation(out, p["saturation"])
    return _hue(out, p["hue"])


# ---------------------------------------------------------------------------- the table

_ENH = ("factor",)
OPS: dict[str, OpDef] = {op.name: op for op in (
    OpDef("identity", _no_params, _apply_identity),
    OpDef("resize", _sample_resize, _apply_resize, ("out_h", "out_w"), sets_size=True, kind="geometric"),
    OpDef(
        "random_resized_crop", _sample_rrc, _apply_rrc, ("y", "x", "h", "w", "out_h", "out_w"),
        sets_size=True, kind="geometric", default_args={"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)},
    ),
    OpDef("hflip", _no_params, _apply_hflip, kind="geometric"),
    OpDef("vflip", _no_params, _apply_vflip, kind="geometric"),
    OpDef("rotate", _sample_rotate, _apply_affine, AFFINE, True, kind="geometric"),
    OpDef("shear_x", _sample_shear(0), _apply_affine, AFFINE, True, kind="geometric"),
    OpDef("shear_y", _sample_shear(1), _apply_affine, AFFINE, True, kind="geometric"),
    OpDef("translate_x", _sample_translate(0), _apply_affine, AFFINE, True, kind="geometric"),
    OpDef("translate_y", _sample_translate(1), _apply_affine, AFFINE, True, kind="geometric"),
    OpDef("auto_contrast", _no_params, _apply_auto_contrast),
    OpDef("equalize", _no_params, _apply_equalize),
    OpDef("invert", _no_params, _apply_invert),
    OpDef("solarize", _sample_solarize, _apply_solarize, ("threshold",), True),
    OpDef("posterize", _sample_posterize, _apply_posterize, ("bits",), True),
    OpDef("brightness", _sample_enhance, _apply_brightness, _ENH, True),
    OpDef("contrast", _sample_enhance, _apply_contrast, _ENH, True),
    OpDef("color", _sample_enhance, _apply_color, _ENH, True),
    OpDef("sharpness", _sample_enhance, _apply_sharpness, _ENH, True),
    OpDef("cutout", _sample_cutout, _apply_cutout, ("y0", "x0", "y1", "x1"), True),
    OpDef("grayscale", _no_params, _apply_grayscale),
    OpDef("gaussian_noise", _sample_noise, _apply_noise, ("std", "seed"), True),
    OpDef("gaussian_blur", _sample_blur, _apply_blur, ("sigma",), True),
    OpDef("color_jitter", _sample_jitter, _apply_jitter, ("brightness", "contrast", "saturation", "hue"), True),
)}  # fmt: skip
