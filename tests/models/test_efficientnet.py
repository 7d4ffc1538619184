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


@pytest.mark.timeout(60)
def test_running_statistics_follow_a_short_run():
    """Evaluation uses BatchNorm's running statistics: with the default momentum they reach the
    batches' statistics within a short run; with the wheel's 0.01 (``bn_momentum=None``) they are
    still mostly at their initial values after 30 steps (which left a model trained from scratch
    predicting one class in eval mode)."""
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 3 + 1
    reached = {}
    for momentum in (0.1, None):
        encoder = create_model("efficientnet-lite0", in_chans=1, pretrained=False, bn_momentum=momentum)
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(m.momentum == pytest.approx(momentum or 0.01) for m in norms)
        stem, bn = encoder.net._conv_stem, encoder.net._bn0  # the first norm: its input needs no other norm
        with torch.no_grad():
            target = stem(x).mean(dim=(0, 2, 3))
            encoder.train()
            for _ in range(30):
                encoder.forward_features(x)
        reached[momentum] = float((bn.running_mean / target).median())  # the share of the way there
    assert reached[0.1] == pytest.approx(1 - 0.9**30, abs=0.01)
    assert reached[None] == pytest.approx(1 - 0.99**30, abs=0.01)
    with pytest.raises(ValueError, match="bn_momentum"):
        create_model("efficientnet-lite0", pretrained=False, bn_momentum=0.0)
