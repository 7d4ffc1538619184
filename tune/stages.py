"""The machinery every search stage shares: a stage is one Ray Tune run whose trials fine-tune the
pretrained checkpoint; its rows and products are written to ``stages/<stage>.json`` when it is
done (so a resumed search skips it), and every report of every trial to
``stages/<stage>.results.jsonl`` as it arrives (compute is counted from these rows: Tune's own
per-trial files can lag behind across pauses and restores). An unfinished stage is restored
with ``Tuner.restore`` (errored trials resumed) when the search resumes.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from augtrain.pipelines import console
from augtrain.pipelines.data.storage import write_text_atomic
from augtrain.pipelines.finetune import DataPaths, FinetuneConfig
from augtrain.tune.config import SearchConfig
from augtrain.tune.pba import PBASpace
from augtrain.tune.progress import StageProgress
from augtrain.tune.resources import trial_cpus
from augtrain.tune.trainable import TrialContext, finetune_trial

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
    folds: tuple[DataPaths, ...] = ()  # the selection stages' further labelled/validation splits (search.folds)

    @property
    def space(self) -> PBASpace:
        return self.search.pbt.space()

    def context(self, cfg: FinetuneConfig, test: bool, source: Any = None,
                methods: dict[str, dict[str, Any]] | None = None, folds: bool = True) -> TrialContext:
        """The trials' context; ``folds=False``: the first labelled/validation split alone (the
        evaluation stage's seeds)."""
        return TrialContext(cfg=cfg, paths=self.paths, folds=self.folds if folds else (),
                            checkpoint=self.checkpoint, executor=self.search.resources.executor,
                            epochs_per_iteration=self.search.resources.epochs_per_iteration,
                            storage=str(self.out_dir / "train"), test=test, space=self.space,
                            max_failures=self.search.max_failures, source=source, methods=methods)


def stage_file(run: SearchRun, stage: str) -> Path:
    return run.out_dir / "stages" / f"{stage}.json"


def history_file(run: SearchRun, stage: str) -> Path:
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


def tuner(run: SearchRun, stage: str, ctx: TrialContext, param_space: dict[str, Any], *,
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
    history = history_file(run, stage)
    history.parent.mkdir(parents=True, exist_ok=True)
    history.unlink(missing_ok=True)  # a fresh stage: no rows from an earlier, unrestorable attempt
    run_config = tune.RunConfig(
        name=experiment.name, storage_path=str(storage), callbacks=[ResultLog(str(history)), StageProgress(stage)],
        failure_config=tune.FailureConfig(max_failures=run.search.max_failures),
        # The PBT stage keeps every checkpoint, as before (its exploits restore members from
        # donors' checkpoints). Elsewhere a trial resumes (and is tested, and predicts) from its
        # last; the one before it stays in case the last was cut short. A trial saves every
        # epochs_per_iteration epochs, and keeping all of them ran to tens of GB per search.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if stage == "pbt" else 2),
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
            "val_loss": last.get("val_loss"),
            "best_val_acc": max(vals) if vals else None,
            "test_acc": last.get("test_acc"),
            "iterations": len(reports),
            "seconds": last.get("time_total_s"),
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "path": result.path,
        })
    return rows


def selection_key(trial: dict[str, Any]) -> tuple[float, float]:
    """How trials are ranked, higher first: validation accuracy, then the lower validation loss
    (with a few validation samples many trials tie on accuracy, and the loss still tells them
    apart; a trial recorded without one ranks last among its ties)."""
    loss = trial.get("val_loss")
    return trial["val_acc"], -loss if loss is not None else -math.inf


def _trial_id(path: str) -> str | None:
    """A trial's id from its folder name (``<trainable>_<5 hex>_<5 digits>_...``). The result's
    ``trial_id`` metric is not used: after an exploit at a trial's last iteration Tune leaves it
    with the donor's last result."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(path).name)
    return match.group(1) if match else None


def expected_trials(param_space: dict[str, Any], num_samples: int = 1) -> int:
    """The trials Tune creates for ``param_space``: every combination of its grid searches
    (``tune.grid_search``, top-level keys), ``num_samples`` times."""
    count = 1
    for value in param_space.values():
        if isinstance(value, dict) and "grid_search" in value:
            count *= len(value["grid_search"])
    return count * max(1, int(num_samples))


def run_stage(run: SearchRun, stage: str, ctx: TrialContext, param_space: dict[str, Any],
              finish: Callable[[list[dict[str, Any]], Any], dict[str, Any]] | None = None,
              **tune_kwargs: Any) -> StageResult:
    """Run ``stage`` (or take its finished result); ``finish(rows, grid)`` computes its ``extra``."""
    done = load_done(run, stage)
    if done is not None:
        console.say(f"{stage}: done earlier, reused ({len(done.trials)} trials)")
        return done
    start = time.perf_counter()
    grid = tuner(run, stage, ctx, param_space, **tune_kwargs).fit()
    # Tune ends its run on Ctrl-C and returns, holding only the trials it had created: the stage
    # is not done (counted against the trials the space asks for), and --resume restores it
    unfinished = max(len(grid), expected_trials(param_space, tune_kwargs.get("num_samples", 1))) \
        - grid.num_terminated - grid.num_errors
    if unfinished:
        raise KeyboardInterrupt(f"stage {stage} stopped with {unfinished} of {len(grid)} trials unfinished")
    rows = _trial_rows(grid, read_history(history_file(run, stage)))
    failed = [r for r in rows if r["error"]]
    if failed and len(failed) == len(rows):
        raise RuntimeError(f"stage {stage}: every trial failed; first error: {failed[0]['error']}")
    extra = finish(rows, grid) if finish else {}
    return save_done(run, StageResult(stage, rows, time.perf_counter() - start, extra))


def final_checkpoint(trial: dict[str, Any]) -> Path | None:
    """The checkpoint a tested trial's test accuracy was measured on: its last one."""
    if trial.get("checkpoint"):
        return Path(trial["checkpoint"])
    checkpoints = sorted(Path(trial["path"]).glob("checkpoint_*")) if trial.get("path") else []
    return checkpoints[-1] if checkpoints else None



def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, written under a temporary name and renamed."""
    write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")


def load_done(run: SearchRun, stage: str) -> StageResult | None:
    """A finished stage's result (also recorded in ``run.results``), or None."""
    done = stage_file(run, stage)
    if not done.is_file():
        return None
    run.results[stage] = StageResult.from_dict(json.loads(done.read_text()))
    return run.results[stage]


def save_done(run: SearchRun, result: StageResult) -> StageResult:
    """Record a finished stage in ``run.results`` and ``stages/<stage>.json``."""
    write_json(stage_file(run, result.stage), result.to_dict())
    run.results[result.stage] = result
    return result
