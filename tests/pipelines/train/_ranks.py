"""Real DeepSpeed ranks on CPU (gloo) for tests: one spawned process per rank, on a free local
port, each running ``fn(rank, out, *args)`` with ``RANK``/``WORLD_SIZE`` set; a rank's exception is
written to ``out`` and re-raised by ``run_ranks`` in the test."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank: int, world: int, port: int, out: str, *args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    code = 0
    try:
        fn(rank, Path(out), *args)
    except BaseException:
        Path(out, f"error-w{world}-rank{rank}.txt").write_text(traceback.format_exc())
        code = 1
    # leave at once: a ZeRO-3 rank may abort in interpreter teardown after all work is done
    os._exit(code)


def run_ranks(fn, out: Path, *args, world: int = 2, timeout: float = 240) -> None:
    """``fn(rank, out, *args)`` on ``world`` spawned ranks; fails the test with any rank's traceback."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, str(out), *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    errors = [f.read_text() for f in sorted(Path(out).glob(f"error-w{world}-rank*.txt"))]
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
