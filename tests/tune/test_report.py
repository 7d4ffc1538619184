"""Result files: DALI export of a searched policy, comparison rows (paired against the grid's best), the schedule plot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from augtrain.augment import Op, Policy, Schedule, parse_policy, sample_plan
from augtrain.tune.pba import PBASpace
from augtrain.tune.report import comparison_markdown, comparison_rows, dali_export, plot_schedule
from augtrain.tune.stages import StageResult


def test_dali_export_of_a_pba_policy_keeps_each_ops_rate():
    space = PBASpace(ops=("rotate", "cutout", "solarize", "equalize"), copies=2)
    # equalize has p = 0 (never fires); cutout has no DALI counterpart; rotate's copies differ
    policy = space.decode([8, 9, 10, 5, 4, 3, 0, 0, 2, 9, 0, 0, 0, 0, 0, 0])
    dali, info = dali_export(policy)
    assert info["dropped_ops"] == ["cutout"] and info["source_until_applied"] is True
    # kept: rotate (p .8), solarize (p .4), rotate (p .2): 3 pairs, each entry in 2 of 3 of them
    assert len(dali.sub_policies) == 3 and [len(e) for e in info["sub_policies"]] == [2, 2, 2]
    # rates measured under PBA's rule (every op visited until k fired), independently here
    rng = np.random.default_rng(1)
    runs = {"rotate": 0, "solarize": 0}
    for _ in range(20_000):
        for step in sample_plan(policy, rng, 32, 32, None):
            runs[step.name] = runs.get(step.name, 0) + 1
    rate = {k: v / 20_000 for k, v in runs.items()}
    exported: dict[str, float] = {}
    for entry in info["sub_policies"]:
        for name, p, _m in entry:
            exported[name] = exported.get(name, 0.0) + p / len(info["sub_policies"])  # each pair: 1 / 3 of samples
    assert exported["rotate"] == pytest.approx(rate["rotate"], abs=0.02)
    assert exported["solarize"] == pytest.approx(rate["solarize"], abs=0.02)
    # rotate's rate is shared by its copies in proportion to their probabilities (.8 : .2)
    (r1,), (s1,), (r2,) = info["op_rates"]
    assert r1 / r2 == pytest.approx(4.0, rel=1e-2) and info["capped_ops"] == []


def test_dali_export_of_uniform_draws_uses_the_closed_form():
    policy = Policy(choices=((Op("rotate", p=0.8, magnitude=5),), (Op("solarize", p=0.4, magnitude=3),),
                             (Op("equalize", p=0.0),), (Op("cutout", p=1.0, magnitude=5),)),
                    num_ops=(0.2, 0.3, 0.5), replace=False)
    _dali, info = dali_export(policy)
    expected = 0.3 * 1 + 0.5 * 2  # E[k]; each entry is drawn in E[k] / 4 of samples, then fires with p
    (rotate, solarize), = info["sub_policies"]  # one pair: it holds both entries in every sample
    assert rotate[1] == pytest.approx(0.8 * expected / 4, abs=1e-4)
    assert solarize[1] == pytest.approx(0.4 * expected / 4, abs=1e-4)


def test_dali_export_entry_for_entry_when_one_entry_per_sample():
    policy = parse_policy("autoaugment-cifar10")
    dali, info = dali_export(policy)
    assert info["op_rates"] is None and len(dali.sub_policies) == len(policy.choices)


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
    ra = rows["pretrained: RandAugment best"]
    assert "(N=2, M=4) of 4-point grid" in [r["method"] for r in comparison_rows({"baselines": base})][-1]
    assert ra["trial_epochs"] == 40 and ra["test_acc"] == 0.4 and ra["val_acc"] == pytest.approx(0.58)
    searched = rows["pretrained: PBA schedule"]
    assert searched["trial_epochs"] == 44 + 20 and searched["search_epochs"] == 44
    assert searched["test_acc"] == pytest.approx(0.61) and searched["test_acc_sd"] == pytest.approx(0.02 ** 0.5 / 10)  # sample sd of 0.62, 0.60
    text = comparison_markdown(list(rows.values()), "t")
    assert "| pretrained: none | 50.00 | 49.00 | 10 |" in text and "61.00 ± 1.41" in text


def test_comparison_compares_each_model_with_the_grids_best_on_the_same_samples(tmp_path):
    base = StageResult("baselines", [_trial("none", 0.5, 0.5), _trial("rand-n1-m2", 0.7, 0.6),
                                     _trial("rand-n2-m2", 0.6, 0.7)], 1.0)
    replay = StageResult("replay", [_trial("s0", 0.61, 0.65)], 1.0)
    labels = np.arange(1000) % 10
    wrong = (labels + 1) % 10

    def saved(name: str, right: np.ndarray) -> str:
        np.save(tmp_path / f"{name}.npy", np.where(right, labels, wrong))
        return str(tmp_path / f"{name}.npy")

    index = np.arange(1000)
    np.save(tmp_path / "labels.npy", labels)
    files = {("baselines", "none"): saved("none", index < 500), ("baselines", "rand-n1-m2"): saved("ra", index < 600),
             ("replay", "s0"): saved("replay", (index >= 50) & (index < 700))}
    predictions = StageResult("predictions", [
        {"stage": stage, "trial_id": trial, "predictions": file, "matches": trial != "none"}
        for (stage, trial), file in files.items()], 0.0, {"labels": str(tmp_path / "labels.npy")})
    pbt = StageResult("pbt", [{"trial_id": "m0", "config": {"pba": [0]}, "epochs_trained": 10, "val_acc": 0.6,
                               "test_acc": None}], 1.0)
    rows = comparison_rows({"baselines": base, "pbt": pbt, "replay": replay, "predictions": predictions})
    by_method = {r["method"].split(" (")[0]: r for r in rows}
    assert by_method["pretrained: RandAugment best"]["paired"] == {"reference": True}  # (N=1, M=2): best by validation
    assert "paired" not in by_method["pretrained: none"]  # its predictions did not reproduce its reported accuracy
    paired = by_method["pretrained: PBA schedule"]["paired"]
    # the replay gets 100 samples right that the reference misses and misses 50 it gets right
    assert (paired["only_a"], paired["only_b"], paired["difference"]) == (100, 50, pytest.approx(0.05))
    assert paired["ci95"][0] < 0.05 < paired["ci95"][1] and paired["p_value"] < 1e-4
    text = comparison_markdown(rows, "t")
    assert "McNemar p |" in text and "| reference |" in text and "+5.00 [" in text
    assert "no checkpoint" not in text and "start from the encoder's fresh weights" in comparison_markdown(
        rows, "t", from_scratch=True)  # a search without a checkpoint says what its "pretrained:" rows are


def test_schedule_plot_is_written(tmp_path):
    space = PBASpace(ops=("rotate", "solarize"), copies=1)
    schedule = Schedule(((0, space.decode([0, 0, 0, 0])), (3, space.decode([5, 4, 10, 9]))))
    plot_schedule(schedule, 6, tmp_path / "s.png")
    data = (tmp_path / "s.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
