"""The search on series: the series ops' groups, count, magnitude and copies with the fine-tune's
hyperparameters, beside the reference ops' grid and the controls, on GunPoint (FCN from scratch,
a real local Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from augtrain.pipelines.data.series_sources import ucr
from augtrain.pipelines.data.writer import WriteOptions, write_shards
from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.tune.config import parse_search_config
from augtrain.tune.report import write_results
from augtrain.tune.search import check_searchable, plan_search, run_search
from augtrain.tune.space import JointSpace


@pytest.fixture(scope="module")
def series_cfg(tmp_path_factory) -> FinetuneConfig:
    root = tmp_path_factory.mktemp("series-search")
    for split in ("train", "test"):
        write_shards(ucr("GunPoint", split), str(root / split), split, WriteOptions(), progress=lambda _: None)
    return FinetuneConfig(train=str(root / "train"), test=str(root / "test"), modality="series", labels=0.8,
                          val_labels=1.0, mode="scratch", encoder="fcn", encoder_kwargs={"in_chans": 1}, epochs=6,
                          batch_size=16, lr=1e-3, mean=(0.0,), std=(1.0,))


def test_series_search_settings_are_checked_for_the_modality(series_cfg):
    assert series_cfg.policy == "none"  # the series default when a config names none
    with pytest.raises(ValueError, match="pbt.*image ops, not series"):
        check_searchable(series_cfg, parse_search_config({"method": "pbt"}))
    with pytest.raises(Exception, match="unknown policy 'trivialaugment' for modality 'series'"):
        check_searchable(series_cfg, parse_search_config({"baselines": {"policies": ["trivialaugment"]}}))
    point = parse_search_config({}).space.build("series").sample(np.random.default_rng(1))
    assert point["aug_modality"] == "series" and point["aug_ops"] in ("reference", "all", "magnitude", "time",
                                                                       "frequency")
    policy, hparams = JointSpace.decode({**point, "aug_n": 1, "aug_ops": "frequency", "aug_m": 4})
    assert (policy.modality, policy.copies) == ("series", point["aug_copies"])
    assert {op.name for (op,) in policy.choices} == {"freq_mask", "freq_perturb"}
    assert set(hparams) == {"lr", "weight_decay", "label_smoothing"}


@pytest.mark.timeout(900)
def test_halving_over_series_policies_writes_its_policy_and_table(ray_local, series_cfg, tmp_path):
    search = parse_search_config({
        "method": "halving", "halving": {"candidates": 2, "eta": 2, "min_fraction": 0.5},
        "random": {"enabled": False}, "baselines": {"policies": ["none", "series-basic"], "series_m": [5],
                                                    "series_c": [1]},
        "resources": {"executor": "local", "cpus_per_trial": 1, "reserve_cpus": 0, "epochs_per_iteration": 3}})
    run = plan_search(series_cfg, search, None, tmp_path, "series-test")
    results = run_search(run)
    assert {"controls", "baselines", "searched"} <= set(results)
    summary = write_results(results, tmp_path / "out", series_cfg.epochs, {"checkpoint": None})  # as `augtrain search` records it
    assert "the rows named \"pretrained:\" start from the encoder's fresh weights" in (
        tmp_path / "out" / "comparison.md").read_text()
    methods = [row["method"] for row in summary["comparison"]]
    assert methods[0] == "raw series values: logistic regression"
    assert "pretrained: series-basic" in methods and any(m.startswith("pretrained: searched") for m in methods)
    assert any(m.startswith("pretrained: reference ops best (magnitude 5, 1 copies)") for m in methods)
    assert not any(m.startswith("scratch:") for m in methods)  # the fine-tune is from scratch itself
    best = json.loads((tmp_path / "out" / "best_policy.json").read_text())
    assert best.get("modality") == "series"
    assert all(0.0 <= row["test_acc"] <= 1.0 for row in summary["comparison"] if row.get("test_acc") is not None)


def test_folds_need_the_local_executor_and_a_validation_split(series_cfg):
    with pytest.raises(ValueError, match="search.folds 3 .* needs search.resources.executor: local and a validation split"):
        check_searchable(series_cfg, parse_search_config({"folds": 3, "resources": {"executor": "train"}}))
    with pytest.raises(ValueError, match="search.folds 3"):
        check_searchable(series_cfg.with_updates(labels=1.0, val_labels=0),
                         parse_search_config({"folds": 3, "resources": {"executor": "local"}}))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_folds_select_on_the_mean_of_several_validation_splits(ray_local, series_cfg, tmp_path):
    """search.folds 3: three stratified labelled/validation splits of GunPoint's TRAIN, every
    baseline trial trained on each and reporting their mean; the evaluation stage on the first
    split alone."""
    from augtrain.pipelines.finetune.subsets import SUBSET_FILE
    from augtrain.tune.stages import history_file

    search = parse_search_config({
        "method": "none", "folds": 3, "evaluate_seeds": [1], "controls": {"enabled": False},
        "baselines": {"policies": ["none", "series-basic"], "series_m": [], "series_c": []},
        "resources": {"executor": "local", "cpus_per_trial": 1, "reserve_cpus": 0, "epochs_per_iteration": 3}})
    cfg = series_cfg.with_updates(epochs=3)
    run = plan_search(cfg, search, None, tmp_path, "series-folds")
    assert len(run.folds) == 2 and all(p.num_labelled == run.paths.num_labelled == 40 for p in run.folds)
    records = [json.loads((tmp_path / "data" / SUBSET_FILE).read_text())] + [
        json.loads((tmp_path / "data" / f"fold-{k}" / SUBSET_FILE).read_text()) for k in (1, 2)]
    val_keys = [tuple(r["val_keys"]) for r in records]
    assert len(set(val_keys)) == 3 and all(len(keys) == 10 for keys in val_keys)  # 3 splits of the same pool
    assert all(set(r["val_keys"]).isdisjoint(r["labelled_keys"]) for r in records)
    run_search(run)
    reports = [json.loads(line) for line in history_file(run, "baselines").read_text().splitlines()]
    assert len(reports) == 2  # one report each (3 epochs, a report every 3)
    for report in reports:
        splits = [report[f"val_acc_split{k}"] for k in range(3)]
        assert report["val_acc"] == pytest.approx(sum(splits) / 3)
        assert report["epochs_run"] == 9  # 3 epochs on each of 3 splits
        assert 0.0 <= report["test_acc"] <= 1.0
    evaluated = [json.loads(line) for line in history_file(run, "evaluate").read_text().splitlines()]
    assert evaluated and not any("val_acc_split0" in r for r in evaluated)
    assert all(r["epochs_run"] == 3 for r in evaluated)
