"""Search methods over the joint space on a real local Ray with tiny data: successive halving with
restarts, TPE and random search each write their policy and a table that carries every control."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from augtrain.augment import Policy
from augtrain.tune.config import parse_search_config
from augtrain.tune.report import write_results
from augtrain.tune.search import plan_search, run_search
from augtrain.tune.space import JointSpace

LOCAL = {"executor": "local", "reserve_cpus": 0, "max_concurrent": 4}
GRID = {"policies": ["none"], "randaugment_n": [1], "randaugment_m": [2]}
CONTROL_ROWS = ("raw pixels: logistic regression", "checkpoint: kNN (k=20)", "checkpoint: linear probe",
                "scratch: none", "scratch: searched", "pretrained: none", "pretrained: RandAugment best",
                "pretrained: random search", "pretrained: searched")


def _check_table(out, results, method_label: str) -> dict:
    summary = write_results(results, out, 6)
    comparison = (out / "comparison.md").read_text()
    for row in CONTROL_ROWS:  # a missing control fails the test
        assert f"| {row}" in comparison, row
    assert f"pretrained: searched ({method_label})" in comparison and "## Did it help?" in comparison
    for question in ("Did pretraining help?", "Did augmentation help?", "Did the search help?",
                     "Above the linear model on raw features?"):
        assert question in comparison
    rows = {r["method"].split(" (")[0]: r for r in summary["comparison"]}
    assert rows["scratch: none"]["seeds"] == 2 and rows["checkpoint: linear probe"]["seeds"] == 2
    assert rows["pretrained: searched"]["seeds"] == 2 and rows["pretrained: none"]["seeds"] == 2
    assert rows["raw pixels: logistic regression"]["test_acc"] > 0.5
    point = json.loads((out / "best_point.json").read_text())
    assert point["point"] == results["searched"].extra["best_point"]
    policy = Policy.from_json((out / "best_policy.json").read_text())
    assert policy == JointSpace.policy(point["point"])
    trials = pd.read_csv(out / "trials.csv")
    assert {"controls", "baselines", "searched", "random", "evaluate", "predictions"} - set(trials["stage"]) == {
        "predictions"}
    return rows


@pytest.mark.timeout(600)
def test_halving_restarts_each_rung_and_random_search_gets_the_same_compute(ray_local, tiny_checkpoint, tiny_cfg,
                                                                           tmp_path, chromium):
    search = parse_search_config({"halving": {"candidates": 4, "eta": 2, "min_fraction": 0.5},
                                  "baselines": GRID, "resources": LOCAL, "evaluate_seeds": [1]})
    with pytest.raises(ValueError, match="finetune.size"):  # crops in the space, and no output size
        plan_search(tiny_cfg, search, tiny_checkpoint, tmp_path / "out", "halving-test")
    run = plan_search(tiny_cfg.with_updates(size=8), search, tiny_checkpoint, tmp_path / "out", "halving-test")
    results = run_search(run)
    r0, r1, searched = results["halving-r0"], results["halving-r1"], results["searched"]
    assert [t["epoch"] for t in r0.trials] == [3] * 4 and [t["epoch"] for t in r1.trials] == [6] * 2
    # every rung starts again from the checkpoint (epoch 1 of a 3-epoch, then a 6-epoch schedule) ...
    r0_best = sorted(r0.trials, key=lambda t: -t["val_acc"])[:2]
    assert sorted(json.dumps(t["config"]["point"], sort_keys=True) for t in r0_best) == sorted(
        json.dumps(t["config"]["point"], sort_keys=True) for t in r1.trials)  # ... with the best half of the last
    assert searched.trials[0]["trial_id"] == max(r1.trials, key=lambda t: t["val_acc"])["trial_id"]
    assert searched.trials[0]["test_acc"] is not None and searched.extra["search_trial_epochs"] == 4 * 3 + 2 * 6
    random = results["random_search"]
    assert random.extra["points"] == 4 and random.extra["search_trial_epochs"] == 24  # the same compute
    rows = _check_table(tmp_path / "out", results, "halving, 4 -> 2")
    assert rows["pretrained: searched"]["trial_epochs"] == 24 and rows["pretrained: RandAugment best"]["trial_epochs"] == 6
    # the paired comparison covers the controls too (their predictions need no checkpoint)
    assert "paired" in rows["raw pixels: logistic regression"] and "paired" in rows["scratch: none"]
    labels = np.load(results["predictions"].extra["labels"])
    assert len(labels) == len(np.load(results["controls"].trials[0]["predictions"]))
    _check_report(tmp_path / "out", chromium)


def _check_report(out, chromium) -> None:
    """The search's report.html: the verdict, every control's row, the finalists' curves, the searched
    policy pictured, its files; every image loads in a browser."""
    import augtrain.tune.search_report  # noqa: F401  (registers searches)
    from augtrain.pipelines.report import write_report

    html = write_report(out)
    md = (out / "report.md").read_text()
    for row in CONTROL_ROWS:
        assert f"| {row}" in md, row
    for text in ("Did the search help?", "search-finalists.png", "searched-policy.png", "best_policy.json",
                 "| halving-r0 | 4 |", "the searched model"):
        assert text in md, text
    rendered = chromium(html)
    assert rendered["images"] == 2 and rendered["loaded"] == 2


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tpe_searches_short_complete_runs_then_trains_the_best_at_full_length(ray_local, tiny_checkpoint, tiny_cfg,
                                                                              tmp_path):
    search = parse_search_config({"method": "tpe", "tpe": {"num_samples": 4, "fraction": 0.5},
                                  "random": {"num_samples": 2}, "baselines": GRID, "resources": LOCAL,
                                  "evaluate_seeds": [1]})
    run = plan_search(tiny_cfg.with_updates(size=8), search, tiny_checkpoint, tmp_path / "out", "tpe-test")
    results = run_search(run)
    assert [t["epoch"] for t in results["tpe"].trials] == [3] * 4
    final = results["tpe-final"].trials[0]
    best = max(results["tpe"].trials, key=lambda t: t["val_acc"])
    assert final["epoch"] == 6 and JointSpace.hparams(final["config"]["point"])["lr"] == best["config"]["lr"]
    assert results["random_search"].extra["points"] == 2
    _check_table(tmp_path / "out", results, "tpe")


def test_ties_on_validation_accuracy_go_to_the_lower_validation_loss():
    """A stage's ranking (halving's survivors, random search's pick): accuracy first, then the
    lower loss, then the earlier trial; failed trials and trials without an accuracy are out."""
    from augtrain.tune.methods import _ranked
    from augtrain.tune.stages import StageResult

    def trial(i, acc, loss, error=None):
        return {"trial_id": f"t{i}", "val_acc": acc, "val_loss": loss, "error": error}

    trials = [trial(0, 1.0, 0.30), trial(1, 1.0, 0.10), trial(2, 0.9, 0.01), trial(3, 1.0, None),
              trial(4, 1.0, 0.10), trial(5, None, 0.0), trial(6, 1.0, 0.0, error="ValueError: boom")]
    ranked = [t["trial_id"] for t in _ranked(StageResult("halving-r0", trials, 0.0))]
    assert ranked == ["t1", "t4", "t0", "t3", "t2"]
