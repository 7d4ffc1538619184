"""A real ``ray start --head`` on loopback for tests: explicit free ports, its own temp dir,
stopped by PID (never ``ray stop``, which kills every Ray on the machine)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"

BIN = Path(sys.executable).parent
PORT_NAMES = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free on loopback a moment ago."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class RayHead:
    """One Ray head started with ``ray start --head --block`` in its own process session."""

    temp_dir: Path
    num_cpus: int = 2
    env_extra: dict[str, str] = field(default_factory=dict)
    autoscaling_config: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["RAY_DISABLE_USAGE_STATS"] = "1"
        env.pop("RAY_ADDRESS", None)
        env.update(self.env_extra)
        return env

    def allocate_ports(self) -> dict[str, int]:
        """Choose the ports now (an autoscaling config needs the GCS address before start)."""
        if not self.ports:
            self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        return self.ports

    def start(self, timeout_s: float = 90.0) -> "RayHead":
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.allocate_ports()
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--num-cpus={self.num_cpus}",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--include-dashboard=true"]
        cmd += [f"--{name}={port}" for name, port in self.ports.items()]
        if self.autoscaling_config is not None:
            cmd.append(f"--autoscaling-config={self.autoscaling_config}")
        log = open(self.temp_dir / "ray-start.log", "wb")
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_dashboard(timeout_s)
        return self

    def _wait_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {self.log_text()[-3000:]}")
            try:
                request = urllib.request.Request(self.dashboard_url + "/api/version",
                                                 headers=self.auth_headers())
                with urllib.request.urlopen(request, timeout=2) as r:
                    if json.loads(r.read()).get("ray_version") and self._jobs_agent_ready():
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Ray head not ready after {timeout_s}s: {self.log_text()[-3000:]}")

    def auth_headers(self) -> dict[str, str]:
        token = self.env_extra.get("RAY_AUTH_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _jobs_agent_ready(self) -> bool:
        """The job agent starts after the dashboard; submissions fail until it is up."""
        port = self.ports["dashboard-agent-listen-port"]
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def log_text(self) -> str:
        path = self.temp_dir / "ray-start.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def own_processes(self) -> list[psutil.Process]:
        """Every process of this cluster: descendants of ``ray start`` and any process
        whose command line names this cluster's temp dir (daemons that re-parented)."""
        procs: dict[int, psutil.Process] = {}
        if self.proc is not None:
            try:
                root = psutil.Process(self.proc.pid)
                procs[root.pid] = root
                for child in root.children(recursive=True):
                    procs[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        marker = str(self.temp_dir)
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(marker in part for part in (p.info["cmdline"] or [])):
                    procs[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        procs.pop(os.getpid(), None)
        return list(procs.values())

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM this cluster's processes by PID, SIGKILL what is left after ``grace_s``."""
        procs = self.own_processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def fake_autoscaling_config(worker_cpus: int, max_workers: int, idle_timeout_s: float,
                            gcs_address: str, v2: bool = True) -> dict:
    """An autoscaler config for Ray's fake multi-node provider: worker "nodes" are extra raylets
    on this machine that the real autoscaler launches and terminates. This is the config
    ``ray.cluster_utils.AutoscalingCluster`` generates (from ``fake_multi_node/example.yaml``,
    which this Ray wheel lacks); its ``start()`` runs ``ray stop --force`` first, which would
    kill every Ray on the machine, so tests start the head themselves.

    With ``v2`` (what the KubeRay manifests use) the worker type carries its own
    ``idle_timeout_s``, as KubeRay's per-group ``idleTimeoutSeconds`` becomes; the head needs
    ``fake_autoscaler_v2_env()``."""
    worker = {"resources": {"CPU": worker_cpus, "object_store_memory": 200 * 2**20},
              "node_config": {}, "min_workers": 0, "max_workers": max_workers}
    # "external" + module is the same provider; the "fake_multinode" type makes the v2 monitor
    # read fake_multi_node/example.yaml for defaults, and this wheel does not ship that file.
    provider = {"type": "external", "module": FAKE_PROVIDER, "use_node_id_as_ip": True,
                "disable_node_updaters": True, "disable_launch_config_check": True,
                "gcs_address": gcs_address}
    if v2:
        worker["idle_timeout_s"] = idle_timeout_s
        provider.update(launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID)
    return {
        "cluster_name": "augtrain-fake",
        "max_workers": max_workers,
        "provider": provider,
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": worker,
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        # v1 reads this cluster-wide timeout; v2 prefers the worker type's own
        "idle_timeout_minutes": (10.0 if v2 else idle_timeout_s / 60.0),
        "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }




def fake_autoscaler_env(v2: bool = True) -> dict[str, str]:
    """Environment of a head running the fake multi-node provider (and autoscaler v2)."""
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    if v2:
        env.update(RAY_enable_autoscaler_v2="1", RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
                   RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID)
    return env
