"""A worker node lost mid-run: Ray Train restarts the group and the run completes."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pretraining_survives_the_loss_of_a_worker_node(digits_shards, tmp_path):
    script = os.path.join(os.path.dirname(__file__), "_multinode_run.py")
    proc = subprocess.run([sys.executable, script, digits_shards, str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=560)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    outcome = json.loads(lines[-1])
    assert outcome["removed"] is not None, "no node hosting a train worker was found to remove"
    assert outcome["removed"]["step"] < outcome["total_steps"]
    assert outcome["final_step"] == outcome["total_steps"] == 24  # 600 / 2 workers / 25 = 12 steps x 2 epochs
    assert outcome["epoch"] == 2  # the position after the last epoch points at the next one
