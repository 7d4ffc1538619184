"""Pure parts of reaching a cluster: addresses, fast connection checks, what a job ships."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from augtrain.cluster import config_check, jobs
from augtrain.cluster.commands.submit import parse_env
from augtrain.cluster.connect import check_address
from conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart-simclr.yaml"


@pytest.fixture
def no_ray_env(monkeypatch):
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_resolve_address_order(no_ray_env, monkeypatch):
    assert jobs.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a GCS address is not the Jobs API
    assert jobs.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert jobs.resolve_address(None) == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "https://jobs.example:443")
    assert jobs.resolve_address(None) == "https://jobs.example:443"
    assert jobs.resolve_address("head:8265") == "http://head:8265"
    with pytest.raises(ValueError, match="Ray Client address"):
        jobs.resolve_address("ray://head:10001")


def test_connect_to_an_unreachable_address_fails_fast(no_ray_env):
    address = f"127.0.0.1:{closed_port()}"
    code = f"from augtrain.cluster.connect import connect; connect({address!r})"
    t0 = time.monotonic()  # a fresh process: this one may already hold a local Ray
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 10
    assert r.returncode != 0 and f"cannot reach Ray at {address}" in r.stderr
    with pytest.raises(RuntimeError, match="cannot reach Ray at ray://no-such-host.invalid:10001"):
        check_address("ray://no-such-host.invalid:10001")
    with pytest.raises(ValueError, match="expected host:port"):
        check_address("just-a-host")
    check_address("auto")  # left to Ray


def test_prepare_entrypoint_rewrites_configs_inside_the_working_dir(tmp_path):
    (tmp_path / "configs").mkdir()
    cfg = tmp_path / "configs" / "exp.yaml"
    cfg.write_text(QUICKSTART.read_text())
    argv = ["augtrain", "pretrain", "--config", str(cfg), "--set", "loop.epochs=2"]
    assert jobs.prepare_entrypoint(argv, tmp_path) == \
        ["augtrain", "pretrain", "-c", "configs/exp.yaml", "--set", "loop.epochs=2"]
    assert jobs.prepare_entrypoint(["augtrain", "pretrain", f"--config={cfg}"], tmp_path)[-1] == \
        "configs/exp.yaml"
    # not an augtrain command: its -c is its own
    assert jobs.prepare_entrypoint(["python", "-c", "print(1)"], tmp_path) == ["python", "-c", "print(1)"]


def test_prepare_entrypoint_errors(tmp_path):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(QUICKSTART.read_text())
    (tmp_path / "wd").mkdir()
    with pytest.raises(ValueError, match="outside the working dir"):
        jobs.prepare_entrypoint(["augtrain", "pretrain", "-c", str(outside)], tmp_path / "wd")
    with pytest.raises(ValueError, match="no entrypoint"):
        jobs.prepare_entrypoint([], tmp_path)
    broken = tmp_path / "wd" / "broken.yaml"
    broken.write_text("a: [\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        jobs.prepare_entrypoint(["augtrain", "pretrain", "-c", str(broken)], tmp_path / "wd")


def test_registered_config_validator_runs_before_submission(tmp_path, monkeypatch):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: exp\nepochs: -1\n")
    seen = []

    def check(path, argv):
        seen.append(argv)
        raise ValueError(f"{path}: epochs must be positive")

    monkeypatch.setitem(config_check.CONFIG_VALIDATORS, "finetune", check)
    argv = ["augtrain", "finetune", "-c", str(cfg), "--set", "epochs=3"]
    with pytest.raises(ValueError, match="epochs must be positive"):
        jobs.prepare_entrypoint(argv, tmp_path)
    assert config_check.set_overrides(seen[0]) == ["epochs=3"]
    assert jobs.prepare_entrypoint(["augtrain", "shards", "-c", str(cfg)], tmp_path)[-1] == "exp.yaml"


def test_pretrain_configs_get_the_pretrain_loader(tmp_path):
    quickstart = QUICKSTART.read_text()
    good = tmp_path / "good.yaml"
    good.write_text(quickstart)
    assert jobs.prepare_entrypoint(["augtrain", "pretrain", "-c", str(good)], tmp_path)[-1] == "good.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(quickstart.replace("loop:\n", "loop:\n  epochz: 3\n"))
    with pytest.raises(ValueError, match="epochz"):
        jobs.prepare_entrypoint(["augtrain", "pretrain", "-c", str(bad)], tmp_path)
    # an override that fixes nothing is checked too
    with pytest.raises(ValueError, match="nosuchkey"):
        jobs.prepare_entrypoint(["augtrain", "pretrain", "-c", str(good), "--set", "nosuchkey=1"],
                                tmp_path)


def test_runtime_env_excludes_data_outputs_venv(tmp_path):
    env = jobs.build_runtime_env(tmp_path, {"A": "1"})
    assert env["working_dir"] == str(tmp_path) and env["env_vars"] == {"A": "1"}
    for pattern in ("/data/", "/outputs/", "/.venv/", "/.git/"):
        assert pattern in env["excludes"]
    with pytest.raises(FileNotFoundError):
        jobs.build_runtime_env(tmp_path / "missing")


def test_parse_env_and_log_tail():
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_env(["novalue"])
    text = "\n".join(f"line {i}" for i in range(100)) + "\n"
    assert jobs.tail_lines(text, 3) == "line 97\nline 98\nline 99"
