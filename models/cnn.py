"""Convolutional encoders: a tiny CNN for tests, a VGG-style CNN for small images and a ResNet
(BasicBlock) family.

Every encoder maps images `x: [B, C, H, W]` to embeddings `[B, num_features]` with
`forward_features`; `forward` is the same call, so the encoder drops into any head.
"""

from __future__ import annotations

import torch
from torch import nn

from augtrain.models.registry import register_model


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CNNEncoder(nn.Module):
    """Plain stack of stride-2 conv-BN-ReLU stages, global average pooled."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        stages, c_in = [], in_chans
        for width in widths:
            stages.append(conv_bn_relu(c_in, width, stride=2))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.num_features = c_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, D]."""
        return self.stages(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class VGGEncoder(nn.Module):
    """Stages of `convs` stride-1 conv-BN-ReLU layers, each stage but the last followed by a 2x2
    max-pool, global average pooled (Simonyan and Zisserman 2015, with BatchNorm). Full resolution
    in the first stage suits 28-64 px images."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (64, 128, 256), convs: int = 2) -> None:
        super().__init__()
        if convs < 1:
            raise ValueError(f"convs must be >= 1, got {convs}")
        stages, c_in = [], in_chans
        for i, width in enumerate(widths):
            layers = [conv_bn_relu(c_in if j == 0 else width, width) for j in range(convs)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.num_features = c_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, D]."""
        return self.stages(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a (projected when needed) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.conv1(x)))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with BasicBlocks (He et al. 2016).

    `small_input=True` uses a 3x3 stride-1 stem without max-pooling (CIFAR-style), which suits
    28-64 px images; otherwise the ImageNet stem (7x7 stride 2 + max-pool).
    """

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        in_chans: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths {depths} and widths {widths} must have the same length")
        self.stem = self._build_stem(in_chans, widths[0], small_input)
        layers, c_in = [], widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.num_features = c_in

    @staticmethod
    def _build_stem(in_chans: int, width: int, small_input: bool) -> nn.Module:
        if small_input:
            return conv_bn_relu(in_chans, width)
        return nn.Sequential(
            nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, D]."""
        return self.layers(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_model("cnn-tiny", modalities=("image",))
def cnn_tiny(in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64)) -> CNNEncoder:
    """Three conv stages, ~25k parameters: CPU tests and smoke runs."""
    return CNNEncoder(in_chans=in_chans, widths=tuple(widths))


@register_model("cnn-small", modalities=("image",))
def cnn_small(in_chans: int = 3, widths: tuple[int, ...] = (64, 128, 256), convs: int = 2) -> VGGEncoder:
    """Three VGG-style stages of two convs (64, 128, 256 channels), 1.15 M parameters at one input
    channel: the default encoder for 28-32 px images (Fashion-MNIST, CIFAR-sized data)."""
    return VGGEncoder(in_chans=in_chans, widths=tuple(widths), convs=convs)


@register_model("resnet-tiny", modalities=("image",))
def resnet_tiny(in_chans: int = 3, small_input: bool = True) -> ResNet:
    """Two one-block stages (16, 32 channels), ~30k parameters: CPU tests."""
    return ResNet(depths=(1, 1), widths=(16, 32), in_chans=in_chans, small_input=small_input)


@register_model("resnet18", modalities=("image",))
def resnet18(in_chans: int = 3, small_input: bool = False) -> ResNet:
    """ResNet-18, 11.2M parameters, 512-d features."""
    return ResNet(depths=(2, 2, 2, 2), widths=(64, 128, 256, 512), in_chans=in_chans,
                  small_input=small_input)
