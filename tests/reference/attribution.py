"""Loop oracle of SPA, stepwise progress attribution (Wang et al. 2025, arXiv:2505.20732).

Progress model (``variant="paper"``): the features of a step are its state, or (state, action),
prefixed by the group id with ``scope="group"`` (the original values, tagged with their type,
in a dict; no hashing). With X[i][j] the number of steps of episode i having feature j,

    θ = argmin Σ_i (Σ_t θ[f_t^i] − R_i)² + λ ‖θ‖²   ⇔   (XᵀX + λI) θ = XᵀR,

built entry by entry with for-loops and solved densely with ``np.linalg.solve``; c_t = θ[f_t].
``residual_norm`` evaluates ‖XᵀR − (XᵀX + λI)θ‖₂ of any θ exactly (Fractions): since every
eigenvalue of XᵀX + λI is at least λ, ‖θ − θ*‖₂ <= residual / λ bounds the distance of θ to the
exact solution θ*, which is how a float solution is compared with this one.

``variant="code"`` (the released RL script): c_t = R_i − mean_{j ≠ i in the group} R_j on every
step (R_i alone in its group), computed exactly; the last step's grounding is 1.

Then r_t = c_t + β g_t (g = the ``grounding`` field, 0 when absent); step_return is the
reward-to-go R_t = r_t + γ R_{t+1}; the advantage is the reward-to-go of r (``norm="none"``) or
of ñ_t = (r_t − mean) / (std + ε) over all steps of the group (unbiased std; a group of one
step: mean 0, std 1). The normalisation is computed exactly (Fractions) from the exact
r_t = c_t + β g_t, c_t being the exact leave-one-out value with ``variant="code"`` and the given
float contribution otherwise, not from the float step reward fl(c_t + β g_t): that rounding
keeps only ulp(0.5) of c's differences next to β g = 0.5, a 1e-9 relative error of a spread of
1e-7, which the division by the std would carry into the advantage. The recursions run in float
in the definition's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from . import OracleCredit, Record, step_field

__all__ = ["feature_key", "fit", "residual_norm", "spa"]


def _tagged(value):
    return (type(value).__name__, value)  # the integer 5 and the string "5" differ


def feature_key(record: Record, step, features: str, scope: str) -> tuple:
    """The feature of a step: (state,) or (state, action), prefixed by the group with scope="group"."""
    key: tuple = (_tagged(step["state"]),)
    if features == "state_action":
        key += (_tagged(step["action"]),)
    if scope == "group":
        key = (record["group_id"],) + key
    return key


def _design(records: Sequence[Record], features: str, scope: str) -> tuple[dict, list[dict]]:
    """Feature index (key -> column) and, per episode, {column: visits}."""
    index: dict = {}
    rows: list[dict] = []
    for rec in records:
        row: dict = {}
        for step in rec["steps"]:
            j = index.setdefault(feature_key(rec, step, features, scope), len(index))
            row[j] = row.get(j, 0) + 1
        rows.append(row)
    return index, rows


def fit(records: Sequence[Record], features: str = "state", scope: str = "global", ridge: float = 1e-3) -> tuple[dict, float]:
    """θ by key from the dense normal equations, and the exact residual bound ‖ρ‖₂/λ of that θ."""
    index, rows = _design(records, features, scope)
    F = len(index)
    A = np.zeros((F, F))
    b = np.zeros(F)
    for j in range(F):
        A[j][j] += ridge
    for rec, row in zip(records, rows):
        for j, nj in row.items():
            b[j] += nj * rec["outcome"]
            for k, nk in row.items():
                A[j][k] += nj * nk
    theta = np.linalg.solve(A, b) if F else np.zeros(0)
    by_key = {key: float(theta[j]) for key, j in index.items()}
    return by_key, residual_norm(records, by_key, features, scope, ridge) / ridge


def residual_norm(records: Sequence[Record], theta: dict, features: str, scope: str, ridge: float) -> float:
    """‖XᵀR − (XᵀX + λI)θ‖₂ for θ given by feature key, computed exactly."""
    index, rows = _design(records, features, scope)
    th = [Fraction(0)] * len(index)
    for key, j in index.items():
        th[j] = Fraction(theta[key])
    res = [-Fraction(ridge) * t for t in th]
    for rec, row in zip(records, rows):
        e = Fraction(rec["outcome"]) - sum((nj * th[j] for j, nj in row.items()), Fraction(0))
        for j, nj in row.items():
            res[j] += nj * e
    return math.hypot(*(float(x) for x in res))  # hypot: no underflow of tiny squares


def _loo(records: Sequence[Record]) -> list[Fraction]:
    """R_i − mean of the other outcomes of its group (R_i when alone), exactly."""
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec["group_id"], []).append(i)
    out = [Fraction(0)] * len(records)
    for members in groups.values():
        for i in members:
            others = [Fraction(records[j]["outcome"]) for j in members if j != i]
            base = sum(others, Fraction(0)) / len(others) if others else Fraction(0)
            out[i] = Fraction(records[i]["outcome"]) - base
    return out


def spa(
    records: Sequence[Record],
    features: str = "state",
    scope: str = "global",
    ridge: float = 1e-3,
    iterations: int = 200,
    tol: float = 1e-8,
    beta: float = 0.5,
    gamma: float = 1.0,
    norm: str = "group",
    epsilon: float = 1e-6,
    variant: str = "paper",
    contributions: Sequence[float] | None = None,
) -> OracleCredit:
    """SPA credit. ``iterations`` and ``tol`` (the solver's) do not enter the definition: the
    paper variant's θ is the exact ridge solution. ``contributions`` [S], when given, replaces
    the progress model (the hook: :func:`stepcredit.estimators.attribution.spa_credit`).

    Diagnostics: ``contributions`` [S] used, ``theta_bound`` (‖θ − θ*‖₂ bound of the dense
    solve; 0 when contributions were given or variant="code"), ``grounding_used``.
    """
    grounded = bool(records) and "grounding" in records[0]["steps"][0]
    bound = 0.0
    exact_c: list[list[Fraction]] | None = None  # the exact contributions where they are not floats
    if contributions is not None:
        c_steps = [list(map(float, contributions[k : k + len(rec["steps"])])) for k, rec in _starts(records)]
    elif variant == "code":
        loo = _loo(records)
        c_steps = [[float(loo[i])] * len(rec["steps"]) for i, rec in enumerate(records)]
        exact_c = [[loo[i]] * len(rec["steps"]) for i, rec in enumerate(records)]
    else:
        theta, bound = fit(records, features, scope, ridge)
        c_steps = [[theta[feature_key(rec, s, features, scope)] for s in rec["steps"]] for rec in records]
    if exact_c is None:
        exact_c = [[Fraction(x) for x in c] for c in c_steps]

    rewards: list[list[float]] = []
    exact_r: list[list[Fraction]] = []  # c + β g without rounding
    for rec, c, cx in zip(records, c_steps, exact_c):
        T = len(rec["steps"])
        g = [float(step_field(s, "grounding", 0.0)) for s in rec["steps"]]
        if variant == "code":
            g[T - 1] = 1.0  # the released script grounds the last turn always
        if grounded or variant == "code":
            rewards.append([c[t] + beta * g[t] for t in range(T)])
            exact_r.append([cx[t] + Fraction(beta) * Fraction(g[t]) for t in range(T)])
        else:
            rewards.append(list(c))
            exact_r.append(list(cx))

    def to_go(x: list[float]) -> list[float]:
        out = [0.0] * len(x)
        following = 0.0
        for t in range(len(x) - 1, -1, -1):
            out[t] = x[t] + gamma * following if t < len(x) - 1 else x[t]
            following = out[t]
        return out

    returns = [to_go(r) for r in rewards]
    if norm == "group":
        normed = [[0.0] * len(r) for r in rewards]
        groups: dict[str, list[tuple[int, int]]] = {}
        for i, rec in enumerate(records):
            for t in range(len(rec["steps"])):
                groups.setdefault(rec["group_id"], []).append((i, t))
        for members in groups.values():
            xs = [exact_r[i][t] for i, t in members]
            if len(xs) == 1:  # one step in the group: mean 0, std 1
                normed[members[0][0]][members[0][1]] = float(xs[0]) / (1.0 + epsilon)
                continue
            mean = sum(xs, Fraction(0)) / len(xs)
            var = sum(((x - mean) ** 2 for x in xs), Fraction(0)) / (len(xs) - 1)
            std = math.sqrt(float(var))
            for (i, t), x in zip(members, xs):
                normed[i][t] = float(x - mean) / (std + epsilon)
        advantages = [to_go(n) for n in normed]
    else:
        advantages = returns

    def flat(rows: list[list[float]]) -> list[float]:
        return [x for row in rows for x in row]

    return OracleCredit(
        step_advantage=flat(advantages),
        episode_advantage=[a[0] for a in advantages],
        step_return=flat(returns),
        step_reward=flat(rewards),
        diagnostics={
            "contributions": flat(c_steps),
            "theta_bound": bound,
            "grounding_used": grounded,
        },
    )


def _starts(records: Sequence[Record]):
    k = 0
    for rec in records:
        yield k, rec
        k += len(rec["steps"])
