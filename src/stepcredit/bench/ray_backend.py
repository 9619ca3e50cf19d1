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

Ray is started on 127.0.0.1 only, or joins the cluster at ``address`` (``--ray-address``); see
:mod:`stepcredit._ray` for the loopback settings. With ``address``, ``OUT`` must be a path that
every node sees (a shared filesystem), stepcredit must be installed on every node, and pipeline
files must exist at the same paths there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stepcredit._ray import LOOPBACK_ENV, RayUnavailable, get_result, ray_session, start_local_ray
from stepcredit.bench.matrix import BenchConfig, BenchError, RunSpec, run_one

__all__ = ["LOOPBACK_ENV", "run_ray", "start_local_ray"]


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
    try:
        with ray_session(address, workers) as ray:
            _submit_and_wait(ray, cfg, todo, str(Path(out).resolve()), workers or len(todo), on_run)
    except RayUnavailable as e:  # no ray package: a benchmark usage error
        raise BenchError(str(e)) from e


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
                get_result(ray, ref)
                if on_run:
                    on_run(run, "done")
    finally:
        for ref in running:  # only on an error: the others resume from their checkpoints
            ray.cancel(ref)
