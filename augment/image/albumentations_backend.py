"""albumentations 2.0.8 backend: applies plans with albumentations' functional kernels.

Plans are sampled by ``augtrain.augment.plan`` (not by albumentations' own random state), so
this backend applies exactly the parameters another backend gets. Ops for which
albumentations has no kernel with the same semantics use the reference implementation in
``augtrain.augment.image.ops``; ``REFERENCE_OPS`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from augtrain.augment.image.ops import AFFINE, FILL, OPS, Params, blur_window
from augtrain.augment.plan import Step

# Ops with no albumentations kernel of the same semantics (PIL-style enhance blends, cutout
# with given corners, seeded noise, YIQ hue): the numpy/cv2 reference runs them.
REFERENCE_OPS = frozenset(
    {"identity", "auto_contrast", "brightness", "contrast", "color", "sharpness", "cutout", "gaussian_noise", "color_jitter"}
)


def _kernels() -> dict[str, Callable[[np.ndarray, Params], np.ndarray]]:
    import albumentations.augmentations.blur.functional as fblur
    import albumentations.augmentations.geometric.functional as fgeo
    import albumentations.augmentations.pixel.functional as fpix

    def resize(img: np.ndarray, p: Params) -> np.ndarray:
        shape = (int(p["out_h"]), int(p["out_w"]))
        return img if img.shape[:2] == shape else fgeo.resize(img, shape, cv2.INTER_LINEAR)

    def crop_resize(img: np.ndarray, p: Params) -> np.ndarray:
        y, x, h, w = int(p["y"]), int(p["x"]), int(p["h"]), int(p["w"])
        return resize(np.ascontiguousarray(img[y : y + h, x : x + w]), p)

    def affine(img: np.ndarray, p: Params) -> np.ndarray:
        inverse = np.vstack([np.array([p[k] for k in AFFINE]).reshape(2, 3), [0.0, 0.0, 1.0]])
        forward = np.linalg.inv(inverse)  # albumentations takes the forward matrix
        fill = (float(FILL),) * img.shape[2]
        return fgeo.warp_affine(img, forward, cv2.INTER_LINEAR, fill, cv2.BORDER_CONSTANT, img.shape[:2])

    def solarize(img: np.ndarray, p: Params) -> np.ndarray:
        if p["threshold"] >= 256:
            return img
        return fpix.solarize(img, p["threshold"] / 255.0)

    def posterize(img: np.ndarray, p: Params) -> np.ndarray:
        bits = int(p["bits"])
        return img if bits >= 8 else fpix.posterize(img, bits)

    def grayscale(img: np.ndarray, p: Params) -> np.ndarray:
        return img if img.shape[2] == 1 else fpix.to_gray(img, 3, "weighted_average")

    def blur(img: np.ndarray, p: Params) -> np.ndarray:
        kernel = fblur.create_gaussian_kernel_1d(p["sigma"], blur_window(p["sigma"]))
        out = fpix.separable_convolve(img, kernel)
        return out[:, :, None] if out.ndim == 2 else out

    table: dict[str, Callable[[np.ndarray, Params], np.ndarray]] = {
        "resize": resize,
        "random_resized_crop": crop_resize,
        "hflip": lambda img, p: fgeo.hflip(img),
        "vflip": lambda img, p: fgeo.vflip(img),
        "rotate": affine, "shear_x": affine, "shear_y": affine, "translate_x": affine, "translate_y": affine,
        "equalize": lambda img, p: fpix.equalize(img, mode="cv", by_channels=True),
        "invert": lambda img, p: fpix.invert(img),
        "solarize": solarize,
        "posterize": posterize,
        "grayscale": grayscale,
        "gaussian_blur": blur,
    }  # fmt: skip
    for name in REFERENCE_OPS:
        table[name] = OPS[name].apply
    missing = set(OPS) - set(table)
    assert not missing, f"albumentations backend has no kernel for {sorted(missing)}"
    return table


class AlbumentationsBackend:
    """Applies plans per sample on the CPU with albumentations kernels."""

    name = "albumentations"

    def __init__(self) -> None:
        self._table: dict[str, Callable[[np.ndarray, Params], np.ndarray]] | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._table = None

    def apply(self, image: np.ndarray, steps: list[Step]) -> np.ndarray:
        """uint8 ``[H, W, C]`` -> uint8 ``[H', W', C]`` after every step of the plan."""
        if self._table is None:
            self._table = _kernels()
        for step in steps:
            image = self._table[step.name](image, step.params)
            if image.ndim == 2:
                image = image[:, :, None]
        return np.ascontiguousarray(image)

