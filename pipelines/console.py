"""What a command prints: augtrain's own progress on the console; the engines' logs in a file.

``configure(verbose)`` once per command: augtrain's warnings (and with ``verbose`` everything,
Ray's and DeepSpeed's included) go to stderr; every record at INFO, whoever logged it, goes to
the run's log file once the command names its run folder (``set_run_dir``), the records before
that included. Ray is told the same through the settings of its engines, not by filtering its
text: the embedded Ray keeps workers' output in its own log files (``log_to_driver``, see
``cluster.connect``), Tune's console reporter is the silent legacy one, Ray Data shows no
progress bars; ``keep_ray_logs`` copies Ray's log files into the run folder at the end.

``Progress`` is one stage's bar: redrawn in place on a terminal (rate, ETA, the latest metrics),
and on a pipe or file (CI logs) a line at the end and a heartbeat now and then, never a
carriage return.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

LOG_NAME = "augtrain.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _State:
    configured = False  # by a command (the Python API alone keeps Ray's defaults)
    verbose = False
    run_dir: Path | None = None
    command: list[str] | None = None  # the command line being run, recorded in its run folder
    closing: str | None = None  # the command's last line (where its report is)
    file_handler: logging.Handler | None = None
    buffer: list[logging.LogRecord] = []


class _Buffer(logging.Handler):
    """Holds INFO records until the run's log file exists (at most a few thousand)."""

    def emit(self, record: logging.LogRecord) -> None:
        if _State.file_handler is not None:
            _State.file_handler.handle(record)
        elif len(_State.buffer) < 5000:
            _State.buffer.append(record)


class _Stderr(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class _ConsoleFilter(logging.Filter):
    """On the console: augtrain's warnings; with ``verbose``, every INFO record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _State.verbose:
            return record.levelno >= logging.INFO
        return record.name.startswith("augtrain") and record.levelno >= logging.WARNING


def configure(verbose: bool = False) -> None:
    """Set up logging and the engines' console settings for one command (idempotent)."""
    _State.verbose = verbose
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, _Buffer) for h in root.handlers):
        root.addHandler(_Buffer(logging.INFO))
        console = _Stderr()
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        console.addFilter(_ConsoleFilter())
        root.addHandler(console)
    for name in ("ray", "deepspeed"):  # their own handlers would print past the filter
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = True
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not verbose:
                logger.removeHandler(handler)
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter: silent at verbose=0
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    _State.configured = True


def is_configured() -> bool:
    return _State.configured


def verbose() -> bool:
    return _State.verbose


def forward_worker_logs() -> bool:
    """Whether Ray should print its workers' output on the driver (``log_to_driver``): not for
    a command run without ``--verbose``; the Python API alone keeps Ray's default."""
    return _State.verbose or not _State.configured


def quiet_ray_loggers() -> None:
    """After ``ray.init`` (which installs its own stderr handler on the ``ray`` logger): keep Ray's
    records to the log file, for a command run without ``--verbose``."""
    if _State.verbose or not _State.configured:
        return
    for name in ("ray", "ray.data", "ray.tune", "ray.train"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    except Exception:  # noqa: BLE001 -- an older Ray Data without the switch prints its bars
        pass


def set_command(argv: list[str] | None) -> None:
    """The command line being run (``["augtrain", "pretrain", ...]``): ``set_run_dir`` records it
    in the run folder as ``command.json``, so that its report says how to run it again."""
    _State.command = None if argv is None else list(argv)


def command() -> list[str] | None:
    return _State.command


def set_closing(text: str | None) -> None:
    """The line a command ends with (where its results are), printed after everything else."""
    _State.closing = text


def closing() -> str | None:
    return _State.closing


def set_run_dir(path: str | os.PathLike) -> Path:
    """The command's run folder: its log file is ``<path>/logs/augtrain.log`` (appended to), and
    the command line (``set_command``) with its working folder goes to ``<path>/command.json``."""
    run_dir = Path(path).absolute()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    if _State.command is not None:
        import json

        (run_dir / "command.json").write_text(json.dumps({"argv": _State.command, "cwd": os.getcwd()}, indent=1))
    if _State.run_dir != run_dir:
        if _State.file_handler is not None:
            logging.getLogger().removeHandler(_State.file_handler)
            _State.file_handler.close()
        handler = logging.FileHandler(run_dir / "logs" / LOG_NAME)
        handler.setFormatter(logging.Formatter(_FORMAT))
        _State.file_handler, _State.run_dir = handler, run_dir
        for record in _State.buffer:
            handler.handle(record)
        _State.buffer.clear()
    return run_dir


def close_run_dir() -> None:
    """The command is over: its log file is closed, and records wait for the next run folder."""
    if _State.file_handler is not None:
        logging.getLogger().removeHandler(_State.file_handler)
        _State.file_handler.close()
    _State.file_handler, _State.run_dir = None, None


def run_dir() -> Path | None:
    return _State.run_dir


def log_file() -> Path | None:
    return None if _State.run_dir is None else _State.run_dir / "logs" / LOG_NAME


def keep_ray_logs() -> Path | None:
    """Copy the embedded Ray's log files (its workers' stdout and stderr among them) to
    ``<run>/logs/ray``; returns that folder, or None without a run folder or a local Ray."""
    if _State.run_dir is None:
        return None
    try:
        import ray

        if not ray.is_initialized():
            return None
        session = Path(ray._private.worker._global_node.get_session_dir_path())  # noqa: SLF001
    except Exception:  # noqa: BLE001 -- a remote cluster's logs stay on its nodes
        return None
    source, target = session / "logs", _State.run_dir / "logs" / "ray"
    if not source.is_dir():
        return None
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock", "events"),
                    ignore_dangling_symlinks=True)
    return target


class LineFollower:
    """The whole lines appended to a file since the last ``read`` (from its end at creation,
    so an earlier run's lines are not read again; from its start if it does not exist yet)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""

    def read(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an unfinished line waits for the next read
        return [line.decode().rstrip("\r") for line in lines]

    def first_line(self) -> str | None:
        """The file's first whole line (a CSV header), or None."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            first = f.readline()
        return first.decode().rstrip("\r\n") if first.endswith(b"\n") else None


class Watcher:
    """Calls ``poll`` every ``interval`` seconds in a daemon thread while a ``with`` block runs
    (Ray Train's ``fit``), and once more at its end; subclasses show what ``poll`` reads."""

    interval = 1.0

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the last poll (the bar's final line)."""

    def stop(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=5)
        self.poll()
        self.finish()


def say(text: str) -> None:
    """One line of augtrain's own on stderr (a stage reused, a summary)."""
    print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A bar for one stage: ``total`` units (steps, epochs, trials), started at ``start``.

    On a terminal the bar is redrawn in place at most every ``min_interval`` seconds; elsewhere
    it prints a line every ``heartbeat_s`` seconds and one at ``close``. ``note`` prints a line
    (an epoch's metrics, a finished trial) above the bar."""

    def __init__(self, desc: str, total: int | None, unit: str = "steps", *, start: int = 0,
                 stream: IO[str] | None = None, min_interval: float = 0.25, heartbeat_s: float = 120.0,
                 tty: bool | None = None) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done, self.start_done, self.metrics = start, start, {}
        self.min_interval, self.heartbeat_s = min_interval, heartbeat_s
        self.started = self.last_draw = self.last_line = time.monotonic()
        self.closed = False
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        elapsed = self.elapsed
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        parts = [self.desc]
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 20
            parts.append("[" + "#" * int(frac * width) + "-" * (width - int(frac * width)) + "]")
            parts.append(f"{self.done}/{self.total} {self.unit} {100 * frac:3.0f}%")
        else:
            parts.append(f"{self.done} {self.unit}")
        if rate > 0:
            shown_rate = f"{rate:.2f} {self.unit}/s" if rate >= 0.1 else f"{60 * rate:.2f} {self.unit}/min"
            parts.append(shown_rate)
            if self.total and self.done < self.total:
                parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {duration(elapsed)}")
        parts += [f"{k} {_shown(v)}" for k, v in self.metrics.items()]
        return "  ".join(parts)

    def _write(self, text: str, newline: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if newline else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, done: int | None = None, advance: int = 0, **metrics: Any) -> None:
        with self._lock:
            if self.closed:
                return
            self.done = done if done is not None else self.done + advance
            self.metrics.update(metrics)
            now = time.monotonic()
            if self.tty and now - self.last_draw >= self.min_interval:
                self._write(self.line(), newline=False)
                self.last_draw = now
            elif not self.tty and now - self.last_line >= self.heartbeat_s:
                self._write(self.line(), newline=True)
                self.last_line = now

    def note(self, text: str, detail: bool = False) -> None:
        """A line printed above the bar (on a terminal the bar is drawn again below it);
        a ``detail`` (one finished trial of many) only on a terminal or with ``--verbose``."""
        if detail and not (self.tty or _State.verbose):
            return
        with self._lock:
            self._write(text, newline=True)
            self.last_line = time.monotonic()
            if self.tty and not self.closed:
                self._write(self.line(), newline=False)

    def close(self, summary: str | None = None) -> None:
        """The final line: ``summary`` when given, else the bar as it stands."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._write(summary if summary is not None else self.line(), newline=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
