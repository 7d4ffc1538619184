"""The classifier head on an exported encoder: fine-tuning and linear probing."""

from __future__ import annotations

import pytest
import torch

from augtrain.models import Classifier, create_objective


def _two_classes(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark images are class 0, bright ones class 1: x: [n, 1, 16, 16], y: [n]."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = 0.2 * torch.rand(n, 1, 16, 16, generator=g) + 0.6 * y.view(-1, 1, 1, 1)
    return x, y


@pytest.mark.timeout(60)
@pytest.mark.parametrize("freeze", [False, True])
def test_classifier_learns_on_an_exported_encoder(freeze: bool):
    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1})
    encoder = objective.export_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = Classifier(encoder, num_classes=2, freeze_encoder=freeze, batch_norm=freeze)
    x, y = _two_classes()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert model(x).shape == (32, 2)
    assert (model(x).argmax(1) == y).float().mean() == 1.0
    weights_moved = any(not torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert weights_moved is not freeze
