"""Fine-tune hyperparameter optimisation: ASHA (early stopping) + Optuna's TPE over learning rate,
weight decay, label smoothing, layer decay and length, with one fixed policy (``search.hpo``);
``when: before`` feeds its best hyperparameters to every later stage, ``after`` tunes them for
the searched PBT schedule.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.tune.stages import SearchRun, StageResult, run_stage
from augtrain.tune.trainable import TrialContext


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

    return run_stage(run, stage, ctx, hpo_space(run, cfg), finish, scheduler=scheduler, search_alg=searcher,
                     num_samples=hpo.num_samples)
