"""The image modality: PNG/JPEG/WebP members decoded with OpenCV to uint8 ``[H, W, C]``, the
image augmentation catalogue, ``[B, C, H, W]`` float batches, pixels as the raw features.

It is the worked example of the modality interface (``base.Modality``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from augtrain.pipelines.modalities.base import DecodeSpec, Modality, SampleError, register_modality

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
JPEG_QUALITY = 95


def decode_image(data: bytes, channels: int | None) -> np.ndarray:
    """Encoded image -> uint8 ``[H, W, C]`` (C = 1 or 3, RGB order)."""
    import cv2

    flag = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR_RGB, None: cv2.IMREAD_UNCHANGED}[channels]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None or image.size == 0:
        raise SampleError("undecodable image", f"{len(data)} bytes")
    if image.dtype != np.uint8:
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return image[:, :, None]
    if channels == 3:  # decoded straight to RGB
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.shape[2] == 3 else image


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """uint8 [H, W], [H, W, 1] or [H, W, 3] RGB -> PNG or JPEG bytes."""
    import cv2

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + image_format, image, params)
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as {image_format}")
    return buf.tobytes()


def find_image_key(members: Mapping[str, bytes]) -> str | None:
    return IMAGE.find_member(members)


class ImageModality(Modality):
    name = "image"
    members = IMAGE_EXTENSIONS
    column = "image"
    raw_features_name = "raw pixels"
    formats = ("png", "jpg")
    worker_augment = True  # DALI: nvJPEG decode and augmentation on the worker's GPU

    def decode(self, ext: str, data: bytes, spec: DecodeSpec) -> np.ndarray:
        return decode_image(data, spec.channels)

    def decode_members(self, members: Mapping[str, bytes], spec: DecodeSpec) -> dict[str, Any]:
        if spec.decode_images:
            return super().decode_members(members, spec)
        ext = self.find_member(members)  # encoded bytes for a decoder in the train worker (nvJPEG)
        if ext is None:
            return super().decode_members(members, spec)  # raises, naming what is there
        return {"encoded": members[ext]}

    def encode(self, value: np.ndarray, fmt: str | None = None) -> tuple[str, bytes]:
        fmt = fmt or "png"
        if fmt not in self.formats:
            raise ValueError(f"image format must be 'png' or 'jpg', got {fmt!r}")
        return fmt, encode_image(value, fmt)

    def manifest_fields(self, fmt: str, source: Any = None) -> dict[str, Any]:
        return {"image_format": fmt}

    def sample_transform(self, policy: Any, *, size: int | None, views: int, backend: str = "auto"):
        from augtrain.augment import make_sample_transform

        return make_sample_transform(policy, size=size, views=views, backend=backend)

    def preview(self, values: Sequence[Any], policy: Any, *, size: int | None = None, per_sample: int = 4,
                seed: int = 0, backend: str = "auto") -> np.ndarray:
        from augtrain.augment.image.preview import render_preview

        return render_preview(list(values), policy, size=size, per_sample=per_sample, seed=seed, backend=backend)

    def to_tensor(self, column: np.ndarray, mean: Sequence[float], std: Sequence[float]):
        """uint8 [B, H, W, C] -> float [B, C, H, W], normalised per channel."""
        from augtrain.augment import normalize_batch

        return normalize_batch(column, mean, std)

    def resize(self, value: np.ndarray, size: int) -> np.ndarray:
        import cv2

        if value.shape[:2] == (size, size):
            return value
        return cv2.resize(value, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, -1)

    def stack(self, values: list[Any], where: str) -> np.ndarray:
        shapes = {v.shape for v in values}
        if len(shapes) > 1:
            raise ValueError(f"{where}: images of different sizes {sorted(shapes)[:3]}; set finetune.size to resize them")
        return np.stack(values)

    def raw_features(self, values: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> float32 [N, H*W*C] in [0, 1]."""
        return values.reshape(len(values), -1).astype(np.float32) / 255.0


IMAGE = register_modality(ImageModality())
