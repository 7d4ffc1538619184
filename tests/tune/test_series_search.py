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
                          val_labels=0.2, mode="scratch", encoder="fcn", encoder_kwargs={"in_chans": 1}, epochs=6,
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
    summary = write_results(results, tmp_path / "out", series_cfg.epochs)
    methods = [row["method"] for row in summary["comparison"]]
    assert methods[0] == "raw series values: logistic regression"
    assert "pretrained: series-basic" in methods and any(m.startswith("pretrained: searched") for m in methods)
    assert any(m.startswith("pretrained: reference ops best (magnitude 5, 1 copies)") for m in methods)
    assert not any(m.startswith("scratch:") for m in methods)  # the fine-tune is from scratch itself
    best = json.loads((tmp_path / "out" / "best_policy.json").read_text())
    assert best.get("modality") == "series"
    assert all(0.0 <= row["test_acc"] <= 1.0 for row in summary["comparison"] if row.get("test_acc") is not None)
