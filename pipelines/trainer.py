"""The one place a Ray Train ``TorchTrainer`` is built: pretraining, fine-tuning and the data
path's epoch stream all run their per-worker function through ``torch_trainer``."""

from __future__ import annotations

import os
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
