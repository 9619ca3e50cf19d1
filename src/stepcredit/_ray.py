"""Starting or joining Ray, shared by ``stepcredit bench --backend ray`` and
``stepcredit advantages --backend ray``.

Local Ray (no address, and Ray not yet initialised in this process) is started bound to the
loopback interface only: before ``ray.init`` this module sets, in ``os.environ`` (inherited by
every Ray process),

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray's node address becomes 127.0.0.1, so the GCS,
  raylet, object manager, runtime-env agent and worker gRPC servers all listen on loopback;
- ``RAY_AUTH_MODE=disabled``: no token authentication for a single-machine instance that no
  other host can reach;
- ``RAY_USAGE_STATS_ENABLED=0``: no usage reporting;

and calls ``ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
log_to_driver=False, ...)``. Ray only reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when it is first
imported; if ray was imported before, the same switch (``ray._private.ray_constants
.ENABLE_RAY_CLUSTER``, read at call time) is turned off directly.

With an address, ``ray.init(address=...)`` joins a running cluster and the environment is left
alone. If Ray is already initialised in this process (a notebook, a test session), that
instance is used as it is and left running.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stepcredit._params import UsageError

__all__ = ["LOOPBACK_ENV", "RayUnavailable", "get_result", "import_ray", "ray_initialized", "ray_session", "start_local_ray"]

#: Environment variables set before a local Ray starts (see the module docstring).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}

#: The object store holds only task arguments and small results; Ray's minimum is 75 MiB.
OBJECT_STORE_BYTES = 100 * 1024**2


class RayUnavailable(UsageError):
    """The ray package is missing, or a bad number of workers."""


def import_ray(local: bool) -> Any:
    """Import ray (after setting :data:`LOOPBACK_ENV` when Ray will be started locally)."""
    if local:
        os.environ.update(LOOPBACK_ENV)
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(
            "the ray backend needs the ray package: pip install 'stepcredit[ray]' (or use --backend local)"
        ) from e
    if local:
        from ray._private import ray_constants

        # Read once at import: when ray was imported before the environment was set, turn the
        # switch off here (services.get_node_ip_address reads the attribute at call time).
        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def start_local_ray(num_cpus: int) -> None:
    """Start a Ray instance on this machine that listens on 127.0.0.1 only.

    Args:
        num_cpus: CPUs Ray may schedule; with one CPU per task, the tasks in parallel (>= 1).

    Returns:
        None. Ray is initialised in this process; call ``ray.shutdown()`` when done.
    """
    if num_cpus < 1:
        raise RayUnavailable(f"workers={num_cpus} must be >= 1")
    ray = import_ray(local=True)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=OBJECT_STORE_BYTES,
    )


def ray_initialized() -> bool:
    """Whether Ray is initialised in this process (without importing it)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@contextmanager
def ray_session(address: str | None, workers: int | None) -> Iterator[Any]:
    """Ray for the duration of a ``with`` block: the instance already running in this process,
    else a local one on 127.0.0.1 (``workers`` CPUs, default every CPU) or the cluster at
    ``address``; Ray started here is shut down at the end.

    Yields:
        The ``ray`` module.
    """
    if workers is not None and workers < 1:
        raise RayUnavailable(f"workers={workers} must be >= 1")
    ray = import_ray(local=address is None and not ray_initialized())
    started_here = False
    if not ray.is_initialized():
        if address is None:
            start_local_ray(workers or os.cpu_count() or 1)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        started_here = True
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def get_result(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)`` of a finished task; a task that raised re-raises its own exception
    (a RolloutsError stays a RolloutsError), with Ray's error chained as the cause."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from err
        raise
