"""Stops an embedded Ray that outlived its driver.

``ray.shutdown`` (at the driver's exit) stops the embedded Ray's processes, but a driver killed
outright (``kill -9``, the OOM killer) leaves them running, and the agents its raylet started
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) ignore SIGTERM. ``watch(node)`` starts a small
process in its own session that holds the read end of a pipe whose write end only the driver
has: when the driver is gone, for any reason, the pipe reads end-of-file and the reaper stops
every process of that Ray (its head processes and all their descendants: workers, agents),
SIGTERM first, SIGKILL after a grace period. The reaper notes those processes every second
while it waits (once the driver is gone the raylet may exit first, and its agents are then no
longer under it). Processes are matched by pid and start time, so a reused pid is never touched.

    python -m augtrain.cluster.reaper PID:START ...   (stdin: the pipe; started by ``watch``)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] == "Z":  # a zombie: already dead
        return None
    return int(fields[1]), int(fields[19])


def descendants(roots: dict[int, int]) -> dict[int, int]:
    """``roots`` (pid -> start time) that are still the same processes, and every process
    under them, as pid -> start time."""
    alive = {pid for pid, start in roots.items() if (_stat(pid) or (0, -1))[1] == start}
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry.name))
                starts[int(entry.name)] = info[1]
    found: dict[int, int] = {}
    stack = list(alive)
    while stack:
        pid = stack.pop()
        if pid in found or pid == os.getpid() or pid not in starts:
            continue
        found[pid] = starts[pid]
        stack.extend(children.get(pid, []))
    return found


def reap(processes: dict[int, int], grace_s: float = GRACE_S) -> list[int]:
    """Stop ``processes`` (pid -> start time) that are still those processes; returns the pids
    signalled."""
    pids = [pid for pid, start in processes.items() if (_stat(pid) or (0, -1))[1] == start]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_stat(p) for p in pids):
            time.sleep(0.1)
    return pids


def watch(pids: list[int]) -> subprocess.Popen | None:
    """Start the reaper for the processes ``pids`` (an embedded Ray's head processes); None
    where /proc is not there to identify them."""
    roots = {pid: info[1] for pid in pids if (info := _stat(pid)) is not None}
    if not roots:
        return None
    return subprocess.Popen([sys.executable, "-m", "augtrain.cluster.reaper", *(f"{p}:{s}" for p, s in roots.items())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def node_pids() -> list[int]:
    """The pids of the embedded Ray's head processes (GCS, raylet, log monitor, ...)."""
    import ray

    node = ray._private.worker._global_node  # noqa: SLF001 -- the node this driver started
    if node is None:
        return []
    return [info.process.pid for infos in node.all_processes.values() for info in infos
            if getattr(info, "process", None) is not None]


def main(argv: list[str], poll_s: float = 1.0) -> int:
    """Wait for end-of-file on stdin, noting every second which processes the roots' trees hold
    (when the driver dies the raylet may go first, and its agents are no longer under it), then
    stop all of them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the terminal is the driver's to handle
    roots = {int(p): int(s) for p, s in (item.split(":") for item in argv)}
    seen = dict(roots)
    while True:
        seen.update(descendants(roots))
        ready, _, _ = select.select([sys.stdin.buffer], [], [], poll_s)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    seen.update(descendants(seen))
    reap(seen)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
