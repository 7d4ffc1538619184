"""Turn a raw WebDataset sample into arrays, or say precisely why it cannot be used."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from augtrain.pipelines.data.wds_format import IMAGE_EXTENSIONS, RawSample


class SampleError(ValueError):
    """A sample that cannot be used; ``reason`` is short and stable enough to count by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodeSpec:
    """What to take from each sample.

    ``label_key``: extension holding the integer label (None for unlabelled corpora).
    ``channels``: 1 (grayscale) or 3 (RGB) for decoded images; None keeps what is stored.
    ``decode_images``: False passes encoded image bytes through (GPU decoders take them).
    """

    label_key: str | None = "cls"
    channels: int | None = 3
    decode_images: bool = True

    def __post_init__(self) -> None:
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {self.channels!r}")


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


def parse_label(data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise SampleError("non-integer label", repr(text[:20])) from None


def find_image_key(members: dict[str, bytes]) -> str | None:
    for ext in IMAGE_EXTENSIONS:
        if ext in members:
            return ext
    return None


def decode_sample(raw: RawSample, spec: DecodeSpec) -> dict[str, object]:
    """Raw sample -> ``{"image": [H,W,C] uint8 | "encoded": bytes, "label": int, "text": str, "series": array}``.

    Raises SampleError for a broken tar member, an undecodable image, or a missing or
    non-integer label.
    """
    if raw.error is not None:
        raise SampleError("unreadable tar member", raw.error)
    out: dict[str, object] = {}
    image_key = find_image_key(raw.members)
    if image_key is not None:
        data = raw.members[image_key]
        out["image" if spec.decode_images else "encoded"] = decode_image(data, spec.channels) if spec.decode_images else data
    if "txt" in raw.members:
        out["text"] = raw.members["txt"].decode("utf-8", errors="replace")
    if "npy" in raw.members:
        try:
            out["series"] = np.load(io.BytesIO(raw.members["npy"]), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SampleError("unreadable npy array", str(exc)) from None
    if not out:
        raise SampleError("no usable member", f"extensions {sorted(raw.members)}")
    if spec.label_key is not None:
        if spec.label_key not in raw.members:
            raise SampleError("missing label", f"no .{spec.label_key} member")
        out["label"] = parse_label(raw.members[spec.label_key])
    return out
