"""Mixup in fine-tuning (``finetune.mixup``): the encoder sees lam x + (1 - lam) x' of each batch
and a seeded shuffle of it (or, with ``mixup_at: features``, the head sees the mix of the
encoder's features), the loss is mixed with the same weight, the draws repeat for a seed, and
mixing token ids is refused before any work starts: text mixes features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from augtrain.augment import parse_policy
from augtrain.models import Classifier
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, load_data, prepare_data
from augtrain.pipelines.finetune.session import mixup_draw


@pytest.fixture()
def cfg(digits_splits) -> FinetuneConfig:
    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=100, val_labels=100, channels=1, epochs=1, batch_size=100,
                          lr=3e-3, policy="none", mode="scratch", encoder="cnn-tiny", precision="fp32",
                          encoder_kwargs={"in_chans": 1, "widths": [8, 16]}, mixup=0.4, label_smoothing=0.1)


def test_draws_repeat_for_a_seed_and_differ_between_steps():
    lam, partner = mixup_draw(0.4, 32, seed=3, epoch=2, step=5, rank=0)
    again = mixup_draw(0.4, 32, seed=3, epoch=2, step=5, rank=0)
    assert lam == again[0] and np.array_equal(partner, again[1])
    assert 0.0 < lam < 1.0 and sorted(partner) == list(range(32))
    others = [mixup_draw(0.4, 32, seed=3, epoch=2, step=s, rank=0)[0] for s in range(6, 16)]
    assert len(set(others + [lam])) == 11


def _first_step(session: FinetuneSession) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's input and the loss of the session's next (single-step) epoch."""
    seen: dict[str, torch.Tensor] = {}
    hook = session.model.register_forward_pre_hook(lambda _, args: seen.setdefault("x", args[0].detach().clone()))
    loss = session.train_epoch(parse_policy("none"))["train_loss"]
    hook.remove()
    return seen["x"], torch.tensor(loss)


@pytest.mark.parametrize("alpha", [0.4, 0.0])
def test_the_encoder_sees_the_mixed_batch_and_the_loss_is_mixed(cfg, alpha, tmp_path):
    cfg = cfg.with_updates(mixup=alpha)
    data = load_data(prepare_data(cfg, str(tmp_path / "data")), cfg)
    session = FinetuneSession(cfg, data, None)
    values, labels, _ = session._epoch_samples(parse_policy("none"))  # what the epoch trains on, unmixed
    x = session._inputs(values)
    y = torch.as_tensor(labels)
    before = {k: v.clone() for k, v in session.module.state_dict().items()}
    seen, loss = _first_step(session)
    if alpha == 0:
        assert torch.equal(seen, x)
        return
    lam, partner = mixup_draw(alpha, len(labels), cfg.seed, 0, 0, 0)
    assert 0 < lam < 1
    torch.testing.assert_close(seen, lam * x + (1 - lam) * x[partner])
    session.module.load_state_dict(before)  # the loss of the weights that took the step
    session.model.train()
    logits = session.model(seen)
    expected = (lam * F.cross_entropy(logits, y, label_smoothing=0.1)
                + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=0.1))
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-4, atol=1e-5)


def test_features_mixup_mixes_what_the_head_sees(cfg, tmp_path):
    cfg = cfg.with_updates(mixup_at="features")
    data = load_data(prepare_data(cfg, str(tmp_path / "data")), cfg)
    session = FinetuneSession(cfg, data, None)
    values, labels, _ = session._epoch_samples(parse_policy("none"))
    x = session._inputs(values)
    y = torch.as_tensor(labels)
    before = {k: v.clone() for k, v in session.module.state_dict().items()}
    seen: dict[str, torch.Tensor] = {}
    hooks = [session.model.register_forward_pre_hook(lambda _, args: seen.setdefault("x", args[0].detach().clone())),
             session.module.fc.register_forward_pre_hook(lambda _, args: seen.setdefault("f", args[0].detach().clone()))]
    loss = session.train_epoch(parse_policy("none"))["train_loss"]
    for hook in hooks:
        hook.remove()
    assert torch.equal(seen["x"], x)  # the inputs pass unmixed
    lam, partner = mixup_draw(cfg.mixup, len(labels), cfg.seed, 0, 0, 0)
    session.module.load_state_dict(before)
    session.model.train()
    features = session.module.encoder.forward_features(x)
    torch.testing.assert_close(seen["f"], lam * features + (1 - lam) * features[partner])
    logits = session.module.fc(seen["f"])
    expected = (lam * F.cross_entropy(logits, y, label_smoothing=0.1)
                + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=0.1))
    torch.testing.assert_close(torch.tensor(loss), expected.detach(), rtol=1e-4, atol=1e-5)


def test_only_the_labelled_rows_are_mixed():
    """FixMatch's pool rows share the batch: mixing leaves them as they are."""
    model = Classifier(Flat(), 3)
    x = torch.randn(6, 4)
    partner = torch.tensor([3, 2, 1, 0])
    seen: dict[str, torch.Tensor] = {}
    model.fc.register_forward_pre_hook(lambda _, args: seen.setdefault("f", args[0]))
    model(x, mix=(0.3, partner))
    torch.testing.assert_close(seen["f"][:4], 0.3 * x[:4] + 0.7 * x[:4][partner])
    torch.testing.assert_close(seen["f"][4:], x[4:])


class Flat(torch.nn.Module):
    num_features = 4

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("mixup_at", ["input", "features"])
def test_a_fine_tune_with_mixup_learns(cfg, mixup_at, tmp_path):
    cfg = cfg.with_updates(epochs=15, batch_size=20, mixup_at=mixup_at)
    session = FinetuneSession(cfg, load_data(prepare_data(cfg, str(tmp_path / "data")), cfg), None)
    for _ in range(cfg.epochs):
        metrics = session.run_epoch("none")
    assert metrics["val_acc"] > 0.5  # 10 classes: chance is 0.1


def test_token_ids_are_not_mixed_their_features_are():
    assert FinetuneConfig(modality="text", policy="none", mixup=0.2).mixup_layer == "features"
    assert FinetuneConfig(mixup=0.2).mixup_layer == "input"
    assert FinetuneConfig(mixup=0.2, mixup_at="features").mixup_layer == "features"
    with pytest.raises(ValidationError, match="mixup_at input: the text modality's inputs cannot be mixed"):
        FinetuneConfig(modality="text", policy="none", mixup=0.2, mixup_at="input")
    FinetuneConfig(modality="text", policy="none", mixup_at="input")  # mixup off: nothing is mixed
    with pytest.raises(ValidationError, match="mixup"):
        FinetuneConfig(mixup=-0.1)
