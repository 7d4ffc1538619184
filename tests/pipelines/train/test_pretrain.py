"""`augtrain pretrain` end to end on a real local Ray: plan, train, checkpoint, resume."""

import csv
import os

import pytest
import yaml

from augtrain.cluster.cli import main
from augtrain.pipelines.train.checkpoint import latest_checkpoint, list_checkpoints, read_metadata
from augtrain.pipelines.train.config import load_config
from augtrain.pipelines.train.pretrain import plan_pretraining


def experiment(tmp_path, shards, **patch):
    data = {
        "name": "tiny-simclr",
        "output": str(tmp_path / "run"),
        "data": {"train": shards, "channels": 1},
        "augment": {"policy": "mae", "size": 8},
        "model": {"objective": "simclr", "encoder": "cnn-tiny",
                  "encoder_kwargs": {"in_chans": 1, "widths": [8, 16]}, "kwargs": {"proj_hidden_dim": 32, "proj_dim": 16}},
        "engine": {"zero_stage": 2, "micro_batch_size": 50, "base_lr": 1.0e-3},
        "loop": {"epochs": 2, "checkpoint_every": 2, "log_every": 1},
        "cluster": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
    }
    for key, value in patch.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_plan_checks_inputs_before_any_cluster_work(tmp_path, digits_shards):
    plan = plan_pretraining(load_config(experiment(tmp_path, digits_shards)))
    assert plan.num_views == 2 and plan.steps_per_epoch == 6  # 600 samples / 2 workers / micro-batch 50
    assert plan.engine.total_steps == 12
    with pytest.raises(ValueError, match="no such shard file|pattern matches no shard|no .tar shards"):
        plan_pretraining(load_config(experiment(tmp_path, str(tmp_path / "missing-*.tar"))))
    with pytest.raises(Exception, match="unknown"):
        plan_pretraining(load_config(experiment(tmp_path, digits_shards, augment={"policy": "sparkle"})))


def test_warmup_as_a_fraction_fits_any_corpus_size(tmp_path, digits_shards):
    # 12 optimizer steps in all: a fraction adapts, an absolute count larger than the run is refused by name
    plan = plan_pretraining(load_config(experiment(tmp_path, digits_shards, engine={"warmup_fraction": 0.25})))
    assert plan.engine.total_steps == 12 and plan.engine.warmup_steps == 3 and plan.engine.warmup_fraction is None
    with pytest.raises(ValueError, match=r"engine.warmup_steps \(40\) must be in \[0, total_steps=12\].*"
                                         r"warmup_fraction.*600 samples, 2 workers"):
        plan_pretraining(load_config(experiment(tmp_path, digits_shards, engine={"warmup_steps": 40})))
    with pytest.raises(Exception, match="keep one"):
        load_config(experiment(tmp_path, digits_shards, engine={"warmup_steps": 2, "warmup_fraction": 0.1}))
    # the quickstart's own config on a corpus of 600 images (the 4,200-image case, smaller)
    quick = load_config("configs/quickstart-simclr.yaml", [f"data.train={digits_shards}", "augment.size=8",
                                                            f"output={tmp_path / 'q'}", "model.encoder_kwargs.widths=[8]"])
    assert plan_pretraining(quick).engine.warmup_steps == 0  # 5 % of 1 step: no warmup, and no refusal


@pytest.mark.timeout(420)
def test_pretrain_command_trains_checkpoints_and_resumes(ray_local, tmp_path, digits_shards, chromium):
    config = experiment(tmp_path, digits_shards)
    assert main(["pretrain", "-c", config, "--set", "loop.max_steps=2"]) == 0
    run = tmp_path / "run"
    first = latest_checkpoint(run / "checkpoints")
    meta = read_metadata(first)
    assert meta["step"] == 2 and meta["config"]["name"] == "tiny-simclr"
    assert meta["data_position"]["samples_consumed"] == 200  # 2 steps x 2 workers x 50
    assert {"model.safetensors", "augtrain.json", "deepspeed"} <= set(os.listdir(first))
    # a second fresh start into the same output is refused: it would mix two runs
    assert main(["pretrain", "-c", config]) == 2
    assert main(["pretrain", "-c", config, "--resume", "latest"]) == 0
    steps = [read_metadata(c)["step"] for c in list_checkpoints(run / "checkpoints")]
    assert max(steps) == 12  # 6 steps per epoch x 2 epochs, continued from step 2
    rows = list(csv.DictReader(open(run / "metrics" / "metrics.csv")))
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [int(r["epoch"]) for r in epochs][-2:] == [0, 1] and all(int(r["skipped"]) == 0 for r in epochs)
    assert float([r for r in rows if r["kind"] == "step"][-1]["data_wait"]) < 1
    assert os.path.exists(run / "metrics" / "loss.png") and os.path.exists(run / "config.yaml")
    # the run's report: written by the command, every figure shown by a browser, the command to run it again
    md = (run / "report.md").read_text()
    assert "- **epochs:** 2 finished of 2" in md and "- **optimizer steps:** 12" in md
    assert "--resume latest" in md and "| 1 | " in md and "| 2 | " in md  # the epoch table
    rendered = chromium(run / "report.html")
    assert rendered["images"] >= 1 and rendered["loaded"] == rendered["images"]


# slow-marked (about 50 s, for the CI budget): the engine's reproducibility stays in the default run
# (test_engine_distributed: checkpoints reproduce), and the reader's seeded order (test_reader)
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_runs_of_one_config_train_the_same_model(ray_local, tmp_path, digits_shards):
    """Same config and seed, two fresh runs: the same initial weights and data, so the same losses."""
    losses = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = experiment(tmp_path / name, digits_shards, loop={"epochs": 1})
        assert main(["pretrain", "-c", config, "--set", "loop.max_steps=3"]) == 0
        rows = csv.DictReader(open(tmp_path / name / "run" / "metrics" / "metrics.csv"))
        losses.append([float(r["loss"]) for r in rows if r["kind"] == "step"])
    assert len(losses[0]) == 3 and losses[0] == losses[1]


def test_augmentation_placement_is_chosen_in_one_place():
    from augtrain.pipelines.train.worker_augment import choose_placement

    assert choose_placement("auto", cuda=True) == "worker" and choose_placement("auto", cuda=False) == "reader"
    assert choose_placement("worker", cuda=False) == "worker" and choose_placement("reader", cuda=True) == "reader"
    with pytest.raises(ValueError, match="placement"):
        choose_placement("gpu", cuda=True)


@pytest.mark.timeout(420)
def test_worker_side_dali_augmentation_trains(ray_local, tmp_path, digits_shards):
    """The GPU path's code (encoded bytes -> DALI in the train worker) with DALI CPU operators."""
    config = experiment(tmp_path, digits_shards, augment={"placement": "worker"}, loop={"epochs": 1})
    assert main(["pretrain", "-c", config, "--set", "loop.max_steps=2"]) == 0
    meta = read_metadata(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert meta["step"] == 2 and meta["data_position"]["samples_consumed"] == 200


@pytest.mark.gpu
@pytest.mark.timeout(420)
def test_gpu_pretraining_augments_with_dali_in_the_worker(ray_local, tmp_path, digits_shards):
    config = experiment(tmp_path, digits_shards, loop={"epochs": 1}, cluster={"workers": 1, "use_gpu": True})
    assert main(["pretrain", "-c", config, "--set", "loop.max_steps=2"]) == 0
    meta = read_metadata(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert meta["step"] == 2 and meta["versions"]
