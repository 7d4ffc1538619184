"""Resource arithmetic for searches: pure functions of numbers, testable without a cluster."""

from __future__ import annotations

import math

DRIVER_CPU = 0.01  # a Tune function that only drives a TorchTrainer (0 is refused by Tune)


def trial_cpus(executor: str, cpus_per_trial: float, workers: int, cpus_per_worker: float) -> float:
    """Logical CPUs one trial holds: its driver plus its Train workers, or its own process."""
    if executor == "train":
        return DRIVER_CPU + workers * cpus_per_worker
    if executor == "local":
        return cpus_per_trial
    raise ValueError(f"search.resources.executor must be 'train' or 'local', got {executor!r}")


def max_concurrent_trials(cluster_cpus: float, per_trial: float, reserve_cpus: float,
                          requested: int | None = None) -> int:
    """Trials that fit at once while ``reserve_cpus`` stay free (Ray Data tasks each need a whole
    CPU; when trial workers take every CPU they wait for ever). ``requested`` caps the result.

    Raises when not even one trial fits, naming what to change.
    """
    if per_trial <= 0:
        raise ValueError(f"a trial must ask for some CPU, got {per_trial}")
    free = cluster_cpus - reserve_cpus
    fits = math.floor(free / per_trial + 1e-9)
    if fits < 1:
        raise ValueError(f"one trial needs {per_trial:g} CPUs but the cluster has {cluster_cpus:g} with "
                         f"{reserve_cpus:g} reserved: lower search.resources.reserve_cpus or the trial's CPUs, "
                         "or add nodes")
    return min(fits, requested) if requested else fits
