"""Throughput of ``stepcredit advantages DIR --backend ray`` against the local backend on a
Parquet dataset of 10M steps.

Run from the repository root:

    .venv/bin/python benchmarks/ray_dataset_speed.py --markdown            # 10M steps
    .venv/bin/python benchmarks/ray_dataset_speed.py --steps 1M --workers 1 2

The dataset (written once into ``--data``, default a temporary directory): ``--files`` Parquet
files of whole groups (8 episodes of 16 steps each; string states from a pool of 4 per step
index, so GiGPO finds anchor states; outcomes 0/1), as a trainer writing one file per batch
would leave them. 10M = 10 x 2**20 = 10,485,760 steps = 655,360 episodes.

Every measurement runs in a fresh Python process (``--one``), so each pays its own imports, and
its peak memory (VmHWM) is its own:

* **local**: what ``stepcredit advantages DIR -e NAME -o out.parquet`` does: read every file
  into one Rollouts, run the pipeline, write one Parquet file.
* **ray, W workers**: ``advantages_dataset(DIR, OUT, pipe)`` on a Ray started on 127.0.0.1 with
  W CPUs. Every group of this dataset lies in one file, so by default each file is one
  partition ("files as partitions"); the "hash shuffle" rows force the shuffle
  (``shuffle=True``: map tasks split every file by group hash into shard files, reduce tasks
  run the pipeline per partition), which a dataset whose groups span files needs. Ray's start
  and shutdown are timed separately and reported both included and excluded. Peak memory is
  the largest VmHWM over the Ray worker processes (asked after the run) and the driver.

Steps/s = dataset steps / wall time of the whole command (reading and writing included). Both
backends' outputs are compared (sorted by episode and step) before a row is reported.
NumPy/Arrow are single-threaded in every process (OMP_NUM_THREADS=1, Arrow CPU threads 1), so a
Ray worker is one core.
"""

from __future__ import annotations

from _bench import fmt_rate, fmt_s, log, machine_line, render  # first: single-threaded NumPy and Arrow

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

MEGA = 1 << 20
STEPS, GROUP = 16, 8


def parse_steps(text: str) -> int:
    t = text.upper()
    if t.endswith("M"):
        return int(float(t[:-1]) * MEGA)
    return int(float(t[:-1]) * 1024) if t.endswith("K") else int(t)


def write_dataset(root: Path, steps: int, files: int, seed: int = 0) -> None:
    """Whole groups of 8 episodes x 16 steps, dealt in order into ``files`` Parquet files."""
    import stepcredit as sc

    E = steps // STEPS
    E -= E % GROUP
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, E // GROUP, files + 1).astype(int) * GROUP
    pool = np.array([f"s{t}-{k}" for t in range(STEPS) for k in range(4)], dtype=object)
    for f in range(files):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        n = hi - lo
        state = pool[np.tile(np.arange(STEPS) * 4, n) + rng.integers(0, 4, n * STEPS)]
        ro = sc.Rollouts.from_arrays(
            outcome=rng.integers(0, 2, n).astype(float),
            group_id=pa.array([f"task-{g}" for g in range(lo // GROUP, hi // GROUP) for _ in range(GROUP)]),
            episode_id=pa.array([f"ep-{i}" for i in range(lo, hi)]),
            step_counts=np.full(n, STEPS),
            state=pa.array(state.tolist()),
            reward=rng.normal(size=n * STEPS) * 0.1,
        )
        sc.write_rollouts(ro, root / f"batch-{f:04d}.parquet")


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM of /proc/self/status (Linux), else
    ru_maxrss. Not ru_maxrss first: Linux keeps it across execve, so a process started from a
    large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_peak_rss(ray) -> int:
    """Largest peak RSS (bytes) over the Ray worker processes that answer (one task per CPU)."""

    @ray.remote(num_cpus=1)
    def rss() -> tuple[int, int]:
        time.sleep(0.2)  # keep each worker busy so that every idle one gets a task
        return os.getpid(), peak_rss()

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(r for _, r in ray.get([rss.remote() for _ in range(2 * cpus)]))


def one(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process."""
    import stepcredit as sc

    pipe = sc.Pipeline.build(args.pipeline)
    out = Path(args.out)
    t0 = time.perf_counter()
    if args.one == "ray_data":
        return one_ray_data(args)
    if args.one == "local":
        ro = sc.read_rollouts(args.data)
        result = pipe.run(ro)
        sc.write_credit(result.credit, result.rollouts, out)
        wall = time.perf_counter() - t0
        return {"wall": wall, "steps": ro.n_steps, "rss": peak_rss()}
    from stepcredit._ray import start_local_ray
    from stepcredit.integrations.ray_credit import advantages_dataset

    import ray

    start_local_ray(args.workers)
    t_start = time.perf_counter() - t0
    run = advantages_dataset(args.data, out, pipe, partitions=args.partitions, shuffle=args.one == "shuffle")
    t_run = run.seconds
    rss = worker_peak_rss(ray)
    t1 = time.perf_counter()
    ray.shutdown()
    t_stop = time.perf_counter() - t1
    return {
        "wall": t_start + t_run + t_stop, "start": t_start, "run": t_run, "stop": t_stop, "steps": run.n_steps,
        "partitions": run.partitions,
        "rss": max(rss, peak_rss()),
    }


def one_ray_data(args: argparse.Namespace) -> dict:
    """Ray Data's ``groupby("group_id").map_groups``: the pipeline called once per group."""
    import stepcredit as sc
    from stepcredit._ray import start_local_ray
    from stepcredit.data.io import credit_table

    import ray

    pipe = sc.Pipeline.build(args.pipeline)

    def per_group(batch: pa.Table) -> pa.Table:
        result = pipe.run(sc.Rollouts.from_arrow(batch))
        return credit_table(result.credit, result.rollouts)

    t0 = time.perf_counter()
    start_local_ray(args.workers)
    t_start = time.perf_counter() - t0
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet(str(args.data)).groupby("group_id").map_groups(per_group, batch_format="pyarrow")
    ds.write_parquet(str(args.out))
    t_run = time.perf_counter() - t0 - t_start
    steps = pq.read_table(args.out).num_rows
    t1 = time.perf_counter()
    ray.shutdown()
    t_stop = time.perf_counter() - t1
    return {"wall": t_start + t_run + t_stop, "start": t_start, "run": t_run, "stop": t_stop, "steps": steps,
            "partitions": 0, "rss": peak_rss()}


def measure(args: argparse.Namespace, kind: str, pipeline: str, out: Path, workers: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--pipeline", pipeline, "--data", str(args.data),
           "--out", str(out), "--workers", str(workers)]
    if args.partitions:
        cmd += ["--partitions", str(args.partitions)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same(local: Path, ray_dir: Path) -> bool:
    key = [("episode_id", "ascending"), ("step", "ascending")]
    return pq.read_table(local).sort_by(key).equals(pq.read_table(ray_dir).sort_by(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=parse_steps, default=10 * MEGA, help="dataset size in steps (10M = 10 x 2**20)")
    ap.add_argument("--files", type=int, default=16, help="Parquet files in the dataset")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    ap.add_argument("--pipelines", nargs="+", default=["grpo", "gigpo"])
    ap.add_argument("--partitions", type=int, default=0, help="partitions (default: the backend's own choice)")
    ap.add_argument("--data", type=Path, help="dataset directory (kept; written when missing)")
    ap.add_argument("--markdown", action="store_true")
    # internal: one measurement in a fresh process
    ap.add_argument("--ray-data-steps", type=parse_steps, default=128 * 1024,
                    help="also time Ray Data groupby().map_groups on a dataset of this many steps (0: skip)")
    ap.add_argument("--one", choices=("local", "ray", "shuffle", "ray_data"), help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.workers = args.workers[0]
        args.partitions = args.partitions or None
        print(json.dumps(one(args)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="sc-ray-bench-"))
    try:
        if args.data is None:
            args.data = tmp / "data"
        if not args.data.exists():
            log(f"writing {args.steps:,} steps into {args.files} files under {args.data}")
            t = time.perf_counter()
            write_dataset(args.data, args.steps, args.files)
            log(f"  {time.perf_counter() - t:.1f} s")
        size = sum(f.stat().st_size for f in args.data.glob("*.parquet"))
        rows = []
        for name in args.pipelines:
            log(f"{name}: local")
            loc = measure(args, "local", name, tmp / f"{name}.parquet")
            rows.append([name, "local (1 process)", "-", fmt_s(loc["wall"]), "-", fmt_rate(loc["steps"] / loc["wall"]),
                         "1.00", "1.00", f"{loc['rss'] / 2**30:.2f}", "-"])
            for w in args.workers:
                for kind in ("ray", "shuffle"):
                    log(f"{name}: {kind}, {w} worker(s)")
                    r = measure(args, kind, name, tmp / f"{name}-ray{w}", w)
                    ok = same(tmp / f"{name}.parquet", tmp / f"{name}-ray{w}")
                    how = "files as partitions" if kind == "ray" else "hash shuffle"
                    rows.append([name, f"ray, {w} worker{'s' if w > 1 else ''}, {how}", str(r["partitions"]),
                                 fmt_s(r["wall"]), f"{fmt_s(r['start'])} + {fmt_s(r['run'])} + {fmt_s(r['stop'])}",
                                 fmt_rate(r["steps"] / r["wall"]), f"{loc['wall'] / r['wall']:.2f}",
                                 f"{loc['wall'] / r['run']:.2f}", f"{r['rss'] / 2**30:.2f}", "yes" if ok else "NO"])
                    shutil.rmtree(tmp / f"{name}-ray{w}")
        head = ["pipeline", "backend", "partitions", "wall s", "ray start + run + stop s", "steps/s",
                "speed vs local", "speed vs local, Ray start/stop excluded", "peak RSS GiB (largest process)", "same output"]
        print(f"Dataset: {args.steps:,} steps, {args.files} files, {size / 2**20:.0f} MiB of Parquet.\n")
        print(render(head, rows, args.markdown))
        if args.ray_data_steps:
            small = tmp / "small"
            write_dataset(small, args.ray_data_steps, 4)
            big_data, args.data = args.data, small
            w = max(args.workers)
            name = args.pipelines[0]
            log(f"{name}: local / ray / ray data on {args.ray_data_steps:,} steps")
            loc = measure(args, "local", name, tmp / "small.parquet")
            r = measure(args, "ray", name, tmp / "small-ray", w)
            rd = measure(args, "ray_data", name, tmp / "small-ray-data", w)
            ok = same(tmp / "small.parquet", tmp / "small-ray-data")
            rows = [[name, "local (1 process)", fmt_s(loc["wall"]), "-", fmt_rate(loc["steps"] / loc["wall"]), "-"]]
            for label, m in ((f"stepcredit ray backend, {w} workers", r), (f"Ray Data groupby().map_groups, {w} workers", rd)):
                rows.append([name, label, fmt_s(m["wall"]), f"{fmt_s(m['start'])} + {fmt_s(m['run'])} + {fmt_s(m['stop'])}",
                             fmt_rate(m["steps"] / m["wall"]), fmt_rate(m["steps"] / m["run"])])
            print(f"\nRay Data for comparison, on {args.ray_data_steps:,} steps ({args.ray_data_steps // (STEPS * GROUP):,} groups); "
                  f"same output as local: {'yes' if ok else 'NO'}.\n")
            print(render(["pipeline", "backend", "wall s", "ray start + run + stop s", "steps/s", "steps/s, start/stop excluded"],
                         rows, args.markdown))
            args.data = big_data
        print(f"\nMachine: {machine_line('every process single-threaded')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
