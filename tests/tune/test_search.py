"""Searches on a real local Ray (Tune), tiny data and a tiny pretrained checkpoint: PBT exploits and
explores and its schedule replays; ASHA stops poor trials early; a failing trial is retried; a
killed search resumes and finishes; final models predict the test split again for paired comparisons."""

from __future__ import annotations

import contextlib

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ray import cloudpickle

from augtrain.augment import Policy, Schedule, parse_policy
from augtrain.tune.config import parse_search_config
from augtrain.tune.pba import PBASpace
from augtrain.tune.report import write_results
from augtrain.tune.hpo import run_hpo
from augtrain.tune.pbt import RandomStart
from augtrain.tune.search import plan_search, run_search
from augtrain.tune.stages import stage_history
from augtrain.tune.trainable import finetune_trial

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial processes cannot import tests/

LOCAL = {"executor": "local", "reserve_cpus": 0, "max_concurrent": 4}
NO_BASELINES = {"policies": ["none"], "randaugment_n": [], "randaugment_m": []}


def _history(out: Path, stage: str, trial_id: str) -> pd.DataFrame:
    """Every report of one trial, in order (the search's own result log)."""
    rows = pd.DataFrame(stage_history(out, stage))
    return rows[rows["trial_id"] == trial_id].reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_pbt_exploits_explores_and_its_schedule_replays(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_updates(epochs=8)
    # synchronous PBT: tiny trials would otherwise finish before their peers start, with nobody to exploit
    search = parse_search_config({"method": "pbt", "pbt": {"population": 4, "perturbation_interval": 2, "quantile_fraction": 0.25,
                                          "synch": True},
                                  "baselines": NO_BASELINES, "controls": {"enabled": False}, "resources": LOCAL})
    run = plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "pbt-test")
    results = run_search(run)
    pbt = results["pbt"]
    assert len(pbt.trials) == 4 and not any(t["error"] for t in pbt.trials)

    # exploit: a trial took a donor's checkpoint (its next epoch continues the donor's count) ...
    exploits = pbt.extra["exploits"]
    assert any(e["trial"] != e["donor"] for e in exploits), exploits
    # ... and explore: the new config is PBA's perturbation of the donor's
    assert any(e["explored"] for e in exploits)
    experiment = Path(pbt.trials[0]["path"]).parent
    prefix = pbt.trials[0]["trial_id"].split("_")[0]
    checked = 0
    for trial in pbt.trials:
        log = experiment / f"pbt_policy_{trial['trial_id']}.txt"
        if not log.is_file():
            continue
        _tag, donor_tag, *_ = json.loads(log.read_text().splitlines()[-1])  # this trial's last exploit
        donor = f"{prefix}_{int(donor_tag.split('_')[0]):05d}"
        rows = _history(tmp_path / "out", "pbt", trial["trial_id"])
        if rows["restored_from"].eq(donor).any():  # it went on from the donor's checkpoint (weights and all)
            checked += 1
    assert checked >= 1

    # the best trial's schedule was written, and the replay trained exactly that schedule
    schedule = Schedule.from_dict(pbt.extra["schedule"])
    replay = results["replay"].trials[0]
    rows = _history(tmp_path / "out", "replay", replay["trial_id"])
    assert rows["epoch"].tolist() == list(range(1, 9))
    assert rows["policy"].tolist() == [schedule.policy_at(e - 1).to_string() for e in rows["epoch"]]
    assert replay["test_acc"] is not None and results["replay"].trial_epochs == 8
    member = results["pbt_best"].trials[0]  # the best member's own final model, tested as it is
    assert member["trial_id"] == pbt.extra["best_trial"] and member["epoch"] == 8 and member["test_acc"] is not None

    out = tmp_path / "out"
    write_results(results, out, cfg.epochs)
    best = Policy.from_json((out / "best_policy.json").read_text())
    assert best.choices == schedule.policy_at(7).choices
    assert parse_policy((out / "best_policy.txt").read_text().strip()).choices == best.choices
    assert (out / "schedule.png").stat().st_size > 10_000
    assert json.loads((out / "best_policy.dali.json").read_text())["dropped_ops"] == ["cutout"]
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["stage"].unique()) == ["baselines", "pbt", "pbt_best", "replay"]
    comparison = (out / "comparison.md").read_text()
    assert "PBA schedule (PBT population 4, replayed)" in comparison and "| pretrained: none |" in comparison
    assert "PBT best member, as trained in the search (population 4)" in comparison


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_population_larger_than_the_slots_is_time_multiplexed_and_a_short_search_stretches(
        ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    # 6 members, 2 CPUs each on 4 CPUs: 2 run at a time. Every member must be live before any
    # member finishes (a cap on live trials would run the population in batches that never meet).
    cfg = tiny_cfg.with_updates(epochs=8)
    search = parse_search_config({"method": "pbt", "pbt": {"population": 6, "perturbation_interval": 1, "synch": True,
                                          "init": "random", "epochs": 4},
                                  "baselines": NO_BASELINES,
                                  "resources": {"executor": "local", "reserve_cpus": 0, "cpus_per_trial": 2}})
    run = plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "pbt-mux")
    results = run_search(run)
    pbt = results["pbt"]
    rows = pd.DataFrame(stage_history(tmp_path / "out", "pbt"))
    assert rows["trial_id"].nunique() == 6 and pbt.trial_epochs == 6 * 4
    first = rows.groupby("trial_id").apply(lambda r: r.index.min(), include_groups=False)
    last = rows.groupby("trial_id").apply(lambda r: r.index.max(), include_groups=False)
    assert first.max() < last.min(), "the population ran in batches"
    assert any(e["trial"] != e["donor"] for e in pbt.extra["exploits"])

    # random starts: each member's first epochs ran its own seeded draw, not PBA's zeros
    space = PBASpace()
    for trial in pbt.trials:
        seed = trial["trial_id"]  # the member's seed is its grid index (tiny_cfg.seed 0 + i)
        start = RandomStart(space, 0)(SimpleNamespace(config={"seed": int(seed.split("_")[1])}))
        first_policy = _history(tmp_path / "out", "pbt", trial["trial_id"])["policy"].iloc[0]
        assert any(start) and first_policy == space.decode(start).to_string()

    # the 4-epoch schedule is stretched x2 to the 8-epoch replay: changes land on even epochs
    assert pbt.extra["stretch"] == 2.0
    schedule = Schedule.from_dict(pbt.extra["schedule"])
    assert all(start % 2 == 0 for start, _ in schedule.entries)
    replay = results["replay"].trials[0]
    history = _history(tmp_path / "out", "replay", replay["trial_id"])
    assert history["epoch"].tolist() == list(range(1, 9))
    assert history["policy"].tolist() == [schedule.policy_at(e - 1).to_string() for e in history["epoch"]]
    write_results(results, tmp_path / "out", cfg.epochs)
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "PBA schedule (PBT population 6, 4 epochs, schedule stretched x2, replayed)" in comparison
    assert "| 32 |" in comparison  # 6 x 4 search + 8 replay trial-epochs


def test_train_executor_refuses_a_population_larger_than_fits(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_updates(workers=2, cpus_per_worker=1.0)
    search = parse_search_config({"method": "pbt", "pbt": {"population": 4},
                                  "resources": {"executor": "train", "reserve_cpus": 1}})
    with pytest.raises(ValueError, match=r"search.pbt.population is 4 but only 1 trials fit"):
        plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "too-many")
    assert not (tmp_path / "out" / "data").exists()  # refused before any work


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_asha_stops_poor_trials_early(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_updates(epochs=8)
    search = parse_search_config({"method": "none", "hpo": {"num_samples": 6, "grace_period": 1, "reduction_factor": 2,
                                                            "lr": [1e-6, 3e-1], "policy": "none"},
                                  "resources": {**LOCAL, "max_concurrent": 2}})
    run = plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "asha-test")
    result = run_hpo(run, cfg, run.context(cfg, test=False))
    trained = sorted(t["epochs_trained"] for t in result.trials)
    assert len(trained) == 6 and trained[0] < 8 and trained[-1] == 8, trained  # stopped early, and not all
    assert sum(trained) < 6 * 8
    assert set(result.extra["best_hparams"]) == {"lr", "weight_decay", "label_smoothing", "layer_decay"}
    best = max(result.trials, key=lambda t: t["val_acc"])
    assert result.extra["best_hparams"]["lr"] == best["config"]["lr"]


def flaky_trial(config, ctx):
    """The real trial, failing once right after its epoch-3 checkpoint was reported."""
    import augtrain.tune.trainable as trainable

    marker = Path(ctx.storage).parent / "failed-once"
    report = trainable._report

    def report_then_fail(metrics, checkpoint):
        report(metrics, checkpoint)
        if metrics["epoch"] == 3 and not marker.exists():
            marker.write_text("failed at epoch 3\n")
            raise RuntimeError("injected failure after epoch 3")

    trainable._report = report_then_fail
    try:
        finetune_trial(config, ctx)
    finally:
        trainable._report = report


@pytest.mark.timeout(300)
def test_a_trial_that_raises_once_is_retried_from_its_checkpoint(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    search = parse_search_config({"method": "none", "baselines": NO_BASELINES, "resources": LOCAL,
                                  "max_failures": 2})
    run = plan_search(tiny_cfg, search, tiny_checkpoint, tmp_path / "out", "retry-test", trainable=flaky_trial)
    trial = run_search(run)["baselines"].trials[0]
    assert (tmp_path / "out" / "failed-once").is_file()
    assert trial["error"] is None and trial["epoch"] == 6 and trial["test_acc"] is not None
    rows = _history(tmp_path / "out", "baselines", trial["trial_id"])
    assert rows["epoch"].tolist() == [1, 2, 3, 4, 5, 6]  # the retry went on from epoch 3, nothing trained twice
    assert rows["restored_from"].fillna("").tolist() == [""] * 3 + [trial["trial_id"], "", ""]


@pytest.mark.timeout(300)
def test_trials_validate_only_at_the_epochs_they_report(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    search = parse_search_config({"method": "none", "baselines": NO_BASELINES, "controls": {"enabled": False},
                                  "resources": {**LOCAL, "epochs_per_iteration": 2}})
    run = plan_search(tiny_cfg, search, tiny_checkpoint, tmp_path / "out", "validate-test")
    trial = run_search(run)["baselines"].trials[0]
    rows = _history(tmp_path / "out", "baselines", trial["trial_id"])
    assert rows["epoch"].tolist() == [2, 4, 6] and rows["val_acc"].notna().all()
    assert trial["test_acc"] is not None
    kept = sorted(Path(trial["path"]).glob("checkpoint_*"))
    assert [c.name for c in kept] == ["checkpoint_000001", "checkpoint_000002"]  # of 3: the last two
    checkpoint = kept[-1]
    history = json.loads((checkpoint / "finetune.json").read_text())["history"]
    assert [row["epoch"] for row in history if "val_acc" in row] == [2, 4, 6]  # epochs 1, 3, 5: not validated
    assert len(history) == 6
    # the final model predicts the test split again from that last checkpoint, as its trial scored it
    (predicted,) = [row for row in run.results["predictions"].trials if row["stage"] == "baselines"]
    assert predicted["checkpoint"] == str(checkpoint) and predicted["epoch"] == 6 and predicted["matches"]
    labels = np.load(run.results["predictions"].extra["labels"])
    assert np.mean(np.load(predicted["predictions"]) == labels) == pytest.approx(trial["test_acc"])


RESUME_SCRIPT = """
import json, sys
from augtrain.cluster.connect import connect
from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.tune.config import parse_search_config
from augtrain.tune.search import plan_search, run_search

cfg = FinetuneConfig.model_validate_json(sys.argv[1])
search = parse_search_config(json.loads(sys.argv[2]))
connect(num_cpus=4, log_to_driver=False)
run_search(plan_search(cfg, search, sys.argv[3], sys.argv[4], "resume-test"))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_search_resumes_and_finishes(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_updates(epochs=6)
    search_dict = {"method": "pbt", "pbt": {"population": 2, "perturbation_interval": 2, "quantile_fraction": 0.5, "synch": True},
                   "baselines": {"policies": ["none", "basic"], "randaugment_n": [], "randaugment_m": []},
                   "resources": {**LOCAL, "max_concurrent": 1}}
    out = tmp_path / "out"
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, str(script), cfg.model_dump_json(), json.dumps(search_dict),
                             tiny_checkpoint, str(out)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pbt_dir = out / "tune" / "resume-test-pbt"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(pbt_dir.glob("experiment_state-*.json")) and list(pbt_dir.glob("*/checkpoint_000001")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.monotonic() < deadline, "the PBT stage never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    baselines = (out / "stages" / "baselines.json").read_bytes()
    assert not (out / "stages" / "pbt.json").exists()
    trials_before = sorted(p.name for p in pbt_dir.iterdir() if p.is_dir())

    search = parse_search_config(search_dict)
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(plan_search(cfg, search, tiny_checkpoint, out, "resume-test"))
    results = run_search(plan_search(cfg, search, tiny_checkpoint, out, "resume-test", resume=True))
    assert (out / "stages" / "baselines.json").read_bytes() == baselines  # the finished stage is not re-run
    assert set(trials_before) <= {p.name for p in pbt_dir.iterdir() if p.is_dir()}  # restored, not started anew
    pbt = results["pbt"]
    assert [t["epoch"] for t in pbt.trials] == [6, 6] and not any(t["error"] for t in pbt.trials)
    # after the kill a member went on from its own checkpoint (members also restore donors' after exploits)
    assert any(_history(out, "pbt", t["trial_id"])["restored_from"].eq(t["trial_id"]).any() for t in pbt.trials)
    assert results["replay"].trials[0]["test_acc"] is not None


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_halving_search_resumes_its_rung_and_finishes(ray_local, tiny_checkpoint, tiny_cfg, tmp_path, how):
    # SIGINT: Tune ends its run and returns; the rung must not be taken for a finished one
    cfg = tiny_cfg.with_updates(epochs=6, size=8)
    search_dict = {"halving": {"candidates": 4, "eta": 2, "min_fraction": 0.5}, "random": {"enabled": False},
                   "controls": {"enabled": False}, "baselines": {"policies": ["none"], "randaugment_n": [],
                                                                  "randaugment_m": []},
                   "resources": {**LOCAL, "max_concurrent": 1}}
    out = tmp_path / "out"
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "driver.log"  # the driver's own output, shown when it ends unexpectedly
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, str(script), cfg.model_dump_json(), json.dumps(search_dict),
                                 tiny_checkpoint, str(out)], env=env, start_new_session=True,
                                stdout=sink, stderr=subprocess.STDOUT)
    rung = out / "tune" / "resume-test-halving-r0"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(rung.glob("experiment_state-*.json")) and len(list(rung.glob("*/checkpoint_000000"))) >= 1:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.monotonic() < deadline, "the first rung never started"
        if how == "SIGINT":
            proc.send_signal(signal.SIGINT)  # the driver only, as `kill -INT`
            assert proc.wait(timeout=60) != 0, log.read_text()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # after SIGINT the driver and its Ray may all be gone
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "stages" / "halving-r0.json").exists()
    search = parse_search_config(search_dict)
    results = run_search(plan_search(cfg, search, tiny_checkpoint, out, "resume-test", resume=True))
    r0 = results["halving-r0"]
    assert len(r0.trials) == 4 and all(t["epoch"] == 3 and not t["error"] for t in r0.trials)
    assert [t["epoch"] for t in results["halving-r1"].trials] == [6, 6]
    assert results["searched"].trials[0]["test_acc"] is not None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_executor_fits_a_torchtrainer_per_iteration(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_updates(epochs=2)
    search = parse_search_config({"method": "none", "baselines": NO_BASELINES,
                                  "resources": {"executor": "train", "reserve_cpus": 1, "max_concurrent": 1}})
    run = plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "train-exec")
    trial = run_search(run)["baselines"].trials[0]
    assert trial["error"] is None and trial["epoch"] == 2 and trial["test_acc"] is not None
    assert _history(tmp_path / "out", "baselines", trial["trial_id"])["epoch"].tolist() == [1, 2]  # the second fit resumed the first's checkpoint
    fits = sorted(p.name for p in (tmp_path / "out" / "train").iterdir()  # this trial's (the evaluation stage's are others)
                  if p.name.startswith(f"trial-{trial['trial_id']}-"))
    assert sorted(f.rsplit("-", 1)[1] for f in fits) == ["e1", "e2"]
    assert list((Path(trial["path"])).glob("checkpoint_*"))  # Tune holds the Train checkpoints


def test_a_stage_counts_the_trials_its_space_asks_for():
    # what an interrupted stage is measured against: Tune's result then holds only the trials it created
    from ray import tune

    from augtrain.tune.stages import expected_trials

    assert expected_trials({"point": tune.grid_search([1, 2, 3]), "epochs": 5}) == 3
    assert expected_trials({"a": tune.grid_search([1, 2]), "b": tune.grid_search(["x", "y", "z"])}) == 6
    assert expected_trials({"lr": tune.loguniform(1e-4, 1e-2)}, num_samples=8) == 8


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_search_distils_each_searched_model_into_a_student(ray_local, tiny_checkpoint, tiny_cfg, tmp_path):
    from augtrain.pipelines.finetune.unlabelled import pool_values
    from augtrain.tune.comparison import comparison_rows, verdict

    cfg = tiny_cfg.with_updates(epochs=2, size=8)
    search = parse_search_config({
        "halving": {"candidates": 2, "eta": 2, "min_fraction": 0.5}, "random": {"enabled": False},
        "space": {"crop": [0]}, "controls": {"enabled": False}, "baselines": NO_BASELINES, "evaluate_seeds": [1],
        "distill": {"enabled": True, "student": {"steps": 12, "batch_size": 64}}, "resources": LOCAL})
    results = run_search(plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "distil"))
    students = results["distill"].trials
    assert [s["config"]["seed"] for s in students] == [0, 1]  # the search's own model and the evaluation's seed 1
    pool = len(pool_values(cfg.train, 1, "image", set())[1])
    for s in students:
        assert s["test_acc"] is not None and s["checkpoint"]
        # the validation subset never reaches a student: the pool less the labelled and validation samples
        assert s["student_set"]["labelled"] == 120 and s["student_set"]["unlabelled"] == pool - 120 - 120
    assert {p["stage"] for p in results["predictions"].trials} >= {"distill"}  # paired with the other rows
    rows = comparison_rows(results)
    distilled = next(r for r in rows if r["method"] == "pretrained: searched + distilled")
    assert distilled["seeds"] == 2 and distilled["trial_epochs"] > results["searched"].extra["search_trial_epochs"]
    assert any(q.startswith("Did distillation") for q, _ in verdict(rows))
    # resumed: the finished stage is reused, not trained again
    again = run_search(plan_search(cfg, search, tiny_checkpoint, tmp_path / "out", "distil", resume=True))
    assert again["distill"].trials == students
