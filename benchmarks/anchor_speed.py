"""The estimators over string states (gigpo, salt, spa) on 1M steps, state hashing included.

The input of the step-estimator issue's target: 16,384 episodes x 64 steps in groups of 8, the
state of each step a string; about a third of the steps of a group are in a state that other
episodes of the group also visit (anchor states), the rest are unique to their episode.

Reports, on one core: building the Rollouts from string arrays (Arrow conversion + FNV-1a
hashing of the distinct states), ``estimate(ro, "gigpo")``, their sum against the target of
1 s, and the peak extra memory of the estimate per step (tracemalloc; target 128 B/step).

    .venv/bin/python benchmarks/anchor_speed.py [--episodes 16384] [--steps 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import stepcredit as sc  # noqa: E402


def make_states(E: int, T: int, group: int, rng: np.random.Generator) -> pa.Array:
    """[E*T] state strings: a third shared within the group (a small pool), the rest unique."""
    S = E * T
    g = np.repeat(np.arange(E) // group, T)
    e = np.repeat(np.arange(E), T)
    t = np.tile(np.arange(T), E)
    shared = rng.random(S) < 1 / 3
    pool = rng.integers(0, 8, size=S)  # 8 shared rooms per group
    unique = pa.compute.binary_join_element_wise(
        "episode ", pa.array(e).cast(pa.string()), " step ", pa.array(t).cast(pa.string()), ""
    )
    common = pa.compute.binary_join_element_wise(
        "task ", pa.array(g).cast(pa.string()), " room ", pa.array(pool).cast(pa.string()), ""
    )
    return pa.compute.if_else(pa.array(shared), common, unique)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=16_384)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimators", nargs="+", default=["gigpo", "salt", "spa"], help="estimators to time")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    pa.set_cpu_count(1)
    rng = np.random.default_rng(args.seed)
    E, T = args.episodes, args.steps
    S = E * T
    states = make_states(E, T, args.group, rng)
    arrays = dict(
        outcome=rng.integers(0, 2, size=E).astype(np.float64),
        group_id=np.arange(E) // args.group,
        step_counts=np.full(E, T),
        reward=np.zeros(S),
        state=states,
    )
    arrays["action"] = pa.compute.binary_join_element_wise(
        "press ", pa.array(rng.integers(0, 4, size=S)).cast(pa.string()), ""
    )
    best_build = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ro = sc.Rollouts.from_arrays(**arrays)
        best_build = min(best_build, time.perf_counter() - t0)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores (pinned to one), numpy {np.__version__}, pyarrow {pa.__version__}")
    print(f"input: {E:,} episodes x {T} steps = {S:,} steps, groups of {args.group}, string states and actions")
    print(f"Rollouts.from_arrays (Arrow strings + state and action hashing): {best_build:.3f} s")
    print()
    print("| estimator | build (s) | estimate (s) | total (s) | target 1 s | peak extra B/step | < 128 | diagnostics |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.estimators:
        best_est = float("inf")
        for _ in range(args.repeats):
            t1 = time.perf_counter()
            credit = sc.estimate(ro, name)
            best_est = min(best_est, time.perf_counter() - t1)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        sc.estimate(ro, name)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        total = best_build + best_est
        diag = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in credit.diagnostics.items())
        print(
            f"| {name} | {best_build:.3f} | {best_est:.3f} | {total:.3f} | {'PASS' if total < 1 else 'FAIL'} "
            f"| {peak / S:.1f} | {'PASS' if peak / S < 128 else 'FAIL'} | {diag} |"
        )


if __name__ == "__main__":
    main()
