"""Composite rewards: weighted named components, multiplicative penalties, a curriculum over
the weights, and a constrained (Lagrangian) mode whose multipliers adapt across batches.

Notation: episode i has named reward components c_k(i) (the record's ``"rewards"`` object,
field ``"rewards.NAME"``; the name ``outcome`` is the episode outcome R_i itself), penalty
factors f_j(i) ∈ [0, 1] (components as well), weights w_k(τ) at training step τ (the number of
earlier calls, kept in the state), and, in the constrained mode, thresholds θ_k with Lagrange
multipliers μ_k(τ) and constraint signs s_k:

    g_k(i) = s_k (c_k(i) − θ_k),   s_k = +1 for ``c_k ≥ θ_k`` (and ``c_k = θ_k``), −1 for ``c_k ≤ θ_k``.

A constraint is satisfied on average over a batch when ḡ_k = mean_i g_k(i) ≥ 0 (``=``: when
ḡ_k = 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.data.errors import RolloutsError
from stepcredit.shaping.registry import Shaped, ShapingError, register_transform

__all__ = ["composite", "parse_constraints", "parse_weights", "schedule_fraction"]

CONSTRAINED_RLHF_PAPER = (
    "Confronting Reward Model Overoptimization with Constrained RLHF "
    "(Moskovitz, Singh, Strouse, Sandholm, Salakhutdinov, Dragan, McAleer, 2023, arXiv:2310.04373)"
)

_WHO = "transform 'composite'"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONSTRAINT = re.compile(r"\s*([^<>=:\s]+)\s*(<=|>=|=|:)\s*(\S.*?)\s*\Z")

Schedule = Literal["constant", "linear", "cosine"]


def _check_name(name: str, param: str, text: str) -> str:
    if not _NAME.match(name):
        raise ShapingError(
            f"{_WHO}: parameter {param}={text!r} names {name!r}, which is not a reward component "
            "name: use 'outcome' or a name matching [A-Za-z_][A-Za-z0-9_]* (the keys of the "
            "records' \"rewards\" object, without the 'rewards.' prefix)"
        )
    return name


def _number(value: str, param: str, text: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise ShapingError(f"{_WHO}: parameter {param}={text!r}: {what} {value!r} is not a finite number")
    return x


def parse_weights(text: str, param: str = "components") -> dict[str, float]:
    """``"name:weight,name:weight"`` -> ``{name: weight}`` in the given order ('' -> {}).

    Raises:
        ShapingError: a malformed item, a bad name, a non-finite weight or a repeated name,
            naming the transform and the parameter.
    """
    out: dict[str, float] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        if item.count(":") != 1:
            raise ShapingError(
                f"{_WHO}: parameter {param}={text!r} is malformed at {item.strip()!r}: expected "
                "comma-separated name:weight items, e.g. 'correct:1.0,format:0.5'"
            )
        name, value = (s.strip() for s in item.split(":"))
        _check_name(name, param, text)
        if name in out:
            raise ShapingError(f"{_WHO}: parameter {param}={text!r} names {name!r} twice")
        out[name] = _number(value, param, text, f"the weight of {name!r}")
    return out


def parse_names(text: str, param: str = "penalties") -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` ('' -> []); a bad or repeated name is a ShapingError."""
    if not text.strip():
        return []
    names = [_check_name(s.strip(), param, text) for s in text.split(",")]
    if len(set(names)) != len(names):
        raise ShapingError(f"{_WHO}: parameter {param}={text!r} names a component twice")
    return names


def parse_constraints(text: str) -> dict[str, tuple[str, float]]:
    """``"name>=θ,name<=θ,name=θ,name:θ"`` -> ``{name: (sense, θ)}``; ``:`` means ``>=``.

    Raises:
        ShapingError: a malformed item, a bad name, a non-finite threshold or a repeated name.
    """
    out: dict[str, tuple[str, float]] = {}
    if not text.strip():
        return out
    for item in text.split(","):
        m = _CONSTRAINT.match(item)
        if not m:
            raise ShapingError(
                f"{_WHO}: parameter constraints={text!r} is malformed at {item.strip()!r}: expected "
                "comma-separated name>=threshold, name<=threshold or name=threshold items "
                "(name:threshold means name>=threshold), e.g. 'format>=0.9,length<=0.5'"
            )
        name, op, value = m.groups()
        _check_name(name, "constraints", text)
        if name in out:
            raise ShapingError(f"{_WHO}: parameter constraints={text!r} constrains {name!r} twice")
        out[name] = (">=" if op == ":" else op, _number(value, "constraints", text, f"the threshold of {name!r}"))
    return out


def _parsed(p: Mapping[str, Any]):
    weights = parse_weights(p["components"], "components")
    if not weights:
        raise ShapingError(f"{_WHO}: parameter components='' names no component; e.g. components='outcome:1.0'")
    penalties = parse_names(p["penalties"], "penalties")
    start = parse_weights(p["start"], "start")
    constraints = parse_constraints(p["constraints"])
    unknown = [n for n in start if n not in weights]
    if unknown:
        raise ShapingError(
            f"{_WHO}: parameter start={p['start']!r} gives a start weight to {unknown[0]!r}, which "
            f"is not one of the components ({', '.join(weights)})"
        )
    if p["schedule"] == "constant" and start:
        raise ShapingError(
            f"{_WHO}: parameter start={p['start']!r} is set but schedule='constant' never moves "
            "the weights; use schedule='linear' or 'cosine', or drop start"
        )
    if p["total_steps"] < 0:
        raise ShapingError(f"{_WHO}: parameter total_steps={p['total_steps']!r} must be >= 0")
    if p["schedule"] != "constant" and p["total_steps"] < 1:
        raise ShapingError(
            f"{_WHO}: parameter total_steps={p['total_steps']!r} must be >= 1 with "
            f"schedule={p['schedule']!r} (the number of calls over which the weights move)"
        )
    if p["dual_lr"] < 0:
        raise ShapingError(f"{_WHO}: parameter dual_lr={p['dual_lr']!r} must be >= 0")
    if p["dual_init"] < 0:
        raise ShapingError(f"{_WHO}: parameter dual_init={p['dual_init']!r} must be >= 0")
    return weights, penalties, start, constraints


def _requires(p: Mapping[str, Any]) -> tuple[str, ...]:
    weights, penalties, _, constraints = _parsed(p)
    names = dict.fromkeys([*weights, *penalties, *constraints])
    return tuple(f"rewards.{n}" for n in names if n != "outcome")


def schedule_fraction(step: int, total_steps: int, schedule: Schedule) -> float:
    """How far the weights have moved from ``start`` to their final values at call ``step``.

        p = min(step / total_steps, 1);   linear: p;   cosine: (1 − cos(π p)) / 2;   constant: 1.

    Both ramps are 0 at step 0, 1 from ``total_steps`` on, and non-decreasing in between.
    """
    if schedule == "constant":
        return 1.0
    p = min(step / total_steps, 1.0)
    return p if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * p))


def _read_state(state: dict[str, Any] | None, constraints: Mapping[str, tuple[str, float]], init: float):
    if state is None:
        return 0, {n: init for n in constraints}
    if not isinstance(state, Mapping):
        raise ShapingError(f"{_WHO}: the state must be an object, not {type(state).__name__}")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ShapingError(f"{_WHO}: state 'step' = {step!r} must be an integer >= 0 (the number of earlier calls)")
    mult = state.get("multipliers", {})
    if not isinstance(mult, Mapping) or set(mult) != set(constraints):
        have = sorted(mult) if isinstance(mult, Mapping) else mult
        raise ShapingError(
            f"{_WHO}: the state holds multipliers for {have!r}, but constraints= names "
            f"{sorted(constraints)!r}: the state was written with other constraints; start afresh "
            "(no state) or pass the matching state"
        )
    out = {}
    for name, (sense, _) in constraints.items():
        m = mult[name]
        ok = not isinstance(m, bool) and isinstance(m, (int, float)) and math.isfinite(m)
        if not ok or (sense != "=" and m < 0):
            raise ShapingError(
                f"{_WHO}: state multiplier of {name!r} = {m!r} must be a finite number"
                + (" >= 0" if sense != "=" else "")
            )
        out[name] = float(m)
    return step, out


@register_transform(paper=CONSTRAINED_RLHF_PAPER, requires=_requires, writes=("outcome",))
def composite(
    ro: Rollouts,
    *,
    components: str = "outcome:1.0",
    penalties: str = "",
    schedule: Schedule = "constant",
    start: str = "",
    total_steps: int = 0,
    constraints: str = "",
    dual_lr: float = 0.05,
    dual_init: float = 0.0,
    state: dict[str, Any] | None = None,
) -> Shaped:
    """Composite outcome: weighted components × penalty factors + Lagrangian constraint terms.

        R'_i = Π_j f_j(i) · Σ_k w_k(τ) c_k(i)  +  Σ_k μ_k(τ) g_k(i),   g_k(i) = s_k (c_k(i) − θ_k).

    Weights (``schedule``): a component named in ``start`` moves from its start weight w_k⁰ to
    its weight w_k in ``components``; every other component keeps w_k throughout:
        w_k(τ) = (1 − ρ(τ)) w_k⁰ + ρ(τ) w_k,   ρ = :func:`schedule_fraction` (0 at τ = 0, 1 from
        τ = ``total_steps`` on; linear or cosine in between; 1 always for ``"constant"``).
    A Datarus-style curriculum from a structural to a semantic reward is
    ``components="format:0.2,judge:1.0", start="format:1.0,judge:0.0", schedule="cosine"``.
    Penalties (CaRL-style): each named component must lie in [0, 1] and multiplies the
    weighted sum (an infraction factor of 0.5 halves the episode's reward).
    Constraints (Lagrangian, dual descent): after the batch's rewards are computed with μ(τ),
        μ_k(τ+1) = max(0, μ_k(τ) − η ḡ_k)     (``>=``, ``<=``; ``=``: no projection),
    with ḡ_k the mean of g_k over the batch's episodes and η = ``dual_lr``: a multiplier grows
    while its constraint is violated on average (a ``>=`` component below θ_k, a ``<=`` one
    above it) and shrinks to 0 once it holds, so each constrained component gets a dynamic
    weight. A constrained component need not be in ``components``. The constant −μ_k s_k θ_k
    shifts every episode equally (group-centred estimators ignore it).

    The state ``{"step": τ, "multipliers": {name: μ_k}}`` (None: τ = 0, μ_k = ``dual_init``)
    is returned with τ + 1 and the updated multipliers.

    Args:
        ro: rollouts; needs ``rewards.NAME`` for every component named (except ``outcome``).
        components: ``"name:weight,..."``: the weighted sum's components and final weights.
        penalties: ``"name,..."``: components in [0, 1] that multiply the weighted sum.
        schedule: ``"constant"``, ``"linear"`` or ``"cosine"``: how the weights of the
            components named in ``start`` move over ``total_steps`` calls.
        start: ``"name:weight,..."``: start weights (components of ``components`` only).
        total_steps: calls over which the scheduled weights move (>= 1 unless constant).
        constraints: ``"name>=θ,name<=θ,name=θ"`` (``name:θ`` = ``name>=θ``).
        dual_lr: η >= 0, the multipliers' step size per call.
        dual_init: μ_k at the first call (>= 0).

    Returns:
        Shaped rollouts with the new outcome (steps untouched); state as above; diagnostics:
        ``step`` (τ used), ``schedule_fraction`` (ρ), ``weight.NAME`` (w_k(τ)),
        ``penalty_mean`` (mean Π f_j), ``multiplier.NAME`` (μ_k(τ) used) and
        ``constraint_mean.NAME`` (ḡ_k) per constraint.

    Raises:
        ShapingError: a malformed ``components``, ``penalties``, ``start`` or ``constraints``
            string, an invalid combination, or a state from other constraints.
        MissingColumnError: a component the rollouts do not have (``rewards.NAME``).
        RolloutsError: a penalty value outside [0, 1], naming the episode and the component.

    Reference: Confronting Reward Model Overoptimization with Constrained RLHF (Moskovitz,
    Singh, Strouse, Sandholm, Salakhutdinov, Dragan, McAleer, 2023, arXiv:2310.04373): component
    rewards kept within their useful range by constraints whose Lagrange multipliers act as
    dynamic weights (abstract). Only the abstract was read; the dual step above is textbook
    projected dual descent, and which sense the paper's variants use (μ-PPO, ξ-PPO, All-PPO)
    is not asserted here. Also: CaRL (Jaeger et al., 2025, arXiv:2504.17838): "infractions
    are penalized by terminating the episode or multiplicatively reducing route completion"
    (abstract; per step there, per episode here); Datarus-R1 (Chaliah, Dellagi, 2025,
    arXiv:2508.13382): "a cosine curriculum smoothly shifts emphasis from structural fidelity
    to semantic depth" (abstract; the exact schedule formula was not read: ρ above is ours).
    Differs from official code:
    tedmoskovitz/ConstrainedRL4LMs@02dc895e:rl4lms/algorithms/constrained_ppo/constrained_ppo.py
    mixes normalised *advantages* of one task and one constraint reward, (1 − σ(λ))·A_task +
    σ(λ)·A_constraint, with a sigmoid-bounded multiplier updated by SGD with momentum 0.9 on
    every minibatch (@f5d2d363 of the same file: A_task − λ·A_constraint, the opposite sense);
    here rewards are combined per episode, multipliers are unbounded above and take one plain
    step per call.
    """
    weights, pen_names, start_w, cons = _parsed(
        {"components": components, "penalties": penalties, "schedule": schedule, "start": start,
         "total_steps": total_steps, "constraints": constraints, "dual_lr": dual_lr, "dual_init": dual_init}
    )
    step, mult = _read_state(state, cons, dual_init)

    def value(name: str) -> np.ndarray:
        return ro.outcome if name == "outcome" else ro.episode_column(name, by=_WHO)

    rho = schedule_fraction(step, total_steps, schedule)
    w_now = {k: ((1.0 - rho) * start_w[k] + rho * w if k in start_w else w) for k, w in weights.items()}
    total = np.zeros(ro.n_episodes)
    for k, w in w_now.items():
        total = total + w * value(k)
    factor = np.ones(ro.n_episodes)
    for j in pen_names:
        f = value(j)
        bad = np.flatnonzero((f < 0) | (f > 1))
        if bad.size:
            e = int(bad[0])
            raise RolloutsError(
                "<rollouts>", f"episode {ro.episode_id[e].as_py()!r}", f"rewards.{j}",
                f"is {float(f[e])!r}, outside [0, 1]: {_WHO} multiplies the reward by the "
                f"penalty factor '{j}'",
                f"give '{j}' as a factor in [0, 1] (1 = no penalty), or list it in components= "
                "instead of penalties=",
            )
        factor = factor * f
    out = factor * total
    diagnostics: dict[str, Any] = {"step": step, "schedule_fraction": rho}
    diagnostics.update({f"weight.{k}": w for k, w in w_now.items()})
    diagnostics["penalty_mean"] = float(factor.mean())
    new_mult: dict[str, float] = {}
    for k, (sense, theta) in cons.items():
        g = (value(k) - theta) * (-1.0 if sense == "<=" else 1.0)
        out = out + mult[k] * g
        g_mean = float(g.mean())
        m = mult[k] - dual_lr * g_mean
        new_mult[k] = m if sense == "=" else max(0.0, m)
        diagnostics[f"multiplier.{k}"] = mult[k]
        diagnostics[f"constraint_mean.{k}"] = g_mean
    new_state: dict[str, Any] = {"step": step + 1, "multipliers": new_mult}
    return Shaped(ro.with_outcome(out), diagnostics, new_state)
