"""Population-based training over PBA's policy encoding (Ho et al. 2019), kept as
``search.method: pbt``.

PBT's exploit copies the weights of the best members into the worst at every perturbation
interval and PBA's explore perturbs the copied policy; the best member's policy log is read
back into a schedule (policy per epoch range), which is replayed from the pretrained checkpoint
(``run_replay``) and tested, beside the best member's own final model (``score_best_member``).

Its measured limitation (docs/tune/README.md): PBT selects by mid-run validation accuracy, which
on few labels correlates weakly with final accuracy (Spearman 0.25 at epoch 10 of 90 on
Fashion-MNIST with 600 labels) and favours weak augmentation, so exploitation is greedy and the
replayed schedule averaged below the RandAugment grid's best over 23 searches (Chebykin et al.,
TMLR 2025, found the same greediness in PBT and its Bayesian variants).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import PopulationBasedTraining

from augtrain.augment import Schedule
from augtrain.pipelines.finetune import FinetuneConfig, evaluate_checkpoint
from augtrain.tune.config import SearchConfig
from augtrain.tune.pba import PBAExplorer, PBASpace, config_changes, read_policy_log, schedule_from_changes
from augtrain.tune.stages import SearchRun, StageResult, final_checkpoint, load_done, run_stage, save_done
from augtrain.tune.trainable import HPARAMS

log = logging.getLogger(__name__)


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
    return run_stage(run, "pbt", run.context(cfg, test=False), space, finish, scheduler=pbt_scheduler(run),
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



def score_best_member(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """The best PBT member's final model (a product of the search, no training) on the test split."""
    done = load_done(run, "pbt_best")
    if done is not None:
        return done
    pbt = run.results["pbt"]
    best = next(t for t in pbt.trials if t["trial_id"] == pbt.extra["best_trial"])
    final = final_checkpoint(best)
    if final is None:
        raise FileNotFoundError(f"{best['path']}: the best PBT member left no checkpoint")
    start = time.perf_counter()
    member_cfg = cfg.with_updates(**{k: best["config"][k] for k in HPARAMS if k in best["config"]})
    metrics = evaluate_checkpoint(member_cfg, run.paths, run.checkpoint, final, "test")
    row = {**best, "test_acc": metrics["test_acc"], "epoch": metrics["epoch"], "epochs_trained": 0,
           "checkpoint": str(final)}
    return save_done(run, StageResult("pbt_best", [row], time.perf_counter() - start))


def run_replay(run: SearchRun, cfg: FinetuneConfig, schedule: Schedule) -> StageResult:
    """Train the searched schedule from the pretrained checkpoint again, per replay seed, and test."""
    from ray import tune

    seeds = list(run.search.replay_seeds)
    space = {"seed": tune.grid_search(seeds)} if len(seeds) > 1 else {"seed": seeds[0]}
    return run_stage(run, "replay", run.context(cfg, test=True, source=schedule.to_dict()), space)

