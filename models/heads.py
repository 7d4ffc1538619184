"""Heads that turn an exported encoder into a fine-tuning model."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """encoder + (optional BatchNorm, as MAE linear probing) + linear layer.

    x: [B, C, H, W] -> logits [B, num_classes]. `freeze_encoder=True` is a linear probe.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, freeze_encoder: bool = False,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm: nn.Module = (nn.BatchNorm1d(encoder.num_features, affine=False)
                                if batch_norm else nn.Identity())
        self.fc = nn.Linear(encoder.num_features, num_classes)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a probe leaves BatchNorm statistics as pretrained
        return self

    def forward(self, x: torch.Tensor, mix: tuple[float, torch.Tensor] | None = None) -> torch.Tensor:
        """``mix = (lam, partner)``: the first ``len(partner)`` samples' features become
        ``lam * f + (1 - lam) * f[partner]`` where the linear layer sees them (mixup of the pooled
        features); the rest of the batch passes unmixed."""
        if self.freeze_encoder:
            with torch.no_grad():
                features = self.encoder.forward_features(x)
        else:
            features = self.encoder.forward_features(x)
        features = self.norm(features)
        if mix is not None:  # after the probe's BatchNorm, whose statistics stay those of unmixed features
            lam, partner = mix
            n = len(partner)
            mixed = lam * features[:n] + (1 - lam) * features[:n][partner]
            features = torch.cat([mixed, features[n:]]) if n < len(features) else mixed
        return self.fc(features)
