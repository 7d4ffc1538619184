"""Fixtures for cluster tests: a real token-authenticated ``ray start --head`` on loopback,
and the ``augtrain`` command run as a subprocess against it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ray_head import RayHead  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def token_head():
    """One Ray head per test module, token auth on, its own ports and temp dir; stopped by PID."""
    temp = Path(tempfile.mkdtemp(prefix="augtrain-ray-", dir="/tmp"))
    token = secrets.token_hex(16)
    head = RayHead(temp, num_cpus=2,
                   env_extra={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    try:
        head.start()
        yield head
    finally:
        head.stop()


def run_cli(args: list[str], env: dict[str, str], timeout: float = 240,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``augtrain ARGS`` in a fresh process (Ray's auth settings are per process)."""
    return subprocess.run([sys.executable, "-m", "augtrain.cluster", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(token_head):
    """Run ``augtrain`` against the session head with its token in the environment."""
    env = token_head.env()
    env.pop("RAY_API_SERVER_ADDRESS", None)

    def call(*args: str, timeout: float = 240, extra_env: dict[str, str] | None = None):
        return run_cli(list(args), {**env, **(extra_env or {})}, timeout=timeout)

    call.address = token_head.dashboard_url
    return call


@pytest.fixture
def bare_env() -> dict[str, str]:
    """The environment without any Ray address or token."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                "RAY_AUTH_MODE"):
        env.pop(key, None)
    return env
