"""``augtrain submit`` and ``augtrain jobs`` against a real ``ray start --head`` (token auth)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from conftest import REPO, run_cli

JOB_ID = re.compile(r"submitted job (\S+)")


def job_id_of(stdout: str) -> str:
    m = JOB_ID.search(stdout)
    assert m, stdout
    return m.group(1)


@pytest.mark.timeout(300)
def test_submit_real_job_succeeds_and_logs_are_retrievable(cli, tmp_path):
    out = tmp_path / "shards"
    r = cli("submit", "--address", cli.address, "--wait", "--",
            "augtrain", "shards", "write", "--source", "digits", "--out", str(out), "--limit", "200")
    assert r.returncode == 0, r.stderr[-3000:]
    job_id = job_id_of(r.stdout)
    assert f"job {job_id} SUCCEEDED" in r.stdout
    assert "wrote 200 samples" in r.stdout  # followed live with --wait
    assert list(out.glob("*.tar")) and (out / "manifest.json").is_file()

    logs = cli("jobs", "logs", job_id, "--address", cli.address)
    assert logs.returncode == 0 and "wrote 200 samples" in logs.stdout
    followed = cli("jobs", "logs", job_id, "--follow", "--address", cli.address, timeout=60)
    assert followed.returncode == 0 and "wrote 200 samples" in followed.stdout
    state = cli("jobs", "status", job_id, "--address", cli.address)
    assert state.returncode == 0 and f"{job_id} SUCCEEDED" in state.stdout
    listing = cli("jobs", "list", "--address", cli.address)
    assert listing.returncode == 0
    assert any(job_id in line and "SUCCEEDED" in line for line in listing.stdout.splitlines())


@pytest.mark.timeout(240)
def test_failed_job_reports_the_tail_of_its_logs(cli):
    script = "import sys\nfor i in range(100): print('progress', i)\nsys.exit('loss is nan')"
    r = cli("submit", "--address", cli.address, "--wait", "--", "python", "-c", script)
    assert r.returncode == 2
    assert "ended FAILED" in r.stderr
    tail = r.stderr.split("log lines ---", 1)[1]
    assert "loss is nan" in tail and "progress 99" in tail
    assert "progress 10\n" not in tail  # a tail, not the whole log


@pytest.mark.timeout(240)
def test_stop_stops_a_running_job(cli):
    r = cli("submit", "--address", cli.address, "--",
            "python", "-c", "import time\nprint('started', flush=True)\ntime.sleep(600)")
    assert r.returncode == 0, r.stderr[-2000:]
    job_id = job_id_of(r.stdout)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = cli("jobs", "status", job_id, "--address", cli.address).stdout
        if "RUNNING" in state:
            break
        time.sleep(1)
    assert "RUNNING" in state
    t0 = time.monotonic()
    stopped = cli("jobs", "stop", job_id, "--address", cli.address)
    assert stopped.returncode == 0 and f"{job_id} STOPPED" in stopped.stdout, stopped.stderr
    assert time.monotonic() - t0 < 60
    assert "STOPPED" in cli("jobs", "status", job_id, "--address", cli.address).stdout


@pytest.mark.timeout(240)
def test_working_dir_ships_the_project_without_data_outputs_venv(cli, tmp_path):
    project = tmp_path / "project"
    for sub in ("data", "outputs", ".venv/bin", "configs", "pkg"):
        (project / sub).mkdir(parents=True)
    (project / "data" / "big.bin").write_bytes(b"\0" * 1024)
    (project / "outputs" / "ckpt.bin").write_bytes(b"\0" * 1024)
    (project / ".venv" / "bin" / "python").write_text("")
    (project / "pkg" / "code.py").write_text("VALUE = 41\n")
    (project / "configs" / "exp.yaml").write_text("name: exp\n")
    script = ("import os\nfor d, subs, files in sorted(os.walk('.')):\n"
              "    [print('FILE', os.path.join(d, f)) for f in files]")
    r = cli("submit", "--address", cli.address, "--working-dir", str(project), "--wait",
            "--env", "AUGTRAIN_MARK=1", "--", "python", "-c", script)
    assert r.returncode == 0, r.stderr[-3000:]
    shipped = set(re.findall(r"FILE \./(\S+)", r.stdout))
    assert {"pkg/code.py", "configs/exp.yaml"} <= shipped
    assert not any(p.startswith(("data/", "outputs/", ".venv/")) for p in shipped), shipped


def test_missing_config_fails_before_contacting_the_cluster(bare_env, tmp_path):
    r = run_cli(["submit", "--address", "http://127.0.0.1:9", "--",
                 "augtrain", "pretrain", "-c", str(tmp_path / "nope.yaml")], bare_env)
    assert r.returncode == 2 and "nope.yaml does not exist" in r.stderr


def test_config_that_is_not_a_mapping_is_rejected(bare_env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    r = run_cli(["submit", "--working-dir", str(tmp_path), "--",
                 "augtrain", "pretrain", "--config", str(bad)], bare_env)
    assert r.returncode == 2 and "bad.yaml: an experiment config must be a YAML mapping" in r.stderr


def _silent_listener() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["refused", "unknown-host", "silent"])
def test_unreachable_address_fails_fast_and_clearly(bare_env, kind):
    listener = None
    if kind == "refused":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
        s.close()
    elif kind == "unknown-host":
        address = "http://no-such-ray-head.invalid:8265"
    else:
        listener, port = _silent_listener()
        address = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        r = run_cli(["jobs", "list", "--address", address], bare_env, timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if listener:
            listener.close()
    assert r.returncode == 2
    assert f"cannot reach the Ray Jobs API at {address}" in r.stderr
    assert elapsed < 10, f"took {elapsed:.1f}s"


@pytest.mark.timeout(120)
def test_missing_token_is_explained(token_head, bare_env):
    r = run_cli(["jobs", "list", "--address", token_head.dashboard_url], bare_env, timeout=60)
    assert r.returncode == 2
    assert "RAY_AUTH_TOKEN" in r.stderr and "401" in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_submit_streams_shards_through_ray_data_on_the_cluster(cli, tmp_path):
    out = tmp_path / "shards"
    wrote = cli("submit", "--address", cli.address, "--wait", "--", "augtrain", "shards", "write",
                "--source", "digits", "--out", str(out), "--limit", "200")
    assert wrote.returncode == 0, wrote.stderr[-2000:]
    r = cli("submit", "--address", cli.address, "--wait", "--",
            "augtrain", "data", "stream", str(out), "--workers", "1", timeout=360)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "200 samples to 1 workers" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_submit_a_short_pretraining_run(cli, tmp_path):
    shards, out = tmp_path / "shards", tmp_path / "run"
    wrote = cli("submit", "--address", cli.address, "--wait", "--", "augtrain", "shards", "write",
                "--source", "digits", "--out", str(shards), "--limit", "200")
    assert wrote.returncode == 0, wrote.stderr[-2000:]
    r = cli("submit", "--address", cli.address, "--wait", "--",
            "augtrain", "pretrain", "-c", str(REPO / "configs" / "quickstart-simclr.yaml"),
            "--set", f"data.train={shards}", "--set", "data.test=null", "--set", "cluster.workers=1",
            "--set", f"output={out}", "--set", "engine.micro_batch_size=32",
            "--set", "engine.warmup_steps=0", "--set", "loop.checkpoint_every=5", timeout=840)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SUCCEEDED" in r.stdout
    assert list((out / "checkpoints").glob("step-*/model.safetensors"))
