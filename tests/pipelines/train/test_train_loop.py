"""The per-worker pretraining loop on real shards, a real local Ray (Data) and real DeepSpeed."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

from augtrain.augment import make_sample_transform
from augtrain.models import create_objective
from augtrain.pipelines.train.checkpoint import latest_checkpoint, list_checkpoints, read_metadata
from augtrain.pipelines.data.decode import DecodeSpec
from augtrain.pipelines.train.engine import EngineConfig
from augtrain.pipelines.data.reader import ReaderConfig, ShardReader
from augtrain.pipelines.data.shard_set import open_shards
from augtrain.pipelines.train.loop import LoopConfig, pretrain

BATCH = 32  # 600 digits -> 18 full micro-batches per epoch (24 samples dropped, and counted)


def _reader(shards: str) -> ShardReader:
    transform = make_sample_transform("simclr", size=16, views=2)
    return ShardReader(open_shards(shards), ReaderConfig(seed=3, decode=DecodeSpec(channels=1)), transform)


def _objective():
    torch.manual_seed(0)
    return create_objective("simclr", encoder="cnn-tiny", encoder_kwargs={"in_chans": 1},
                            proj_hidden_dim=32, proj_dim=16)


ENGINE = EngineConfig(zero_stage=2, micro_batch_size=BATCH, grad_accum_steps=2, base_lr=0.02,
                      lr_base_batch_size=64, warmup_steps=2, total_steps=9)


def _run(shards: str, loop: LoopConfig, resume_from: str | None = None):
    steps = []
    result = pretrain(_objective(), _reader(shards), ENGINE, loop, resume_from=resume_from,
                      config={"experiment": "digits"}, policy="simclr", on_step=steps.append)
    return result, steps


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_epoch_metrics_checkpoints_and_exact_resume(ray_local, digits_shards, tmp_path: Path):
    # the reference: one uninterrupted epoch
    full_loop = LoopConfig(epochs=1, checkpoint_dir=str(tmp_path / "full"), log_every=4,
                           mean=(0.5,), std=(0.5,), metrics_dir=str(tmp_path / "metrics"))
    full, full_steps = _run(digits_shards, full_loop)
    assert full["step"] == 9 and len(full_steps) == 18
    keys = [k for s in full_steps for k in s.keys]
    assert len(keys) == len(set(keys)) == 18 * BATCH
    assert full["data_position"]["epoch"] == 1  # the epoch is finished
    end = latest_checkpoint(tmp_path / "full")
    assert read_metadata(end)["data_position"]["epoch"] == 1

    rows = list(csv.DictReader(open(tmp_path / "metrics" / "metrics.csv")))
    step_rows = [r for r in rows if r["kind"] == "step"]
    assert len(step_rows) == 4 and all(0 <= float(r["data_wait"]) <= 1 for r in step_rows)
    assert all(float(r["samples_per_s"]) > 0 for r in step_rows)
    epoch_row = [r for r in rows if r["kind"] == "epoch"][0]
    assert int(epoch_row["samples"]) == 600 and int(epoch_row["skipped"]) == 600 - 18 * BATCH
    assert any((tmp_path / "metrics" / "tensorboard").iterdir())

    # interrupted after 4 optimizer steps, then resumed from the checkpoint it left
    part_loop = LoopConfig(epochs=1, checkpoint_dir=str(tmp_path / "part"), max_steps=4)
    part, part_steps = _run(digits_shards, part_loop)
    assert part["step"] == 4 and [c.name for c in list_checkpoints(tmp_path / "part")] == ["step-00000004"]
    assert read_metadata(part["checkpoint"])["data_position"]["samples_consumed"] == 8 * BATCH

    rest_loop = LoopConfig(epochs=1, checkpoint_dir=str(tmp_path / "part"))
    rest, rest_steps = _run(digits_shards, rest_loop, resume_from="latest")
    assert rest["step"] == 9
    resumed_keys = [k for s in part_steps + rest_steps for k in s.keys]
    assert resumed_keys == keys  # nothing repeated, nothing skipped, same order
    assert [s.loss for s in part_steps + rest_steps] == pytest.approx([s.loss for s in full_steps],
                                                                       rel=1e-6)
    assert full_steps[-1].loss < full_steps[0].loss


@pytest.mark.timeout(300)
def test_a_resume_at_an_epochs_last_step_writes_no_loss_for_batches_it_did_not_train(ray_local, digits_shards,
                                                                                      tmp_path: Path):
    metrics = str(tmp_path / "metrics")
    loop = LoopConfig(epochs=2, checkpoint_dir=str(tmp_path / "ckpt"), log_every=100, metrics_dir=metrics,
                      max_steps=9, mean=(0.5,), std=(0.5,))  # 9 steps: the whole of epoch 0, stopped there
    first, _ = _run(digits_shards, loop)
    assert read_metadata(first["checkpoint"])["data_position"] == first["data_position"]
    assert first["data_position"]["epoch"] == 0 and first["data_position"]["samples_consumed"] == 18 * BATCH
    resume = LoopConfig(epochs=1, checkpoint_dir=str(tmp_path / "ckpt"), metrics_dir=metrics, mean=(0.5,), std=(0.5,))
    rest, steps = _run(digits_shards, resume, resume_from="latest")
    assert steps == [] and rest["step"] == 9 and rest["data_position"]["epoch"] == 1  # on to the next epoch
    end = latest_checkpoint(tmp_path / "ckpt")
    assert read_metadata(end)["data_position"]["epoch"] == 1
    epochs = [r for r in csv.DictReader(open(Path(metrics) / "metrics.csv")) if r["kind"] == "epoch"]
    # the run that trained it, then the resumed run's count of the epoch's dropped tail, with no loss
    assert [(r["epoch"], r["samples"], r["skipped"]) for r in epochs] == [("0", "576", "0"), ("0", "600", "24")]
    assert float(epochs[0]["loss"]) > 0 and epochs[1]["loss"] == ""
    _run(digits_shards, resume, resume_from="latest")  # again, from the epoch-end checkpoint: nothing to add
    assert len([r for r in csv.DictReader(open(Path(metrics) / "metrics.csv")) if r["kind"] == "epoch"]) == 2


OBJECTIVES = {
    "simclr": ({"encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1}, "proj_hidden_dim": 32,
                "proj_dim": 16}, "simclr", 2),
    "mae": ({"encoder": "vit-micro",
             "encoder_kwargs": {"in_chans": 1, "image_size": 16, "patch_size": 4}}, "mae", 1),
}


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_two_ray_train_workers_pretrain_and_checkpoint(ray_local, digits_shards, tmp_path: Path, name):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from augtrain.pipelines.train.loop import train_loop_per_worker

    kwargs, policy, views = OBJECTIVES[name]
    transform = make_sample_transform(policy, size=16, views=views)
    reader = ShardReader(open_shards(digits_shards), ReaderConfig(seed=1, decode=DecodeSpec(channels=1)),
                         transform)
    engine = EngineConfig(zero_stage=2, micro_batch_size=16, base_lr=1e-3, total_steps=4)
    loop = LoopConfig(epochs=1, max_steps=4, log_every=2, checkpoint_dir=str(tmp_path / "ckpt"),
                      metrics_dir=str(tmp_path / "metrics"))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"objective": {"objective": name, **kwargs}, "reader": reader,
                           "engine": engine, "loop": loop, "policy": policy, "resume_from": "latest"},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"loop-{name}-{tmp_path.name}", storage_path=str(tmp_path / "ray")),
    )
    result = trainer.fit()
    assert result.error is None  # (Train V2 keeps metrics only with Ray checkpoints: read ours)
    meta = read_metadata(latest_checkpoint(tmp_path / "ckpt"))
    assert meta["step"] == 4 and meta["engine"]["world_size"] == 2
    assert meta["data_position"]["samples_consumed"] == 4 * 2 * 16  # 4 steps x 2 workers x 16
    assert meta["model"]["objective"] == name and meta["policy"] == policy
    rows = list(csv.DictReader(open(tmp_path / "metrics" / "metrics.csv")))
    losses = [float(r["loss"]) for r in rows if r["kind"] == "step"]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)  # rank 0 writes


def _crashing_worker(config: dict) -> None:
    """The loop, with rank 1 killed (os._exit) at optimizer step 5 of the first attempt."""
    import os

    import ray.train

    from augtrain.models import build_from_spec
    from augtrain.pipelines.train.loop import pretrain

    rank = ray.train.get_context().get_world_rank()
    out = Path(config["out"])
    first: list[int] = []

    def on_step(record) -> None:
        if not first:
            first.append(record.optimizer_step)
            with open(out / f"starts-rank{rank}.txt", "a") as f:
                f.write(f"{record.optimizer_step}\n")
        if rank == 1 and record.optimizer_step == 5 and not (out / "crashed").exists():
            (out / "crashed").touch()
            os._exit(1)

    pretrain(build_from_spec(config["objective"]), config["reader"], config["engine"], config["loop"],
             resume_from="latest", on_step=on_step, on_metrics=lambda r: ray.train.report(dict(r)))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_local, digits_shards, tmp_path: Path):
    import ray.cloudpickle
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    kwargs, policy, views = OBJECTIVES["simclr"]
    reader = ShardReader(open_shards(digits_shards), ReaderConfig(seed=1, decode=DecodeSpec(channels=1)),
                         make_sample_transform(policy, size=16, views=views))
    trainer = TorchTrainer(
        _crashing_worker,
        train_loop_config={
            "objective": {"objective": "simclr", **kwargs}, "reader": reader, "out": str(tmp_path),
            "engine": EngineConfig(zero_stage=2, micro_batch_size=16, base_lr=1e-3, total_steps=8),
            "loop": LoopConfig(epochs=1, max_steps=8, checkpoint_every=2, log_every=4,
                               checkpoint_dir=str(tmp_path / "ckpt"))},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"crash-{tmp_path.name}", storage_path=str(tmp_path / "ray"),
                             failure_config=FailureConfig(max_failures=1)),
    )
    result = trainer.fit()
    assert result.error is None and (tmp_path / "crashed").exists()
    # each attempt's first micro-batch: step 1 from scratch, then step 5 after resuming at 4
    for rank in range(2):
        assert (tmp_path / f"starts-rank{rank}.txt").read_text().split() == ["1", "5"]
    meta = read_metadata(latest_checkpoint(tmp_path / "ckpt"))
    assert meta["step"] == 8 and meta["data_position"]["samples_consumed"] == 8 * 2 * 16
