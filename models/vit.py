"""Vision Transformers built from transformers' `ViTConfig`, never downloaded.

Sizes follow DeiT/ViT: tiny (192-d, 12 layers, 3 heads), small (384, 12, 6), base (768, 12, 12);
`vit-micro` (64-d, 2 layers) is for CPU tests. The MAE objective reuses `vit_sizes()` so that an
MAE encoder and a ViT encoder of the same name share a state-dict layout.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from augtrain.models.registry import register_model

VIT_SIZES: dict[str, dict[str, int]] = {
    "vit-micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=128, image_size=32, patch_size=8),
    "vit-tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                     intermediate_size=768, image_size=224, patch_size=16),
    "vit-small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                      intermediate_size=1536, image_size=224, patch_size=16),
    "vit-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, image_size=224, patch_size=16),
}


def vit_sizes(name: str, image_size: int | None = None, patch_size: int | None = None,
              in_chans: int = 3) -> dict[str, int]:
    """Keyword arguments for `ViTConfig`/`ViTMAEConfig` of the named size."""
    if name not in VIT_SIZES:
        raise ValueError(f"{name!r} is not a ViT size; choose one of {sorted(VIT_SIZES)}")
    sizes = dict(VIT_SIZES[name], num_channels=in_chans)
    if image_size is not None:
        sizes["image_size"] = image_size
    if patch_size is not None:
        sizes["patch_size"] = patch_size
    if sizes["image_size"] % sizes["patch_size"]:
        raise ValueError(f"image_size {sizes['image_size']} is not a multiple of "
                         f"patch_size {sizes['patch_size']}")
    return sizes


class ViTEncoder(nn.Module):
    """A transformers `ViTModel` (no pooler) that returns one embedding per image.

    pool="cls" takes the class token, pool="mean" averages the patch tokens (MAE fine-tuning).
    """

    def __init__(self, config: Any, pool: Literal["cls", "mean"] = "cls") -> None:
        super().__init__()
        from transformers import ViTModel

        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.pool = pool
        self.num_features = config.hidden_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, D]."""
        tokens = self.vit(pixel_values=x).last_hidden_state  # [B, 1 + L, D]
        if self.pool == "cls":
            return tokens[:, 0]
        return tokens[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def build_vit(name: str, image_size: int | None = None, patch_size: int | None = None,
              in_chans: int = 3, pool: Literal["cls", "mean"] = "cls",
              dropout: float = 0.0) -> ViTEncoder:
    from transformers import ViTConfig

    config = ViTConfig(**vit_sizes(name, image_size, patch_size, in_chans),
                       hidden_dropout_prob=dropout, attention_probs_dropout_prob=0.0)
    return ViTEncoder(config, pool=pool)


def _register(name: str) -> None:
    @register_model(name, modalities=("image",))
    def factory(image_size: int | None = None, patch_size: int | None = None, in_chans: int = 3,
                pool: Literal["cls", "mean"] = "cls", dropout: float = 0.0) -> ViTEncoder:
        return build_vit(name, image_size, patch_size, in_chans, pool, dropout)

    factory.__doc__ = f"ViT {VIT_SIZES[name]} from a transformers ViTConfig."


for _name in VIT_SIZES:
    _register(_name)
