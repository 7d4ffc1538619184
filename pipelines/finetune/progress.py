"""A fine-tune's progress on the driver: rank 0 appends every epoch's metrics to a JSON-lines
file (``run_finetune(progress_file=...)``) and ``EpochWatcher`` shows it as a bar over epochs,
with a line at each validation pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from augtrain.pipelines.console import LineFollower, Progress, Watcher


def _percent(value: Any) -> str:
    return f"{100 * value:.2f} %" if isinstance(value, (int, float)) else "-"


class EpochWatcher(Watcher):
    def __init__(self, path: str | Path, epochs: int, *, desc: str = "finetune", interval: float = 1.0,
                 stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.follower, self.interval = LineFollower(path), interval
        self.progress = Progress(desc, epochs, "epochs", stream=stream, tty=tty)
        self.rows: list[dict[str, Any]] = []

    def poll(self) -> None:
        for line in self.follower.read():
            if not line.strip():
                continue
            row = json.loads(line)
            self.rows.append(row)
            shown = {"loss": row["train_loss"]} if isinstance(row.get("train_loss"), (int, float)) else {}
            self.progress.update(done=int(row.get("epoch", 0)), **shown)
            if "val_acc" in row:
                self.progress.note(f"epoch {row.get('epoch')}/{self.progress.total}: train loss "
                                   f"{row.get('train_loss', float('nan')):.4f}, val {_percent(row['val_acc'])}"
                                   + (f", test {_percent(row['test_acc'])}" if "test_acc" in row else ""))

    def finish(self) -> None:
        self.progress.close()
