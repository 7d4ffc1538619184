"""Reaching Ray: an address (``--address`` or ``RAY_ADDRESS``) or an embedded local Ray.

This is the only module that calls ``ray.init``. The embedded Ray advertises more logical
CPUs than the machine has cores (``LOCAL_CPU_FACTOR``): Ray Data read tasks each ask for a
whole CPU, and when training workers hold every logical CPU the data tasks wait for ever
with no error. Oversubscribing the logical count keeps a CPU free for data.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

LOCAL_CPU_FACTOR = 2
CONNECT_TIMEOUT_S = 3.0


def local_num_cpus() -> int:
    return max(4, LOCAL_CPU_FACTOR * (os.cpu_count() or 1))


def check_spare_cpu(workers: int, cpus_per_worker: float, address: str | None = None,
                    names: str = "cluster.workers x cluster.cpus_per_worker") -> None:
    """Before an embedded Ray starts: Ray Train's workers must leave at least one of its logical
    CPUs to Ray Data's read tasks, which otherwise wait for ever with no error. (A cluster at an
    address may autoscale: it is not checked here.)"""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    total, wanted = local_num_cpus(), workers * cpus_per_worker
    if wanted > total - 1:
        raise ValueError(
            f"{names} = {workers} x {cpus_per_worker:g} = {wanted:g} CPUs leaves "
            f"no CPU of the embedded Ray's {total} for Ray Data's read tasks; use at most {total - 1:g} CPUs for "
            "the workers (fewer workers or a smaller cluster.cpus_per_worker), or run on a cluster (--address)")


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the address, when nothing listens at a ``host:port`` or
    ``ray://host:port`` address (``ray.init`` itself retries for a minute). ``auto`` and
    http(s) URLs are left to Ray."""
    target = address.removeprefix("ray://")
    if address == "auto" or "://" in target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RuntimeError(
            f"cannot reach Ray at {address} ({exc.strerror or type(exc).__name__}); check "
            "--address or RAY_ADDRESS and that the cluster is up"
        ) from None


def connect(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool | None = None):
    """Connect to ``address`` (or ``RAY_ADDRESS``); with neither, start an embedded local Ray.

    ``log_to_driver``: print the workers' output here; by default not for a command run without
    ``--verbose`` (``pipelines.console``: it stays in Ray's log files, copied to the run folder).
    Returns Ray's context. Idempotent: an already initialised Ray is reused.
    """
    import ray

    from augtrain.pipelines import console

    if ray.is_initialized():
        return ray.get_runtime_context()
    if log_to_driver is None:
        log_to_driver = console.forward_worker_logs()
    console.quiet_ray_loggers()  # importing Ray set up its loggers; ray.init's own records go to the file
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
        log.info("connecting to Ray at %s", address)
        context = ray.init(address=address, log_to_driver=log_to_driver,
                           configure_logging=console.forward_worker_logs())
    else:
        cpus = num_cpus or local_num_cpus()
        log.info("starting an embedded local Ray with %d logical CPUs", cpus)
        context = ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            # a command's Ray logs to its run folder's file (pipelines.console), not to stderr
            configure_logging=console.forward_worker_logs(),
            logging_level=logging.WARNING,
        )
        _start_reaper()
    console.quiet_ray_loggers()
    return context


_REAPER = []  # the reaper's Popen: its pipe must stay open as long as this process lives


def _start_reaper() -> None:
    """An embedded Ray must not outlive this process, even killed outright (``cluster.reaper``)."""
    from augtrain.cluster import reaper

    try:
        process = reaper.watch(reaper.node_pids())
    except Exception as exc:  # noqa: BLE001 -- no reaper is no reason to refuse to run
        log.warning("could not start the watcher that stops the embedded Ray if this process dies: %s", exc)
        return
    if process is not None:
        _REAPER.append(process)
