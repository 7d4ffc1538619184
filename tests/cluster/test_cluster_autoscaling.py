"""Autoscaling with Ray's own autoscaler (v2, as in k8s/) on the fake multi-node provider: a
job that needs more workers than are up makes the autoscaler add nodes, the job completes, and
the idle nodes are removed after the worker group's idle timeout."""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from ray_head import RayHead, fake_autoscaler_env, fake_autoscaling_config

IDLE_TIMEOUT_S = 8
TASKS = 2  # one CPU each, on a head with no CPU: each needs its own 1-CPU worker node

JOB = f"""
import ray, time
ray.init()

@ray.remote(num_cpus=1)
def work():
    time.sleep(4)
    return ray.get_runtime_context().get_node_id()

nodes = set(ray.get([work.remote() for _ in range({TASKS})]))
print("nodes used", len(nodes))
print("tasks done at", time.time())
"""


class NodeCounter(threading.Thread):
    """Samples the number of alive worker nodes once a second: [(seconds, count), ...]."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address, self.samples, self.t0 = address, [], time.time()
        self.halt = threading.Event()

    def count(self) -> int:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.address, filters=[("state", "=", "ALIVE")],
                           raise_on_missing_output=False)
        return sum(1 for n in nodes if not n.is_head_node)

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((round(self.now(), 1), self.count()))
            except Exception:  # the dashboard may be briefly busy; sample again
                pass
            self.halt.wait(1.0)

    def now(self) -> float:
        return time.time() - self.t0


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_autoscaler_adds_nodes_for_a_job_and_removes_them_when_idle():
    temp = Path(tempfile.mkdtemp(prefix="augtrain-as-", dir="/tmp"))
    head = RayHead(temp, num_cpus=0, env_extra={"RAY_AUTH_MODE": "disabled", **fake_autoscaler_env()})
    head.allocate_ports()
    config = temp / "autoscaling.json"
    config.write_text(json.dumps(fake_autoscaling_config(
        worker_cpus=1, max_workers=3, idle_timeout_s=IDLE_TIMEOUT_S, gcs_address=head.gcs_address)))
    head.autoscaling_config = config
    counter = None
    try:
        head.start()
        counter = NodeCounter(head.dashboard_url)
        assert counter.count() == 0  # nothing up before the job
        counter.start()
        r = run_cli(["submit", "--address", head.dashboard_url, "--wait", "--",
                     "python", "-c", JOB], head.env(), timeout=240)
        job_end = counter.now()
        assert r.returncode == 0, r.stderr[-3000:]
        assert "SUCCEEDED" in r.stdout and f"nodes used {TASKS}" in r.stdout
        tasks_done = float(re.search(r"tasks done at ([0-9.]+)", r.stdout).group(1)) - counter.t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (counter.samples and counter.samples[-1][1] == 0
                                                   and counter.samples[-1][0] > job_end):
            time.sleep(1)
        counter.halt.set()
        counter.join(5)
        samples = counter.samples
        print(f"worker nodes over time (s, count): {samples}; tasks done at {tasks_done:.1f}, "
              f"job ended at {job_end:.1f}")
        assert max(c for _, c in samples) == TASKS  # scaled up to what the job needed, no more
        assert samples[-1][1] == 0, "idle workers were not removed"
        removed = min(t for t, c in samples if t > tasks_done and c == 0)
        # removed by the group's idle timeout (v2 per-type idle_timeout_s; the cluster-wide one is
        # 10 minutes), not at once: one sampling interval of slack each way
        assert IDLE_TIMEOUT_S - 1.5 <= removed - tasks_done <= IDLE_TIMEOUT_S + 30
    finally:
        if counter is not None:
            counter.halt.set()
        head.stop()
