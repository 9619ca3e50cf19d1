"""Credit for rollout logs larger than one process's memory: ``stepcredit advantages DIR --backend ray``.

    from stepcredit.integrations.ray_credit import advantages_dataset
    run = advantages_dataset("rollouts/", "advantages/", sc.Pipeline.build("gigpo"), workers=8)

The input is a Parquet dataset (a directory of ``.parquet`` files, one episode per row, the
layout of ``stepcredit.data``); the output is a Parquet dataset of the advantages table (one row
per step, the columns of ``stepcredit advantages -o FILE.parquet``), one ``part-NNNNN.parquet``
per partition, plus ``_stepcredit.json`` (the pipeline, the input files, the counts).

How (Ray core tasks; no Ray Data):

0. **scan**, one task per input file: read only its ``group_id`` and ``episode_id`` columns.
   When every group lies in one file and no episode id repeats (a trainer that writes one
   file per batch leaves such a dataset), each file is one partition: one task per file reads
   and validates it (errors name the file and row), runs the pipeline and writes its part;
1. otherwise (or when ``partitions`` is given), a hash shuffle through the filesystem:
   **map**, one task per input file: read and validate it, check the pipeline against its
   fields, and split its episodes by ``hash(group_id) mod P`` into shard files
   ``_shuffle/pNNNNN/fNNNNNN.parquet`` (the original rows, in file order);
2. **reduce**, one task per partition: read its shards in input-file order, run the pipeline
   on the partition (whole groups only: a group never spans two partitions), write
   ``part-NNNNN.parquet``;
3. everything is written into a hidden directory beside the output, which replaces the output
   only when every task has succeeded: a failure leaves the previous output as it was.

The pipeline runs once per partition, so it must be *group-local* (:mod:`stepcredit.locality`):
stages that use batch statistics (GRPO ``scale="batch"``, REINFORCE++, GAE whitening, SPA with
``scope="global"``, LASER-D) are refused, as is a pipeline state (``--state``). For a
group-local pipeline the credit of every step equals the local backend's on the same files (the
test suite finds it bit-for-bit equal for every group-local estimator configuration and for
pipelines with transforms and filters, on multi-file datasets); the rows come grouped by partition,
in input order within a part. Episode ids must be unique over the whole dataset, and every file
must have the same fields, as for the local backend (both are checked).

Memory: a task holds one input file or one partition (in a shuffle, by default about 64 MiB of
compressed input each; ``partitions`` sets their number). Ray's object store carries only task
arguments and small results. On a cluster (``address``) the input, the output and its parent
directory must be on a filesystem every node sees.

This is not Ray Data's ``groupby(...).map_groups``: that calls the function once per group,
where the estimators are vectorised over many groups at once (``docs/benchmarks.md`` has the
measurement); the shuffle here keeps thousands of whole groups per call.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stepcredit._ray import get_result, ray_session
from stepcredit.data import MissingColumnError, Rollouts, RolloutsError, write_credit
from stepcredit.data.hashing import hash_keys
from stepcredit.data.io import check_same_fields, concat_files, dataset_files, file_fields, parquet_table, read_rollouts
from stepcredit.locality import batch_dependence
from stepcredit.pipeline import Pipeline, PipelineError

__all__ = ["DatasetRun", "advantages_dataset", "input_files", "partition_of"]

#: Default partition size: about this many bytes of (compressed) input per reduce task.
PARTITION_BYTES = 64 << 20
MANIFEST = "_stepcredit.json"
_ROW = "_stepcredit_row"  # the shard column holding each episode's row in its input file


@dataclass
class DatasetRun:
    """What :func:`advantages_dataset` did.

    Attributes:
        files: the input files, in order.
        output: the output directory.
        parts: the part files written (empty partitions write none).
        partitions: the number of partitions P.
        shuffled: whether the episodes went through the hash shuffle (False: one partition per
            file, every group lying in one file).
        n_groups, n_episodes, n_steps: totals over the dataset.
        advantage: mean, std, min, max and zero_fraction of the step advantages.
        seconds: wall-clock time of the whole run (Ray start included).
    """

    files: list[Path]
    output: Path
    parts: list[Path] = field(default_factory=list)
    partitions: int = 0
    shuffled: bool = True
    n_groups: int = 0
    n_episodes: int = 0
    n_steps: int = 0
    advantage: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def partition_of(group_id: pa.Array, partitions: int) -> np.ndarray:
    """[E] partition of each episode: ``hash(group_id) mod P`` (the same hash in every process)."""
    return _bucket(hash_keys(group_id), partitions)


def _bucket(hashes: np.ndarray, partitions: int) -> np.ndarray:
    return (hashes % np.uint64(partitions)).astype(np.int64)


def _split(bucket: np.ndarray, partitions: int) -> list[tuple[int, np.ndarray]]:
    """(p, rows of bucket p, in order) for every non-empty bucket: one stable sort, no scan per bucket."""
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(partitions + 1))
    return [(int(p), order[bounds[p] : bounds[p + 1]]) for p in np.flatnonzero(np.diff(bounds))]


def input_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of the input: a directory's (:func:`stepcredit.data.io.dataset_files`)
    or the one ``.parquet`` file given."""
    p = Path(path)
    if p.is_dir():
        return dataset_files(p)
    if not p.is_file():
        raise RolloutsError(str(p), "", "", "no such file or directory", "check the path")
    if p.suffix.lower() not in (".parquet", ".pq"):
        raise RolloutsError(
            str(p), "", "", "the ray backend reads Parquet only",
            "convert it with `stepcredit`'s write_rollouts to .parquet, or use --backend local",
        )
    return [p]


def check_pipeline(pipe: Pipeline) -> None:
    """Refuse a pipeline that is not group-local (see the module docstring)."""
    problems = batch_dependence(pipe)
    if problems:
        raise PipelineError(
            "the ray backend runs the pipeline on each partition of whole groups, and this pipeline "
            "uses statistics of the whole batch: " + "; ".join(problems)
            + ". Fix: choose the group-local option named, or use --backend local"
        )


def _prepare_output(out: Path) -> None:
    """Refuse to replace anything but a previous stepcredit output (or an empty directory)."""
    if out.is_file() or out.suffix.lower() in (".parquet", ".pq", ".jsonl", ".ndjson"):
        raise PipelineError(f"output {out}: the ray backend writes a directory (a Parquet dataset); give a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise PipelineError(
            f"output {out}: the directory holds files that stepcredit did not write; "
            "give a new or empty directory (nothing was written)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------- the tasks
def _map_file(index: int, path: str, partitions: int, scratch: str, pipe: Pipeline) -> dict[str, int]:
    """Validate one input file and split its episodes into the partitions' shard files."""
    table = parquet_table(path)
    ro = Rollouts.from_arrow(table, source=path)
    try:
        pipe.check(ro)
    except MissingColumnError as exc:
        raise exc.in_file(path) from None
    table = table.append_column(_ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    for p, rows in _split(partition_of(ro.group_id, partitions), partitions):
        d = Path(scratch) / f"p{p:05d}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(rows)), d / f"f{index:06d}.parquet")
    # the episode ids, by hash(episode_id) mod P: reduce task q checks they are unique
    ids = hash_keys(ro.episode_id)
    for q, rows in _split(_bucket(ids, partitions), partitions):
        d = Path(scratch) / "ids" / f"q{q:05d}"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"f{index:06d}.npy", np.stack([ids[rows].view(np.int64), rows]), allow_pickle=False)
    return {"episodes": ro.n_episodes, "steps": ro.n_steps, "fields": file_fields(ro)}


def _scan_file(path: str) -> dict[str, Any] | None:
    """The distinct group hashes and the episode-id hashes of one file (two columns only);
    None when they cannot be read (the shuffle's full validation then names the problem)."""
    try:
        t = pq.read_table(path, columns=["group_id", "episode_id"])
        if not all(pa.types.is_string(c.type) or pa.types.is_large_string(c.type) for c in t.columns):
            return None  # not ids as the reader takes them: let its validation say so
        return {"groups": np.unique(hash_keys(t.column("group_id"))), "ids": hash_keys(t.column("episode_id"))}
    except Exception:  # noqa: BLE001 - any problem: take the validating path
        return None


def _groups_within_files(scans: list[dict[str, Any] | None]) -> bool:
    """Whether every group lies in one file and no episode id repeats across the files."""
    if any(sc is None for sc in scans):
        return False
    groups = np.concatenate([sc["groups"] for sc in scans])
    ids = np.concatenate([sc["ids"] for sc in scans])
    return len(np.unique(groups)) == len(groups) and len(np.unique(ids)) == len(ids)


def _direct_file(index: int, path: str, out_dir: str, pipe: Pipeline) -> dict[str, Any]:
    """One file that holds whole groups: validate it, run the pipeline, write its part."""
    ro = read_rollouts(path)
    return {**_run_part(ro, pipe, path, Path(out_dir) / f"part-{index:05d}.parquet"), "fields": file_fields(ro)}


def _check_unique_ids(q: int, files: list[str], scratch: Path) -> None:
    """Raise if two input files hold the same episode id (partition q of the id hashes)."""
    d = scratch / "ids" / f"q{q:05d}"
    if not d.is_dir():
        return
    hashes, where = [], []
    for f in sorted(d.glob("f*.npy")):
        a = np.load(f, allow_pickle=False)
        hashes.append(a[0])
        where.append(np.stack([np.full(a.shape[1], int(f.stem[1:])), a[1]]))
    h = np.concatenate(hashes)
    loc = np.concatenate(where, axis=1)
    order = np.argsort(h, kind="stable")
    dup = np.flatnonzero(h[order][1:] == h[order][:-1])
    for k in dup:  # within one file the reader already refused repeats: these span two files
        (fa, ra), (fb, rb) = loc[:, order[k]], loc[:, order[k + 1]]
        a = pq.read_table(files[fa], columns=["episode_id"]).column(0)[int(ra)].as_py()
        b = pq.read_table(files[fb], columns=["episode_id"]).column(0)[int(rb)].as_py()
        if a == b:
            first, second = sorted([(fa, ra), (fb, rb)])
            raise RolloutsError(
                files[second[0]], f"row {second[1]}", "episode_id", f"{a!r} is also an episode of {files[first[0]]}",
                "give every episode of a dataset its own id",
            )


def _reduce_partition(p: int, files: list[str], scratch: str, out_dir: str, pipe: Pipeline) -> dict[str, Any]:
    """Run the pipeline on partition p and write its part file; return its counts and sums."""
    scratch_p = Path(scratch)
    _check_unique_ids(p, files, scratch_p)
    shards = sorted((scratch_p / f"p{p:05d}").glob("f*.parquet"))
    if not shards:
        return {"part": None, "groups": 0, "episodes": 0, "steps": 0}
    parts, srcs = [], []
    for shard in shards:
        src = files[int(shard.stem[1:])]
        table = pq.read_table(shard)
        rows = table.column(_ROW).to_numpy()
        table = table.drop_columns([_ROW])
        parts.append(Rollouts.from_arrow(table, source=src, locate=lambda i, rows=rows: f"row {rows[i]}"))
        srcs.append(Path(src))
    ro = concat_files(parts, srcs)
    source = str(Path(files[0]).parent) if len(files) > 1 else files[0]
    return _run_part(ro, pipe, source, Path(out_dir) / f"part-{p:05d}.parquet")


def _run_part(ro: Rollouts, pipe: Pipeline, source: str, part: Path) -> dict[str, Any]:
    """Run the pipeline on one partition, write its part file; its counts and sums."""
    try:
        result = pipe.run(ro)
    except MissingColumnError as exc:
        raise exc.in_file(source) from None
    except RolloutsError as exc:  # an estimator's structural check: name the dataset
        if exc.source != "<rollouts>":
            raise
        raise RolloutsError(source, exc.record, exc.field, exc.problem, exc.fix) from None
    write_credit(result.credit, result.rollouts, part)
    a = result.credit.step_advantage
    return {
        "part": part.name,
        "groups": result.rollouts.n_groups,
        "episodes": result.rollouts.n_episodes,
        "steps": result.rollouts.n_steps,
        "sum": float(a.sum()),
        "sumsq": float(np.dot(a, a)),
        "min": float(a.min()) if a.size else math.inf,
        "max": float(a.max()) if a.size else -math.inf,
        "zeros": int(np.count_nonzero(a == 0)),
    }


# ---------------------------------------------------------------------- the driver
def _run_tasks(ray: Any, fn: Callable, calls: list[tuple], on_done: Callable[[dict], None]) -> list[dict]:
    """Run ``fn(*args)`` for every args tuple as Ray tasks (one CPU each); results in call
    order. The first failure cancels the rest and is raised as the task's own exception."""
    remote = ray.remote(num_cpus=1, max_retries=0)(fn)
    refs = [remote.remote(*args) for args in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[dict | None] = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[index[ref]] = get_result(ray, ref)
                on_done(results[index[ref]])
    finally:
        for ref in pending:  # only after a failure
            ray.cancel(ref, force=True)
    return results  # type: ignore[return-value]


def advantages_dataset(
    input: str | os.PathLike,
    output: str | os.PathLike,
    pipeline: Pipeline,
    *,
    address: str | None = None,
    workers: int | None = None,
    partitions: int | None = None,
    shuffle: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetRun:
    """Compute the advantages of a Parquet dataset with Ray (see the module docstring).

    Args:
        input: a directory of ``.parquet`` rollout files (or one file).
        output: the directory to write (replaced atomically; it must be new, empty, or a
            previous output of this function).
        pipeline: a group-local pipeline.
        address: a Ray cluster to join; None starts Ray locally on 127.0.0.1 (or uses the Ray
            already initialised in this process).
        workers: CPUs of a locally started Ray (default: every CPU); tasks take one CPU each.
        partitions: hash-partition into this many partitions (always shuffles). Default: one
            partition per file when every group lies in one file and no episode id repeats
            across files, else a shuffle into enough partitions for about 64 MiB of input each,
            and at least one per available CPU.
        shuffle: True always shuffles (with the default or the given number of partitions);
            None (default) shuffles only when ``partitions`` is given or a group spans files.
        progress: called as ``progress(tasks_done, tasks_total)`` after each task.

    Returns:
        A :class:`DatasetRun` with the totals and the advantage summary.

    Raises:
        PipelineError: the pipeline is not group-local, or the output path is not replaceable.
        RolloutsError: a bad input file (naming the file, row and field).
        stepcredit._ray.RayUnavailable: ray is not installed, or workers < 1.
    """
    t0 = time.perf_counter()
    check_pipeline(pipeline)
    if partitions is not None and partitions < 1:
        raise PipelineError(f"partitions={partitions} must be >= 1")
    files = input_files(input)
    out = Path(output).resolve()
    _prepare_output(out)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    scratch = tmp / "_shuffle"
    run = DatasetRun(files=files, output=out)
    try:
        with ray_session(address, workers) as ray:
            names = [str(f) for f in files]
            pipe_ref = ray.put(pipeline)
            done = [0]
            total = [len(files)]

            def tick(_: Any) -> None:
                done[0] += 1
                if progress:
                    progress(done[0], total[0])

            direct = False
            if partitions is None and not shuffle:
                total[0] = 2 * len(files)
                direct = _groups_within_files(_run_tasks(ray, _scan_file, [(f,) for f in names], tick))
            run.shuffled = not direct
            if direct:
                run.partitions = len(files)
                tmp.mkdir()
                stats = _run_tasks(ray, _direct_file, [(i, f, str(tmp), pipe_ref) for i, f in enumerate(names)], tick)
                check_same_fields([st["fields"] for st in stats], files)  # as the local backend requires
            else:
                cpus = max(1, int(ray.available_resources().get("CPU", 1)))
                in_bytes = sum(f.stat().st_size for f in files)
                P = partitions or max(cpus, math.ceil(in_bytes / PARTITION_BYTES))
                run.partitions = P
                total[0] = done[0] + len(files) + P
                scratch.mkdir(parents=True)
                mapped = _run_tasks(ray, _map_file, [(i, f, P, str(scratch), pipe_ref) for i, f in enumerate(names)], tick)
                check_same_fields([st["fields"] for st in mapped], files)  # before any reduce: the same fields everywhere
                stats = _run_tasks(
                    ray, _reduce_partition, [(p, names, str(scratch), str(tmp), pipe_ref) for p in range(P)], tick
                )
        shutil.rmtree(scratch, ignore_errors=True)
        _summarise(run, stats, tmp)
        manifest = {
            "pipeline": pipeline.to_dict(),
            "input": [str(f) for f in files],
            "partitions": run.partitions,
            "shuffled": not direct,
            "parts": [p.name for p in run.parts],
            "groups": run.n_groups,
            "episodes": run.n_episodes,
            "steps": run.n_steps,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    run.parts = [out / p.name for p in run.parts]
    run.seconds = time.perf_counter() - t0
    return run


def _summarise(run: DatasetRun, stats: list[dict], tmp: Path) -> None:
    """Totals and the advantage summary from the reduce tasks' counts and sums."""
    kept = [s for s in stats if s["part"] is not None]
    run.parts = [tmp / s["part"] for s in kept]
    run.n_groups = sum(s["groups"] for s in kept)
    run.n_episodes = sum(s["episodes"] for s in kept)
    run.n_steps = n = sum(s["steps"] for s in kept)
    if n:
        mean = sum(s["sum"] for s in kept) / n
        var = max(0.0, sum(s["sumsq"] for s in kept) / n - mean * mean)
        run.advantage = {
            "mean": mean, "std": math.sqrt(var),
            "min": min(s["min"] for s in kept), "max": max(s["max"] for s in kept),
            "zero_fraction": sum(s["zeros"] for s in kept) / n,
        }


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; a previous output is removed only afterwards."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
