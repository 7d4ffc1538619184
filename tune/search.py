"""A whole augmentation search on a pretrained checkpoint, in stages, each one Ray Tune run (or, for
the controls, a computation on the driver) whose result is kept under ``stages/``:

1. ``hpo`` (when ``search.hpo.when == "before"``): ASHA + Optuna over fine-tune hyperparameters
   with one fixed policy; the best ones are used by every later stage (``tune.hpo``).
2. ``controls``: logistic regression on raw pixels and a kNN of the checkpoint (``tune.evaluation``).
3. ``baselines``: no augmentation, ``basic``, TrivialAugment and the RandAugment (N, M) grid,
   each a trial of the full length, tested on the held-out split at the end.
4. the search method (``search.method``) over the joint space of policy and hyperparameters:
   ``halving`` (the default), ``tpe`` or ``random`` (``tune.methods``), whose product is the
   ``searched`` stage; or ``pbt`` (PBA's encoding, ``tune.pbt``: ``pbt``, ``pbt_best``, ``replay``).
5. ``random_search`` (``search.random``): random points at full length at the method's compute,
   the search's control.
6. ``evaluate``: every row of the comparison trained again with ``search.evaluate_seeds``, and the
   controls that train (linear probe, the same network from scratch with and without the searched
   policy) with every seed.
7. ``distill`` (``search.distill.enabled``): each searched model as the teacher of a student
   trained on its soft labels over the unlabelled pool (``tune.distillation``).
8. ``hpo_after`` (PBT with ``when: after``): the same HPO, with the searched schedule as the policy.
9. ``predictions``: every tested final model predicts the test split again from its last
   checkpoint, so that the report can compare any two of them sample by sample (``significance``).

``resume=True`` skips finished stages and restores an unfinished one with ``Tuner.restore``.
Failed trials are retried ``search.max_failures`` times from their last checkpoint. The search's
results and their report: ``tune.report``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from augtrain.augment import Schedule
from augtrain.pipelines.finetune import FinetuneConfig, predict_checkpoints, prepare_data
from augtrain.tune.config import SearchConfig
from augtrain.tune.distillation import run_distill
from augtrain.tune.evaluation import run_controls, run_evaluation
from augtrain.tune.hpo import run_hpo
from augtrain.tune.methods import METHODS, run_random
from augtrain.tune.pbt import run_pbt, run_replay, score_best_member
from augtrain.tune.resources import max_concurrent_trials, trial_cpus
from augtrain.tune.stages import SearchRun, StageResult, final_checkpoint, load_done, run_stage, save_done
from augtrain.tune.trainable import finetune_trial

log = logging.getLogger(__name__)

# stages whose tested trials are final models (their test predictions are compared pairwise)
TESTED_STAGES = ("baselines", "pbt_best", "replay", "searched", "random_search", "evaluate", "distill")


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def check_searchable(cfg: FinetuneConfig, search: SearchConfig) -> None:
    """The joint space, the baselines and the method fit the fine-tune's modality (ValueError
    naming the range, spec or method at fault)."""
    space = search.space.build(cfg.modality)  # a modality without a joint space is refused by name
    if space.searches_synthetic and cfg.synthetic is None:
        raise ValueError("search.space.synthetic_fraction / synthetic_min_confidence search the mix of generated "
                         "samples, but finetune.synthetic names no generated shards (augtrain generate)")
    search.baselines.specs(cfg.modality)
    if search.folds > 1 and (search.resources.executor != "local" or not cfg.val_labels):
        raise ValueError(f"search.folds {search.folds} trains each trial on several splits in its own process: it "
                         "needs search.resources.executor: local and a validation split (finetune.val_labels > 0)")
    if search.method == "pbt" and not space.family.pbt:
        raise ValueError(f"search.method 'pbt': PBA's schedules are made of image ops, not {cfg.modality} ops; "
                         f"use halving, tpe or random")


def plan_search(cfg: FinetuneConfig, search: SearchConfig, checkpoint: str | None, out_dir: str | Path, name: str, *,
                resume: bool = False, trainable: Callable[..., None] = finetune_trial) -> SearchRun:
    """Prepare the data subsets and the resource plan (Ray must be connected)."""
    out = Path(out_dir).absolute()
    check_searchable(cfg, search)
    res = search.resources
    per_trial = trial_cpus(res.executor, res.cpus_per_trial, cfg.workers, cfg.cpus_per_worker)
    concurrent = max_concurrent_trials(_cluster_cpus(), per_trial, res.reserve_cpus, res.max_concurrent)
    if (search.method == "pbt" and res.executor == "train" and search.pbt.population > concurrent
            and not (out / "stages" / "pbt.json").is_file()):
        raise ValueError(
            f"search.pbt.population is {search.pbt.population} but only {concurrent} trials fit at once with "
            "executor 'train' (each trial's TorchTrainer asks for its workers outside Tune, so Tune cannot "
            "time-multiplex them, and members beyond that would start only after earlier ones finished): lower "
            "the population, use search.resources.executor: local, or add CPUs")
    if search.method in ("halving", "tpe", "random") and cfg.size is None and any(search.space.build(cfg.modality).crop):
        raise ValueError("search.space.crop holds random-resized crops, which need an output size: set "
                         "finetune.size (the images' side) or search.space.crop: [0]")
    paths = prepare_data(cfg, str(out / "data"))
    folds = tuple(prepare_data(cfg.with_updates(label_seed=cfg.label_seed + k), str(out / "data" / f"fold-{k}"))
                  for k in range(1, search.folds))
    cfg = cfg.for_labelled(paths.num_labelled)  # every stage's schedule length, fixed once
    log.info("search %s: %d trials at a time (%.2f CPUs each, %.0f reserved)%s", name, concurrent, per_trial,
             res.reserve_cpus, f"; {search.folds} labelled/validation splits a trial" if folds else "")
    return SearchRun(cfg, search, checkpoint, out, name, paths, concurrent, resume, trainable, folds=folds)

def run_search(run: SearchRun) -> dict[str, StageResult]:
    """Run (or resume) every enabled stage in order; returns the stage results by name."""
    search, cfg = run.search, run.cfg
    if search.hpo.when == "before":
        result = run_hpo(run, cfg, run.context(cfg, test=False))
        cfg = cfg.with_updates(**result.extra["best_hparams"])
    if search.controls.enabled:
        run_controls(run, cfg)
    run_baselines(run, cfg)
    if search.method == "pbt":
        pbt = run_pbt(run, cfg)
        schedule = Schedule.from_dict(pbt.extra["schedule"])
        score_best_member(run, cfg)
        run_replay(run, cfg, schedule)
    elif search.method != "none":
        searched = METHODS[search.method](run, cfg)
        if search.random.enabled and search.method != "random":
            run_random(run, cfg, budget=searched.extra["search_trial_epochs"])
    run_evaluation(run, cfg)
    if search.distill.enabled:
        run_distill(run, cfg)
    if search.method == "pbt" and search.hpo.when == "after":
        run_hpo(run, cfg, run.context(cfg, test=False, source=schedule.to_dict()), stage="hpo_after")
    predict_final_models(run, cfg)
    return run.results


def run_baselines(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Every baseline policy for the full length, tested at the end."""
    from ray import tune

    specs = run.search.baselines.specs(cfg.modality)
    return run_stage(run, "baselines", run.context(cfg, test=True), {"policy": tune.grid_search(specs)})


def predict_final_models(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Test-split predictions of every tested final model of the ``TESTED_STAGES``
    (``<out>/predictions/<stage>-<trial>.npy``, the labels in ``labels.npy``), for paired
    comparisons in the report. A model whose recomputed accuracy differs from the one its trial
    reported is recorded as such and left out of the comparisons (``matches``)."""
    done = load_done(run, "predictions")
    if done is not None:
        return done
    start = time.perf_counter()
    tested = [(stage, t, final_checkpoint(t)) for stage in TESTED_STAGES
              if stage in run.results for t in run.results[stage].trials if t.get("test_acc") is not None]
    missing = [f"{stage} trial {t['trial_id']}" for stage, t, ckpt in tested if ckpt is None]
    if missing:
        log.warning("no checkpoint left to predict the test split with for %s", ", ".join(missing))
    tested = [(stage, t, ckpt) for stage, t, ckpt in tested if ckpt is not None]
    if not tested:
        return save_done(run, StageResult("predictions", [], time.perf_counter() - start, {"labels": None}))
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
    return save_done(run, StageResult("predictions", rows, time.perf_counter() - start,
                                      {"labels": str(folder / "labels.npy")}))
