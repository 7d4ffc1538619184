"""A search stage's console: a summary line per stage on a pipe, a row per finished trial on a
terminal, and a callback that survives Tune's pickling of the experiment."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

import pytest

from augtrain.pipelines import console
from augtrain.tune.progress import StageProgress, trial_label


def _trial(config, **result):
    return SimpleNamespace(config=config, last_result={"time_total_s": 12.0, **result})


def test_labels_name_what_each_kind_of_trial_tried():
    assert trial_label({"policy": "rand-n2-m3"}) == "rand-n2-m3"
    assert trial_label({"case": {"method": "scratch: none", "seed": 2}}) == "scratch: none seed 2"
    point = {"lr": 0.001, "weight_decay": 1e-4, "label_smoothing": 0.1, "aug_crop": 0.85, "aug_hflip": 0.0,
             "aug_ops": "all", "aug_n": 2, "aug_m": 5, "aug_cutout": 0.5}
    label = trial_label({"point": point, "epochs": 5}, width=40)
    assert len(label) == 40 and label.endswith("...")


@pytest.mark.parametrize("tty", [False, True])
def test_a_stage_prints_one_summary_line_on_a_pipe_and_a_row_per_trial_on_a_terminal(monkeypatch, tty):
    out = io.StringIO()
    monkeypatch.setattr(out, "isatty", lambda: tty)
    monkeypatch.setattr("sys.stderr", out)
    callback = pickle.loads(pickle.dumps(StageProgress("baselines")))  # Tune saves its callbacks
    callback.setup(total_num_samples=3)
    callback.on_trial_complete(0, [], _trial({"policy": "none"}, val_acc=0.80, test_acc=0.79, epoch=50))
    callback.on_trial_complete(0, [], _trial({"policy": "trivialaugment"}, val_acc=0.85, test_acc=0.84, epoch=50))
    callback.on_trial_error(0, [], _trial({"policy": "rand-n1-m3"}))
    callback.on_experiment_end([])
    lines = [line.split("\r\x1b[2K")[-1] for line in out.getvalue().split("\n") if line]
    summary = lines[-1]
    assert summary.startswith("baselines: 3 trials x 50 epochs in ") and "best val 85.00 %" in summary
    assert summary.endswith("1 failed")
    rows = [line for line in lines if line.startswith("  ")]
    if tty:
        assert len(rows) == 3 and "trivialaugment" in rows[1] and "val 85.00  test 84.00" in rows[1]
        assert rows[2].endswith("FAILED")
    else:
        assert rows == [] and len(lines) == 1
    assert not console.verbose()
