"""Elastic pretraining on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``): the run
shrinks from 3 workers to 2 when a node is lost, grows back to 3 when one is added, keeps its
global batch throughout and finishes every planned step and epoch. (The exact re-partition of
the optimizer state at another world size: test_elastic_resume.py.)"""

import json
import os
import subprocess
import sys

import pytest

from augtrain.pipelines.train.config import parse_config

EPOCHS = 15  # long enough that Ray Train sees the returning node (about 20 s) before the run ends


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pretraining_shrinks_when_a_node_is_lost_and_grows_when_one_returns(digits_shards, tmp_path):
    script = os.path.join(os.path.dirname(__file__), "_elastic_run.py")
    proc = subprocess.run([sys.executable, script, digits_shards, str(tmp_path / "run"), str(EPOCHS)],
                          capture_output=True, text=True, timeout=580)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    outcome = json.loads(lines[-1])
    assert not outcome["errors"], outcome["errors"]
    assert [e["event"] for e in outcome["events"]] == ["removed", "added"], outcome["events"]
    worlds = [w for _, w in outcome["worlds"]]
    # 3 workers, then 2 after the loss, then 3 again after the node came back
    shrunk = worlds.index(2)
    assert worlds[0] == 3 and 3 in worlds[shrunk:], outcome["worlds"]
    assert outcome["global_batch"] == 150  # 25 x 2 micro-batches on 3 workers, x 3 on 2
    assert outcome["final_step"] == outcome["total_steps"] == EPOCHS * 4  # 600 samples / 150 a step
    assert outcome["epoch"] == EPOCHS
    # every epoch consumed all its samples (600 = 4 steps of 150, none left over at 1, 2 or 3 workers)
    epochs = [r for r in outcome["rows"] if r["kind"] == "epoch"]
    assert [int(r["epoch"]) for r in epochs][-1] == EPOCHS - 1
    assert all(int(r["samples"]) == 600 for r in epochs), [r["samples"] for r in epochs]
    # a group resumed after an epoch's last sample adds no second row for it (nor a loss of 0)
    assert len({r["epoch"] for r in epochs}) == len(epochs) and all(float(r["loss"]) > 0 for r in epochs)


def test_an_elastic_range_must_divide_the_global_batch_at_every_size(tmp_path, digits_shards):
    from augtrain.pipelines.train.pretrain import plan_pretraining

    def plan(workers, engine):
        return plan_pretraining(parse_config({
            "name": "elastic", "output": str(tmp_path / "out"), "data": {"train": digits_shards, "channels": 1},
            "augment": {"policy": "mae", "size": 16},
            "model": {"objective": "simclr", "encoder": "cnn-tiny", "encoder_kwargs": {"in_chans": 1}},
            "engine": engine, "loop": {"epochs": 1}, "cluster": {"workers": workers}}))

    p = plan([1, 3], {"micro_batch_size": 25, "grad_accum_steps": 2})
    assert p.engine.global_batch_size == 150 and p.steps_per_epoch == 4  # 25 x 2 x MAX workers
    assert "accumulation (6 on 1, 3 on 2, 2 on 3; 150 samples a step)" in p.describe()
    with pytest.raises(ValueError, match=r"cluster.workers 1-4 \(elastic\): .*not a whole number of micro-batches of 25 on 3"):
        plan([1, 4], {"micro_batch_size": 25})
    fixed = plan(2, {"micro_batch_size": 25})
    assert fixed.engine.global_batch_size is None and fixed.steps_per_epoch == 12
    with pytest.raises(ValueError, match=r"cluster.workers 4: .*not a whole number of micro-batches of 25 on 4"):
        plan(4, {"micro_batch_size": 25, "global_batch_size": 150})


def test_a_worker_range_builds_an_elastic_ray_train_group():
    from augtrain.pipelines.train.config import ClusterSection
    from augtrain.pipelines.trainer import torch_trainer

    cluster = ClusterSection(workers=[1, 3], resize_interval_s=5)
    assert cluster.elastic and (cluster.min_workers, cluster.max_workers) == (1, 3)
    trainer = torch_trainer(lambda config: None, {}, workers=cluster.workers, cpus_per_worker=1,
                            storage_path="unused", name="n", resize_interval_s=cluster.resize_interval_s)
    scaling = trainer.scaling_config
    assert scaling.elasticity_enabled and (scaling.min_workers, scaling.max_workers) == (1, 3)
    assert scaling.elastic_resize_monitor_interval_s == 5
    fixed = torch_trainer(lambda config: None, {}, workers=2, cpus_per_worker=1, storage_path="unused", name="n")
    assert not fixed.scaling_config.elasticity_enabled and fixed.scaling_config.num_workers == 2
    assert ClusterSection(workers=[2, 2]).workers == 2 and not ClusterSection(workers=[2, 2]).elastic
    for bad, message in (([3, 1], "1 <= MIN <= MAX"), ([0, 2], "1 <= MIN <= MAX"), ([1, 2, 3], "two whole numbers"),
                         (0, ">= 1")):
        with pytest.raises(ValueError, match=message):
            ClusterSection(workers=bad)
