"""Speed and memory of the credit estimators on synthetic batches of 1M and 10M steps.

Run from the repository root (single-threaded, pinned to one core):

    .venv/bin/python benchmarks/estimators_speed.py --markdown

What it measures, for every registered estimator (``stepcredit.list_estimators()``, so new
ones are picked up) on each input:

* **time**: ``stepcredit.estimate(ro, name)`` with default parameters, best of N repeats. Each
  repeat is *cold*: the index arrays that ``Rollouts`` caches on first use (group codes, step
  counts, ...) are dropped before the call, so every call pays for them, as one CLI run does.
  The *warm* time (caches kept from the previous call) is reported beside it. Building the
  input with ``Rollouts.from_arrays`` is not timed with the estimator; it is reported per input.
* **steps/s**: steps / cold time.
* **peak extra memory**: tracemalloc peak minus baseline around one cold call, in bytes per
  step. NumPy reports its buffers to tracemalloc; tracing starts after the input exists, so the
  input is excluded and the returned ``Credit`` (the output arrays) is included. Arrow's own
  memory pool (used only by the per-episode group encoding, O(E)) is not traced.
* **loop reference**: a plain-Python implementation of each built-in estimator over lists
  (dicts for group statistics, for-loops over episodes and steps), written in this file. It is
  given Python lists (converting the arrays to lists is not timed), run once, on inputs of at
  most ``--loop-max-steps`` steps (default: the 1M-step inputs, uniform and ragged). For larger inputs its time is
  extrapolated linearly from the 1M-step input of the same layout (x S_large / S_1M) and marked
  "~". Its results are compared with the vectorised ones (max abs difference over the step
  advantages, episode advantages and, where present, returns and rewards), so the speed-up
  compares like with like.
* **targets** (issue, one core): GRPO / RLOO / Dr. GRPO (and here REINFORCE++, the other
  outcome estimator) under 0.2 s per 1M steps, GAE under 0.5 s per 1M steps (for 10M steps
  the targets are scaled linearly: 2 s and 5 s); peak extra memory under 64 bytes per step.
  Step-level estimators (gigpo, ...): under 1 s per 1M steps and 128 bytes per step.
* **I/O** on the 1M-step input: ``write_credit`` as Parquet and JSONL (GRPO and GAE credit),
  ``read_rollouts`` of a Parquet and a JSONL rollout file written by ``write_rollouts``.

Sizes: "1M" is 2**20 = 1,048,576 steps (16,384 episodes x 64 steps) and "10M" is 10 x that
(163,840 x 64); groups of 8 consecutive episodes. The ragged variant has the same number of
episodes with random lengths 1..127 (mean 64).
"""

from __future__ import annotations

import os

from _bench import (  # first: makes NumPy and Arrow single-threaded
    drop_caches,
    fmt_bool,
    fmt_rate,
    fmt_s,
    log,
    machine_line,
    render,
    time_call,
)

import argparse  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import stepcredit as sc  # noqa: E402

MEGA = 1 << 20  # "1M" steps = 16,384 episodes x 64 steps
STEPS_PER_EPISODE = 64
GROUP_SIZE = 8
# seconds per 1M steps, by family (foundation issue: outcome 0.2, value 0.5; step-estimator
# issue: every step-level family under 1 s)
TIME_TARGET_PER_1M = {"outcome": 0.2, "value": 0.5}
STEP_LEVEL_TIME_TARGET = 1.0
# peak extra bytes per step: 64 for the outcome and value estimators, 128 for step-level ones
MEM_TARGET = {"outcome": 64.0, "value": 64.0}
STEP_LEVEL_MEM_TARGET = 128.0
AGREE_TOL = 1e-8


# ---------------------------------------------------------------------- machine


# ---------------------------------------------------------------------- inputs
@dataclass
class Input:
    label: str  # e.g. "1M", "1M ragged"
    size: str  # the --sizes token
    ragged: bool
    arrays: dict[str, np.ndarray]  # from_arrays keyword arguments
    ro: sc.Rollouts
    build_s: float
    variants: dict[frozenset, sc.Rollouts] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.ro.n_steps

    @property
    def n_episodes(self) -> int:
        return self.ro.n_episodes


def parse_size(token: str) -> int:
    """'1M' -> 2**20 steps, '10M' -> 10 * 2**20, '256k' -> 256 * 2**10; a plain number is steps."""
    t = token.strip().upper()
    mult = {"K": 1 << 10, "M": MEGA}.get(t[-1:], 1)
    num = float(t[:-1] if t[-1:] in ("K", "M") else t)
    return int(round(num * mult))


def make_arrays(n_steps: int, ragged: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    E = max(GROUP_SIZE, int(round(n_steps / STEPS_PER_EPISODE / GROUP_SIZE)) * GROUP_SIZE)
    if ragged:
        lengths = rng.integers(1, 2 * STEPS_PER_EPISODE, size=E)  # 1..127, mean 64
    else:
        lengths = np.full(E, STEPS_PER_EPISODE, dtype=np.int64)
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    S = int(offsets[-1])
    return {
        "outcome": rng.integers(0, 2, size=E).astype(np.float64),  # binary outcomes
        "group_id": np.arange(E, dtype=np.int64) // GROUP_SIZE,  # groups of 8 consecutive episodes
        "episode_offsets": offsets,
        "reward": rng.normal(0.0, 0.1, size=S),
        "value": rng.random(S),
        "tokens": rng.integers(1, 512, size=S, dtype=np.int64),
    }


def synthetic_column(name: str, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A plausible step column for a field an estimator requires that the base input lacks."""
    off = arrays["episode_offsets"]
    S = int(off[-1])
    counts = np.diff(off)
    if name == "node":
        return tree_nodes(arrays, rng)
    if name in ("state", "action"):
        # keys shared between the episodes of a group: (group, step index) with some branching
        group = np.repeat(arrays["group_id"], counts)
        step = np.arange(S) - np.repeat(off[:-1], counts)
        branch = rng.integers(0, 3, size=S)
        return (group * 4096 + step) * 4 + np.where(step > 0, branch, 0)
    if name == "tokens":
        return rng.integers(1, 512, size=S, dtype=np.int64)
    if name in ("p_answer", "process", "importance"):
        return rng.random(S)
    if name == "grounding":
        return rng.integers(0, 2, size=S).astype(np.float64)
    return rng.normal(0.0, 1.0, size=S)


def tree_nodes(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Node ids of tree rollouts: each episode but the first of its group copies the node ids of
    the previous episode for a random prefix (at most both lengths) and branches off with new
    ids, so every group is a tree with shared prefixes."""
    off = arrays["episode_offsets"]
    counts = np.diff(off)
    E, S = counts.size, int(off[-1])
    first_of_group = np.r_[True, arrays["group_id"][1:] != arrays["group_id"][:-1]]
    shared = np.zeros(E, dtype=np.int64)  # steps copied from the previous episode
    prev_len = np.r_[0, counts[:-1]]
    shared[~first_of_group] = rng.integers(0, np.minimum(counts, prev_len)[~first_of_group] + 1)
    node = np.arange(S, dtype=np.int64)  # fresh ids: the flat step index
    step = np.arange(S) - np.repeat(off[:-1], counts)
    ep = np.repeat(np.arange(E), counts)
    # copy in episode order (a chain within each group): loop over the group position, which
    # is bounded by the group size, not over episodes
    pos = np.arange(E) - np.maximum.accumulate(np.where(first_of_group, np.arange(E), 0))
    for k in range(1, int(pos.max(initial=0)) + 1):
        rows = np.flatnonzero((pos[ep] == k) & (step < shared[ep]))
        node[rows] = node[off[ep[rows] - 1] + step[rows]]
    return node


def build_input(size: str, ragged: bool, seed: int) -> Input:
    rng = np.random.default_rng([seed, parse_size(size), int(ragged)])
    arrays = make_arrays(parse_size(size), ragged, rng)
    gc.collect()
    t0 = time.perf_counter()
    ro = sc.Rollouts.from_arrays(**arrays)
    build_s = time.perf_counter() - t0
    label = f"{size} ragged" if ragged else size
    return Input(label, size, ragged, arrays, ro, build_s)


# fields an estimator needs (or uses when present) with its default parameters, beyond the
# fields it always needs (spec.requires): salt's default merge="transition" reads the action,
# spa adds the grounding bonus when the field is there
DEFAULT_PARAM_FIELDS = {"salt": ("action",), "spa": ("grounding",)}


def input_for(inp: Input, spec: sc.EstimatorSpec, seed: int) -> sc.Rollouts | None:
    """The input with every step field ``spec`` requires (built once per set of extra fields)."""
    wanted = (*spec.requires, *DEFAULT_PARAM_FIELDS.get(spec.name, ()))
    missing = frozenset(c for c in wanted if not inp.ro.has(c))
    if not missing:
        return inp.ro
    if missing not in inp.variants:
        rng = np.random.default_rng([seed, 7])
        extra = {c: synthetic_column(c, inp.arrays, rng) for c in sorted(missing)}
        try:
            inp.variants[missing] = sc.Rollouts.from_arrays(**inp.arrays, **extra)
        except Exception as exc:  # noqa: BLE001 - a field this script cannot synthesise
            log(f"  cannot build input for '{spec.name}' (needs {sorted(missing)}): {exc}")
            return None
    return inp.variants[missing]


# ---------------------------------------------------------------------- timing helpers


def peak_extra_bytes(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak, retained) bytes traced by tracemalloc during one call, baseline subtracted."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del out
    return peak - base, current - base


# ---------------------------------------------------------------------- plain-Python loop references
# Defaults as in the registry: grpo(scale="group", epsilon=1e-6, singleton="raw"),
# drgrpo/rloo(singleton="raw"), reinforce_pp(weight="steps", epsilon=1e-8, singleton="raw"),
# gae(gamma=1.0, lam=1.0, whiten=False). Singleton "raw": a one-episode group has mean 0, std 1.
LOOP_DEFAULTS = {
    "grpo": {"scale": "group", "epsilon": 1e-6, "singleton": "raw"},
    "drgrpo": {"singleton": "raw"},
    "rloo": {"singleton": "raw"},
    "reinforce_pp": {"weight": "steps", "epsilon": 1e-8, "singleton": "raw"},
    "gae": {"gamma": 1.0, "lam": 1.0, "whiten": False},
}


def _loop_group_stats(outcome: list, group: list) -> tuple[dict, dict, dict]:
    """Per group: count, mean and unbiased std of the outcomes (singleton: mean 0, std 1)."""
    count: dict = {}
    total: dict = {}
    for x, g in zip(outcome, group):
        count[g] = count.get(g, 0) + 1
        total[g] = total.get(g, 0.0) + x
    mean = {}
    for g in count:
        mean[g] = total[g] / count[g] if count[g] > 1 else 0.0
    ss: dict = {}
    for x, g in zip(outcome, group):
        d = x - mean[g]
        ss[g] = ss.get(g, 0.0) + d * d
    std = {}
    for g in count:
        std[g] = math.sqrt(ss[g] / (count[g] - 1)) if count[g] > 1 else 1.0
    return count, mean, std


def _loop_expand(episode_adv: list, offsets: list) -> list:
    steps = []
    for e in range(len(episode_adv)):
        a = episode_adv[e]
        for _ in range(offsets[e], offsets[e + 1]):
            steps.append(a)
    return steps


def loop_grpo(d: dict) -> dict:
    eps = 1e-6
    count, mean, std = _loop_group_stats(d["outcome"], d["group"])
    adv = []
    for x, g in zip(d["outcome"], d["group"]):
        adv.append((x - mean[g]) / (std[g] + eps))
    return {"episode_advantage": adv, "step_advantage": _loop_expand(adv, d["offsets"])}


def loop_drgrpo(d: dict) -> dict:
    count, mean, std = _loop_group_stats(d["outcome"], d["group"])
    adv = []
    for x, g in zip(d["outcome"], d["group"]):
        adv.append(x - mean[g])
    return {"episode_advantage": adv, "step_advantage": _loop_expand(adv, d["offsets"])}


def loop_rloo(d: dict) -> dict:
    count, mean, std = _loop_group_stats(d["outcome"], d["group"])
    total = {g: mean[g] * count[g] for g in count}
    adv = []
    for x, g in zip(d["outcome"], d["group"]):
        n = count[g]
        if n > 1:
            adv.append(x - (total[g] - x) / (n - 1))  # baseline: mean of the other episodes
        else:
            adv.append(x)
    return {"episode_advantage": adv, "step_advantage": _loop_expand(adv, d["offsets"])}


def loop_reinforce_pp(d: dict) -> dict:
    eps = 1e-8
    count, mean, std = _loop_group_stats(d["outcome"], d["group"])
    offsets = d["offsets"]
    c = []
    w = []
    for e, (x, g) in enumerate(zip(d["outcome"], d["group"])):
        c.append(x - mean[g])
        w.append(offsets[e + 1] - offsets[e])
    n = 0.0
    s = 0.0
    for ci, wi in zip(c, w):
        n += wi
        s += wi * ci
    mu = s / n
    ss = 0.0
    for ci, wi in zip(c, w):
        ss += wi * (ci - mu) ** 2
    var = ss / n * (n / (n - 1))
    adv = [(ci - mu) / math.sqrt(var + eps) for ci in c]
    return {"episode_advantage": adv, "step_advantage": _loop_expand(adv, offsets)}


def loop_gae(d: dict) -> dict:
    gamma, lam = 1.0, 1.0
    offsets, reward, value, outcome = d["offsets"], d["reward"], d["value"], d["outcome"]
    S = offsets[-1]
    adv = [0.0] * S
    ret = [0.0] * S
    rew = [0.0] * S
    ep_adv = []
    for e in range(len(outcome)):
        start, end = offsets[e], offsets[e + 1]
        last = 0.0
        for t in range(end - 1, start - 1, -1):
            r = reward[t] + outcome[e] if t == end - 1 else reward[t]
            v_next = value[t + 1] if t + 1 < end else 0.0
            delta = r + gamma * v_next - value[t]
            last = delta + gamma * lam * last
            adv[t] = last
            ret[t] = last + value[t]
            rew[t] = r
        ep_adv.append(adv[start])
    return {"episode_advantage": ep_adv, "step_advantage": adv, "step_return": ret, "step_reward": rew}


LOOP_REFERENCES: dict[str, Callable[[dict], dict]] = {
    "grpo": loop_grpo,
    "drgrpo": loop_drgrpo,
    "rloo": loop_rloo,
    "reinforce_pp": loop_reinforce_pp,
    "gae": loop_gae,
}


def loop_inputs(inp: Input) -> dict:
    a = inp.arrays
    return {
        "outcome": a["outcome"].tolist(),
        "group": [str(g) for g in a["group_id"].tolist()],
        "offsets": a["episode_offsets"].tolist(),
        "reward": a["reward"].tolist(),
        "value": a["value"].tolist(),
        "tokens": a["tokens"].tolist(),
    }


def max_abs_diff(ref: dict, credit: sc.Credit) -> float:
    worst = 0.0
    for name, values in ref.items():
        got = getattr(credit, name)
        if got is None:
            return math.inf
        worst = max(worst, float(np.max(np.abs(np.asarray(values) - got))) if len(values) else 0.0)
    return worst


# ---------------------------------------------------------------------- estimator rows
@dataclass
class Row:
    input: str
    estimator: str
    family: str
    steps: int
    repeats: int
    cold_s: float
    warm_s: float
    peak_bps: float
    out_bps: float
    loop_s: float | None = None
    loop_extrapolated: bool = False
    diff: float | None = None
    note: str = ""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.cold_s

    @property
    def speedup(self) -> float | None:
        return None if self.loop_s is None else self.loop_s / self.cold_s

    @property
    def time_target(self) -> float | None:
        t = TIME_TARGET_PER_1M.get(self.family, STEP_LEVEL_TIME_TARGET)
        return t * self.steps / MEGA

    @property
    def time_ok(self) -> bool | None:
        return None if self.time_target is None else self.cold_s < self.time_target

    @property
    def mem_ok(self) -> bool:
        return self.peak_bps < self.mem_target

    @property
    def mem_target(self) -> float:
        return MEM_TARGET.get(self.family, STEP_LEVEL_MEM_TARGET)

    @property
    def agree_ok(self) -> bool | None:
        return None if self.diff is None else self.diff <= AGREE_TOL

    @property
    def verdict(self) -> str:
        checks = [self.time_ok, self.mem_ok]
        if self.agree_ok is False:
            return "FAIL (results differ)"
        if any(c is False for c in checks):
            parts = []
            if self.time_ok is False:
                parts.append("time")
            if not self.mem_ok:
                parts.append("memory")
            return "FAIL (" + ", ".join(parts) + ")"
        return "PASS" if self.time_ok is not None else "PASS (memory; no time target)"


def bench_estimators(inp: Input, repeats: int, loop_data: dict | None, seed: int) -> list[Row]:
    rows = []
    for spec in sc.list_estimators():
        ro = input_for(inp, spec, seed)
        if ro is None:
            continue
        name = spec.name
        call = functools.partial(sc.estimate, ro, name)
        call()  # warm-up (imports, first-touch of the input pages)
        cold = time_call(call, repeats, before=lambda: drop_caches(ro))
        warm = time_call(call, repeats)
        drop_caches(ro)
        peak, kept = peak_extra_bytes(call)
        S = ro.n_steps
        row = Row(inp.label, name, spec.family, S, repeats, cold, warm, peak / S, kept / S)
        ref = LOOP_REFERENCES.get(name)
        if loop_data is not None and ref is not None:
            wrong = {k: v for k, v in LOOP_DEFAULTS[name].items() if spec.params[k].default != v}
            if wrong:
                row.note = f"loop reference skipped: defaults changed ({wrong})"
            else:
                gc.collect()
                t0 = time.perf_counter()
                out = ref(loop_data)
                row.loop_s = time.perf_counter() - t0
                row.diff = max_abs_diff(out, call())
                del out
        elif ref is None:
            row.note = "no loop reference for this estimator"
        log(
            f"  {inp.label:>10} {name:<13} cold {cold:.4f}s warm {warm:.4f}s "
            f"peak {peak / S:.1f} B/step"
            + ("" if row.loop_s is None else f"  loop {row.loop_s:.2f}s diff {row.diff:.1e}")
        )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- I/O rows
@dataclass
class IoRow:
    what: str
    seconds: float
    repeats: int
    steps: int
    size_bytes: int | None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def bench_io(inp: Input, repeats: int) -> tuple[list[IoRow], list[IoRow]]:
    """(timed rows, setup rows) for write_credit / read_rollouts on ``inp``."""
    ro = inp.ro
    S = ro.n_steps
    rows: list[IoRow] = []
    setup: list[IoRow] = []
    with tempfile.TemporaryDirectory(prefix="stepcredit-bench-") as tmp:
        d = Path(tmp)
        for est in ("grpo", "gae"):
            credit = sc.estimate(ro, est)
            for ext in ("parquet", "jsonl"):
                path = d / f"credit-{est}.{ext}"
                t = time_call(lambda c=credit, p=path: sc.write_credit(c, ro, p), repeats)
                rows.append(IoRow(f"write_credit {est} -> .{ext}", t, repeats, S, path.stat().st_size))
                log(f"  write_credit {est} .{ext}: {t:.3f}s ({path.stat().st_size / 1e6:.0f} MB)")
                path.unlink()
            del credit
        for ext in ("parquet", "jsonl"):
            path = d / f"rollouts.{ext}"
            t0 = time.perf_counter()
            sc.write_rollouts(ro, path)
            t_write = time.perf_counter() - t0
            size = path.stat().st_size
            setup.append(IoRow(f"write_rollouts -> .{ext} (setup, 1 run)", t_write, 1, S, size))
            back = sc.read_rollouts(path)
            if not back.equals(ro):
                raise SystemExit(f"read_rollouts(.{ext}) did not give back the rollouts written")
            del back
            t = time_call(lambda: sc.read_rollouts(path), repeats)
            rows.append(IoRow(f"read_rollouts <- .{ext}", t, repeats, S, size))
            log(f"  read_rollouts .{ext}: {t:.3f}s ({size / 1e6:.0f} MB; written in {t_write:.2f}s)")
            path.unlink()
    return rows, setup


# ---------------------------------------------------------------------- report


def estimator_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    head = [
        "input", "estimator", "steps", "time cold (s)", "time warm (s)", "steps/s",
        "peak extra B/step", "output B/step", "loop ref (s)", "speed-up vs loop", "max abs diff",
        "time target (s)", "time", "memory (< target)", "result",
    ]
    body = []
    for r in rows:
        loop = "-" if r.loop_s is None else ("~" if r.loop_extrapolated else "") + fmt_s(r.loop_s)
        spd = "-" if r.speedup is None else ("~" if r.loop_extrapolated else "") + f"{r.speedup:,.0f}x"
        diff = "-" if r.diff is None else f"{r.diff:.1e}"
        tgt = "-" if r.time_target is None else f"< {r.time_target:.3g}"
        body.append([
            r.input, r.estimator, f"{r.steps:,}", fmt_s(r.cold_s), fmt_s(r.warm_s),
            fmt_rate(r.steps_per_s), f"{r.peak_bps:.1f}", f"{r.out_bps:.1f}", loop, spd, diff,
            tgt, fmt_bool(r.time_ok), fmt_bool(r.mem_ok), r.verdict,
        ])
    return head, body


def io_table(rows: list[IoRow], label: str) -> tuple[list[str], list[list[str]]]:
    head = ["operation", "time (s)", "repeats", "steps/s", "file size (MB)"]
    body = [
        [r.what, fmt_s(r.seconds), str(r.repeats), fmt_rate(r.steps_per_s),
         "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}"]
        for r in rows
    ]
    return head, body


def build_table(inputs: list[Input]) -> tuple[list[str], list[list[str]]]:
    head = ["input", "episodes", "steps", "Rollouts.from_arrays (s)", "steps/s"]
    body = [
        [i.label, f"{i.n_episodes:,}", f"{i.n_steps:,}", fmt_s(i.build_s), fmt_rate(i.n_steps / i.build_s)]
        for i in inputs
    ]
    return head, body


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "10M"], help="step counts: 1M = 2**20 steps (default: 1M 10M)")
    ap.add_argument("--repeats", type=int, default=None, help="best-of-N repeats (default: 5 up to 1M steps, 3 above)")
    ap.add_argument("--io-repeats", type=int, default=3, help="best-of-N repeats of the I/O timings (default 3)")
    ap.add_argument("--no-loop", action="store_true", help="skip the plain-Python loop references")
    ap.add_argument("--loop-max-steps", type=parse_size, default=MEGA, help="largest --sizes entry the loop reference runs on (default 1M, ragged variant included)")
    ap.add_argument("--no-ragged", action="store_true", help="skip the ragged-length inputs")
    ap.add_argument("--no-io", action="store_true", help="skip the write_credit / read_rollouts timings")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU core")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs/benchmarks.md)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    pinned = "not pinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to core {cpu}"
    machine = machine_line(pinned)
    log(machine)

    sizes = sorted(dict.fromkeys(args.sizes), key=parse_size)
    build_input("1k", False, args.seed)  # warm-up: first-use costs of Arrow/NumPy not in the build time
    variants = [False] if args.no_ragged else [False, True]
    rows: list[Row] = []
    inputs_done: list[Input] = []
    loop_by_layout: dict[bool, tuple[int, dict[str, float]]] = {}  # ragged -> (S, {name: loop s})
    io_rows: list[IoRow] = []
    io_label = ""
    io_setup: list[IoRow] = []
    io_input = min(sizes, key=lambda s: abs(parse_size(s) - MEGA))
    for size in sizes:
        for ragged in variants:
            inp = build_input(size, ragged, args.seed)
            log(f"{inp.label}: {inp.n_episodes:,} episodes, {inp.n_steps:,} steps, built in {inp.build_s:.3f}s")
            nominal = parse_size(size)  # "1M ragged" counts as a 1M input
            repeats = args.repeats or (5 if nominal <= MEGA else 3)
            run_loop = not args.no_loop and nominal <= args.loop_max_steps
            loop_data = loop_inputs(inp) if run_loop else None
            new_rows = bench_estimators(inp, repeats, loop_data, args.seed)
            del loop_data
            if run_loop:
                loop_by_layout[ragged] = (
                    inp.n_steps, {r.estimator: r.loop_s for r in new_rows if r.loop_s is not None}
                )
            elif not args.no_loop and ragged in loop_by_layout:
                S_ref, times = loop_by_layout[ragged]
                for r in new_rows:
                    if r.estimator in times:
                        r.loop_s = times[r.estimator] * r.steps / S_ref
                        r.loop_extrapolated = True
            rows.extend(new_rows)
            if not args.no_io and size == io_input and not ragged:
                log(f"I/O on {inp.label}")
                io_rows, io_setup = bench_io(inp, args.io_repeats)
                io_label = f"{inp.label}, {inp.n_steps:,} steps"
            inp.arrays = {}  # free the arrays kept for the loop reference / variants
            inp.variants = {}
            inputs_done.append(inp)
            del inp
            gc.collect()

    md = args.markdown
    print(("**Machine:** " if md else "Machine: ") + machine)
    print()
    print(("### " if md else "") + "Estimators: stepcredit.estimate(ro, name), default parameters")
    print()
    print(render(*estimator_table(rows), md))
    print()
    notes = [
        "time cold = best of N calls, each after dropping the Rollouts' cached index arrays "
        "(what one CLI run pays); time warm = best of N with the caches kept; N = "
        + ", ".join(dict.fromkeys(f"{r.repeats} for {r.input}" for r in rows)) + ".",
        "steps/s from the cold time. Peak extra B/step: tracemalloc peak above the baseline "
        "during one cold call (input excluded, output Credit included); output B/step: what "
        "the returned Credit still holds.",
        "loop ref = plain-Python loop implementation in this script, over lists, run once; "
        "speed-up = loop time / cold time; max abs diff = largest difference between the loop "
        "and the vectorised step/episode advantages (and returns/rewards for GAE).",
        "~ = loop time not measured on this input but extrapolated linearly from the loop time "
        "on the 1M-step input of the same layout (uniform or ragged), x its step-count ratio "
        "(about x10); the loop was not run on it.",
        "time targets: outcome estimators (GRPO, RLOO, Dr. GRPO; REINFORCE++ held to the same) "
        "< 0.2 s per 1M steps, GAE < 0.5 s per 1M steps, step-level estimators < 1 s per 1M "
        "steps, scaled linearly with the step count; memory: < 64 B/step (outcome, value), "
        "< 128 B/step (step-level). gigpo's states here are integers shared within a group "
        "(benchmarks/anchor_speed.py times string states, hashing included).",
    ]
    for n in notes:
        print(("- " if md else "  * ") + n)
    print()
    print(("### " if md else "") + "Building the inputs: Rollouts.from_arrays (not in the timings above)")
    print()
    print(render(*build_table(inputs_done), md))
    if io_rows:
        print()
        print(("### " if md else "") + f"I/O: write_credit, read_rollouts ({io_label})")
        print()
        print(render(*io_table(io_rows + io_setup, io_label), md))
        print()
        print(("- " if md else "  * ") + f"best of {args.io_repeats}; Arrow single-threaded "
              "(pa.set_cpu_count(1)); files in a temporary directory; read_rollouts results "
              "checked equal to the rollouts written.")
    failed = [r for r in rows if r.verdict.startswith("FAIL")]
    print()
    if failed:
        print(("**" if md else "") + f"{len(failed)} row(s) FAIL: "
              + ", ".join(f"{r.input}/{r.estimator} ({r.verdict})" for r in failed) + ("**" if md else ""))
    else:
        print(("**" if md else "") + f"All {len(rows)} rows PASS." + ("**" if md else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
