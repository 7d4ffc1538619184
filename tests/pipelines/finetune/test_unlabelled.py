"""FixMatch fine-tuning on the unlabelled pool: the pool excludes the labelled and validation
subsets, its order walks the whole pool, the loss masks unconfident pseudo-labels, and a
fine-tune trains on it (real digit shards written by the fixture, tiny CNN)."""

import json

import numpy as np
import pytest
import torch

from augtrain.augment import parse_policy
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, load_data, prepare_data
from augtrain.pipelines.finetune.unlabelled import fixmatch_loss, pool_values, unlabelled_order


@pytest.fixture(scope="module")
def cfg(digits_splits) -> FinetuneConfig:
    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=100, val_labels=200, channels=1, epochs=2, batch_size=32,
                          lr=3e-3, policy="rand-n2-m9", mode="scratch", encoder="cnn-tiny",
                          encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                          unlabelled={"method": "fixmatch", "ratio": 2, "threshold": 0.5})


def test_the_pool_holds_every_sample_outside_the_labelled_and_validation_subsets(cfg, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    subsets = json.loads((tmp_path / "data" / "subset.json").read_text())
    _, all_keys, _ = pool_values(cfg.train, 1, "image", set())
    record = json.loads((tmp_path / "data" / "unlabelled.json").read_text())
    assert record["unlabelled"] == len(all_keys) - 100 - 200 and record["skipped"] == 0
    data = load_data(paths, cfg, ("train",))
    assert data.unlabelled is not None and len(data.unlabelled) == record["unlabelled"]
    assert data.unlabelled.dtype == np.uint8 and data.unlabelled.shape[1:] == data.train[0].shape[1:]
    rest, rest_keys, _ = pool_values(cfg.train, 1, "image", set(subsets["val_keys"]) | set(subsets["labelled_keys"]))
    assert np.array_equal(data.unlabelled, rest)  # no validation or labelled sample among them
    # prepared once: a second call reuses it; without FixMatch nothing is read
    assert prepare_data(cfg, str(tmp_path / "data")).unlabelled == paths.unlabelled
    plain = cfg.with_updates(unlabelled={"method": "none"})
    assert prepare_data(plain, str(tmp_path / "plain")).unlabelled is None
    assert load_data(paths, plain, ("train",)).unlabelled is None
    with pytest.raises(ValueError, match="without the unlabelled pool"):
        load_data(prepare_data(plain, str(tmp_path / "plain")), cfg, ("train",))


def test_epochs_walk_the_whole_pool_before_a_sample_repeats():
    n, count = 100, 30
    seen = np.concatenate([unlabelled_order(n, count, 0, epoch, 0, 1) for epoch in range(3)])
    assert len(seen) == 90 and len(set(seen.tolist())) == 90  # epochs 0-2: 90 distinct samples
    fourth = unlabelled_order(n, count, 0, 3, 0, 1)  # crosses into the next permutation
    assert len(fourth) == 30 and len(set(fourth[:10].tolist()) | set(seen.tolist())) == 100
    assert np.array_equal(unlabelled_order(n, count, 0, 1, 0, 1), unlabelled_order(n, count, 0, 1, 0, 1))
    # two ranks: disjoint shares within a pass
    a, b = unlabelled_order(n, 40, 0, 0, 0, 2), unlabelled_order(n, 40, 0, 0, 1, 2)
    assert not set(a.tolist()) & set(b.tolist())
    # more samples than the pool in one epoch: whole passes, each a permutation
    many = unlabelled_order(10, 25, 1, 0, 0, 1)
    assert sorted(many[:10].tolist()) == list(range(10)) and sorted(many[10:20].tolist()) == list(range(10))


def test_fixmatch_loss_keeps_only_confident_pseudo_labels():
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 8.0]])
    strong = torch.tensor([[0.0, 5.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 8.0]], requires_grad=True)
    loss, mask = fixmatch_loss(weak, strong, threshold=0.95)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    expected = (torch.nn.functional.cross_entropy(strong[0:1], torch.tensor([0]))
                + torch.nn.functional.cross_entropy(strong[2:3], torch.tensor([2]))) / 3
    assert torch.allclose(loss, expected)
    loss.backward()
    assert strong.grad[1].abs().sum() == 0  # the unconfident sample adds nothing
    none_kept, mask = fixmatch_loss(weak[1:2], strong[1:2], threshold=0.95)
    assert float(none_kept.detach()) == 0.0 and mask.sum() == 0


def test_a_fixmatch_finetune_trains_on_the_pool_and_is_reproducible(cfg, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    runs = []
    for _ in range(2):
        session = FinetuneSession(cfg, load_data(paths, cfg, ("train", "val")), None)
        runs.append([session.run_epoch(cfg.policy) for _ in range(2)])
    first, second = runs
    for a, b in zip(first, second):
        assert a["train_loss"] == b["train_loss"] and a["unlabelled_kept"] == b["unlabelled_kept"]
    assert 0.0 <= first[-1]["unlabelled_kept"] <= 1.0 and np.isfinite(first[-1]["unlabelled_loss"])
    assert first[-1]["train_loss"] < first[0]["train_loss"]


def test_the_weak_view_is_checked_and_the_image_default_is_flip_and_translate():
    with pytest.raises(ValueError, match="nope"):
        FinetuneConfig(unlabelled={"method": "fixmatch", "weak": "nope"})
    with pytest.raises(ValueError, match="ratio"):
        FinetuneConfig(unlabelled={"method": "fixmatch", "ratio": 0})
    weak = parse_policy("weak")
    assert [op.name for op in weak.pre] == ["hflip", "translate_x", "translate_y"]
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[10:18, 10:18] = 255
    from augtrain.pipelines.modalities import get_modality

    transform = get_modality("image").sample_transform(weak, size=28, views=1, backend="auto")
    rng = np.random.default_rng(0)
    out = [transform(image, rng)["image"] for _ in range(20)]
    shifts = [np.argwhere(o[..., 0] > 200).mean(0) - 13.5 for o in out]  # the fill is grey (128)
    assert max(abs(s).max() for s in shifts) <= 0.125 * 28 + 1  # at most 12.5 % of the side (3.5 px)
    assert any(abs(s).max() > 0.5 for s in shifts)  # and it does move
