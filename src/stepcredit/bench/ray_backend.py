"""The Ray backend of ``stepcredit bench`` (``--backend ray``): each run of the matrix is one Ray task.

    run_ray(cfg, todo, out, workers=4)                        # starts Ray on 127.0.0.1, shuts it down
    run_ray(cfg, todo, out, address="ray://head:10001")       # joins an existing cluster

A run is a pure function of the benchmark config and its (environment, method, seed)
(:func:`stepcredit.bench.matrix.run_one`), and it writes only its own directory
``OUT/runs/ENV/METHOD/seedN/``. The tasks therefore return nothing: the filesystem is the result
channel, and the table is built afterwards from the run directories exactly as for the local
backend, so both backends give identical results for the same config (apart from the wall-clock
fields of the metrics). A task that fails or whose worker dies leaves a run without
``done.json``; rerunning the same command resumes it from its last checkpoint.

Local Ray (no ``address``, and Ray not yet initialised in this process) is started bound to the
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

With ``address`` (``--ray-address``), ``ray.init(address=...)`` joins a running cluster and the
environment is left alone. Then ``OUT`` must be a path that every node sees (a shared
filesystem), stepcredit must be installed on every node, and pipeline files must exist at the
same paths there. If Ray is already initialised in this process (a notebook, a test session),
that instance is used as it is and left running.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stepcredit.bench.matrix import BenchConfig, BenchError, RunSpec, run_one

__all__ = ["LOOPBACK_ENV", "run_ray", "start_local_ray"]

#: Environment variables set before a local Ray starts (see the module docstring).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}

#: The object store holds only task arguments (configs of a few kB); Ray's minimum is 75 MiB.
_OBJECT_STORE_BYTES = 100 * 1024**2


def _import_ray(local: bool) -> Any:
    """Import ray (after setting :data:`LOOPBACK_ENV` when Ray will be started locally)."""
    if local:
        os.environ.update(LOOPBACK_ENV)
    try:
        import ray
    except ImportError as e:
        raise BenchError(
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
        num_cpus: CPUs Ray may schedule; with one CPU per task, the runs in parallel (>= 1).

    Returns:
        None. Ray is initialised in this process; call ``ray.shutdown()`` when done.
    """
    if num_cpus < 1:
        raise BenchError(f"workers={num_cpus} must be >= 1")
    ray = _import_ray(local=True)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=_OBJECT_STORE_BYTES,
    )


def _task(cfg: BenchConfig, run: RunSpec, out: str) -> None:
    """The body of one Ray task: train (or resume) one run into its directory."""
    run_one(cfg, run, Path(out))


def run_ray(
    cfg: BenchConfig,
    todo: Sequence[RunSpec],
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    address: str | None = None,
    on_run: Callable[[RunSpec, str], None] | None = None,
) -> None:
    """Run ``todo`` as Ray tasks (one CPU each) writing into ``out``; returns when all are done.

    Args:
        cfg: The benchmark configuration (checked by the caller).
        todo: The unfinished runs, in the order to submit them.
        out: The benchmark directory (made absolute here; on a cluster a path every node sees).
        workers: Runs in flight at once, and the CPUs of a locally started Ray; None: every CPU
            of this machine locally, every free CPU of the cluster with ``address``.
        address: A Ray cluster to join (``ray.init(address=...)``); None starts Ray locally on
            127.0.0.1 (unless Ray is already initialised in this process, which is then used).
        on_run: Called as ``on_run(run, "started")`` when a run is submitted and
            ``on_run(run, "done")`` when it has finished.

    Returns:
        None: the results are the run directories under ``out`` (collect them with
        :func:`stepcredit.bench.matrix.collect_results`).

    Raises:
        BenchError: ray is not installed, or ``workers`` < 1.
        Exception: the first failing run's exception (its Ray error chained as the cause); the
            runs still in flight are cancelled and resume on the next invocation.
    """
    if workers is not None and workers < 1:
        raise BenchError(f"workers={workers} must be >= 1")
    todo = list(todo)
    if not todo:
        return
    ray = _import_ray(local=address is None and not _ray_initialized())
    started_here = False
    if not ray.is_initialized():
        if address is None:
            start_local_ray(workers or os.cpu_count() or 1)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        started_here = True
    try:
        _submit_and_wait(ray, cfg, todo, str(Path(out).resolve()), workers or len(todo), on_run)
    finally:
        if started_here:
            ray.shutdown()


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _submit_and_wait(ray: Any, cfg: BenchConfig, todo: list[RunSpec], out: str, window: int,
                     on_run: Callable[[RunSpec, str], None] | None) -> None:
    """Keep at most ``window`` runs in flight; report each as it starts and finishes."""
    remote = ray.remote(num_cpus=1)(_task)
    cfg_ref = ray.put(cfg)
    pending = list(reversed(todo))
    running: dict[Any, RunSpec] = {}
    try:
        while pending or running:
            while pending and len(running) < window:
                run = pending.pop()
                running[remote.remote(cfg_ref, run, out)] = run
                if on_run:
                    on_run(run, "started")
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                run = running.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from err
                    raise
                if on_run:
                    on_run(run, "done")
    finally:
        for ref in running:  # only on an error: the others resume from their checkpoints
            ray.cancel(ref)
