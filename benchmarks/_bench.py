"""Timing, memory and table helpers shared by the benchmark scripts (not a benchmark itself).

Import it before NumPy and Arrow: it makes them single-threaded by setting the thread counts
before either library is loaded.
"""

from __future__ import annotations

import os

# Single-threaded before NumPy / Arrow are imported (their thread pools read these at start).
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
):
    os.environ[_var] = "1"

import functools  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import stepcredit as sc  # noqa: E402

__all__ = ['log', 'cpu_model', 'machine_line', 'drop_caches', 'time_call', 'fmt_s', 'fmt_rate', 'fmt_bool', 'render']


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(pinned: str) -> str:
    return (
        f"{platform.platform()}; CPU {cpu_model()}; {os.cpu_count()} cores ({pinned}); "
        f"Python {platform.python_version()}, NumPy {np.__version__}, PyArrow {pa.__version__}, "
        f"stepcredit {sc.__version__}; OMP_NUM_THREADS=1, Arrow CPU threads {pa.cpu_count()}"
    )


def drop_caches(ro: sc.Rollouts) -> None:
    """Forget the index arrays Rollouts computes lazily (functools.cached_property)."""
    for name, attr in vars(type(ro)).items():
        if isinstance(attr, functools.cached_property):
            ro.__dict__.pop(name, None)


def time_call(fn: Callable[[], Any], repeats: int, before: Callable[[], None] | None = None) -> float:
    """Best wall time of ``repeats`` calls, garbage collector off during each call."""
    best = math.inf
    for _ in range(repeats):
        if before is not None:
            before()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        finally:
            gc.enable()
        del out
        best = min(best, dt)
    return best


def fmt_s(x: float) -> str:
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 0.01:
        return f"{x:.3f}"
    return f"{x:.4f}"


def fmt_rate(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def fmt_bool(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def render(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(out)
