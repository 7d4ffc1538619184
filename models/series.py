"""Time-series encoders: the fully convolutional network and the residual network of Wang et
al. 2017 (the strong supervised baselines of Fawaz et al. 2019), a PatchTST Transformer
(transformers' ``PatchTSTModel``, Nie et al. 2023), and masked-series modelling, PatchTST's
self-supervised objective (``PatchTSTForPretraining``: random patches masked, their values
regressed).

The series modality hands a model float ``[B, C, T]`` (normalised per channel). Convolutional
encoders take any length; the Transformer resamples each series to its ``context_length``
(linear interpolation), so one checkpoint serves problems of different lengths. Each encoder's
``forward_features`` returns ``[B, D]``: global average pooling over time for the convolutional
ones, the mean of the patch embeddings over patches and channels for PatchTST (channel
independence: every channel goes through the same weights, so a checkpoint pretrained on
univariate series also takes multivariate ones).

    enc = create_model("fcn", in_chans=1)
    feats = enc.forward_features(x)                  # [B, 128]
    msm = create_objective("masked-series", encoder="patchtst", encoder_kwargs={"in_chans": 1})
    loss = msm([x])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augtrain.models.registry import register_model, register_objective


def _conv_bn(cin: int, cout: int, kernel: int) -> nn.Sequential:
    # "same" padding with an even kernel pads one more step on the right, as Keras does
    return nn.Sequential(nn.ConstantPad1d(((kernel - 1) // 2, kernel // 2), 0.0),
                         nn.Conv1d(cin, cout, kernel, bias=False), nn.BatchNorm1d(cout))


class _PooledConv(nn.Module):
    """A convolutional ``body`` over time, then global average pooling: ``[B, C, T] -> [B, D]``."""

    body: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class FCN(_PooledConv):
    """Three convolutions (128, 256, 128 filters; kernels 8, 5, 3), each with batch norm and
    ReLU, then global average pooling (Wang et al. 2017)."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (128, 256, 128),
                 kernels: tuple[int, ...] = (8, 5, 3)) -> None:
        super().__init__()
        layers, cin = [], in_chans
        for width, kernel in zip(widths, kernels):
            layers += [*_conv_bn(cin, width, kernel), nn.ReLU(inplace=True)]
            cin = width
        self.body = nn.Sequential(*layers)
        self.num_features = cin


class _ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = (8, 5, 3)) -> None:
        super().__init__()
        layers, width = [], cin
        for i, kernel in enumerate(kernels):
            layers.append(_conv_bn(width, cout, kernel))
            if i < len(kernels) - 1:
                layers.append(nn.ReLU(inplace=True))
            width = cout
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet1d(_PooledConv):
    """Three residual blocks (64, 128, 128 filters), each of three convolutions (kernels 8, 5,
    3), then global average pooling (Wang et al. 2017)."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (64, 128, 128)) -> None:
        super().__init__()
        blocks, cin = [], in_chans
        for width in widths:
            blocks.append(_ResidualBlock(cin, width))
            cin = width
        self.body = nn.Sequential(*blocks)
        self.num_features = cin


@register_model("fcn", modalities=("series",))
def fcn(in_chans: int = 1) -> FCN:
    return FCN(in_chans)


@register_model("resnet1d", modalities=("series",))
def resnet1d(in_chans: int = 1) -> ResNet1d:
    return ResNet1d(in_chans)


# (layers, d_model, heads, feed-forward width)
PATCHTST_SIZES = {"patchtst-tiny": (2, 64, 4, 128), "patchtst": (3, 128, 8, 256)}


def patchtst_config(size: str, in_chans: int, context_length: int, patch_length: int, patch_stride: int,
                    mask_ratio: float, dropout: float):
    from transformers import PatchTSTConfig

    layers, d_model, heads, ffn = PATCHTST_SIZES[size]
    return PatchTSTConfig(num_input_channels=in_chans, context_length=context_length, patch_length=patch_length,
                          patch_stride=patch_stride, num_hidden_layers=layers, d_model=d_model,
                          num_attention_heads=heads, ffn_dim=ffn, dropout=dropout, attention_dropout=dropout,
                          positional_dropout=dropout, ff_dropout=dropout, head_dropout=dropout,
                          mask_type="random", random_mask_ratio=mask_ratio, do_mask_input=False,
                          # each series standardised per channel inside the model (RevIN-like, PatchTST's
                          # default): corpora mix z-normalised problems with raw ones (ACSF1's watts), and
                          # the masked patches are regressed on that scale
                          scaling="std")


class PatchTSTEncoder(nn.Module):
    """A ``PatchTSTModel`` over series resampled to ``context_length``: ``forward_features(x)``
    with ``x`` [B, C, T] -> [B, d_model], the mean of the last hidden states over patches and
    channels."""

    def __init__(self, model: nn.Module, context_length: int) -> None:
        super().__init__()
        self.model = model
        self.context_length = context_length
        self.num_features = int(model.config.d_model)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, context_length, C], PatchTST's layout."""
        if x.shape[-1] != self.context_length:
            x = F.interpolate(x, size=self.context_length, mode="linear", align_corners=True)
        return x.transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        states = self.model(past_values=self.resample(x)).last_hidden_state  # [B, C, patches, d_model]
        return states.mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """The encoder in transformers' format (``PatchTSTModel.from_pretrained`` reads it)."""
        self.model.save_pretrained(str(directory))
        return Path(directory)


def _patchtst(size: str, in_chans: int, context_length: int, patch_length: int, patch_stride: int,
              dropout: float) -> PatchTSTEncoder:
    from transformers import PatchTSTModel

    config = patchtst_config(size, in_chans, context_length, patch_length, patch_stride, 0.4, dropout)
    return PatchTSTEncoder(PatchTSTModel(config), context_length)


@register_model("patchtst", modalities=("series",))
def patchtst(in_chans: int = 1, context_length: int = 256, patch_length: int = 16, patch_stride: int = 8,
             dropout: float = 0.1) -> PatchTSTEncoder:
    """3 layers, d_model 128, 8 heads; patches of 16 steps every 8 over 256 resampled steps."""
    return _patchtst("patchtst", in_chans, context_length, patch_length, patch_stride, dropout)


@register_model("patchtst-tiny", modalities=("series",))
def patchtst_tiny(in_chans: int = 1, context_length: int = 256, patch_length: int = 16, patch_stride: int = 8,
                  dropout: float = 0.1) -> PatchTSTEncoder:
    """2 layers, d_model 64, 4 heads (tests and quick runs)."""
    return _patchtst("patchtst-tiny", in_chans, context_length, patch_length, patch_stride, dropout)


class MaskedSeries(nn.Module):
    """Masked-series modelling (PatchTST's pretraining): ``mask_ratio`` of the patches of each
    channel are masked with zeros and their values regressed (mean squared error on the masked
    patches only), ``PatchTSTForPretraining`` around the encoder's ``PatchTSTModel``. Masking is
    switched on for the objective's forward pass only: the encoder itself never masks."""

    num_views = 1

    def __init__(self, encoder: PatchTSTEncoder, mask_ratio: float = 0.4) -> None:
        super().__init__()
        import copy

        from transformers import PatchTSTForPretraining
        from transformers.models.patchtst.modeling_patchtst import PatchTSTMasking

        config = copy.deepcopy(encoder.model.config)
        config.do_mask_input, config.random_mask_ratio = True, mask_ratio
        self.pretraining = PatchTSTForPretraining(config)
        self.pretraining.model = encoder.model  # the encoder's weights are the ones trained
        self.masking = PatchTSTMasking(config)
        self.encoder = encoder

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        model = self.encoder.model
        identity = model.masking
        model.do_mask_input, model.masking = True, self.masking
        try:
            return self.pretraining(past_values=self.encoder.resample(views[0])).loss
        finally:
            model.do_mask_input, model.masking = False, identity

    def export_encoder(self) -> PatchTSTEncoder:
        return self.encoder

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """A ``PatchTSTForPretraining`` folder that transformers loads."""
        self.pretraining.save_pretrained(str(directory))
        return Path(directory)


@register_objective("masked-series", modalities=("series",))
def masked_series(encoder_name: str, encoder_kwargs: dict[str, Any], mask_ratio: float = 0.4) -> MaskedSeries:
    from augtrain.models.registry import create_model

    encoder = create_model(encoder_name, **encoder_kwargs)
    if not isinstance(encoder, PatchTSTEncoder):
        raise ValueError(f"objective 'masked-series' needs a PatchTST encoder (patchtst, patchtst-tiny), "
                         f"not {encoder_name!r}")
    return MaskedSeries(encoder, mask_ratio)
