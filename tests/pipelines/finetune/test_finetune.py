"""Fine-tuning: stratified seeded subsets, the three modes, layer-wise LR decay, exact resume from
a fine-tune checkpoint, checkpoints predicting the test split again, and the Ray Train driver with two
DDP workers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from augtrain.pipelines.finetune import (
    FinetuneConfig,
    FinetuneSession,
    build_classifier,
    encoder_blocks,
    finetune_local,
    load_data,
    load_encoder,
    param_groups,
    predict_checkpoints,
    prepare_data,
    run_finetune,
)
from augtrain.pipelines.finetune.subsets import stratified_indices, subset_size


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """A SimCLR checkpoint of a 2-stage cnn-tiny after three DeepSpeed steps (CPU, ZeRO 0)."""
    from augtrain.models import create_objective
    from augtrain.pipelines.train.checkpoint import save_checkpoint
    from augtrain.pipelines.train.engine import EngineConfig, build_engine, train_step

    torch.manual_seed(0)
    objective = create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1, "widths": [8, 16]},
                                 proj_hidden_dim=16, proj_dim=8)
    engine = build_engine(objective, EngineConfig(zero_stage=0, device="cpu", micro_batch_size=16, total_steps=3))
    for _ in range(3):
        train_step(engine, [torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)])
    return str(save_checkpoint(engine, tmp_path_factory.mktemp("pretrain"), 3))


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[str, str]:
    from augtrain.pipelines.data.writer import WriteOptions, write_shards
    from augtrain.pipelines.data.sources import open_source

    root = tmp_path_factory.mktemp("digits")
    for split in ("train", "test"):
        write_shards(open_source("digits", split), str(root / split), split, WriteOptions(samples_per_shard=500),
                     progress=lambda _: None)
    return str(root / "train"), str(root / "test")


@pytest.fixture()
def cfg(digits) -> FinetuneConfig:
    return FinetuneConfig(train=digits[0], test=digits[1], labels=150, val_labels=0.1, channels=1, epochs=4,
                          batch_size=32, lr=3e-3, policy="rand-n1-m5")


def test_subset_size_count_or_fraction():
    assert subset_size(0.01, 60000) == 600 and subset_size(600, 60000) == 600 and subset_size(1.0, 7) == 7
    for bad in (0, -3, 0.0, 2.5, 70000):
        with pytest.raises(ValueError, match="finetune.labels"):
            subset_size(bad, 60000)


def test_stratified_indices_keep_class_proportions_and_depend_only_on_the_seed():
    labels = np.repeat(np.arange(10), [50, 100, 150, 200, 250, 50, 100, 150, 200, 250])  # 1,500
    chosen = stratified_indices(labels, 150, seed=0)
    assert len(chosen) == len(set(chosen)) == 150
    assert np.bincount(labels[chosen]).tolist() == [5, 10, 15, 20, 25, 5, 10, 15, 20, 25]
    assert np.array_equal(chosen, stratified_indices(labels, 150, seed=0))
    assert not np.array_equal(chosen, stratified_indices(labels, 150, seed=1))
    other = stratified_indices(labels, 100, seed=0, exclude=chosen)
    assert not set(other) & set(chosen)
    assert sum(np.bincount(labels[stratified_indices(labels, 7, seed=2)])) == 7  # remainders distributed


def test_prepare_data_writes_disjoint_subsets_once(cfg, tmp_path):
    paths = prepare_data(cfg, str(tmp_path))
    record = json.loads((tmp_path / "subset.json").read_text())
    assert record["labelled"] == 150 and record["val"] == round(0.1 * (1437 - 150))
    assert not set(record["labelled_keys"]) & set(record["val_keys"])
    assert sum(record["labelled_per_class"].values()) == 150 and len(record["labelled_per_class"]) == 10
    data = load_data(paths, cfg)
    assert data.train[0].shape == (150, 8, 8, 1) and data.train[0].dtype == np.uint8
    assert data.test[0].shape == (360, 8, 8, 1) and data.num_classes == 10
    mtime = os.path.getmtime(tmp_path / "subset.json")
    assert prepare_data(cfg, str(tmp_path)) == paths and os.path.getmtime(tmp_path / "subset.json") == mtime
    other = prepare_data(cfg.with_updates(label_seed=1), str(tmp_path / "seed1"))
    assert json.loads((tmp_path / "seed1" / "subset.json").read_text())["labelled_keys"] != record["labelled_keys"]
    assert other.labelled != paths.labelled


def test_modes_load_freeze_or_reinitialise_the_encoder(cfg, pretrained):
    encoder = load_encoder(pretrained)
    full = build_classifier(cfg, pretrained, 10)
    scratch = build_classifier(cfg.with_updates(mode="scratch"), pretrained, 10)
    probe = build_classifier(cfg.with_updates(mode="linear"), pretrained, 10)
    key = "stages.0.0.weight"
    assert torch.equal(full.encoder.state_dict()[key], encoder.state_dict()[key])
    assert not torch.equal(scratch.encoder.state_dict()[key], encoder.state_dict()[key])
    assert all(not p.requires_grad for p in probe.encoder.parameters())
    assert [g["lr_scale"] for g in param_groups(probe, cfg)] == [1.0, 1.0]  # head weight and bias only
    with pytest.raises(ValueError, match="needs a pretraining checkpoint"):
        build_classifier(cfg, None, 10)
    assert build_classifier(cfg.with_updates(mode="scratch", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1}),
                            None, 10).encoder.num_features == 64


def test_layer_decay_scales_deeper_blocks_less(cfg, pretrained):
    model = build_classifier(cfg.with_updates(layer_decay=0.5), pretrained, 10)
    assert len(encoder_blocks(model.encoder)) == 2  # the two conv stages
    groups = param_groups(model, cfg.with_updates(layer_decay=0.5))
    scales = {}
    for g in groups:
        for p in g["params"]:
            scales[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert scales[id(named["encoder.stages.0.0.weight"])] == (0.25, cfg.weight_decay)
    assert scales[id(named["encoder.stages.1.0.weight"])] == (0.5, cfg.weight_decay)
    assert scales[id(named["fc.weight"])] == (1.0, cfg.weight_decay)
    assert scales[id(named["fc.bias"])] == (1.0, 0.0)  # no decay on 1-d parameters


@pytest.mark.timeout(120)
def test_full_probe_and_scratch_train_and_probe_leaves_the_encoder(cfg, pretrained, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    before = load_encoder(pretrained).state_dict()
    probe = FinetuneSession(cfg.with_updates(mode="linear"), load_data(paths, cfg), pretrained)
    for _ in range(2):
        probe.run_epoch("rand-n1-m5")
    after = probe.module.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    for mode in ("full", "scratch"):
        result = finetune_local(cfg.with_updates(mode=mode, epochs=6), paths, pretrained, cfg.policy)
        losses = [h["train_loss"] for h in result.history]
        assert losses[-1] < losses[0], (mode, losses)
        assert 0.0 <= result.metrics["test_acc"] <= 1.0 and "val_acc" in result.metrics
        assert [h["policy"] for h in result.history] == ["rand-n1-m5"] * 6


@pytest.mark.timeout(120)
def test_resume_from_a_finetune_checkpoint_is_exact(cfg, pretrained, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg)
    straight = FinetuneSession(cfg, data, pretrained)
    for _ in range(3):
        straight.run_epoch(cfg.policy)
    first = FinetuneSession(cfg, data, pretrained)
    first.run_epoch(cfg.policy)
    saved = first.save(tmp_path / "ckpt")
    resumed = FinetuneSession(cfg, data, pretrained)
    assert resumed.restore(saved)["epoch"] == 1
    for _ in range(2):
        resumed.run_epoch(cfg.policy)
    for key, value in straight.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_finetune_on_two_ray_train_workers(ray_local, cfg, pretrained, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    two = cfg.with_updates(workers=2, epochs=3)
    result = run_finetune(two, paths, pretrained, "trivialaugment", storage_path=str(tmp_path / "runs"), until_epoch=2,
                          test=False)
    assert [h["epoch"] for h in result.history] == [1, 2] and "test_acc" not in result.metrics
    rest = run_finetune(two, paths, pretrained, "trivialaugment", storage_path=str(tmp_path / "runs"),
                        resume_from=result.checkpoint)
    assert [h["epoch"] for h in rest.history] == [1, 2, 3]
    assert rest.history[:2] == result.history and 0.0 <= rest.metrics["test_acc"] <= 1.0


def test_checkpoints_predict_the_test_split_as_their_session_evaluated_it(cfg, pretrained, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    session = FinetuneSession(cfg, load_data(paths, cfg), pretrained)
    saved, accuracies = [], []
    for epoch in range(2):
        session.run_epoch(cfg.policy)
        accuracies.append(session.evaluate("test")["test_acc"])
        saved.append(session.save(tmp_path / f"ckpt-{epoch}"))
    labels, predicted = predict_checkpoints(cfg, paths, pretrained, saved)
    assert np.array_equal(labels, session.data.test[1])
    assert [p["epoch"] for p in predicted] == [1, 2]
    for p, accuracy in zip(predicted, accuracies):
        assert p["predictions"].shape == labels.shape
        assert np.mean(p["predictions"] == labels) == pytest.approx(accuracy, abs=1e-12)


def test_the_schedule_length_scales_with_the_labelled_set():
    from augtrain.pipelines.finetune import auto_steps, budget_epochs

    # BiT-HyperRule's idea: at least 500 steps for small sets, about 30 passes in between, 10k at most
    assert auto_steps(100, 64) == 500 and auto_steps(600, 64) == 500
    assert auto_steps(10_000, 64) == 4688 and auto_steps(60_000, 64) == 10_000
    assert budget_epochs("auto", 100, 64) == 250  # 2 steps per epoch (64 + 36)
    assert budget_epochs("auto", 600, 64) == 50  # 10 steps per epoch
    assert budget_epochs("auto", 10_000, 64) == 30
    assert budget_epochs(1000, 600, 64) == 100 and budget_epochs(7, 600, 64) == 1
    # an explicit epoch count wins; the warmup is a fraction of the run unless given in epochs
    auto = FinetuneConfig(batch_size=64).for_labelled(600)
    assert auto.epochs == 50 and auto.resolved_warmup_epochs == pytest.approx(2.5)
    assert FinetuneConfig(epochs=7).for_labelled(600).epochs == 7
    assert FinetuneConfig(epochs=7, warmup_epochs=1).for_labelled(600).resolved_warmup_epochs == 1
    assert FinetuneConfig(steps=100, batch_size=50).for_labelled(1000).epochs == 5
    with pytest.raises(ValueError, match="not fixed yet"):
        FinetuneConfig().resolved_epochs


def test_a_session_fixes_its_schedule_from_the_labelled_subset(cfg, pretrained, tmp_path):
    paths = prepare_data(cfg, str(tmp_path / "data"))
    assert paths.num_labelled == 150
    session = FinetuneSession(cfg.with_updates(epochs=None, steps=12, batch_size=50), load_data(paths, cfg),
                              pretrained)
    assert session.cfg.epochs == 4  # 3 steps per epoch


def test_fine_tuning_from_a_projection_head_layer(cfg, pretrained):
    from augtrain.pipelines.train.checkpoint import load_model

    objective = load_model(pretrained)
    encoder = load_encoder(pretrained, head_layers=1)
    assert encoder.num_features == 16  # the head's hidden width (proj_hidden_dim)
    assert torch.equal(encoder.head[0].weight, objective.head.net[0].weight)  # the pretrained layer itself
    x = torch.randn(2, 1, 8, 8)
    objective.eval(), encoder.eval()
    expected = torch.relu(objective.head.net[0](objective.encoder.forward_features(x)))
    assert torch.allclose(encoder.forward_features(x), expected)
    model = build_classifier(cfg.with_updates(head_layers=1), pretrained, num_classes=10)
    assert model.fc.in_features == 16
    scratch = load_encoder(pretrained, pretrained=False, head_layers=1)
    assert scratch.num_features == 16 and not torch.equal(scratch.head[0].weight, objective.head.net[0].weight)
    with pytest.raises(ValueError, match="head_layers must be in"):
        load_encoder(pretrained, head_layers=2)


def test_validation_runs_about_ten_times_a_run_and_after_the_last_epoch():
    long = FinetuneConfig(batch_size=64).for_labelled(100)  # 250 epochs
    assert long.resolved_validate_every == 25
    assert [e for e in range(1, 251) if long.validates_after(e)] == list(range(25, 251, 25))
    short = FinetuneConfig(epochs=4)
    assert [e for e in range(1, 5) if short.validates_after(e)] == [1, 2, 3, 4]
    fixed = FinetuneConfig(epochs=7, validate_every=3)
    assert [e for e in range(1, 8) if fixed.validates_after(e)] == [3, 6, 7]
    with pytest.raises(ValueError, match="validate_every"):
        FinetuneConfig(validate_every=0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_session_trains_in_either_precision_and_resumes_exactly(cfg, pretrained, tmp_path, precision):
    # bf16 is autocast of the forward pass: the weights and the optimizer stay fp32, so a
    # checkpoint holds fp32 tensors and a resumed run repeats the straight one bit for bit
    cfg = cfg.with_updates(precision=precision)
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg)
    straight = FinetuneSession(cfg, data, pretrained)
    assert straight.precision == precision
    for _ in range(3):
        straight.run_epoch(cfg.policy)
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    assert all(v.dtype == torch.float32 for v in straight.module.state_dict().values() if v.is_floating_point())
    first = FinetuneSession(cfg, data, pretrained)
    first.run_epoch(cfg.policy)
    resumed = FinetuneSession(cfg, data, pretrained)
    resumed.restore(first.save(tmp_path / "ckpt"))
    for _ in range(2):
        resumed.run_epoch(cfg.policy)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert 0.0 <= straight.evaluate("test")["test_acc"] <= 1.0


def test_keep_best_val_needs_a_validation_split_and_validates_thirty_times_a_run():
    with pytest.raises(ValueError, match="val_labels"):
        FinetuneConfig(keep="best-val")
    long = FinetuneConfig(batch_size=64, keep="best-val", val_labels=100).for_labelled(100)  # 250 epochs
    assert long.resolved_validate_every == 8


@pytest.mark.timeout(180)
def test_keep_best_val_tests_the_best_passes_weights_and_resumes_its_selection(cfg, pretrained, tmp_path):
    cfg = cfg.with_updates(keep="best-val", epochs=4, validate_every=1)
    paths = prepare_data(cfg, str(tmp_path / "data"))
    data = load_data(paths, cfg)

    def wreck(session: FinetuneSession) -> None:
        """All-zero weights before the last epoch: its validation pass cannot be the best."""
        with torch.no_grad():
            for p in session.module.parameters():
                p.zero_()

    def train(session: FinetuneSession, until: int) -> list[dict[str, torch.Tensor]]:
        weights = []
        while session.epoch < until:
            if session.epoch == 3:
                wreck(session)
            metrics = session.run_epoch(cfg.policy, test=session.epoch + 1 == 4, validate=False)
            weights.append({k: v.clone() for k, v in session.module.state_dict().items()})
            assert "val_acc" in metrics  # every validate_every epochs whatever the caller asks
        return weights

    straight = FinetuneSession(cfg, data, pretrained)
    weights = train(straight, 4)
    last = straight.history[-1]
    passes = [h["val_acc"] for h in straight.history[:3]] + [last["last_val_acc"]]
    best = int(np.argmax(passes))  # the first of equal passes
    assert passes[3] < max(passes[:3])
    assert last["selected_epoch"] == best + 1 and last["val_acc"] == passes[best]
    for key, value in straight.module.state_dict().items():
        assert torch.equal(value, weights[best][key]), key
    assert last["test_acc"] == straight.evaluate("test")["test_acc"]

    first = FinetuneSession(cfg, data, pretrained)
    train(first, 2)
    resumed = FinetuneSession(cfg, data, pretrained)
    resumed.restore(first.save(tmp_path / "ckpt"))
    assert resumed.best == first.best
    train(resumed, 4)
    assert resumed.history[-1]["selected_epoch"] == last["selected_epoch"]
    for key, value in straight.module.state_dict().items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key
    # the final checkpoint holds the selected weights: its test predictions are the ones reported
    labels, predicted = predict_checkpoints(cfg, paths, pretrained, [resumed.save(tmp_path / "final")])
    assert np.mean(predicted[0]["predictions"] == labels) == pytest.approx(last["test_acc"], abs=1e-12)
