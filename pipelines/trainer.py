"""The one place a Ray Train ``TorchTrainer`` is built and run: pretraining, fine-tuning and the
data path's epoch stream all run their per-worker function through ``torch_trainer`` and ``fit``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from typing import Any


def torch_trainer(entry: Callable[[dict[str, Any]], None], config: dict[str, Any], *, workers: int,
                  cpus_per_worker: float, storage_path: str, name: str, use_gpu: bool = False,
                  max_failures: int = 0, extra_resources: Mapping[str, float] | None = None,
                  placement_strategy: str = "PACK"):
    """``entry(config)`` on ``workers`` Ray Train workers (``cpus_per_worker`` CPUs and
    ``extra_resources`` each, a GPU each with ``use_gpu``), results under
    ``storage_path/name``; a lost worker restarts the group up to ``max_failures`` times."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        entry,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **(extra_resources or {})},
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(name=name, storage_path=os.path.abspath(storage_path),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )


def fit(trainer):
    """``trainer.fit()``, with Ctrl-C raised as ``KeyboardInterrupt``. In the main thread Ray
    Train installs its own SIGINT handler for the run: it aborts the run's controller (the
    workers stop; the last complete checkpoint stays) and then calls ``sys.exit``, which would
    end the command without saying how to resume. Inside ``fit`` nothing else exits, so that
    ``SystemExit`` is turned back into the interrupt it was; Python's own handler is restored."""
    try:
        return trainer.fit()
    except SystemExit as exc:
        raise KeyboardInterrupt("the run was aborted by Ctrl-C") from exc
    finally:
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
