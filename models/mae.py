"""Masked autoencoder (He et al. 2022) as transformers' `ViTMAEForPreTraining`, built from a config.

The loss is transformers' own: mean squared error on the masked patches, on per-patch normalized
pixels when `norm_pix_loss` (the paper's best setting). The encoder exports as a `ViTEncoder`
with the same weights, so fine-tuning uses a plain ViT (mean-pooled patch tokens, as in MAE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from augtrain.models.registry import register_objective
from augtrain.models.vit import ViTEncoder, vit_sizes


def decoder_sizes(hidden_size: int) -> dict[str, int]:
    """A light decoder: 8 blocks of 512-d for base-size encoders, scaled down for small ones."""
    if hidden_size >= 384:
        return dict(decoder_hidden_size=512, decoder_num_hidden_layers=8,
                    decoder_num_attention_heads=16, decoder_intermediate_size=2048)
    width = max(hidden_size // 2, 32)
    return dict(decoder_hidden_size=width, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2, decoder_intermediate_size=2 * width)


class MAE(nn.Module):
    """forward(views) -> reconstruction loss of the first view `[B, C, H, W]`."""

    num_views = 1

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import ViTMAEForPreTraining

        self.mae = ViTMAEForPreTraining(config)

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) != 1:
            raise ValueError(f"MAE takes 1 view per sample, got {len(views)}")
        return self.mae(pixel_values=views[0]).loss

    def transformers_model(self) -> tuple[str, nn.Module]:
        """(state-dict prefix, module) of the part saved with `from_pretrained`-loadable files."""
        return "mae.", self.mae

    def export_encoder(self, pool: str = "mean") -> ViTEncoder:
        """A `ViTEncoder` (no masking) holding this MAE's encoder weights."""
        from transformers import ViTConfig

        cfg = self.mae.config
        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "image_size", "patch_size", "num_channels", "layer_norm_eps", "qkv_bias")
        encoder = ViTEncoder(ViTConfig(**{k: getattr(cfg, k) for k in keys}), pool=pool)
        encoder.vit.load_state_dict(self.mae.vit.state_dict(), strict=True)
        return encoder.to(next(self.parameters()).device)


@register_objective("mae", modalities=("image",))
def mae(encoder_name: str, encoder_kwargs: dict[str, Any], mask_ratio: float = 0.75,
        norm_pix_loss: bool = True, **decoder: int) -> MAE:
    """MAE with the ViT size `encoder_name` (vit-micro..vit-base); `decoder` overrides
    `decoder_hidden_size`, `decoder_num_hidden_layers`, ... of `decoder_sizes()`."""
    from transformers import ViTMAEConfig

    extra = set(encoder_kwargs) - {"image_size", "patch_size", "in_chans"}
    if extra:
        raise ValueError(f"mae: encoder_kwargs {sorted(extra)} are not supported "
                         "(image_size, patch_size, in_chans are)")
    sizes = vit_sizes(encoder_name, **encoder_kwargs)
    config = ViTMAEConfig(**sizes, **{**decoder_sizes(sizes["hidden_size"]), **decoder},
                          mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss)
    return MAE(config)
