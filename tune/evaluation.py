"""The comparison's rows beyond the search itself: the controls, and every row trained again with
more seeds, so that each accuracy in the table is a mean over seeds on the full test split.

- ``run_controls`` (stage ``controls``, no Tune): logistic regression on the raw pixels and a
  weighted kNN of the checkpoint's embeddings, on the same labelled subset and test split, their
  test predictions saved for the paired comparisons.
- ``run_evaluation`` (stage ``evaluate``): one trial per (row, seed). The rows: the pretrained
  model with no augmentation, TrivialAugment (when the baselines ran it) and the RandAugment
  grid's best point; the searched point (or PBT's schedule) and random search's best; and the
  controls that need training, a linear probe of the checkpoint and the same network from scratch
  without augmentation and with the searched policy and hyperparameters (not when the fine-tune
  starts from scratch itself: its own rows are those). Rows that the search already trained with
  ``finetune.seed`` get only ``search.evaluate_seeds``; the controls get every seed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from augtrain.pipelines import console
from augtrain.pipelines.finetune.controls import ControlResult, knn_of_checkpoint, raw_logistic_regression
from augtrain.pipelines.finetune import FinetuneConfig, load_data
from augtrain.tune.space import JointSpace, family
from augtrain.tune.stages import SearchRun, StageResult, load_done, run_stage, save_done, selection_key

# evaluation rows that are controls (trained with every seed, since no search trial has them)
SCRATCH_NONE, SCRATCH_SEARCHED, LINEAR_PROBE = "scratch: none", "scratch: searched", "linear probe"


def run_controls(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Logistic regression on raw pixels and a kNN of the checkpoint (when there is one)."""
    done = load_done(run, "controls")
    if done is not None:
        return done
    start = time.perf_counter()
    data = load_data(run.paths, cfg)
    results: list[tuple[str, ControlResult]] = [("logreg", raw_logistic_regression(data))]
    if run.checkpoint is not None:
        results.append(("knn", knn_of_checkpoint(data, cfg, run.checkpoint, k=run.search.controls.knn_k)))
    folder = run.out_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for key, result in results:
        file = folder / f"controls-{key}.npy"
        np.save(file, result.predictions.astype(np.int16))
        rows.append({"trial_id": key, "config": {"method": result.name, **result.params}, "val_acc": result.val_acc,
                     "test_acc": result.test_acc, "epochs_trained": 0, "epoch": None, "error": None,
                     "best_val_acc": result.val_acc, "predictions": str(file), "seconds": result.seconds})
    console.say("controls: " + ", ".join(f"{result.name} test {100 * result.test_acc:.2f} %" for _, result in results))
    return save_done(run, StageResult("controls", rows, time.perf_counter() - start))


def grid_best(run: SearchRun) -> str | None:
    """The baselines grid's best point (validation accuracy: RandAugment's for images, EDA's for
    text), as a policy spec."""
    base = run.results.get("baselines")
    prefix = family(run.cfg.modality).grid_prefix
    grid = [t for t in (base.trials if base else []) if str(t["config"].get("policy", "")).startswith(prefix)
            and t["val_acc"] is not None]
    return max(grid, key=selection_key)["config"]["policy"] if grid else None


def searched_method(run: SearchRun) -> dict[str, Any] | None:
    """The searched row's fine-tune overrides and policy source (joint point or PBT schedule)."""
    if "searched" in run.results:
        policy, hparams = JointSpace.decode(run.results["searched"].extra["best_point"])
        return {"overrides": hparams, "source": policy.to_dict()}
    if "pbt" in run.results:
        return {"overrides": {}, "source": run.results["pbt"].extra["schedule"]}
    return None


def evaluation_methods(run: SearchRun) -> dict[str, dict[str, Any]]:
    """Every row to train again, by name: fine-tune overrides, policy source and whether the
    search trained it with ``finetune.seed`` already (``trained``)."""
    methods: dict[str, dict[str, Any]] = {}
    base = {t["config"].get("policy") for t in run.results["baselines"].trials} if "baselines" in run.results else set()
    # no augmentation always (every row is read against it); the simple rule when the baselines ran it
    simple = family(run.cfg.modality).simple
    for spec in ("none", simple if simple in base else None, grid_best(run)):
        if spec is not None:
            methods[spec] = {"overrides": {}, "source": spec, "trained": spec in base}
    searched = searched_method(run)
    if searched is not None:
        methods["searched"] = {**searched, "trained": "searched" in run.results or "replay" in run.results}
    if "random_search" in run.results:
        policy, hparams = JointSpace.decode(run.results["random_search"].extra["best_point"])
        methods["random search"] = {"overrides": hparams, "source": policy.to_dict(), "trained": True}
    if run.search.controls.enabled and run.checkpoint is not None:
        methods[LINEAR_PROBE] = {"overrides": {"mode": "linear", "lr": run.search.controls.probe_lr},
                                 "source": "none", "trained": False}
    if run.search.controls.enabled and run.cfg.mode != "scratch":  # from scratch already: its own rows
        methods[SCRATCH_NONE] = {"overrides": {"mode": "scratch"}, "source": "none", "trained": False}
        if searched is not None:
            methods[SCRATCH_SEARCHED] = {"overrides": {**searched["overrides"], "mode": "scratch"},
                                         "source": searched["source"], "trained": False}
    return methods


def run_evaluation(run: SearchRun, cfg: FinetuneConfig) -> StageResult | None:
    """Each row of ``evaluation_methods`` with each seed it still needs, tested (None: nothing to train)."""
    from ray import tune

    done = load_done(run, "evaluate")
    if done is not None:
        return done
    methods = evaluation_methods(run)
    extra_seeds = [s for s in run.search.evaluate_seeds if s != cfg.seed]
    cases = [{"method": name, "seed": seed} for name, method in methods.items()
             for seed in (extra_seeds if method["trained"] else [cfg.seed, *extra_seeds])]
    if not cases:
        return None
    ctx = run.context(cfg, test=True, folds=False,
                      methods={k: {"overrides": v["overrides"], "source": v["source"]} for k, v in methods.items()})
    return run_stage(run, "evaluate", ctx, {"case": tune.grid_search(cases)})
