"""Jobs on a Ray cluster through the Ray Jobs API (``JobSubmissionClient``).

The job ships the project as its ``working_dir`` (data, outputs and the virtual environment
left out) so the cluster runs the code the submitter has. Every call first checks, with short
timeouts, that the dashboard answers: an unreachable address fails in seconds with a message
that says what to fix, instead of hanging on a TCP connect.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence
from urllib.parse import urlparse

from augtrain.cluster.config_check import check_config

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 40
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# gitignore syntax, relative to the working dir; a leading "/" anchors at its top.
WORKING_DIR_EXCLUDES = (
    "/data/", "/outputs/", "/runs/", "/out/", "/.venv/", "/venv/", "/.git/",
    "/.ray_tmp/", "/.pytest_cache/", "/build/", "/dist/", "*.egg-info/", "__pycache__/", "*.pyc",
)
CONFIG_FLAGS = ("-c", "--config")
TOKEN_HINT = (
    "the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
    "(or RAY_AUTH_TOKEN_PATH, or a token in ~/.ray/auth_token)"
)


class ClusterUnreachableError(RuntimeError):
    """The Ray dashboard (which serves the Jobs API) did not answer."""


class JobFailedError(RuntimeError):
    """A job ended FAILED or STOPPED; the message carries the tail of its logs."""

    def __init__(self, job_id: str, status: str, message: str, log_tail: str):
        self.job_id, self.status, self.log_tail = job_id, status, log_tail
        message = message.split(", last available logs", 1)[0]  # Ray appends the logs: ours follow
        detail = f": {message}" if message else ""
        super().__init__(
            f"job {job_id} ended {status}{detail}\n--- last {LOG_TAIL_LINES} log lines ---\n"
            f"{log_tail.rstrip()}"
        )


# -- addresses and authentication ------------------------------------------------------------


def resolve_address(address: str | None) -> str:
    """The Jobs API URL: ``address``, else ``RAY_API_SERVER_ADDRESS``, else an http(s)
    ``RAY_ADDRESS``, else ``http://127.0.0.1:8265``. A bare ``host:port`` gets ``http://``."""
    env_http = os.environ.get("RAY_ADDRESS", "")
    chosen = (address or os.environ.get("RAY_API_SERVER_ADDRESS")
              or (env_http if env_http.startswith(("http://", "https://")) else "")
              or DEFAULT_ADDRESS)
    chosen = chosen.strip().rstrip("/")
    if chosen.startswith("ray://"):
        raise ValueError(
            f"address {chosen!r} is a Ray Client address; jobs are submitted to the dashboard "
            "URL, e.g. http://HEAD:8265"
        )
    if "://" not in chosen:
        chosen = "http://" + chosen
    parsed = urlparse(chosen)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"address {chosen!r} is not an http(s) URL such as http://HEAD:8265")
    return chosen


def enable_token_auth_from_env() -> None:
    """Turn on Ray's token mode for this process when a token is given but the mode is not.

    Ray reads ``RAY_AUTH_MODE`` once, so call this before the first ``import ray``.
    """
    if "RAY_AUTH_MODE" not in os.environ and (
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _auth_headers() -> dict[str, str]:
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    return dict(get_auth_headers_if_auth_enabled({}))


def check_reachable(address: str) -> str:
    """Ask the dashboard for its Ray version with short timeouts; return the version.

    Raises ``ClusterUnreachableError`` (no answer) or ``PermissionError`` (token refused).
    """
    import requests

    try:
        r = requests.get(f"{address}/api/version", headers=_auth_headers(),
                         timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.exceptions.RequestException as exc:
        reason = _short_reason(exc)
        raise ClusterUnreachableError(
            f"cannot reach the Ray Jobs API at {address} ({reason}); check --address or "
            "RAY_API_SERVER_ADDRESS and that the cluster's dashboard is up (port 8265 by default)"
        ) from None
    if r.status_code in (401, 403):
        raise PermissionError(f"{address} refused the request ({r.status_code}): {TOKEN_HINT}")
    if r.status_code != 200:
        raise ClusterUnreachableError(
            f"{address}/api/version answered HTTP {r.status_code}; is this a Ray dashboard?"
        )
    try:
        return str(r.json()["ray_version"])
    except (ValueError, KeyError):
        raise ClusterUnreachableError(f"{address} answered, but not as a Ray dashboard") from None


def _short_reason(exc: Exception) -> str:
    import requests

    text = str(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:.0f}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"connected, but no answer within {READ_TIMEOUT_S:.0f}s"
    for needle, reason in (("refused", "connection refused"), ("resolve", "unknown host"),
                           ("not known", "unknown host"), ("unreachable", "network unreachable")):
        if needle in text:
            return reason
    return type(exc).__name__


def make_client(address: str | None = None) -> "JobSubmissionClient":
    """A ``JobSubmissionClient`` for a dashboard that was just checked to answer."""
    url = resolve_address(address)
    check_reachable(url)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url)


# -- what a job ships ------------------------------------------------------------------------


def project_root() -> Path:
    """The augtrain source checkout when running from one (editable install), else the cwd."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "augtrain"' in pyproject.read_text():
        return root
    return Path.cwd()


def build_runtime_env(working_dir: Path, env_vars: dict[str, str] | None = None) -> dict:
    """The job's runtime_env: ``working_dir`` with data/outputs/venv excluded, plus env vars."""
    if not working_dir.is_dir():
        raise FileNotFoundError(f"working dir {working_dir} does not exist")
    runtime_env: dict = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)}
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    return runtime_env


def prepare_entrypoint(argv: Sequence[str], working_dir: Path) -> list[str]:
    """For an ``augtrain`` command, validate every ``-c/--config`` file and rewrite it
    relative to the working dir, where the job will find it (outside it is an error).
    Other commands pass through unchanged."""
    argv = list(argv)
    if not argv:
        raise ValueError("no entrypoint: give the command after `--`, e.g. "
                         "augtrain submit -- augtrain pretrain -c configs/x.yaml")
    if Path(argv[0]).name != "augtrain":
        return argv  # not an augtrain command: its flags are its own
    command = argv[1] if len(argv) > 1 else None
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        if value is None:
            out.append(arg)
            i += 1
            continue
        out += ["-c", _config_in_working_dir(Path(value), working_dir, command, argv)]
        i += step
    return out


def _config_in_working_dir(path: Path, working_dir: Path, command: str | None,
                           argv: list[str]) -> str:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    check_config(command, path, argv)
    try:
        return str(path.relative_to(working_dir.resolve()))
    except ValueError:
        raise ValueError(
            f"config {path} is outside the working dir {working_dir}, so the job would not "
            "see it; move it inside or pass --working-dir"
        ) from None


# -- submit, watch, stop ---------------------------------------------------------------------


@dataclass
class JobView:
    """One line of ``jobs list``."""

    job_id: str
    status: str
    entrypoint: str
    start_time: float | None
    end_time: float | None
    message: str


def submit(client: "JobSubmissionClient", argv: Sequence[str], runtime_env: dict,
           job_id: str | None = None, metadata: dict[str, str] | None = None) -> str:
    """Submit ``argv`` (already prepared) as a job; returns its submission id."""
    return client.submit_job(entrypoint=shlex.join(argv), runtime_env=runtime_env,
                             submission_id=job_id, metadata=metadata or {"submitted_by": "augtrain"})


def status(client: "JobSubmissionClient", job_id: str) -> tuple[str, str]:
    """(status, message) of one job."""
    info = client.get_job_info(job_id)
    return str(info.status), info.message or ""


def list_jobs(client: "JobSubmissionClient") -> list[JobView]:
    """All jobs the cluster knows, newest first."""
    views = [
        JobView(job_id=j.submission_id or j.job_id or "?", status=str(j.status),
                entrypoint=j.entrypoint, start_time=_seconds(j.start_time),
                end_time=_seconds(j.end_time), message=j.message or "")
        for j in client.list_jobs()
    ]
    return sorted(views, key=lambda v: v.start_time or 0.0, reverse=True)


def _seconds(ms: int | None) -> float | None:
    return ms / 1000.0 if ms else None


def tail_lines(text: str, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of ``text``."""
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def follow_logs(client: "JobSubmissionClient", job_id: str) -> Iterator[str]:
    """Chunks of the job's logs as they come, until the job ends."""
    import asyncio

    loop = asyncio.new_event_loop()
    agen = client.tail_job_logs(job_id)
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def wait(client: "JobSubmissionClient", job_id: str, timeout_s: float | None = None,
         poll_s: float = 1.0) -> str:
    """Block until the job ends; returns SUCCEEDED or raises ``JobFailedError`` with its log tail."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state, message = status(client, job_id)
        if state in TERMINAL:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f}s")
        time.sleep(poll_s)
    if state != "SUCCEEDED":
        raise JobFailedError(job_id, state, message, tail_lines(client.get_job_logs(job_id)))
    return state


def stop(client: "JobSubmissionClient", job_id: str, wait_s: float = 30.0) -> str:
    """Ask the job to stop and wait (up to ``wait_s``) until it has; returns its final status."""
    if not client.stop_job(job_id):
        state, _ = status(client, job_id)
        return state
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state, _ = status(client, job_id)
        if state in TERMINAL:
            return state
        time.sleep(0.5)
    return status(client, job_id)[0]
