"""Distillation through the unlabelled pool: the student's set (validation held out, the test split
never read, labelled samples one-hot, teachers' mean probabilities elsewhere), a student session on
soft targets, and ``augtrain distill`` end to end on real shards and a real local Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from augtrain.pipelines.finetune import FinetuneConfig, FinetuneSession, finetune_local, load_data, prepare_data
from augtrain.pipelines.finetune.config import DistillConfig
from augtrain.pipelines.finetune.distill import check_teachers, prepare_student_data, student_config
from augtrain.pipelines.finetune.saved import load_classifier, mean_probabilities
from augtrain.pipelines.finetune.unlabelled import pool_values


@pytest.fixture(scope="module")
def cfg(digits_splits) -> FinetuneConfig:
    train, test = digits_splits
    return FinetuneConfig(train=train, test=test, labels=100, val_labels=200, channels=1, epochs=3, batch_size=32,
                          lr=3e-3, policy="none", mode="scratch", encoder="cnn-tiny",
                          encoder_kwargs={"in_chans": 1, "widths": [8, 16]})


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("teacher")


@pytest.fixture(scope="module")
def teacher(cfg, teacher_dir):
    """One fine-tuned teacher for the module's tests (they only read it)."""
    paths = prepare_data(cfg, str(teacher_dir / "data"))
    result = finetune_local(cfg, paths, None, cfg.policy, out_dir=str(teacher_dir))
    return load_classifier(result.checkpoint), paths


def test_the_student_set_holds_out_validation_and_labels_the_rest(cfg, teacher, teacher_dir, tmp_path):
    t, paths = teacher
    subsets = json.loads((teacher_dir / "data" / "subset.json").read_text())
    _, all_keys, _ = pool_values(cfg.train, 1, "image", set())
    student_paths, record = prepare_student_data(DistillConfig(), cfg, paths, [t], str(tmp_path / "student"))
    assert record["labelled"] == 100 and record["skipped"] == 0
    assert record["unlabelled"] == len(all_keys) - 100 - 200  # every pool sample but the labelled and validation ones
    data = load_data(student_paths, cfg, ("train", "val"))
    values, targets = data.train
    assert values.dtype == np.uint8 and len(values) == len(targets) == student_paths.num_labelled == len(all_keys) - 200
    assert targets.dtype == np.float32 and np.allclose(targets.sum(1), 1.0, atol=1e-5)
    labelled = load_data(paths, cfg, ("train",)).train[1]
    assert np.array_equal(targets[:100].argmax(1), labelled) and np.all(targets[:100].max(1) == 1.0)  # true labels
    # the unlabelled part is exactly the teacher's softmax on the clean pool images outside both subsets
    rest, rest_keys, _ = pool_values(cfg.train, 1, "image", set(subsets["val_keys"]) | set(subsets["labelled_keys"]))
    assert not set(rest_keys) & set(subsets["val_keys"])
    assert np.allclose(targets[100:], mean_probabilities([t], rest, 10), atol=1e-6)
    # a second call reuses the set; another temperature rebuilds it
    again, _ = prepare_student_data(DistillConfig(), cfg, paths, [t], str(tmp_path / "student"))
    assert again == student_paths
    soft, _ = prepare_student_data(DistillConfig(temperature=4.0), cfg, paths, [t], str(tmp_path / "student"))
    assert load_data(soft, cfg, ("train",)).train[1][100:].max(1).mean() < targets[100:].max(1).mean()


def test_a_student_trains_on_soft_targets_and_its_schedule_comes_from_the_steps(cfg, teacher, tmp_path):
    t, paths = teacher
    student_paths, _ = prepare_student_data(DistillConfig(), cfg, paths, [t], str(tmp_path / "s"))
    dcfg = DistillConfig(steps=30, batch_size=64, init="scratch", lr=5e-3)
    scfg = student_config(dcfg, t.cfg, student_paths.num_labelled)
    assert scfg.epochs == 2 and scfg.batch_size == 64 and scfg.lr == 5e-3 and scfg.label_smoothing == 0.0
    session = FinetuneSession(scfg, load_data(student_paths, scfg), None)
    first = session.run_epoch("none")
    second = session.run_epoch("none")
    assert second["train_loss"] < first["train_loss"] and 0.0 <= second["train_acc"] <= 1.0
    assert torch.isfinite(torch.tensor(second["val_loss"]))


def test_teachers_of_one_student_must_share_their_data(cfg, teacher):
    t, _ = teacher
    other = type(t)(t.cfg.with_updates(label_seed=1), t.weights, None)
    with pytest.raises(ValueError, match="label_seed"):
        check_teachers([t, other])
    with pytest.raises(ValueError, match="no teacher"):
        check_teachers([])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_distill_command_end_to_end(ray_local, tmp_path, digits_splits, tiny_checkpoint, capsys, monkeypatch):
    from augtrain.cluster.cli import main

    monkeypatch.chdir(tmp_path)  # relative output folders, as a user types them (workers run elsewhere)

    train, test = digits_splits
    experiment = {"name": "tiny", "seed": 0, "output": str(tmp_path / "run"),
                  "data": {"train": train, "test": test, "channels": 1},
                  "finetune": {"labels": 100, "val_labels": 100, "epochs": 2, "batch_size": 50, "lr": 3e-3,
                               "policy": "none"},
                  "distill": {"steps": 20, "batch_size": 64, "policy": "rand-n1-m5"}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["distill", "-c", str(path), "--teacher", str(tmp_path / "none")]) == 2  # named, before Ray work
    assert "no finetune.json" in capsys.readouterr().err
    assert main(["finetune", "-c", str(path), "--checkpoint", tiny_checkpoint, "--out", "t"]) == 0
    assert main(["distill", "-c", str(path), "--teacher", "t", "--out", "s"]) == 0
    record = json.loads((tmp_path / "s" / "finetune.json").read_text())
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0 and record["finetune"]["mode"] == "full"
    assert record["distill"]["labelled"] == 100 and record["distill"]["policy"] == "rand-n1-m5"
    assert record["distill"]["teachers_test_acc"][0] is not None
    assert record["control"]["method"] == "logistic regression on raw pixels"  # the teacher's, same labels
    captured = capsys.readouterr()
    assert "student:" in captured.out and captured.err.rstrip().endswith(f"report: {'s/report.html'}")
    assert "pseudo-labelled samples" in (tmp_path / "s" / "report.md").read_text()
