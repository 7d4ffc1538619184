"""A generative objective's samples as a PNG grid, written by the training loop after every epoch
(``<metrics>/samples/epoch-NNN.png``) so that a run shows what its model draws as it trains."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images [N, C, H, W] -> uint8 [N, H, W, C] (the inverse of the loop's normalisation)."""
    m = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.float().cpu() * s + m).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 image of the N tiles in rows (white padding)."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, tile in enumerate(images):
        r, col = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = tile
    return out


def write_sample_grid(model: nn.Module, path: str | Path, mean: Sequence[float], std: Sequence[float], n: int = 64,
                      seed: int = 0, write: bool = True) -> Path | None:
    """Draw ``n`` samples from ``model.sample`` (the same latents every epoch, from ``seed``) and,
    when ``write``, save them as a grid PNG at ``path``. A class-conditional model draws its classes
    in turn: a column per class, ``n`` rounded down to whole rows."""
    from PIL import Image

    columns = int(model.num_classes) if hasattr(model, "sample_labelled") else None
    if columns:
        n = max(columns, n - n % columns)
    images = model.sample(n, generator=torch.Generator().manual_seed(seed))
    if not write:
        return None
    tiles = grid(to_uint8(images, mean, std), columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tiles[..., 0] if tiles.shape[-1] == 1 else tiles).save(path)
    return path
