"""Preview grids: originals beside augmented views, so a user sees what a policy does."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from augtrain.augment.policy import parse_policy
from augtrain.augment.policy import Policy
from augtrain.augment.image.transform import make_sample_transform

TITLE_HEIGHT = 28
GAP = 4
ORIGINAL_BORDER = (40, 110, 220)  # RGB frame around originals
BACKGROUND = 255


def _tile(image: np.ndarray, tile: int) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> RGB ``[tile, tile, 3]`` (nearest when enlarging small images)."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    h, w = rgb.shape[:2]
    scale = tile / max(h, w)
    interp = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    out = np.full((tile, tile, 3), BACKGROUND, dtype=np.uint8)
    y, x = (tile - resized.shape[0]) // 2, (tile - resized.shape[1]) // 2
    out[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return out


def render_preview(
    images: Sequence[np.ndarray], policy: str | Policy, *, size: int | None = None, per_sample: int = 4,
    columns: int = 2, tile: int = 96, seed: int = 0, backend: str = "auto",
) -> np.ndarray:  # fmt: skip
    """Grid as RGB uint8 ``[H, W, 3]``: per sample its original (framed) then ``per_sample``
    augmented views; samples laid out in ``columns`` blocks per row, policy string on top."""
    if not images:
        raise ValueError("render_preview needs at least one image")
    if per_sample < 1 or columns < 1 or tile < 8:
        raise ValueError(f"per_sample and columns must be >= 1 and tile >= 8, got {per_sample}, {columns}, {tile}")
    policy = parse_policy(policy)
    size = size if size is not None else (min(images[0].shape[:2]) if policy.has_crop else None)
    transform = make_sample_transform(policy, size=size, views=policy.views, backend=backend)
    rng = np.random.default_rng(seed)
    blocks = []
    for image in images:
        image = image[:, :, None] if image.ndim == 2 else image
        original = _tile(image, tile)
        cv2.rectangle(original, (0, 0), (tile - 1, tile - 1), ORIGINAL_BORDER, 2)
        views: list[np.ndarray] = []
        while len(views) < per_sample:
            views += list(transform(image, rng).values())
        row = [original] + [_tile(v, tile) for v in views[:per_sample]]
        blocks.append(np.hstack([np.pad(t, ((0, 0), (0, GAP), (0, 0)), constant_values=BACKGROUND) for t in row]))
    block_h, block_w = blocks[0].shape[:2]
    rows = -(-len(blocks) // columns)
    grid = np.full((TITLE_HEIGHT + rows * (block_h + GAP), columns * (block_w + 2 * GAP), 3), BACKGROUND, np.uint8)
    for i, block in enumerate(blocks):
        r, c = divmod(i, columns)
        y, x = TITLE_HEIGHT + r * (block_h + GAP), c * (block_w + 2 * GAP)
        grid[y : y + block_h, x : x + block_w] = block
    title = f"{policy.to_string()}  (framed: original; then {per_sample} augmented, size {size}, seed {seed})"
    cv2.putText(grid, title[:120], (4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def write_png(path: str, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (raises naming the path on failure)."""
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
