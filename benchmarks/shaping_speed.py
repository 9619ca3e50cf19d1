"""Speed and memory of the reward transforms, credit filters and one whole pipeline on 1M steps.

Run from the repository root (single-threaded, pinned to one core):

    taskset -c 0 .venv/bin/python benchmarks/shaping_speed.py --markdown

What it measures, for every registered reward transform (``stepcredit.list_transforms()``) and
credit filter (``stepcredit.list_filters()``), so new ones are picked up (a stage this script
has no input for is listed as skipped, never silently left out):

* **time**: ``sc.apply_transform(ro, name, **params)`` / ``sc.apply_filter(ro, credit, name,
  **params)`` best of N repeats. Each repeat is *cold*: the index arrays ``Rollouts`` caches on
  first use are dropped before the call (as in ``estimators_speed.py``); the *warm* time (caches
  kept) is reported beside it. Filters run on the credit of ``sc.estimate(ro, "grpo")``, computed
  once, not timed. N = 5 for calls under 0.5 s, 3 under 3 s, else 1 (``--repeats`` overrides).
* **steps/s**: steps / cold time.
* **vs grpo**: cold time / the cold time of ``sc.estimate(ro, "grpo")`` on the same input,
  measured in the same process (the baseline: the cheapest estimator, about 1-2 ms per 1M steps,
  so this says how many GRPO runs a stage costs).
* **peak extra memory**: tracemalloc peak minus baseline around one cold call, in bytes per step
  (the input excluded, the returned ``Shaped`` / ``Filtered`` included). NumPy reports its buffers
  to tracemalloc; Arrow's memory pool is not traced (strings, ``to_records``' Arrow side).
* **parameters**: each stage with its defaults, plus a non-default where the default does nothing
  interesting on this input or a second code path matters: ``laser`` with ``target_length=16384``
  (the responses here are ~16k tokens, so the default 4096 rewards nothing), ``laser_d`` on the
  paper's candidate grid widened to 32768 (the default grid 16..4096 has no candidate for these
  responses, so every level gets the batch's longest response as its target; first batch, and a
  next batch from its state with ``update_every=1``), ``composite`` with two components, a penalty factor, a cosine curriculum
  and a constraint (``dual_init=0.5``, so that its term counts on the first batch), ``par`` with
  two reference components, ``reward_fn`` at episode and step level.
* **stateful stages**: ``laser_d``, ``composite`` and ``replay`` run with ``state=None`` (first
  batch). ``replay`` is also measured on a *second* batch (same group ids, new outcomes) with the
  memory filled by the first, which is where it inserts remembered successes into failed groups.
* **text / Python stages**: ``tool_call`` parses text per step and ``reward_fn`` calls a Python
  function per episode or step, so they run on a 100k-step input (1,568 episodes x 64 steps),
  not 1M. ``tool_call``: every step has a JSON reference call shared by the 8 episodes of its
  group (12,544 distinct references) and a JSON action: 50% the exact call, 20% a wrong argument
  value, 10% another tool, 10% a missing argument, 10% malformed JSON. ``reward_fn``:
  ``fn="shaping_speed:episode_fn"`` / ``"shaping_speed:step_fn"``, tiny functions defined in this
  file (the benchmarks folder is put on ``sys.path`` so the module is importable by name).
* **pipeline**: ``Pipeline.build("gigpo", transforms=["prm_delta", "gated"],
  filters=["prof"]).run(ro)``: two transforms, GiGPO, PROF (drops half the episodes) and the
  refit (GiGPO again on the kept half), on the 1M input.

Input ("1M"): 2**20 = 1,048,576 steps (16,384 episodes x 64 steps), groups of 8 consecutive
episodes; outcome 0/1 (about half correct); step fields ``reward`` N(0, 0.1), ``process`` and
``value`` uniform in [0, 1), ``tokens`` 1..511 (so ~16k tokens per episode), integer ``state``
shared within a group with 3-way branching (as in ``estimators_speed.py``); episode reward
components ``judge`` (uniform [0, 1)), ``format`` (a factor in [0.5, 1]), ``ref_0``, ``ref_1``
(reference scores, N(0.5, 0.3)).

Targets (one core):

* vectorised transforms and filters: under 1 s per 1M steps and 128 bytes per step (the
  step-level estimators' targets; every vectorised stage should cost at most what an estimator
  does);
* the pipeline: the sum of its stages' time targets, 5 s per 1M steps (two transforms, GiGPO
  twice, one filter), and 256 bytes per step (it holds the shaped rollouts and a credit while
  the next stage runs);
* the Python-per-item stages ``tool_call``, ``reward_fn`` and ``replay`` (which keeps its memory
  as records): ``tool_call`` and ``reward_fn`` under 20 us per step (2 s per 100k steps, the upper
  end of docs/shaping.md's "5-20 us a step" for tool_call) and 4096 bytes per step (Python
  objects: about one dict per step); ``replay`` is held to the vectorised filter target, as it
  runs on whole batches.
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
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import stepcredit as sc  # noqa: E402

MEGA = 1 << 20  # "1M" steps = 16,384 episodes x 64 steps
STEPS_PER_EPISODE = 64
GROUP_SIZE = 8
TEXT_EPISODES = 1568  # x 64 = 100,352 steps ("100k"), a multiple of the group size

VEC_TIME_TARGET_PER_1M = 1.0  # s per 1M steps
VEC_MEM_TARGET = 128.0  # peak extra bytes per step
PIPE_TIME_TARGET_PER_1M = 5.0  # prm_delta + gated + gigpo + prof + refit gigpo, 1 s each
PIPE_MEM_TARGET = 256.0
PY_TIME_TARGET_PER_STEP = 20e-6  # tool_call, reward_fn
PY_MEM_TARGET = 4096.0
PY_STAGES = ("tool_call", "reward_fn")

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
MODULE = Path(__file__).stem  # "shaping_speed": reward_fn imports the functions below by name


# ---------------------------------------------------------------------- reward_fn targets
def episode_fn(episode: dict) -> float:
    """A tiny episode reward: 0.5 for a correct episode."""
    return 0.5 if episode["outcome"] >= 1.0 else 0.0


def step_fn(episode: dict, t: int) -> float:
    """A tiny step reward: 0.1 for a step the PRM scores above 0.5."""
    return 0.1 if episode["steps"][t]["process"] > 0.5 else 0.0


# ---------------------------------------------------------------------- machine


# ---------------------------------------------------------------------- inputs
def make_arrays(n_episodes: int, rng: np.random.Generator) -> dict[str, Any]:
    """``Rollouts.from_arrays`` keyword arguments: n_episodes x 64 steps, groups of 8."""
    E = n_episodes
    offsets = np.arange(E + 1, dtype=np.int64) * STEPS_PER_EPISODE
    S = int(offsets[-1])
    group = np.arange(E, dtype=np.int64) // GROUP_SIZE
    step = np.tile(np.arange(STEPS_PER_EPISODE), E)
    branch = rng.integers(0, 3, size=S)
    state = (np.repeat(group, STEPS_PER_EPISODE) * 4096 + step) * 4 + np.where(step > 0, branch, 0)
    return {
        "outcome": rng.integers(0, 2, size=E).astype(np.float64),
        "group_id": group,
        "episode_offsets": offsets,
        "reward": rng.normal(0.0, 0.1, size=S),
        "process": rng.random(S),
        "value": rng.random(S),
        "tokens": rng.integers(1, 512, size=S, dtype=np.int64),
        "state": state,
        "episode_columns": {
            "judge": rng.random(E),
            "format": rng.uniform(0.5, 1.0, size=E),
            "ref_0": rng.normal(0.5, 0.3, size=E),
            "ref_1": rng.normal(0.5, 0.3, size=E),
        },
    }


TOOLS = ("search", "open_page", "click", "calculator", "submit")


def tool_columns(arrays: dict[str, Any], rng: np.random.Generator) -> dict[str, list[str]]:
    """JSON ``reference`` calls shared within a group (one per group and step index) and JSON
    ``action`` calls: 50% exact, 20% wrong value, 10% other tool, 10% missing argument, 10%
    malformed."""
    group = np.repeat(arrays["group_id"], STEPS_PER_EPISODE).tolist()
    S = len(group)
    step = (np.arange(S) % STEPS_PER_EPISODE).tolist()
    kind = rng.choice(5, size=S, p=[0.5, 0.2, 0.1, 0.1, 0.1]).tolist()
    refs, actions = [], []
    for g, t, k in zip(group, step, kind):
        name = TOOLS[(g + t) % len(TOOLS)]
        args = {"query": f"task {g} step {t}", "top_k": (g * 7 + t) % 10}
        refs.append(json.dumps({"name": name, "arguments": args}))
        if k == 0:
            call = {"name": name, "arguments": args}
        elif k == 1:
            call = {"name": name, "arguments": {**args, "top_k": args["top_k"] + 1}}
        elif k == 2:
            call = {"name": TOOLS[(g + t + 1) % len(TOOLS)], "arguments": args}
        elif k == 3:
            call = {"name": name, "arguments": {"query": args["query"]}}
        else:
            actions.append(json.dumps({"name": name, "arguments": args})[:-2])  # truncated JSON
            continue
        actions.append(json.dumps(call))
    return {"action": actions, "reference": refs}


@dataclass
class Input:
    label: str
    ro: sc.Rollouts
    build_s: float

    @property
    def n_steps(self) -> int:
        return self.ro.n_steps


def build(label: str, arrays: dict[str, Any]) -> Input:
    gc.collect()
    t0 = time.perf_counter()
    ro = sc.Rollouts.from_arrays(**arrays)
    return Input(label, ro, time.perf_counter() - t0)


# ---------------------------------------------------------------------- timing helpers


def peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes traced by tracemalloc during one call, baseline subtracted."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return peak - base


# ---------------------------------------------------------------------- rows
@dataclass
class Row:
    kind: str  # "transform", "filter", "pipeline", "baseline"
    name: str
    params: str
    input: str
    steps: int
    repeats: int
    cold_s: float
    warm_s: float
    peak_bps: float
    baseline_s: float
    time_target: float | None  # seconds for this row's steps
    mem_target: float | None
    note: str = ""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.cold_s

    @property
    def ratio(self) -> float:
        return self.cold_s / self.baseline_s

    @property
    def time_ok(self) -> bool | None:
        return None if self.time_target is None else self.cold_s < self.time_target

    @property
    def mem_ok(self) -> bool | None:
        return None if self.mem_target is None else self.peak_bps < self.mem_target

    @property
    def verdict(self) -> str:
        bad = [w for w, ok in (("time", self.time_ok), ("memory", self.mem_ok)) if ok is False]
        if bad:
            return "FAIL (" + ", ".join(bad) + ")"
        return "PASS" if self.time_ok is not None else "-"


# diagnostics worth showing per stage (those present are printed in the note column)
NOTE_KEYS = {
    "composite": ("penalty_mean", "multiplier.judge", "constraint_mean.judge"),
    "gated": ("gated_fraction",),
    "laser": ("rewarded_fraction",),
    "laser_d": ("target_easy", "target_medium", "target_hard", "updated", "rewarded_fraction"),
    "par": ("references", "no_reference"),
    "prm_clip": ("penalised_fraction",),
    "renorm": ("success_fraction",),
    "reward_fn": ("calls",),
    "tool_call": ("referenced_steps", "format_rate", "exact_rate"),
    "prof": ("dropped_fraction", "length_penalized"),
    "zero_variance": ("collapsed_groups", "dropped_fraction"),
    "replay": ("inserted", "failed_groups", "remembered_groups"),
}


def fmt_num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def note_for(name: str, diagnostics: Any) -> str:
    d = dict(diagnostics or {})
    return ", ".join(f"{k}={fmt_num(d[k])}" for k in NOTE_KEYS.get(name, ()) if k in d)


def fmt_params(params: dict[str, Any]) -> str:
    if not params:
        return "defaults"
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items())


def measure(
    call: Callable[[], Any], ro: sc.Rollouts, repeats: int | None
) -> tuple[Any, float, float, int, float, int]:
    """(result of a warm-up call, cold s, warm s, peak extra bytes, warm-up s, repeats)."""
    drop_caches(ro)
    gc.collect()
    t0 = time.perf_counter()
    out = call()  # warm-up (imports, first touch of the input pages); also the diagnostics
    first = time.perf_counter() - t0
    n = repeats or (5 if first < 0.5 else 3 if first < 3.0 else 1)
    cold = time_call(call, n, before=lambda: drop_caches(ro))
    warm = time_call(call, n)
    drop_caches(ro)
    peak = peak_extra_bytes(call)
    return out, cold, warm, peak, first, n


def bench_baseline(inp: Input, repeats: int | None) -> Row:
    call = functools.partial(sc.estimate, inp.ro, "grpo")
    _, cold, warm, peak, _, n = measure(call, inp.ro, repeats)
    S = inp.n_steps
    log(f"  baseline grpo on {inp.label}: cold {cold * 1e3:.2f} ms, warm {warm * 1e3:.2f} ms")
    return Row("baseline", "grpo (sc.estimate)", "defaults", inp.label, S, n, cold, warm, peak / S, cold, None, None)


def targets_for(name: str, kind: str, steps: int) -> tuple[float, float]:
    if kind == "pipeline":
        return PIPE_TIME_TARGET_PER_1M * steps / MEGA, PIPE_MEM_TARGET
    if name in PY_STAGES:
        return PY_TIME_TARGET_PER_STEP * steps, PY_MEM_TARGET
    return VEC_TIME_TARGET_PER_1M * steps / MEGA, VEC_MEM_TARGET


def run_row(
    kind: str, name: str, params: dict[str, Any], inp: Input, base: Row, repeats: int | None,
    call: Callable[[], Any], label: str | None = None, extra_note: str = "",
) -> Row:
    out, cold, warm, peak, first, n = measure(call, inp.ro, repeats)
    S = inp.n_steps
    t_target, m_target = targets_for(name, kind, S)
    diag = getattr(out, "diagnostics", None)
    note = note_for(name, diag)
    if extra_note:
        note = f"{extra_note}; {note}" if note else extra_note
    del out
    row = Row(kind, label or name, fmt_params(params), inp.label, S, n, cold, warm, peak / S,
              base.cold_s, t_target, m_target, note)
    log(f"  {kind:<9} {row.name:<22} {row.params[:60]:<60} cold {cold:.4f}s warm {warm:.4f}s "
        f"(first {first:.3f}s, N={n}) peak {peak / S:.1f} B/step  {row.verdict}")
    return row


# stages and the parameter sets they are measured with (the first: defaults)
TRANSFORM_PARAMS: dict[str, list[dict[str, Any]]] = {
    "composite": [
        {},
        {"components": "outcome:1.0,judge:0.5", "penalties": "format", "schedule": "cosine",
         "start": "outcome:0.5,judge:1.0", "total_steps": 100, "constraints": "judge>=0.6",
         "dual_init": 0.5},
    ],
    "laser": [{}, {"target_length": 16384}],
    "laser_d": [{}, {"min_length": 4096, "max_length": 32768, "length_step": 1024}],
    "par": [{}, {"reference": "components", "components": "ref_0,ref_1"}],
    "reward_fn": [
        {"fn": f"{MODULE}:episode_fn"},
        {"fn": f"{MODULE}:step_fn", "level": "step"},
    ],
}


def bench_transforms(big: Input, text: Input, bases: dict[str, Row], repeats: int | None) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    skipped: list[str] = []
    for spec in sc.list_transforms():
        inp = text if spec.name in PY_STAGES else big
        for params in TRANSFORM_PARAMS.get(spec.name, [{}]):
            try:
                full = spec.bind(params)
                missing = [f for f in spec.requires_for(full) if f != "outcome" and not inp.ro.has(f)]
            except Exception as exc:  # noqa: BLE001 - a stage this script cannot feed
                skipped.append(f"{spec.name} ({exc})")
                continue
            if missing:
                skipped.append(f"{spec.name} (needs {', '.join(missing)}, which this script does not build)")
                continue
            call = functools.partial(sc.apply_transform, inp.ro, spec.name, **params)
            label = spec.name + (" (first batch)" if spec.stateful else "")
            rows.append(run_row("transform", spec.name, params, inp, bases[inp.label], repeats, call, label))
            if spec.name == "laser_d" and params:
                # the next batch: state from the first, targets recomputed from the monitored window
                p2 = {**params, "update_every": 1}
                state = sc.apply_transform(inp.ro, "laser_d", **p2).state
                call = functools.partial(sc.apply_transform, inp.ro, "laser_d", state=state, **p2)
                rows.append(run_row("transform", "laser_d", p2, inp, bases[inp.label], repeats, call,
                                    "laser_d (next batch)", "state from the first batch"))
    return rows, skipped


def bench_filters(big: Input, second: Input, base: Row, repeats: int | None) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    skipped: list[str] = []
    credit = sc.estimate(big.ro, "grpo")
    for spec in sc.list_filters():
        missing = [f for f in spec.requires if not big.ro.has(f)]
        if missing:
            skipped.append(f"{spec.name} (needs {', '.join(missing)}, which this script does not build)")
            continue
        call = functools.partial(sc.apply_filter, big.ro, credit, spec.name)
        label = spec.name + (" (first batch)" if spec.stateful else "")
        rows.append(run_row("filter", spec.name, {}, big, base, repeats, call, label,
                            "on grpo credit" + (", state None" if spec.stateful else "")))
        if spec.name == "replay":
            state = sc.apply_filter(big.ro, credit, "replay").state
            credit2 = sc.estimate(second.ro, "grpo")
            call = functools.partial(sc.apply_filter, second.ro, credit2, "replay", state=state)
            rows.append(run_row("filter", "replay", {}, second, base, repeats, call, "replay (second batch)",
                                "same group ids, new outcomes, memory from the first batch"))
            del credit2, state
    return rows, skipped


def bench_pipeline(big: Input, base: Row, repeats: int | None) -> Row:
    pipe = sc.Pipeline.build("gigpo", transforms=["prm_delta", "gated"], filters=["prof"])
    call = functools.partial(pipe.run, big.ro)
    row = run_row("pipeline", "pipeline", {}, big, base, repeats, call,
                  "prm_delta → gated → gigpo → prof (+ refit)")
    res = pipe.run(big.ro)
    kept = res.credit.diagnostics.get("kept_episodes")
    row.params = "defaults, refit = true"
    row.note = f"refit on {kept:,} of {big.ro.n_episodes:,} episodes" if kept is not None else ""
    return row


# ---------------------------------------------------------------------- report


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    head = [
        "kind", "stage", "parameters", "input", "steps", "N", "time cold (s)", "time warm (s)",
        "steps/s", "vs grpo", "peak extra B/step", "time target (s)", "time", "memory target",
        "memory", "result", "notes (diagnostics)",
    ]
    body = []
    for r in rows:
        body.append([
            r.kind, r.name, r.params.replace("|", "\\|"), r.input, f"{r.steps:,}", str(r.repeats),
            fmt_s(r.cold_s), fmt_s(r.warm_s), fmt_rate(r.steps_per_s),
            "1x" if r.kind == "baseline" else f"{r.ratio:,.0f}x" if r.ratio >= 10 else f"{r.ratio:.1f}x",
            f"{r.peak_bps:.1f}", "-" if r.time_target is None else f"< {r.time_target:.3g}",
            fmt_bool(r.time_ok), "-" if r.mem_target is None else f"< {r.mem_target:.0f}",
            fmt_bool(r.mem_ok), r.verdict, r.note,
        ])
    return head, body


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None, help="best-of-N repeats (default: 5 / 3 / 1 by the first call's time)")
    ap.add_argument("--episodes", type=int, default=MEGA // STEPS_PER_EPISODE, help="episodes of the main input (default 16384 = 1M steps)")
    ap.add_argument("--text-episodes", type=int, default=TEXT_EPISODES, help="episodes of the tool_call / reward_fn input (default 1568 = 100k steps)")
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
    t_start = time.perf_counter()

    E = args.episodes - args.episodes % GROUP_SIZE
    Et = args.text_episodes - args.text_episodes % GROUP_SIZE
    big = build(_size_label(E), make_arrays(E, np.random.default_rng([args.seed, 1])))
    # the second batch for replay: same groups, new outcomes (and new steps)
    second = build(_size_label(E) + " (batch 2)", make_arrays(E, np.random.default_rng([args.seed, 2])))
    text_arrays = make_arrays(Et, np.random.default_rng([args.seed, 3]))
    text_arrays.update(tool_columns(text_arrays, np.random.default_rng([args.seed, 4])))
    text = build(_size_label(Et), text_arrays)
    del text_arrays
    for inp in (big, text):
        log(f"{inp.label}: {inp.ro.n_episodes:,} episodes, {inp.n_steps:,} steps, from_arrays {inp.build_s:.3f}s")

    bases = {inp.label: bench_baseline(inp, args.repeats) for inp in (big, text)}
    rows: list[Row] = [bases[big.label]]
    t_rows, t_skipped = bench_transforms(big, text, bases, args.repeats)
    rows += [r for r in t_rows if r.input == big.label]
    f_rows, f_skipped = bench_filters(big, second, bases[big.label], args.repeats)
    rows += f_rows
    rows.append(bench_pipeline(big, bases[big.label], args.repeats))
    rows.append(bases[text.label])
    rows += [r for r in t_rows if r.input == text.label]
    skipped = t_skipped + f_skipped
    total = time.perf_counter() - t_start

    md = args.markdown
    print(("**Machine:** " if md else "Machine: ") + machine)
    print()
    print(f"Inputs: {big.label} = {big.ro.n_episodes:,} episodes x {STEPS_PER_EPISODE} steps = "
          f"{big.n_steps:,} steps (from_arrays {fmt_s(big.build_s)} s); {text.label} = "
          f"{text.ro.n_episodes:,} x {STEPS_PER_EPISODE} = {text.n_steps:,} steps with JSON tool calls "
          f"(from_arrays, strings hashed: {fmt_s(text.build_s)} s); groups of {GROUP_SIZE}. "
          f"Whole run: {total:.0f} s.")
    print()
    print(render(*table(rows), md))
    print()
    notes = [
        "time cold = best of N calls, each after dropping the Rollouts' cached index arrays; "
        "time warm = best of N with the caches kept; N = 5 when the first call took < 0.5 s, "
        "3 when < 3 s, else 1.",
        "vs grpo = cold time / cold time of sc.estimate(ro, 'grpo') on the same input in the "
        "same process (the baseline rows).",
        "peak extra B/step = tracemalloc peak above the baseline during one cold call (input "
        "excluded, output included); Arrow's memory pool is not traced.",
        "targets: vectorised transforms and filters (replay included) < 1 s per 1M steps and "
        "< 128 B/step; the pipeline < 5 s per 1M steps (the sum of its five stages' targets) and "
        "< 256 B/step; tool_call and reward_fn (Python per step or episode, on 100k steps) "
        "< 20 us per step and < 4096 B/step.",
    ]
    for n in notes:
        print(("- " if md else "  * ") + n)
    if skipped:
        print(("- " if md else "  * ") + "skipped: " + "; ".join(skipped))
    failed = [r for r in rows if r.verdict.startswith("FAIL")]
    judged = [r for r in rows if r.verdict != "-"]
    print()
    if failed:
        print(("**" if md else "") + f"{len(judged) - len(failed)} of {len(judged)} rows PASS; "
              f"{len(failed)} FAIL: " + ", ".join(f"{r.name}: {r.verdict}" for r in failed)
              + ("**" if md else ""))
    else:
        print(("**" if md else "") + f"All {len(judged)} rows PASS." + ("**" if md else ""))
    return 1 if failed else 0


def _size_label(n_episodes: int) -> str:
    S = n_episodes * STEPS_PER_EPISODE
    if S % MEGA == 0:
        return f"{S // MEGA}M"
    if S >= 1000 and S % 1000 < 500 and S < MEGA:
        return f"{S // 1000}k"
    return f"{S:,}"


if __name__ == "__main__":
    sys.exit(main())
