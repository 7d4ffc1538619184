"""Ctrl-C during `augtrain pretrain`: the command exits promptly, names how to resume, leaves no
process of its run behind, its last checkpoint loads, and `--resume latest` continues it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from augtrain.cluster import reaper
from augtrain.pipelines.train.checkpoint import latest_checkpoint, load_state_dict, read_metadata


def _experiment(tmp_path, shards) -> str:
    data = {
        "name": "tiny-interrupted", "output": str(tmp_path / "run"),
        "data": {"train": shards, "channels": 1},
        "augment": {"policy": "mae", "size": 8},
        "model": {"objective": "simclr", "encoder": "cnn-tiny",
                  "encoder_kwargs": {"in_chans": 1, "widths": [8, 16]}, "kwargs": {"proj_hidden_dim": 32, "proj_dim": 16}},
        "engine": {"zero_stage": 2, "micro_batch_size": 50, "base_lr": 1.0e-3, "precision": "fp32"},
        "loop": {"epochs": 100, "checkpoint_every": 2, "log_every": 1},  # far longer than the test waits
        "cluster": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 0},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _augtrain(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    return subprocess.Popen([sys.executable, "-m", "augtrain.cluster.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.timeout(420)
def test_ctrl_c_stops_pretraining_cleanly_and_it_resumes(tmp_path, digits_shards):
    config = _experiment(tmp_path, digits_shards)
    checkpoints = tmp_path / "run" / "checkpoints"
    driver = _augtrain("pretrain", "-c", config, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (latest_checkpoint(checkpoints) if checkpoints.is_dir() else None) is None:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            time.sleep(1)
        time.sleep(3)  # mid-run, between checkpoints
        start = reaper._stat(driver.pid)[1]
        processes = reaper.descendants({driver.pid: start})  # the run's Ray: GCS, raylet, workers, agents
        assert len(processes) > 4
        driver.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = driver.communicate(timeout=60)
        assert time.monotonic() - t0 < 30 and driver.returncode == 130, err[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert "interrupted; the last complete checkpoint is kept; continue with: augtrain pretrain -c" in err
    assert err.rstrip().endswith("--resume latest")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(reaper._stat(p) for p in processes):
        time.sleep(0.5)
    assert not [p for p, s in processes.items() if (reaper._stat(p) or (0, -1))[1] == s], "left behind"
    last = latest_checkpoint(checkpoints)
    step = read_metadata(last)["step"]
    assert load_state_dict(last)  # the last checkpoint is whole
    resumed = _augtrain("pretrain", "-c", config, "--resume", "latest", "--set", f"loop.max_steps={step + 2}")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert read_metadata(latest_checkpoint(checkpoints))["step"] == step + 2
    assert "Checkpoint successfully created" not in out + err  # the engines' logs are in the run folder
    assert (tmp_path / "run" / "logs" / "augtrain.log").is_file() and (tmp_path / "run" / "logs" / "ray").is_dir()
