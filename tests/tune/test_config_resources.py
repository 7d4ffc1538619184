"""Search/fine-tune config checks that name the key, and the trial-concurrency arithmetic."""

from __future__ import annotations

import pytest

from augtrain.pipelines.finetune import parse_finetune_config
from augtrain.tune.config import parse_search_config
from augtrain.tune.resources import DRIVER_CPU, max_concurrent_trials, trial_cpus


def test_search_config_defaults_and_grid():
    search = parse_search_config({"baselines": {"randaugment_n": [1, 2], "randaugment_m": [3, 9]}})
    assert search.pbt.population == 4 and search.pbt.resample_probability == 0.2
    assert search.baselines.specs() == ["none", "basic", "trivialaugment", "rand-n1-m3", "rand-n1-m9",
                                        "rand-n2-m3", "rand-n2-m9"]


@pytest.mark.parametrize("data, key", [
    ({"pbt": {"population": 1}}, "search.pbt.population"),
    ({"pbt": {"popluation": 4}}, "search.pbt.popluation"),
    ({"pbt": {"ops": ["rotate", "warp"]}}, "search.pbt"),
    ({"pbt": {"init": "ones"}}, "search.pbt.init"),
    ({"pbt": {"epochs": 0}}, "search.pbt.epochs"),
    ({"pbt": {"num_ops": [0.5, 0.6]}}, "search.pbt"),
    ({"baselines": {"policies": ["none", "rand-nope"]}}, "search.baselines"),
    ({"hpo": {"lr": [0.1, 0.001]}}, "search.hpo"),
    ({"hpo": {"when": "during"}}, "search.hpo.when"),
    ({"resources": {"executor": "threads"}}, "search.resources.executor"),
])
def test_search_config_errors_name_the_key(data, key):
    with pytest.raises(ValueError, match=rf"exp.yaml: {key.replace('.', '[.]')}"):
        parse_search_config(data, "exp.yaml")


@pytest.mark.parametrize("data, key", [
    ({"labels": 0}, "finetune.labels"),
    ({"labels": 12.5}, "finetune.labels"),
    ({"mode": "probe"}, "finetune.mode"),
    ({"policy": "rand-n2-mx"}, "finetune.policy"),
    ({"layer_decay": 1.5}, "finetune.layer_decay"),
    ({"epochs": 3, "warmup_epochs": 5}, "finetune"),
    ({"learning_rate": 0.1}, "finetune.learning_rate"),
])
def test_finetune_config_errors_name_the_key(data, key):
    with pytest.raises(ValueError, match=rf"exp.yaml: {key.replace('.', '[.]')}"):
        parse_finetune_config(data, "exp.yaml")


def test_finetune_labels_count_or_fraction():
    assert parse_finetune_config({"labels": 600}).labels == 600
    assert parse_finetune_config({"labels": 0.01}).labels == 0.01
    assert parse_finetune_config({}, train="data/x", seed=3).seed == 3  # defaults from the experiment


def test_trial_cpus_and_max_concurrent():
    assert trial_cpus("train", 1.0, workers=2, cpus_per_worker=1.0) == pytest.approx(2 + DRIVER_CPU)
    assert trial_cpus("local", 1.5, workers=2, cpus_per_worker=1.0) == 1.5
    assert max_concurrent_trials(16, 2.01, reserve_cpus=2) == 6
    assert max_concurrent_trials(16, 2.01, reserve_cpus=2, requested=4) == 4
    assert max_concurrent_trials(4, 1.0, reserve_cpus=1) == 3
    assert max_concurrent_trials(4, 1.0, reserve_cpus=0) == 4
    with pytest.raises(ValueError, match="reserve_cpus"):
        max_concurrent_trials(2, 2.01, reserve_cpus=1)
    with pytest.raises(ValueError, match="executor"):
        trial_cpus("threads", 1, 1, 1)


def test_pbt_scheduler_takes_the_burn_in_and_the_space_bounds(tmp_path):
    from augtrain.tune.pbt import SearchRun, pbt_scheduler

    search = parse_search_config({"pbt": {"burn_in": 30, "perturbation_interval": 5, "count_max": 3,
                                          "ops": ["rotate", "solarize"]}})
    run = SearchRun(parse_finetune_config({"epochs": 90}), search, None, tmp_path, "t", None, 1)
    scheduler = pbt_scheduler(run)
    assert scheduler._burn_in_period == 30 and scheduler._perturbation_interval == 5
    explorer = scheduler._custom_explore_fn
    assert explorer.upper == [10, 9] * 4 + [3] and run.space.length == 9


def test_synch_pbt_resumes_a_member_stalled_behind_a_sync_point_that_never_comes(tmp_path):
    """Scheduler logic only: stand-ins for Tune's controller and trials (a real stall needs a
    restored search whose members drifted out of step, which cannot be timed reliably)."""
    from types import SimpleNamespace

    from augtrain.tune.pbt import SearchRun, pbt_scheduler

    search = parse_search_config({"pbt": {"synch": True, "ops": ["rotate"]}})
    scheduler = pbt_scheduler(SearchRun(parse_finetune_config({}), search, None, tmp_path, "t", None, 1))
    class Member:  # hashable, as Tune's Trial
        def __init__(self, status: str) -> None:
            self.status = status

    stalled, done = Member("PAUSED"), Member("TERMINATED")
    scheduler._trial_state = {stalled: SimpleNamespace(last_train_time=5), done: SimpleNamespace(last_train_time=5)}
    scheduler._next_perturbation_sync = 5
    controller = SimpleNamespace(get_trials=lambda: [stalled, done])
    assert scheduler.choose_trial_to_run(controller) is stalled  # Tune's own rule returns None here
    done.status = "RUNNING"  # someone is still running: wait for its result, as Tune does
    assert scheduler.choose_trial_to_run(controller) is None
