"""An embedded Ray never outlives its driver: killed outright (SIGKILL, no ``ray.shutdown``), the
driver's reaper stops every process of that Ray, agents and workers included, and touches
nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augtrain.cluster import reaper

DRIVER = """
import json, sys, time
import ray
from augtrain.cluster.connect import connect
from augtrain.cluster.reaper import descendants, node_pids, _stat
connect(num_cpus=2)
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
time.sleep(3)  # the raylet's agents are up
roots = {p: _stat(p)[1] for p in node_pids()}
print(json.dumps(list(descendants(roots))), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return reaper._stat(pid) is not None


@pytest.mark.timeout(180)
def test_a_driver_killed_outright_leaves_no_ray_process_behind(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path, start_new_session=True)
    try:
        line = driver.stdout.readline()
        assert line, "the driver printed no pids"
        pids = json.loads(line)
        assert len(pids) >= 4 and all(_alive(p) for p in pids)  # GCS, raylet, agents, a worker ...
        names = " ".join(Path(f"/proc/{p}/cmdline").read_text() for p in pids if _alive(p))
        assert "raylet" in names and "gcs_server" in names
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.5)
        left = {p: Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:80] for p in pids if _alive(p)}
        assert not left, f"processes of the killed driver's Ray are still running: {left}"
        assert bystander.poll() is None  # a process outside that Ray is not touched
    finally:
        bystander.kill()
        if driver.poll() is None:
            driver.kill()


def test_a_reused_pid_is_never_signalled():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = reaper._stat(sleeper.pid)[1]
        assert reaper.descendants({sleeper.pid: start + 1}) == {}  # another process's start time
        assert reaper.descendants({sleeper.pid: start}) == {sleeper.pid: start}
        assert reaper.reap({sleeper.pid: start + 1}) == [] and sleeper.poll() is None
        assert reaper.reap({sleeper.pid: start}) == [sleeper.pid] and sleeper.wait(timeout=10) is not None
    finally:
        sleeper.kill()
