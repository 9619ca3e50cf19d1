"""Loop oracle of the ``composite`` reward transform (METHODS.md section 4, composite rewards).

Written from the definition, one episode at a time, over the *records* (their ``"rewards"``
objects), with the parameters already parsed (plain dicts, no string parsing):

    w_k(τ) = (1 − ρ(τ)) w0_k + ρ(τ) w_k for k in start, else w_k;   ρ = 1 (constant),
             p (linear) or (1 − cos πp)/2 (cosine), p = min(τ/T, 1);
    R'_i = Π_j f_j(i) · Σ_k w_k(τ) c_k(i) + Σ_k μ_k s_k (c_k(i) − θ_k);
    μ_k ← max(0, μ_k − η · mean_i s_k (c_k(i) − θ_k))   (no max for "=").

The sums run in the order the components are listed, as the vectorised code does, so the two
agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from . import Record

__all__ = ["composite"]


def _value(rec: Record, name: str) -> float:
    return float(rec["outcome"]) if name == "outcome" else float(rec["rewards"][name])


def composite(
    records: Sequence[Record],
    weights: Mapping[str, float],
    penalties: Sequence[str] = (),
    schedule: str = "constant",
    start: Mapping[str, float] | None = None,
    total_steps: int = 0,
    constraints: Mapping[str, tuple[str, float]] | None = None,
    dual_lr: float = 0.05,
    step: int = 0,
    multipliers: Mapping[str, float] | None = None,
) -> tuple[list[float], dict[str, float]]:
    """(new outcome per record, updated multipliers)."""
    start = start or {}
    constraints = constraints or {}
    mult = dict(multipliers or {k: 0.0 for k in constraints})
    if schedule == "constant":
        rho = 1.0
    else:
        p = min(step / total_steps, 1.0)
        rho = p if schedule == "linear" else (1.0 - math.cos(math.pi * p)) / 2.0
    w_now = {}
    for k, w in weights.items():
        w_now[k] = (1.0 - rho) * start[k] + rho * w if k in start else w
    out = []
    sums = {k: 0.0 for k in constraints}
    for rec in records:
        total = 0.0
        for k, w in w_now.items():
            total += w * _value(rec, k)
        factor = 1.0
        for j in penalties:
            f = _value(rec, j)
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"penalty {j} = {f} outside [0, 1] in {rec['episode_id']}")
            factor *= f
        r = factor * total
        for k, (sense, theta) in constraints.items():
            sign = -1.0 if sense == "<=" else 1.0
            g = sign * (_value(rec, k) - theta)
            r += mult[k] * g
            sums[k] += g
        out.append(r)
    new = {}
    for k, (sense, _) in constraints.items():
        m = mult[k] - dual_lr * (sums[k] / len(records))
        new[k] = m if sense == "=" else max(0.0, m)
    return out, new
