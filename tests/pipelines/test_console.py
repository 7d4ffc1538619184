"""The console: a stage's bar on a terminal and on a pipe, logging routed to the run's log file,
and pretraining's progress followed from rank 0's metrics.csv as it is written."""

from __future__ import annotations

import csv
import json
import io
import logging
import time

from augtrain.pipelines import console
from augtrain.pipelines.console import Progress
from augtrain.pipelines.train.loop import MetricsWriter
from augtrain.pipelines.train.progress import MetricsWatcher


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_pipe_the_bar_prints_whole_lines_only_at_heartbeats_and_the_end():
    out = io.StringIO()
    bar = Progress("pretrain", 100, "steps", stream=out, heartbeat_s=3600)
    for step in range(1, 101):
        bar.update(done=step, loss=1.0 / step)
    bar.note("epoch 1/1: loss 0.0100")
    bar.note("a finished trial", detail=True)  # details are for terminals
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[0] == "epoch 1/1: loss 0.0100"
    assert lines[1].startswith("pretrain  [####################]  100/100 steps 100%") and "loss 0.01" in lines[1]


def test_on_a_pipe_a_long_stage_shows_a_heartbeat():
    out = io.StringIO()
    bar = Progress("search", 10, "trials", stream=out, heartbeat_s=0.0)
    bar.update(advance=3)
    bar.close("search: 3 trials")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("search  [######--------------]  3/10 trials  30%") and "ETA" in lines[0]
    assert lines[1] == "search: 3 trials"


def test_on_a_terminal_the_bar_is_redrawn_in_place():
    out = _Terminal()
    bar = Progress("finetune", 4, "epochs", stream=out, min_interval=0.0)
    for epoch in range(1, 5):
        bar.update(done=epoch)
    bar.note("a finished trial", detail=True)
    bar.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K") >= 5 and "a finished trial\n" in text and text.endswith("\n")
    assert text.count("\n") == 2  # the note and the final bar: the redraws stay on one line


def test_records_before_and_after_the_run_folder_is_named_go_to_its_log_file(tmp_path, capsys):
    console.configure(verbose=False)
    logging.getLogger("ray.tune").warning("a framework warning")
    logging.getLogger("augtrain.test").info("an augtrain info")
    logging.getLogger("augtrain.test").warning("an augtrain warning")
    run = console.set_run_dir(tmp_path / "run")
    logging.getLogger("deepspeed").info("an engine's info")
    text = (run / "logs" / console.LOG_NAME).read_text()
    for message in ("a framework warning", "an augtrain info", "an augtrain warning", "an engine's info"):
        assert message in text
    err = capsys.readouterr().err
    assert "an augtrain warning" in err and "a framework warning" not in err and "an augtrain info" not in err
    assert not console.forward_worker_logs()  # a command without --verbose keeps workers' output in files


def _write(writer: MetricsWriter, kind: str, epoch: int, step: int, **values) -> None:
    writer.write({"kind": kind, "epoch": epoch, "step": step, **values})


def test_pretraining_progress_follows_the_metrics_file_as_rank_0_writes_it(tmp_path):
    writer = MetricsWriter(str(tmp_path), rank=0)
    _write(writer, "step", 0, 5, loss=6.5, lr=1e-3, samples_per_s=1200.0)  # an earlier run's row
    out = io.StringIO()
    watcher = MetricsWatcher(tmp_path / "metrics.csv", total_steps=20, epochs=2, start_step=5, stream=out,
                             interval=0.05)
    with watcher:
        _write(writer, "step", 0, 10, loss=6.0, lr=1e-3, samples_per_s=1250.0)
        _write(writer, "epoch", 0, 10, loss=6.1, samples=640, skipped=3)
        time.sleep(0.3)
        _write(writer, "step", 1, 20, loss=5.0, lr=1e-4, samples_per_s=1300.0)
        _write(writer, "epoch", 1, 20, loss=5.2, samples=640, skipped=0)
    writer.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "epoch 1/2: loss 6.1000, 640 samples, 3 skipped (listed in the workers' log)"
    assert lines[1] == "epoch 2/2: loss 5.2000, 640 samples"
    assert lines[2].startswith("pretrain  [####################]  20/20 steps 100%") and "loss 5" in lines[2]
    assert watcher.epoch_losses == [6.1, 5.2]
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 5  # the watcher only reads


def test_a_watcher_started_before_the_file_exists_reads_it_from_its_first_row(tmp_path):
    out = io.StringIO()
    watcher = MetricsWatcher(tmp_path / "metrics.csv", total_steps=10, epochs=1, stream=out)
    watcher.poll()  # nothing yet
    writer = MetricsWriter(str(tmp_path), rank=0)
    _write(writer, "step", 0, 10, loss=4.0)
    _write(writer, "epoch", 0, 10, loss=4.2, samples=64, skipped=0)
    watcher.stop()
    writer.close()
    assert out.getvalue().splitlines()[0] == "epoch 1/1: loss 4.2000, 64 samples"


def test_a_fine_tune_shows_a_line_per_validation_pass_from_its_progress_file(tmp_path):
    from augtrain.pipelines.finetune.progress import EpochWatcher

    path = tmp_path / "progress.jsonl"
    out = io.StringIO()
    with EpochWatcher(path, epochs=4, stream=out, interval=0.05) as watcher:
        with open(path, "a") as f:
            for epoch in range(1, 5):
                row = {"epoch": epoch, "train_loss": 1.0 / epoch, "until": 4}
                if epoch % 2 == 0:
                    row["val_acc"] = 0.5 + epoch / 10
                if epoch == 4:
                    row["test_acc"] = 0.85
                f.write(json.dumps(row) + "\n")
                f.flush()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["epoch 2/4: train loss 0.5000, val 70.00 %",
                         "epoch 4/4: train loss 0.2500, val 90.00 %, test 85.00 %"]
    assert lines[2].startswith("finetune  [####################]  4/4 epochs 100%") and len(watcher.rows) == 4
