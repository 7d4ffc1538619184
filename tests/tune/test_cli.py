"""``augtrain finetune`` and ``augtrain search`` end to end on tiny data, and their early errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from augtrain.cluster.cli import main
from augtrain.pipelines.finetune.subsets import load_arrays


def _experiment(tmp_path, digits_splits, **sections) -> str:
    train, test = digits_splits
    data = {"name": "tiny", "seed": 0, "output": str(tmp_path / "run"),
            "data": {"train": train, "test": test, "channels": 1},
            "finetune": {"labels": 100, "val_labels": 100, "epochs": 2, "batch_size": 50, "lr": 3e-3,
                         "policy": "none"}, **sections}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_errors_name_the_key_before_ray_starts(tmp_path, digits_splits, capsys):
    path = _experiment(tmp_path, digits_splits)
    assert main(["finetune", "-c", path, "--set", "finetune.layer_decay=3"]) == 2
    assert "finetune.layer_decay" in capsys.readouterr().err
    assert main(["finetune", "-c", path]) == 2  # full fine-tuning without a checkpoint
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["search", "-c", path, "--set", "search.pbt.population=1", "--checkpoint", str(tmp_path)]) == 2
    assert "search.pbt.population" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "-c", path, "--labels", "many"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_finetune_and_search_commands(ray_local, tmp_path, digits_splits, tiny_checkpoint, capsys):
    path = _experiment(tmp_path, digits_splits, search={
        "halving": {"candidates": 2, "eta": 2, "min_fraction": 0.5}, "space": {"crop": [0]},
        "baselines": {"policies": ["none", "trivialaugment"], "randaugment_n": [1], "randaugment_m": [5]},
        "resources": {"executor": "local", "reserve_cpus": 0, "max_concurrent": 2}, "evaluate_seeds": [1]})
    assert main(["finetune", "-c", path, "--checkpoint", tiny_checkpoint, "--policy", "rand-n1-m5",
                 "--labels", "0.1", "--mode", "linear"]) == 0
    record = json.loads((tmp_path / "run" / "finetune" / "finetune.json").read_text())
    assert record["finetune"]["labels"] == 0.1 and record["finetune"]["mode"] == "linear" and record["metric"] == "accuracy"
    assert [h["epoch"] for h in record["history"]] == [1, 2] and 0 <= record["metrics"]["test_acc"] <= 1
    assert json.loads((tmp_path / "run" / "finetune" / "data" / "subset.json").read_text())["labelled"] == 144
    assert record["control"]["method"] == "logistic regression on raw pixels" and record["control"]["test_acc"] > 0.5
    test_labels = load_arrays(digits_splits[1], channels=1)[1]  # per class, the test accuracy again
    counts = np.bincount(test_labels, minlength=10)
    assert len(record["test_per_class"]) == 10
    assert np.dot(record["test_per_class"], counts) / counts.sum() == pytest.approx(record["metrics"]["test_acc"])
    captured = capsys.readouterr()
    assert "control: logistic regression on raw pixels" in captured.out
    assert captured.err.rstrip().endswith(f"report: {tmp_path / 'run' / 'finetune' / 'report.html'}")
    md = (tmp_path / "run" / "finetune" / "report.md").read_text()  # the fine-tune's report
    assert "finetune-curves.png" in md and "finetune-policy.png" in md and "| 144 drawn" not in md
    assert "logistic regression on raw pixels on the same labels" in md and "augtrain finetune -c" in md
    assert "Per class: the share of the class's test samples" in md

    assert main(["search", "-c", path, "--checkpoint", tiny_checkpoint]) == 0
    out = tmp_path / "run" / "search"
    for name in ("best_policy.json", "best_policy.txt", "best_point.json", "best_policy.dali.json", "trials.csv",
                 "comparison.md", "search.json", "config.yaml"):
        assert (out / name).is_file(), name
    captured = capsys.readouterr()
    printed = captured.out
    assert "pretrained: RandAugment best (N=1, M=5) of 1-point grid" in printed
    assert "pretrained: searched (halving, 2 -> 1)" in printed and "pretrained: random search (2 points)" in printed
    assert "This search had no checkpoint" not in printed
    for row in ("raw pixels: logistic regression", "checkpoint: linear probe", "scratch: none", "pretrained: none",
                "pretrained: trivialaugment"):
        assert f"| {row} |" in printed, row
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["halving"]["candidates"] == 2
    assert captured.err.rstrip().endswith(f"report: {out / 'report.html'}")
    assert "augtrain search -c" in (out / "report.md").read_text()
