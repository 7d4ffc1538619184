"""A search stage's progress on the driver: ``StageProgress`` is a Tune callback that draws a bar
over the stage's trials (``pipelines.console.Progress``), prints a compact row per finished
trial on a terminal (what it tried, its validation and test accuracy, epochs, time), and one
summary line per stage everywhere, CI logs included."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from augtrain.pipelines.console import Progress, duration
from augtrain.tune.space import JointSpace, describe


def trial_label(config: dict[str, Any], width: int = 72) -> str:
    """What a trial tried, in one short cell: a policy, a joint-space point, a row and seed."""
    if "case" in config and isinstance(config["case"], dict):
        case = config["case"]
        label = f"{case.get('method')} seed {case.get('seed')}"
    elif "point" in config and isinstance(config["point"], dict) and JointSpace.is_point(config["point"]):
        label = describe(config["point"])
    elif "policy" in config:
        label = str(config["policy"])
    else:
        label = ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if not isinstance(v, dict))
    return label if len(label) <= width else label[: width - 3] + "..."


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


class StageProgress(Callback):
    """Progress of one Tune run (a stage of the search). Picklable: Tune saves its callbacks with
    the experiment; the bar itself is made again in ``setup``."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._reset()

    def _reset(self) -> None:
        self.progress: Progress | None = None
        self.finished, self.errors, self.best_val, self.epochs = 0, 0, None, set()

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.stage = state["stage"]
        self._reset()

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.progress = Progress(self.stage, total_num_samples, "trials")

    def _finished(self, trial: Any, error: bool) -> None:
        if self.progress is None:
            self.setup()
        result = dict(trial.last_result or {})
        self.finished += 1
        self.errors += int(error)
        val = result.get("val_acc")
        if isinstance(val, (int, float)):
            self.best_val = val if self.best_val is None else max(self.best_val, val)
        if isinstance(result.get("epoch"), int):
            self.epochs.add(result["epoch"])
        row = (f"  {trial_label(trial.config):<72}  val {_percent(val)}  test {_percent(result.get('test_acc'))}  "
               f"{result.get('epoch', '-')} epochs  {duration(result.get('time_total_s') or 0)}"
               + ("  FAILED" if error else ""))
        self.progress.update(done=self.finished, **({"best val %": round(100 * self.best_val, 2)}
                                                    if self.best_val is not None else {}))
        self.progress.note(row, detail=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, error=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.progress is None:
            return
        epochs = "/".join(str(e) for e in sorted(self.epochs)) or "-"
        summary = (f"{self.stage}: {self.finished} trials x {epochs} epochs in "
                   f"{duration(self.progress.elapsed)}"
                   + (f", best val {_percent(self.best_val)} %" if self.best_val is not None else "")
                   + (f", {self.errors} failed" if self.errors else ""))
        self.progress.close(summary)
