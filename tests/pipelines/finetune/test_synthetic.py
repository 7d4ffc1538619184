"""Generated samples mixed into fine-tuning (``finetune.synthetic``): the fraction of every epoch's
slots is honoured exactly, per rank and in all, the epoch keeps its length, the confidence filter
drops and counts, and no generated sample reaches validation or test. The generated shards here
are written by the test from other digits, marked synthetic in their manifest as `augtrain
generate` marks its own (a real generator's samples are tested in test_vae_pretrain.py)."""

from __future__ import annotations

import numpy as np
import pytest

from augtrain.pipelines.data.shard_set import ShardSpecError
from augtrain.pipelines.data.source_base import Source
from augtrain.pipelines.data.sources import open_source
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, load_data, prepare_data
from augtrain.pipelines.finetune.session import synthetic_order
from augtrain.augment import parse_policy


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """200 digits of the test split, flipped, with labels and a confidence per sample (0, 0.005, ..., 0.995)."""
    digits = open_source("digits", "test")
    out = tmp_path_factory.mktemp("generated")

    def item(i: int):
        image, label = digits[i]
        return image[:, ::-1].copy(), label

    source = Source("generated", digits.class_names, 200, item,
                    extras=lambda i: {"conf": f"{i / 200:.6f}".encode()})
    write_shards(source, str(out), "train", WriteOptions(samples_per_shard=80), progress=lambda _: None,
                 synthetic={"generator": "test", "drawn": 200, "kept": 200})
    return str(out)


@pytest.fixture()
def cfg(digits_splits, generated) -> FinetuneConfig:
    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=100, val_labels=100, channels=1, epochs=3, batch_size=20,
                          lr=3e-3, policy="none", mode="scratch", encoder="cnn-tiny",
                          encoder_kwargs={"in_chans": 1, "widths": [8, 16]}, synthetic=generated,
                          synthetic_fraction=0.25)


def test_the_fraction_of_generated_samples_is_exact_in_every_epoch(cfg, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg)
    assert len(data.synthetic[1]) == 200 and data.synthetic_dropped == 0
    session = FinetuneSession(cfg, data, None)
    flipped = {data.synthetic[0][i].tobytes(): int(data.synthetic[1][i]) for i in range(200)}
    none = parse_policy("none")
    for _ in range(3):
        values, labels, count = session._epoch_samples(none)
        assert count == 25 and len(labels) == 100  # 25 % of the 100 slots; the epoch keeps its length
        fake = [i for i, v in enumerate(values) if v.tobytes() in flipped]
        assert len(fake) == 25 and all(labels[i] == flipped[values[i].tobytes()] for i in fake)
        metrics = session.run_epoch("none")
        assert metrics["synthetic_samples"] == 25
    # the same steps as without them: the fraction replaces slots, it does not add any
    no_mix = cfg.with_updates(synthetic_fraction=0.0)
    plain = FinetuneSession(no_mix, load_data(paths, no_mix), None)
    assert plain.cfg.resolved_epochs == session.cfg.resolved_epochs and "synthetic_samples" not in plain.run_epoch("none")


def test_ranks_share_no_generated_sample_in_an_epoch_and_repeat_only_when_short():
    a, b = (synthetic_order(200, 40, seed=0, epoch=3, rank=r, world_size=2) for r in (0, 1))
    assert len(set(a)) == 40 == len(set(b)) and not set(a) & set(b)
    assert not np.array_equal(a, synthetic_order(200, 40, seed=0, epoch=4, rank=0, world_size=2))  # per epoch
    short = synthetic_order(10, 12, seed=0, epoch=0, rank=0, world_size=1)
    assert len(short) == 12 and set(short) == set(range(10))


def test_the_confidence_filter_drops_and_counts(cfg, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg.with_updates(synthetic_min_confidence=0.5))
    assert len(data.synthetic[1]) == 100 and data.synthetic_dropped == 100
    with pytest.raises(ValueError, match="no generated sample left"):
        load_data(paths, cfg.with_updates(synthetic_min_confidence=0.999))


def test_generated_samples_never_reach_validation_or_test(cfg, generated, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg)
    fakes = {v.tobytes() for v in data.synthetic[0]}
    assert not fakes & {v.tobytes() for v in data.val[0]} and not fakes & {v.tobytes() for v in data.test[0]}
    with pytest.raises(ShardSpecError, match="cannot be the test split"):
        prepare_data(cfg.with_updates(test=generated), str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="needs finetune.synthetic"):
        FinetuneConfig(synthetic_fraction=0.5)
