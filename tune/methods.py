"""Search methods over the joint space of policy and fine-tune hyperparameters (``tune.space``),
each a few Tune stages whose every trial is a complete fine-tune (its own warmup and cosine decay)
from the pretrained checkpoint:

- ``halving`` (the default): successive halving with restarts. Rung r trains its points for a
  fraction of the full length, keeps the best ``1 / eta`` by validation accuracy and trains them
  again, longer, from the checkpoint; the last rung is the full length, and its best point is
  the searched model. Unlike ASHA or PBT on one long run, a point is never judged mid-schedule,
  where few labels make rankings favour weak augmentation (docs/tune/README.md measured
  Spearman 0.25-0.42 between mid-run and final accuracy).
- ``tpe``: Optuna's TPE over complete short runs; the best point is trained again at full length.
- ``random``: random points at full length. Run beside any method as its control, at the
  method's compute (``search.random``).

Each method leaves one stage that names its product: ``searched`` (or ``random_search``), whose
trial is the chosen point's full-length model (tested) and whose ``extra`` holds the point, the
compute it took (``search_trial_epochs``, ``search_seconds``) and the stages it ran.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from augtrain.pipelines.finetune import FinetuneConfig
from augtrain.tune.space import describe
from augtrain.tune.stages import SearchRun, StageResult, load_done, run_stage, save_done, selection_key

log = logging.getLogger(__name__)


def rung_epochs(full: int, fraction: float) -> int:
    """Epochs of a complete schedule at ``fraction`` of a ``full``-epoch run, rounded down (at
    least one), so that a bracket never costs more than its fractions say: 9 -> 3 -> 1 at 1/9,
    1/3 and the full 50 epochs is 9 x 5 + 3 x 16 + 50 = 143 trial-epochs, under 3 full runs
    (rounding to the nearest, 6 and 17 epochs, made it 155)."""
    return max(1, math.floor(full * fraction + 1e-6))


def _ranked(result: StageResult) -> list[dict[str, Any]]:
    """A stage's trials that reported a validation accuracy, best first (``selection_key``; exact
    ties: earlier trial)."""
    ok = [t for t in result.trials if t["val_acc"] is not None and not t["error"]]
    if not ok:
        raise RuntimeError(f"stage {result.stage}: no trial reported a validation accuracy")
    return sorted(ok, key=selection_key, reverse=True)


def _point_of(trial: dict[str, Any]) -> dict[str, Any]:
    config = trial["config"]
    return dict(config["point"]) if "point" in config else {k: v for k, v in config.items()
                                                            if k not in ("epochs", "seed")}


def _product(run: SearchRun, name: str, method: str, best: dict[str, Any], stages: list[StageResult],
             **extra: Any) -> StageResult:
    point = _point_of(best)
    log.info("%s: %s (val %.4f)", method, describe(point), best["val_acc"])
    return save_done(run, StageResult(name, [best], sum(s.seconds for s in stages), {
        "method": method, "best_point": point, "best_trial": best["trial_id"], "best_val_acc": best["val_acc"],
        "search_trial_epochs": sum(s.trial_epochs for s in stages), "search_seconds": sum(s.seconds for s in stages),
        "stages": [s.stage for s in stages], **extra}))


def _points(run: SearchRun, count: int, offset: int = 0) -> list[dict[str, Any]]:
    """``count`` points drawn from the joint space with the search's seed (and ``offset``)."""
    space = run.search.space.build(run.cfg.modality)
    rng = np.random.default_rng([run.search.seed, offset])
    return [space.sample(rng) for _ in range(count)]


def run_halving(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Successive halving with restarts (module docstring); the product is the ``searched`` stage."""
    from ray import tune

    done = load_done(run, "searched")
    if done is not None:
        return done
    points = _points(run, run.search.halving.candidates)
    stages: list[StageResult] = []
    for r, (count, fraction) in enumerate(run.search.halving.rungs()):
        points = points[:count]
        epochs = rung_epochs(cfg.epochs, fraction)
        final = fraction >= 1.0
        log.info("halving rung %d: %d points x %d epochs", r, len(points), epochs)
        space = {"point": tune.grid_search(points), "epochs": epochs, "seed": cfg.seed}
        stages.append(run_stage(run, f"halving-r{r}", run.context(cfg, test=final), space))
        ranked = _ranked(stages[-1])
        points = [_point_of(t) for t in ranked]
    return _product(run, "searched", "halving", ranked[0], stages,
                    rungs=[[len(s.trials), s.trials[0]["config"]["epochs"]] for s in stages])


def run_tpe(run: SearchRun, cfg: FinetuneConfig) -> StageResult:
    """Optuna's TPE on complete runs of ``search.tpe.fraction`` of the length, then the best point
    at full length; the product is the ``searched`` stage."""
    from ray.tune.search.optuna import OptunaSearch

    done = load_done(run, "searched")
    if done is not None:
        return done
    tpe = run.search.tpe
    space = {**run.search.space.build(cfg.modality).tune_domains(), "epochs": rung_epochs(cfg.epochs, tpe.fraction),
             "seed": cfg.seed}
    short = run_stage(run, "tpe", run.context(cfg, test=False), space,
                      search_alg=OptunaSearch(seed=run.search.seed), num_samples=tpe.num_samples)
    best = _point_of(_ranked(short)[0])
    final = run_stage(run, "tpe-final", run.context(cfg, test=True),
                      {"point": best, "epochs": cfg.epochs, "seed": cfg.seed})
    return _product(run, "searched", "tpe", _ranked(final)[0], [short, final])


def run_random(run: SearchRun, cfg: FinetuneConfig, budget: int | None = None, name: str = "random_search"
               ) -> StageResult:
    """Random points of the joint space at full length, as many as ``search.random.num_samples``
    (``auto``: ``budget`` trial-epochs' worth); the best by validation accuracy is the product."""
    from ray import tune

    done = load_done(run, name)
    if done is not None:
        return done
    wanted = run.search.random.num_samples
    if wanted == "auto":
        if budget is None:
            raise ValueError("search.random.num_samples: auto needs a method's compute to match (or give a count)")
        wanted = max(1, math.floor(budget / cfg.epochs))
    points = _points(run, int(wanted), offset=run.search.random.seed_offset)
    stage = run_stage(run, "random", run.context(cfg, test=True),
                      {"point": tune.grid_search(points), "epochs": cfg.epochs, "seed": cfg.seed})
    return _product(run, name, "random", _ranked(stage)[0], [stage], points=len(points))


METHODS = {"halving": run_halving, "tpe": run_tpe, "random": run_random}
