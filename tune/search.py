"""A whole augmentation search on a pretrained checkpoint, in stages, each one Ray Tune run:

1. ``hpo`` (when ``search.hpo.when == "before"``): ASHA + Optuna over fine-tune hyperparameters;
   the best ones are used by every later stage.
2. ``baselines``: no augmentation, ``basic``, TrivialAugment and the RandAugment (N, M) grid,
   each a trial of ``finetune.epochs`` epochs, tested on the held-out split at the end.
3. ``pbt``: PBT over PBA's encoding with PBA's explore; exploit copies weights through
   checkpoints (all kept: ``num_to_keep=None``).
4. ``pbt_best``: the best member's final model (trained with weights copied through the
   population) tested as it is; then ``replay``: the best PBT trial's schedule, extracted from the PBT log, trained from the
   pretrained checkpoint again (one trial per ``search.replay_seeds``) and tested.
5. ``hpo_after`` (when ``"after"``): the same HPO, with the searched schedule as the policy.
6. ``predictions``: every tested final model of the baselines, ``pbt_best`` and ``replay``
   predicts the test split again from its last checkpoint, so that the report can compare any two
   of them sample by sample (``significance``); no training.

Every stage writes ``stages/<stage>.json`` when done, and every report of every trial to
``stages/<stage>.results.jsonl`` as it arrives (compute is counted from these rows: Tune's own
per-trial files can lag behind across pauses and restores). ``resume=True`` skips finished
stages and restores an unfinished one with ``Tuner.restore`` (errored trials resumed). Failed
trials are retried ``search.max_failures`` times from their last checkpoint. Results: ``report``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining

from augtrain.augment import Schedule
from augtrain.pipelines.finetune import DataPaths, FinetuneConfig, evaluate_checkpoint, predict_checkpoints, prepare_data
from augtrain.tune.config import SearchConfig
from augtrain.tune.pba import PBAExplorer, PBASpace, config_changes, read_policy_log, schedule_from_changes
from augtrain.tune.resources import max_concurrent_trials, trial_cpus
from augtrain.tune.trainable import HPARAMS, TrialContext, finetune_trial

log = logging.getLogger(__name__)

@dataclass
class StageResult:
    """One finished stage: a row per trial, plus what the stage produced (best config, schedule)."""

    stage: str
    trials: list[dict[str, Any]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trial_epochs(self) -> int:
        return int(sum(t["epochs_trained"] for t in self.trials))

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "trials": self.trials, "seconds": self.seconds, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        return cls(data["stage"], data["trials"], data["seconds"], data.get("extra", {}))


@dataclass
class SearchRun:
    """Everything a search needs; ``run_search`` builds it."""

    cfg: FinetuneConfig
    search: SearchConfig
    checkpoint: str | None
    out_dir: Path
    name: str
    paths: DataPaths
    max_concurrent: int
    resume: bool = False
    trainable: Callable[..., None] = finetune_trial
    results: dict[str, StageResult] = field(default_factory=dict)

    @property
    def space(self) -> PBASpace:
        return self.search.pbt.space()

    def context(self, cfg: FinetuneConfig, test: bool, source: Any = None) -> TrialContext:
        return TrialContext(cfg=cfg, paths=self.paths,
                            checkpoint=self.checkpoint, executor=self.search.resources.executor,
                            epochs_per_iteration=self.search.resources.epochs_per_iteration,
                            storage=str(self.out_dir / "train"), test=test, space=self.space,
                            max_failures=self.search.max_failures, source=source)


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def plan_search(cfg: FinetuneConfig, search: SearchConfig, checkpoint: str | None, out_dir: str | Path, name: str, *,
                resume: bool = False, trainable: Callable[..., None] = finetune_trial) -> SearchRun:
    """Prepare the data subsets and the resource plan (Ray must be connected)."""
    out = Path(out_dir).absolute()
    res = search.resources
    per_trial = trial_cpus(res.executor, res.cpus_per_trial, cfg.workers, cfg.cpus_per_worker)
    concurrent = max_concurrent_trials(_cluster_cpus(), per_trial, res.reserve_cpus, res.max_concurrent)
    if (search.pbt.enabled and res.executor == "train" and search.pbt.population > concurrent
            and not (out / "stages" / "pbt.json").is_file()):
        raise ValueError(
            f"search.pbt.population is {search.pbt.population} but only {concurrent} trials fit at once with "
            "executor 'train' (each trial's TorchTrainer asks for its workers outside Tune, so Tune cannot "
            "time-multiplex them, and members beyond that would start only after earlier ones finished): lower "
            "the population, use search.resources.executor: local, or add CPUs")
    paths = prepare_data(cfg, str(out / "data"))
    log.info("search %s: %d trials at a time (%.2f CPUs each, %.0f reserved)", name, concurrent, per_trial,
             res.reserve_cpus)
    return SearchRun(cfg, search, checkpoint, out, name, paths, concurrent, resume, trainable)


def run_search(run: SearchRun) -> dict[str, StageResult]:
    """Run (or resume) every enabled stage in order; returns the stage results by name."""
    search, cfg = run.search, run.cfg
    if search.hpo.when == "before":
        result = run_hpo(run, cfg, run.context(cfg, test=False))
        cfg = cfg.with_updates(**result.extra["best_hparams"])
    run_baselines(run, cfg)
    if search.pbt.enabled:
        pbt = run_pbt(run, cfg)
        schedule = Schedule.from_dict(pbt.extra["schedule"])
        test_best_member(run, cfg)
        run_replay(run, cfg, schedule)
        if search.evaluate_seeds:
            run_evaluation(run, cfg, schedule)
        if search.hpo.when == "after":
            run_hpo(run, cfg, run.context(cfg, test=False, source=schedule.to_dict()), stage="hpo_after")
    predict_final_models(run, cfg)
    return run.results


# ---------------------------------------------------------------- one stage


def _stage_file(run: SearchRun, stage: str) -> Path:
    return run.out_dir / "stages" / f"{stage}.json"


def _history_file(run: SearchRun, stage: str) -> Path:
    return run.out_dir / "stages" / f"{stage}.results.jsonl"


class ResultLog(Callback):
    """Appends every trial result of a stage to a JSON-lines file, flushed per line, so that
    compute accounting and histories survive pauses, restarts and a killed driver (rows
    re-trained after a restore appear twice, as they were trained twice)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        row = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) and k not in _SKIP}
        row["trial_id"] = trial.trial_id
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


_SKIP = {"date", "hostname", "node_ip", "pid", "timestamp", "time_since_restore", "iterations_since_restore"}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The rows a ``ResultLog`` wrote (every report of every trial of a stage, in order)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_history(out_dir: str | Path, stage: str) -> list[dict[str, Any]]:
    """Every report of a finished or running stage of the search in ``out_dir``."""
    return read_history(Path(out_dir).absolute() / "stages" / f"{stage}.results.jsonl")


def _tuner(run: SearchRun, stage: str, ctx: TrialContext, param_space: dict[str, Any], *,
           limit_concurrency: bool = True, **tune_kwargs: Any):
    """A new Tuner for ``stage``, or the interrupted one restored (``run.resume``).
    ``limit_concurrency=False``: no cap on live trials (trial resources alone decide what runs)."""
    from ray import tune

    res = run.search.resources
    per_trial = trial_cpus(res.executor, res.cpus_per_trial, ctx.cfg.workers, ctx.cfg.cpus_per_worker)
    resources = {"CPU": per_trial if res.executor == "local" else round(per_trial - ctx.cfg.workers * ctx.cfg.cpus_per_worker, 4)}
    trainable = tune.with_resources(tune.with_parameters(run.trainable, ctx=ctx), resources)
    storage = (run.out_dir / "tune").absolute()
    experiment = storage / f"{run.name}-{stage}"
    if experiment.exists():
        if not run.resume:
            raise FileExistsError(f"{experiment} exists from an earlier search: resume it (--resume) or "
                                  "choose another output folder")
        if tune.Tuner.can_restore(str(experiment)):
            log.info("restoring the %s stage from %s", stage, experiment)
            return tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
        log.warning("%s holds no restorable Tune state (stopped before its first save): starting it again", experiment)
        shutil.rmtree(experiment)
    tune_config = tune.TuneConfig(metric=run.search.metric, mode="max",
                                  max_concurrent_trials=run.max_concurrent if limit_concurrency else None,
                                  **tune_kwargs)
    history = _history_file(run, stage)
    history.parent.mkdir(parents=True, exist_ok=True)
    history.unlink(missing_ok=True)  # a fresh stage: no rows from an earlier, unrestorable attempt
    run_config = tune.RunConfig(
        name=experiment.name, storage_path=str(storage), callbacks=[ResultLog(str(history))],
        failure_config=tune.FailureConfig(max_failures=run.search.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # PBT exploits need every checkpoint
        verbose=0,
    )
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _trial_rows(grid, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per trial: id, config, epochs trained (every report, re-trained ones included),
    last metrics, error."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        by_trial.setdefault(row["trial_id"], []).append(row)
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_id = _trial_id(result.path) or metrics.get("trial_id")
        reports = by_trial.get(trial_id, [])
        last = reports[-1] if reports else metrics
        vals = [r["val_acc"] for r in reports if "val_acc" in r]
        rows.append({
            "trial_id": trial_id,
            "config": {k: v for k, v in (result.config or {}).items()},
            "epochs_trained": int(sum(r.get("epochs_run", 0) for r in reports)),
            "epoch": last.get("epoch"),
            "val_acc": last.get("val_acc"),
            "best_val_acc": max(vals) if vals else None,
            "test_acc": last.get("test_acc"),
            "iterations": len(reports),
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "path": result.path,
        })
    return rows


def _trial_id(path: str) -> str | None:
    """A trial's id from its folder name (``<trainable>_<5 hex>_<5 digits>_...``). The result's
    ``trial_id`` metric is not used: after an exploit at a trial's last iteration Tune leaves it
    with the donor's last result."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(path).name)
    return match.group(1) if match else None


def _run_stage(run: SearchRun, stage: str, ctx: TrialContext, param_space: dict[str, Any],
               finish: Callable[[list[dict[str, Any]], Any], dict[str, Any]] | None = None,
               **tune_kwargs: Any) -> StageResult:
    done = _stage_file(run, stage)
    if done.is_file():
        result = StageResult.from_dict(json.loads(done.read_text()))
        run.results[stage] = result
        log.info("stage %s already done (%d trials)", stage, len(result.trials))
        return result
    start = time.perf_counter()
    grid = _tuner(run, stage, ctx, param_space, **tune_kwargs).fit()
    rows = _trial_rows(grid, read_history(_history_file(run, stage)))
    failed = [r for r in rows if r["error"]]
    if failed and len(failed) == len(rows):
        raise RuntimeError(f"stage {stage}: every trial failed; first error: {failed[0]['error']}")
    extra = finish(rows, grid) if finish else {}
    result = StageResult(stage, rows, time.perf_counter() - start, extra)
    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    os.replace(tmp, done)
    run.results[stage] = result
    return result


# ---------------------------------------------------------------- the stages


def run_baselines(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Every baseline policy for ``cfg.epochs`` epochs, tested at the end."""
    from ray import tune

    specs = run.search.baselines.specs()
    return _run_stage(run, "baselines", run.context(cfg, test=True), {"policy": tune.grid_search(specs)})


class SynchPBT(PopulationBasedTraining):
    """Tune's PBT, plus a way out of one synchronous-mode stall: a paused member is resumed only
    while its last recorded train time is below the next sync point, and that point only moves when
    a result arrives. When members drift out of step (a restored search restarts a member whose
    checkpoint was not saved in time) and the others have finished, the last member can wait for
    a sync point that never comes. Then, with nothing running, the least advanced waiting member runs."""

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        from ray.tune.experiment import Trial

        trial = super().choose_trial_to_run(tune_controller)
        if trial is not None or not self._synch:
            return trial
        trials = tune_controller.get_trials()
        if any(t.status == Trial.RUNNING for t in trials):
            return None
        waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)]
        return min(waiting, key=lambda t: self._trial_state[t].last_train_time) if waiting else None


def pbt_scheduler(run: SearchRun):
    """Tune's PBT (``SynchPBT``) with PBA's explore as ``custom_explore_fn``."""
    pbt = run.search.pbt
    return SynchPBT(
        time_attr="training_iteration", perturbation_interval=pbt.perturbation_interval, burn_in_period=pbt.burn_in,
        quantile_fraction=pbt.quantile_fraction, hyperparam_mutations={},
        custom_explore_fn=PBAExplorer("pba", pbt.seed, pbt.resample_probability, run.space), log_config=True,
        synch=pbt.synch,
    )


def run_pbt(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """PBT over PBA's encoding; the best trial's schedule is extracted into ``extra``."""
    from ray import tune

    def finish(rows: list[dict[str, Any]], grid) -> dict[str, Any]:
        return extract_schedule(run, cfg, rows, Path(grid.experiment_path))

    # members differ by seed (head init, data order, augmentation draws); PBA's start is no
    # augmentation (init: zeros), or each member draws its own starting policy (init: random)
    pbt = run.search.pbt
    seeds = [cfg.seed + i for i in range(pbt.population)]
    space: dict[str, Any] = {"seed": tune.grid_search(seeds)}
    space["pba"] = run.space.zeros() if pbt.init == "zeros" else tune.sample_from(RandomStart(run.space, pbt.seed))
    if pbt.epochs is not None:
        space["epochs"] = pbt.epochs
    # Tune's cap on live trials holds back trials not yet started, so a population larger than the
    # cap would run in batches that never meet. Local trials hold their CPUs as Tune resources,
    # so without the cap PBT time-multiplexes the whole population over the slots that fit
    # (``plan_search`` refuses a larger population with the train executor).
    return _run_stage(run, "pbt", run.context(cfg, test=False), space, finish, scheduler=pbt_scheduler(run),
                      reuse_actors=False, limit_concurrency=run.search.resources.executor != "local")


class RandomStart:
    """A member's starting encoding: a uniform draw seeded by (search seed, member seed), so a
    search's starting population depends on its seeds only (``tune.sample_from``)."""

    def __init__(self, space: PBASpace, seed: int) -> None:
        self.space, self.seed = space, seed

    def __call__(self, spec: Any) -> list[int]:
        return self.space.random(np.random.default_rng([self.seed, int(spec.config["seed"])]))


def search_stretch(cfg: FinetuneConfig, search: SearchConfig) -> float:
    """Factor from a PBT member's epochs to the replay's (1.0 unless ``search.pbt.epochs`` is set)."""
    return cfg.epochs / search.pbt.epochs if search.pbt.epochs else 1.0


def extract_schedule(run: SearchRun, cfg: FinetuneConfig, rows: list[dict[str, Any]], experiment: Path
                     ) -> dict[str, Any]:
    """The best trial (last validation accuracy among members that reached the last epoch) and
    its schedule, from its PBT policy log. Tune's PBT occasionally terminates a member early
    without an error (ray-project/ray#11906); such members are listed, never chosen."""
    ok = [r for r in rows if r["val_acc"] is not None]
    last = max(r["epoch"] or 0 for r in ok)
    complete = [r for r in ok if r["epoch"] == last]
    stopped = sorted(r["trial_id"] for r in ok if r["epoch"] != last)
    if stopped:
        log.warning("PBT members %s stopped before epoch %d without an error", stopped, last)
    best = max(complete, key=lambda r: r["val_acc"])
    log_file = experiment / f"pbt_policy_{best['trial_id']}.txt"
    rows_log = read_policy_log(log_file) if log_file.is_file() else []
    initial, changes = config_changes(rows_log, initial=best["config"])
    stretch = search_stretch(cfg, run.search)
    schedule = schedule_from_changes(initial, changes, run.space, "pba", run.search.resources.epochs_per_iteration,
                                     stretch=stretch)
    global_log = experiment / "pbt_global.txt"
    history = read_policy_log(global_log) if global_log.is_file() else []
    return {
        "best_trial": best["trial_id"],
        "best_val_acc": best["val_acc"],
        "stopped_early": stopped,
        "policy_log": str(log_file) if log_file.is_file() else None,
        "schedule": schedule.to_dict(),
        "stretch": stretch,
        "changes": [[step, conf["pba"]] for step, conf in changes],
        "exploits": [{"trial": r[0], "donor": r[1], "trial_iteration": r[2], "donor_iteration": r[3],
                      "explored": r[4].get("pba") != r[5].get("pba")} for r in history],
    }


def _final_checkpoint(trial: dict[str, Any]) -> Path | None:
    """The checkpoint a tested trial's test accuracy was measured on: its last one."""
    if trial.get("checkpoint"):
        return Path(trial["checkpoint"])
    checkpoints = sorted(Path(trial["path"]).glob("checkpoint_*")) if trial.get("path") else []
    return checkpoints[-1] if checkpoints else None


def test_best_member(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """The best PBT member's final model (a product of the search, no training) on the test split."""
    done = _stage_file(run, "pbt_best")
    if done.is_file():
        run.results["pbt_best"] = StageResult.from_dict(json.loads(done.read_text()))
        return run.results["pbt_best"]
    pbt = run.results["pbt"]
    best = next(t for t in pbt.trials if t["trial_id"] == pbt.extra["best_trial"])
    final = _final_checkpoint(best)
    if final is None:
        raise FileNotFoundError(f"{best['path']}: the best PBT member left no checkpoint")
    start = time.perf_counter()
    member_cfg = cfg.with_updates(**{k: best["config"][k] for k in HPARAMS if k in best["config"]})
    metrics = evaluate_checkpoint(member_cfg, run.paths, run.checkpoint, final, "test")
    row = {**best, "test_acc": metrics["test_acc"], "epoch": metrics["epoch"], "epochs_trained": 0,
           "checkpoint": str(final)}
    result = StageResult("pbt_best", [row], time.perf_counter() - start)
    done.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    run.results["pbt_best"] = result
    return result


def predict_final_models(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Test-split predictions of every tested final model of the baselines, ``pbt_best`` and
    ``replay`` stages (``<out>/predictions/<stage>-<trial>.npy``, the labels in ``labels.npy``),
    for paired comparisons in the report. A model whose recomputed accuracy differs from the one
    its trial reported is recorded as such and left out of the comparisons (``matches``)."""
    done = _stage_file(run, "predictions")
    if done.is_file():
        run.results["predictions"] = StageResult.from_dict(json.loads(done.read_text()))
        return run.results["predictions"]
    start = time.perf_counter()
    tested = [(stage, t, _final_checkpoint(t)) for stage in ("baselines", "pbt_best", "replay")
              if stage in run.results for t in run.results[stage].trials if t.get("test_acc") is not None]
    missing = [f"{stage} trial {t['trial_id']}" for stage, t, ckpt in tested if ckpt is None]
    if missing:
        log.warning("no checkpoint left to predict the test split with for %s", ", ".join(missing))
    tested = [(stage, t, ckpt) for stage, t, ckpt in tested if ckpt is not None]
    if not tested:
        result = StageResult("predictions", [], time.perf_counter() - start, {"labels": None})
        run.results["predictions"] = result
        return result
    folder = run.out_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    labels, predicted = predict_checkpoints(cfg, run.paths, run.checkpoint, [ckpt for *_, ckpt in tested])
    np.save(folder / "labels.npy", labels.astype(np.int16))
    rows = []
    for (stage, trial, ckpt), pred in zip(tested, predicted):
        file = folder / f"{stage}-{trial['trial_id']}.npy"
        np.save(file, pred["predictions"].astype(np.int16))
        acc = float(np.mean(pred["predictions"] == labels))
        matches = abs(acc - float(trial["test_acc"])) < 0.5 / len(labels)
        if not matches:
            log.warning("%s trial %s: %s predicts %.4f on test, the trial reported %.4f; left out of the paired "
                        "comparisons", stage, trial["trial_id"], ckpt, acc, trial["test_acc"])
        rows.append({"stage": stage, "trial_id": trial["trial_id"], "checkpoint": str(ckpt), "epoch": pred["epoch"],
                     "test_acc": acc, "reported_test_acc": trial["test_acc"], "matches": matches,
                     "predictions": str(file), "epochs_trained": 0})
    result = StageResult("predictions", rows, time.perf_counter() - start, {"labels": str(folder / "labels.npy")})
    done.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    run.results["predictions"] = result
    return result


def run_replay(run: SearchRun, cfg: FinetuneConfig, schedule: Schedule) -> StageResult:
    """Train the searched schedule from the pretrained checkpoint again, per replay seed, and test."""
    from ray import tune

    seeds = list(run.search.replay_seeds)
    space = {"seed": tune.grid_search(seeds)} if len(seeds) > 1 else {"seed": seeds[0]}
    return _run_stage(run, "replay", run.context(cfg, test=True, source=schedule.to_dict()), space)


def evaluation_methods(run: SearchRun) -> list[str]:
    """What the evaluation stage trains again: no augmentation, TrivialAugment, the RandAugment
    grid's best point (validation accuracy) and the searched schedule."""
    trials = run.results["baselines"].trials
    grid = [t for t in trials if str(t["config"].get("policy", "")).startswith("rand-") and t["val_acc"] is not None]
    best_ra = [max(grid, key=lambda t: t["val_acc"])["config"]["policy"]] if grid else []
    return ["none", "trivialaugment", *best_ra, "searched"]


def run_evaluation(run: SearchRun, cfg: FinetuneConfig, schedule: Schedule) -> StageResult:
    """Each method of ``evaluation_methods`` with every ``search.evaluate_seeds`` seed, tested."""
    from ray import tune

    space = {"method": tune.grid_search(evaluation_methods(run)), "seed": tune.grid_search(list(run.search.evaluate_seeds))}
    return _run_stage(run, "evaluate", run.context(cfg, test=True, source=schedule.to_dict()), space)


def hpo_space(run: SearchRun, cfg: FinetuneConfig) -> dict[str, Any]:
    """Optuna's search space over the fine-tune hyperparameters."""
    from ray import tune

    hpo = run.search.hpo
    space: dict[str, Any] = {
        "lr": tune.loguniform(*hpo.lr),
        "weight_decay": tune.loguniform(*hpo.weight_decay),
        "label_smoothing": tune.uniform(*hpo.label_smoothing),
    }
    if cfg.mode == "full":
        space["layer_decay"] = tune.uniform(*hpo.layer_decay)
    if hpo.epochs:
        space["epochs"] = tune.choice(list(hpo.epochs))
    return space


def run_hpo(run: SearchRun, cfg: FinetuneConfig, ctx: TrialContext, stage: str = "hpo") -> StageResult:
    """ASHA (early stopping) + Optuna (TPE) over ``hpo_space``; the best hyperparameters go to ``extra``."""
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    hpo = run.search.hpo
    if ctx.source is None:
        ctx = replace(ctx, cfg=ctx.cfg.with_updates(policy=hpo.policy))
    max_epochs = max(hpo.epochs or (cfg.epochs,))
    max_t = math.ceil(max_epochs / run.search.resources.epochs_per_iteration)
    scheduler = AsyncHyperBandScheduler(time_attr="training_iteration", max_t=max_t,
                                        grace_period=min(hpo.grace_period, max_t),
                                        reduction_factor=hpo.reduction_factor)
    searcher = OptunaSearch(seed=hpo.seed)
    keys = list(hpo_space(run, cfg))

    def finish(rows: list[dict[str, Any]], grid) -> dict[str, Any]:
        ok = [r for r in rows if r["val_acc"] is not None]
        best = max(ok, key=lambda r: r["val_acc"])
        return {"best_trial": best["trial_id"], "best_val_acc": best["val_acc"],
                "best_hparams": {k: best["config"][k] for k in keys}, "max_t": max_t}

    return _run_stage(run, stage, ctx, hpo_space(run, cfg), finish, scheduler=scheduler, search_alg=searcher,
                      num_samples=hpo.num_samples)
