"""Loop oracles of the reward distances EPIC and STARC, written from the definitions.

EPIC: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg, Russell, Leike, 2021,
arXiv:2006.13900). STARC: STARC: A General Framework For Quantifying Differences Between Reward
Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257).

Rewards and transitions are nested lists (or anything indexable as R[s][a][x]); every sum is
an explicit for-loop; V^π is the fixed point of the Bellman expectation equation found by
iterating it; the minimal canonicalisation is the projection off the span of the shaping
directions, computed by Gram-Schmidt. Nothing is imported from ``stepcredit.metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "epic_canonical",
    "epic_canonical_sampled",
    "epic_distance",
    "minimal_canonical",
    "pearson_distance_squared",
    "starc_distance",
    "starc_distance_transitions",
    "value_adjusted_levelling",
]


def _uniform(n: int) -> list[float]:
    return [1.0 / n] * n


def _normalised(w: Sequence[float]) -> list[float]:
    t = sum(w)
    return [x / t for x in w]


def epic_canonical(R, gamma: float, ds=None, da=None) -> list[list[list[float]]]:
    """C(R)(s,a,s') = R(s,a,s') + E[γR(s',A,S') − R(s,A,S') − γR(S,A,S')], S, S' ~ D_S, A ~ D_A."""
    nS, nA = len(R), len(R[0])
    ds = _uniform(nS) if ds is None else _normalised(ds)
    da = _uniform(nA) if da is None else _normalised(da)

    def mean_from(s):  # E_{A, S'} R(s, A, S')
        total = 0.0
        for a in range(nA):
            for x in range(nS):
                total += da[a] * ds[x] * R[s][a][x]
        return total

    grand = 0.0  # E_{S, A, S'} R(S, A, S')
    for s in range(nS):
        grand += ds[s] * mean_from(s)
    return [[[R[s][a][x] + gamma * mean_from(x) - mean_from(s) - gamma * grand for x in range(nS)]
             for a in range(nA)] for s in range(nS)]


def pearson_distance_squared(x: Sequence[float], y: Sequence[float], w=None) -> float:
    """(1 − ρ)/2 with ρ the w-weighted Pearson correlation (population moments); nan when a
    variance is 0. Squared, so that tests compare it without the √ amplifying rounding."""
    n = len(x)
    w = _uniform(n) if w is None else _normalised(w)
    mx = sum(w[i] * x[i] for i in range(n))
    my = sum(w[i] * y[i] for i in range(n))
    vx = sum(w[i] * (x[i] - mx) ** 2 for i in range(n))
    vy = sum(w[i] * (y[i] - my) ** 2 for i in range(n))
    if vx == 0.0 or vy == 0.0:
        return math.nan
    cov = sum(w[i] * (x[i] - mx) * (y[i] - my) for i in range(n))
    rho = cov / math.sqrt(vx * vy)
    return (1.0 - rho) / 2.0


def _flat(R) -> list[float]:
    return [v for plane in R for row in plane for v in row]


def epic_distance(Ra, Rb, gamma: float, ds=None, da=None, coverage=None) -> float:
    """√((1 − ρ_D(C(R_A), C(R_B)))/2); D uniform over all (s, a, s') by default."""
    ca = _flat(epic_canonical(Ra, gamma, ds, da))
    cb = _flat(epic_canonical(Rb, gamma, ds, da))
    w = None if coverage is None else _flat(coverage)
    return math.sqrt(max(0.0, pearson_distance_squared(ca, cb, w)))


def epic_canonical_sampled(
    reward: Callable[[Any, Any, Any], float], batch: Sequence[tuple], mean_pairs: Sequence[tuple],
    gamma: float, mean_weights=None,
) -> list[float]:
    """Ĉ(R)(s,a,s') = R(s,a,s') + γm(s') − m(s) − γ Σ_j w_j m(x_j), m(y) = Σ_j w_j R(y, a_j, x_j),
    for the batch [(s, a, s')] and the pairs [(a_j, x_j)]; R called one triple at a time."""
    w = _uniform(len(mean_pairs)) if mean_weights is None else _normalised(mean_weights)
    memo: dict = {}

    def m(y):
        if y not in memo:
            memo[y] = sum(w[j] * reward(y, a, x) for j, (a, x) in enumerate(mean_pairs))
        return memo[y]

    total = sum(w[j] * m(x) for j, (_, x) in enumerate(mean_pairs))
    return [reward(s, a, s2) + gamma * m(s2) - m(s) - gamma * total for s, a, s2 in batch]


def _values(R, T, gamma: float, pi, iterations: int) -> list[float]:
    """V^π by iterating V ← Σ_a π(a|s) Σ_x T(s,a,x)[R(s,a,x) + γV(x)] from V = 0."""
    nS, nA = len(R), len(R[0])
    V = [0.0] * nS
    for _ in range(iterations):
        V = [sum(pi[s][a] * sum(T[s][a][x] * (R[s][a][x] + gamma * V[x]) for x in range(nS)) for a in range(nA))
             for s in range(nS)]
    return V


def value_adjusted_levelling(R, T, gamma: float, pi=None) -> list[list[list[float]]]:
    """c(R)(s,a,s') = E_{S'~T(s,a)}[R(s,a,S') + γV^π(S')] − V^π(s) (the same for every s').
    The iteration count makes γ^n < 1e-17 (γ <= 0.95 keeps it under 800)."""
    nS, nA = len(R), len(R[0])
    pi = [[1.0 / nA] * nA for _ in range(nS)] if pi is None else pi
    n = 1 if gamma == 0 else int(math.ceil(math.log(1e-17) / math.log(gamma))) + 1
    V = _values(R, T, gamma, pi, n)
    out = []
    for s in range(nS):
        plane = []
        for a in range(nA):
            q = sum(T[s][a][x] * (R[s][a][x] + gamma * V[x]) for x in range(nS)) - V[s]
            plane.append([q] * nS)
        out.append(plane)
    return out


def _project_off(target: list[float], basis: list[list[float]], weight: list[float]) -> list[float]:
    """target minus its projection onto span(basis) under ⟨f, g⟩ = Σ_i weight_i f_i g_i
    (modified Gram-Schmidt, twice for accuracy; near-dependent directions dropped)."""

    def dot(f, g):
        return sum(weight[i] * f[i] * g[i] for i in range(len(f)))

    ortho: list[list[float]] = []
    for b in basis:
        v = list(b)
        size = math.sqrt(dot(v, v))
        for _ in range(2):
            for u in ortho:
                c = dot(v, u)
                v = [v[i] - c * u[i] for i in range(len(v))]
        norm = math.sqrt(dot(v, v))
        if norm > 1e-10 * max(size, 1e-300):
            ortho.append([x / norm for x in v])
    r = list(target)
    for _ in range(2):
        for u in ortho:
            c = dot(r, u)
            r = [r[i] - c * u[i] for i in range(len(r))]
    return r


def minimal_canonical(R, T, gamma: float, d=None) -> list[list[float]]:
    """The least d-weighted-norm member of r̄(s,a) + γ Σ_x T(s,a,x)Φ(x) − Φ(s) over Φ, as
    [nS][nA] values (only pairs with d > 0 are determined)."""
    nS, nA = len(R), len(R[0])
    d = [[1.0] * nA for _ in range(nS)] if d is None else d
    pairs = [(s, a) for s in range(nS) for a in range(nA)]
    rbar = [sum(T[s][a][x] * R[s][a][x] for x in range(nS)) for s, a in pairs]
    basis = [[gamma * T[s][a][k] - (1.0 if s == k else 0.0) for s, a in pairs] for k in range(nS)]
    q = _project_off(rbar, basis, [d[s][a] for s, a in pairs])
    return [[q[s * nA + a] for a in range(nA)] for s in range(nS)]


def _norm(values: list[float], weight: list[float], p: float) -> float:
    if math.isinf(p):
        return max((abs(v) for v, w in zip(values, weight) if w > 0), default=0.0)
    return sum(w * abs(v) ** p for v, w in zip(values, weight)) ** (1.0 / p)


def _starc_from_q(qa: list[float], qb: list[float], weight: list[float], p: float, sa: float, sb: float) -> float:
    na, nb = _norm(qa, weight, p), _norm(qb, weight, p)
    ua = [0.0] * len(qa) if na <= 1e-10 * sa or na == 0 else [v / na for v in qa]
    ub = [0.0] * len(qb) if nb <= 1e-10 * sb or nb == 0 else [v / nb for v in qb]
    return 0.5 * _norm([x - y for x, y in zip(ua, ub)], weight, p)


def starc_distance(Ra, Rb, T, gamma: float, canonicalisation="value", pi=None, p=2.0, d=None) -> float:
    """½ ‖c(R_A)/‖c(R_A)‖ − c(R_B)/‖c(R_B)‖‖, norm over transitions weighted by d(s,a)T(s,a,s')."""
    nS, nA = len(Ra), len(Ra[0])
    d = [[1.0] * nA for _ in range(nS)] if d is None else d
    total = sum(sum(row) for row in d)
    triples = [(s, a, x) for s in range(nS) for a in range(nA) for x in range(nS)]
    weight = [d[s][a] / total * T[s][a][x] for s, a, x in triples]
    if canonicalisation == "value":
        ca = value_adjusted_levelling(Ra, T, gamma, pi)
        cb = value_adjusted_levelling(Rb, T, gamma, pi)
        qa = [ca[s][a][x] for s, a, x in triples]
        qb = [cb[s][a][x] for s, a, x in triples]
    else:
        ma, mb = minimal_canonical(Ra, T, gamma, d), minimal_canonical(Rb, T, gamma, d)
        qa = [ma[s][a] for s, a, _ in triples]
        qb = [mb[s][a] for s, a, _ in triples]
    sa = max(abs(v) for v in _flat(Ra))
    sb = max(abs(v) for v in _flat(Rb))
    return _starc_from_q(qa, qb, weight, p, sa, sb)


def starc_distance_transitions(transitions: Sequence[tuple], gamma: float) -> float:
    """Minimal STARC distance of the empirical MDP of logged transitions [(s, a, s', r_A, r_B)],
    s' None for a terminal transition (Φ(end) = 0)."""
    groups: dict = {}
    for s, a, s2, ra, rb in transitions:
        groups.setdefault((s, a), []).append((s2, ra, rb))
    pairs = list(groups)
    states = sorted({s for s, _ in pairs} | {s2 for s, a, s2, _, _ in transitions if s2 is not None})
    n = [len(groups[k]) for k in pairs]
    N = len(transitions)
    weight = [c / N for c in n]
    rbar_a = [sum(r for _, r, _ in groups[k]) / len(groups[k]) for k in pairs]
    rbar_b = [sum(r for _, _, r in groups[k]) / len(groups[k]) for k in pairs]
    basis = []
    for k in states:
        b = []
        for s, a in pairs:
            frac = sum(1 for s2, _, _ in groups[(s, a)] if s2 == k) / len(groups[(s, a)])
            b.append(gamma * frac - (1.0 if s == k else 0.0))
        basis.append(b)
    qa = _project_off(rbar_a, basis, weight)
    qb = _project_off(rbar_b, basis, weight)
    sa = max(abs(t[3]) for t in transitions)
    sb = max(abs(t[4]) for t in transitions)
    return _starc_from_q(qa, qb, weight, 2.0, sa, sb)
