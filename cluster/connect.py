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


def connect(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True):
    """Connect to ``address`` (or ``RAY_ADDRESS``); with neither, start an embedded local Ray.

    Returns Ray's context. Idempotent: an already initialised Ray is reused.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_address(address)
        log.info("connecting to Ray at %s", address)
        return ray.init(address=address, log_to_driver=log_to_driver)
    cpus = num_cpus or local_num_cpus()
    log.info("starting an embedded local Ray with %d logical CPUs", cpus)
    return ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
