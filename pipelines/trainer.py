"""The one place a Ray Train ``TorchTrainer`` is built and run: pretraining, fine-tuning and the
data path's epoch stream all run their per-worker function through ``torch_trainer`` and ``fit``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from typing import Any


def torch_trainer(entry: Callable[[dict[str, Any]], None], config: dict[str, Any], *,
                  workers: int | tuple[int, int], cpus_per_worker: float, storage_path: str, name: str,
                  use_gpu: bool = False, max_failures: int = 0, extra_resources: Mapping[str, float] | None = None,
                  placement_strategy: str = "PACK", resize_interval_s: float = 60.0):
    """``entry(config)`` on ``workers`` Ray Train workers (``cpus_per_worker`` CPUs and
    ``extra_resources`` each, a GPU each with ``use_gpu``), results under
    ``storage_path/name``; a lost worker restarts the group up to ``max_failures`` times.

    ``workers=(MIN, MAX)``: an elastic group (Ray Train V2). It starts with as many workers as
    the cluster's nodes hold (at least MIN, at most MAX), and every ``resize_interval_s`` while it
    runs it checks again: when the count that fits differs, Ray Train stops the group and starts
    one of the new size, which calls ``entry`` again (it resumes from its last checkpoint). A
    resize is not a failure; a worker lost with its node is one (``max_failures``), after which
    the group restarts at the size that fits."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        entry,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=tuple(workers) if isinstance(workers, (tuple, list)) else workers,
                                     use_gpu=use_gpu, elastic_resize_monitor_interval_s=resize_interval_s,
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
