"""Result files: DALI export of a searched policy, comparison rows, the schedule plot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from augtrain.augment import Schedule, parse_policy
from augtrain.tune.pba import PBASpace
from augtrain.tune.report import comparison_markdown, comparison_rows, dali_export, plot_schedule
from augtrain.tune.search import StageResult


def test_dali_export_of_a_pba_policy_keeps_each_ops_rate():
    space = PBASpace(ops=("rotate", "cutout", "solarize", "equalize"), copies=1)
    policy = space.decode([8, 9, 10, 5, 4, 3, 0, 0])  # equalize has p = 0: it never fires
    dali, info = dali_export(policy)
    assert info["dropped_ops"] == ["cutout"]
    assert len(dali.sub_policies) == 1 and len(info["sub_policies"]) == 1  # rotate + solarize: one pair
    expected_ops = 0.3 * 1 + 0.5 * 2  # E[entries per sample] in the searched policy
    assert info["probability_scale"] == pytest.approx(expected_ops / 2)
    # the export's one pair fires each op with p * E[k] / 2 per sample
    (rotate, solarize), = info["sub_policies"]
    assert rotate[0] == "rotate" and rotate[1] == pytest.approx(0.8 * expected_ops / 2, abs=1e-4)
    assert solarize[0] == "solarize" and solarize[1] == pytest.approx(0.4 * expected_ops / 2, abs=1e-4)


def test_dali_export_entry_for_entry_when_one_entry_per_sample():
    policy = parse_policy("autoaugment-cifar10")
    dali, info = dali_export(policy)
    assert info["probability_scale"] == 1.0 and len(dali.sub_policies) == len(policy.choices)


def _trial(policy, val, test, epochs=10):
    return {"trial_id": policy, "config": {"policy": policy}, "epochs_trained": epochs, "val_acc": val,
            "test_acc": test, "best_val_acc": val, "epoch": epochs, "error": None}


def test_comparison_rows_charge_the_whole_grid_and_the_search():
    base = StageResult("baselines", [_trial("none", 0.5, 0.49), _trial("trivialaugment", 0.6, 0.58)]
                       + [_trial(f"rand-n{n}-m{m}", 0.5 + 0.01 * n * m, 0.4, 10) for n, m in itertools.product((1, 2), (2, 4))],
                       1.0)
    pbt = StageResult("pbt", [{"trial_id": str(i), "config": {"pba": [0]}, "epochs_trained": 11, "val_acc": 0.6,
                               "test_acc": None} for i in range(4)], 1.0)
    replay = StageResult("replay", [_trial("s0", 0.61, 0.62), _trial("s1", 0.63, 0.60)], 1.0)
    rows = {r["method"].split(" (")[0]: r for r in comparison_rows({"baselines": base, "pbt": pbt, "replay": replay})}
    ra = rows["RandAugment best"]
    assert "(N=2, M=4) of 4-point grid" in [r["method"] for r in comparison_rows({"baselines": base})][-1]
    assert ra["trial_epochs"] == 40 and ra["test_acc"] == 0.4 and ra["val_acc"] == pytest.approx(0.58)
    searched = rows["PBA schedule"]
    assert searched["trial_epochs"] == 44 + 20 and searched["search_epochs"] == 44
    assert searched["test_acc"] == pytest.approx(0.61) and searched["test_acc_sd"] == pytest.approx(0.01)
    text = comparison_markdown(list(rows.values()), "t")
    assert "| none | 50.00 | 49.00 | 10 |" in text and "61.00 ± 1.00" in text


def test_schedule_plot_is_written(tmp_path):
    space = PBASpace(ops=("rotate", "solarize"), copies=1)
    schedule = Schedule(((0, space.decode([0, 0, 0, 0])), (3, space.decode([5, 4, 10, 9]))))
    plot_schedule(schedule, 6, tmp_path / "s.png")
    data = (tmp_path / "s.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
