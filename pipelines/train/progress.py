"""Pretraining's progress on the driver: ``MetricsWatcher`` follows the ``metrics.csv`` that rank 0
writes (``loop.MetricsWriter``, on the run's storage) while Ray Train runs the workers, and
shows it as a ``console.Progress`` bar over optimizer steps with a line per finished epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO

from augtrain.pipelines.console import LineFollower, Progress, Watcher


class MetricsWatcher(Watcher):
    """Follows ``path`` from its current end (rows of earlier runs are not shown again)."""

    def __init__(self, path: str | Path, total_steps: int, epochs: int, *, start_step: int = 0,
                 desc: str = "pretrain", interval: float = 1.0, stream: IO[str] | None = None,
                 tty: bool | None = None) -> None:
        self.follower, self.epochs, self.interval = LineFollower(path), epochs, interval
        self.progress = Progress(desc, total_steps, "steps", start=start_step, stream=stream, tty=tty)
        self._header: list[str] | None = None
        self.epoch_losses: list[float] = []

    def poll(self) -> None:
        """Show the rows appended since the last poll."""
        if self._header is None:
            first = self.follower.first_line()
            if first is None:
                return
            self._header = next(csv.reader([first]))
        lines = [line for line in self.follower.read() if line and not line.startswith("kind,")]
        for row in csv.DictReader(lines, fieldnames=self._header):
            self._show(row)

    def finish(self) -> None:
        self.progress.close()

    def _show(self, row: dict[str, str]) -> None:
        def number(key: str) -> float | None:
            try:
                return float(row.get(key) or "")
            except ValueError:
                return None

        step = number("step")
        if row.get("kind") == "step" and step is not None:
            metrics = {"loss": number("loss")}
            rate = number("samples_per_s")
            if rate is not None:
                metrics["samples/s"] = round(rate)
            self.progress.update(done=int(step), **{k: v for k, v in metrics.items() if v is not None})
        elif row.get("kind") == "epoch":
            epoch, loss = int(number("epoch") or 0) + 1, number("loss")
            if loss is not None:
                self.epoch_losses.append(loss)
            skipped, samples = int(number("skipped") or 0), int(number("samples") or 0)
            self.progress.update(done=int(step) if step is not None else None)
            shown = f"loss {loss:.4f}" if loss is not None else "no batch trained in this run"
            self.progress.note(f"epoch {epoch}/{self.epochs}: {shown}, {samples} samples"
                               + (f", {skipped} skipped ({self._reasons(epoch - 1)})" if skipped else ""))

    def _reasons(self, epoch: int) -> str:
        """An epoch's skipped samples by reason (``epochs.jsonl``, written beside the CSV)."""
        path = self.follower.path.with_name("epochs.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        counts = next((r.get("skipped_by_reason") for r in reversed(rows) if r.get("epoch") == epoch), None)
        if not counts:
            return "listed in the workers' log"
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "; each listed in the workers' log"
