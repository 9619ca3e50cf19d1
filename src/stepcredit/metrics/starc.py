"""STARC: STAndardised Reward Comparison pseudometrics between reward functions.

Notation as in :mod:`stepcredit.metrics.tabular` (nS, nA, T[s, a, s'], R[s, a, s'], γ). A STARC
metric is built from three parts:

    d(R_A, R_B) = ½ · m(s(R_A), s(R_B)),   s(R) = c(R) / n(c(R))   (s(R) = 0 when n(c(R)) = 0)

* a **canonicalisation** c: linear, c(R) differs from R only by potential shaping and
  S'-redistribution (changing R(s, a, ·) while keeping E_{S'~T(s,a)} R(s, a, S')), and
  c(R_A) = c(R_B) exactly when R_A and R_B differ only by those two (they order policies
  alike). Two are implemented, both constant in s' (they depend on (s, a) only):

      value-adjusted levelling ("value"), for a fixed policy π (default uniform):
          c(R)(s, a, s') = E_{S'~T(s,a)}[R(s, a, S') + γV^π(S')] − V^π(s)
      minimal ("minimal"): the member of R's class of least weighted L2 norm,
          c(R)(s, a, ·) = r̄(s, a) + γ Σ_x T(s, a, x) Φ*(x) − Φ*(s),
          Φ* = argmin_Φ Σ_{s,a} d(s, a) (r̄(s, a) + γ Σ_x T(s, a, x) Φ(x) − Φ(s))²,
      with r̄(s, a) = Σ_x T(s, a, x) R(s, a, x).

* a **norm** n, here the L^p norm (p = 1, 2 or ∞) weighted by d(s, a)·T(s, a, s') over the
  transitions (d: state-action weights, default uniform); for a canonical reward constant in
  s' it is the d-weighted L^p norm over (s, a). Default p = 2.
* a **metric** m, here the same norm of the difference: m(x, y) = n(x − y). With
  n(s(R)) = 1, m ≤ 2, so the factor ½ maps d into [0, 1].

d is 0 between a reward and its potential-shaped, S'-redistributed or positively rescaled
versions, 1 between R and −R (when c(R) ≠ 0), symmetric, and obeys the triangle inequality.

Degenerate rewards: a reward whose canonical form is 0 (n(c(R)) at most ZERO_TOL times its
largest |R|: a constant reward when γ < 1, pure potential shaping, any reward that orders all
policies alike) has s(R) = 0, the paper's convention: its distance to any non-degenerate
reward is ½, to another degenerate one 0.

``value`` needs γ < 1 (V^π solves (I − γP_π)V = r_π). The tabular functions are exact. From
logged transitions, :func:`starc_distance_transitions` computes the ``minimal`` STARC metric of
the empirical MDP the data define (the only one of the two that needs no policy or model
beyond the data).

Reference for the module: STARC: A General Framework For Quantifying Differences Between
Reward Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257).
What was verified: the definitions of the value-adjusted and minimal canonicalisations against
the co-author's experiment code, lucyfarnik/starc@25445479:src/distance/canon/value.py
(uniform π, E_{S'~τ(s,a)}[R(s, a, S') + γV^π(S')] − V^π(s)) and @2cef79b2:
src/distance/canon/minimal.py (least L2 norm over potential shaping and S'-redistribution),
and s(R) = c(R) when n(c(R)) = 0 in @772a927f:src/distance/distance_funcs.py. The ½ factor
follows the EPIC authors' tabular canonical distance (``canonical_reward_distance``,
HumanCompatibleAI/evaluating-rewards@4eb398f9:src/evaluating_rewards/distances/tabular.py,
``0.5 * direct_distance``). NOT verified (the paper's text beyond the abstract could not be
read here): whether the paper scales by ½, its theorem statements, and its wording of the
canonicalisation conditions above; the class (shaping and S'-redistribution) is inferred from
the code (minimal.py optimises over both; value.py sees R only through E_{S'~τ(s,a)}). EPIC's
canonicalisation is not offered here because it does not remove S'-redistribution.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.metrics.epic import ZERO_TOL, _reward3
from stepcredit.metrics.tabular import MetricsError

__all__ = [
    "minimal_canonical",
    "starc_distance",
    "starc_distance_transitions",
    "value_adjusted_levelling",
]

#: ``starc_distance_transitions`` refuses least-squares systems with more cells than this
#: (distinct state-action pairs x distinct states; 8 bytes each).
MAX_CELLS = 25_000_000

PAPER = ("STARC: A General Framework For Quantifying Differences Between Reward Functions "
         "(Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257)")


def _transitions(T, shape, who: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != shape:
        raise MetricsError(f"{who}: transitions must have shape {shape} like the reward, got {T.shape}")
    if np.any(T < 0) or not np.allclose(T.sum(axis=2), 1.0, atol=1e-9):
        raise MetricsError(f"{who}: every transitions[s, a, :] must be a probability distribution")
    return T


def _policy(policy, nS: int, nA: int, who: str) -> np.ndarray:
    if policy is None:
        return np.full((nS, nA), 1.0 / nA)
    pi = np.asarray(policy, dtype=np.float64)
    if pi.shape != (nS, nA) or np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-9):
        raise MetricsError(f"{who}: policy must be [{nS}, {nA}] with rows that are probability distributions")
    return pi


def _levelled(rbar: np.ndarray, T: np.ndarray, phi: np.ndarray, gamma: float) -> np.ndarray:
    """r̄(s, a) + γ Σ_x T(s, a, x) Φ(x) − Φ(s), broadcast over s' to [nS, nA, nS]."""
    q = rbar + gamma * (T @ phi) - phi[:, None]
    return np.repeat(q[:, :, None], T.shape[2], axis=2)


def value_adjusted_levelling(
    reward: np.ndarray,
    transitions: np.ndarray,
    *,
    gamma: float,
    policy: np.ndarray | None = None,
) -> np.ndarray:
    """STARC's value-adjusted levelling canonicalisation.

        V^π = (I − γP_π)⁻¹ r_π,  P_π(s, x) = Σ_a π(a|s) T(s, a, x),  r_π(s) = Σ_a π(a|s) r̄(s, a)
        c(R)(s, a, s') = Σ_x T(s, a, x) [R(s, a, x) + γV^π(x)] − V^π(s)      (the same for every s')

    Args:
        reward: R [nS, nA, nS].
        transitions: T [nS, nA, nS].
        gamma: γ in [0, 1).
        policy: π [nS, nA] (rows sum to 1); default uniform.

    Returns:
        c(R) [nS, nA, nS].

    Reference: STARC: A General Framework For Quantifying Differences Between Reward
    Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257).
    Differs from official code: lucyfarnik/starc@25445479:src/distance/canon/value.py#L12-L19
    evaluates V^π by fixed-point iteration to 1e-8; here by a linear solve (exact to rounding).
    """
    who = "value_adjusted_levelling"
    R = _reward3(reward, who, "reward")
    T = _transitions(transitions, R.shape, who)
    if not 0.0 <= gamma < 1.0:
        raise MetricsError(f"{who}: gamma={gamma!r} must lie in [0, 1): V^π is not defined at gamma=1 in general")
    nS, nA = R.shape[:2]
    pi = _policy(policy, nS, nA, who)
    rbar = np.einsum("sax,sax->sa", T, R)
    P = np.einsum("sa,sax->sx", pi, T)
    V = np.linalg.solve(np.eye(nS) - gamma * P, np.einsum("sa,sa->s", pi, rbar))
    return _levelled(rbar, T, V, gamma)


def _minimal_q(rbar: np.ndarray, A: np.ndarray, d: np.ndarray) -> np.ndarray:
    """r̄ + AΦ* with Φ* = argmin Σ d (r̄ + AΦ)² (rows [P], columns [n]; r̄ may be [P, k])."""
    sw = np.sqrt(d)
    b = rbar if rbar.ndim == 2 else rbar[:, None]
    # singular values below 1e-10 of the largest are taken as 0: the shaping directions are
    # combinations of O(1) entries, and γ = 1 with rounded transition rows leaves ~1e-16 ones
    phi = np.linalg.lstsq(sw[:, None] * A, -(sw[:, None] * b), rcond=1e-10)[0]
    q = b + A @ phi
    return q if rbar.ndim == 2 else q[:, 0]


def minimal_canonical(
    reward: np.ndarray,
    transitions: np.ndarray,
    *,
    gamma: float,
    sa_weights: np.ndarray | None = None,
) -> np.ndarray:
    """STARC's minimal canonicalisation for the d(s, a)·T(s, a, s')-weighted L2 norm.

        r̄(s, a) = Σ_x T(s, a, x) R(s, a, x)
        Φ* = argmin_Φ Σ_{s,a} d(s, a) (r̄(s, a) + γ Σ_x T(s, a, x) Φ(x) − Φ(s))²
        c(R)(s, a, s') = r̄(s, a) + γ Σ_x T(s, a, x) Φ*(x) − Φ*(s)        (the same for every s')

    Averaging over s' removes S'-redistribution (it is the orthogonal projection onto
    functions of (s, a) under this norm), and the least-squares residual is the projection
    off the potential-shaping directions: c(R) is the least-norm reward that differs from R
    by shaping and S'-redistribution. Unique on pairs with d(s, a) > 0 (Φ* need not be);
    pairs with d = 0 get the value of the minimum-norm Φ* and do not count in the norm.

    Args:
        reward: R [nS, nA, nS].
        transitions: T [nS, nA, nS].
        gamma: γ in [0, 1].
        sa_weights: d [nS, nA] >= 0 (normalised here); default uniform.

    Returns:
        c(R) [nS, nA, nS].

    Reference: STARC: A General Framework For Quantifying Differences Between Reward
    Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257).
    Differs from official code: lucyfarnik/starc@2cef79b2:src/distance/canon/minimal.py
    minimises the unweighted L2 norm over all nS·nA·nS entries with Adam (to a loss change of
    1e-6); here the weighted norm over the transitions, solved exactly by least squares.
    """
    who = "minimal_canonical"
    R = _reward3(reward, who, "reward")
    T = _transitions(transitions, R.shape, who)
    if not 0.0 <= gamma <= 1.0:
        raise MetricsError(f"{who}: gamma={gamma!r} must lie in [0, 1]")
    nS, nA = R.shape[:2]
    d = _sa_weights(sa_weights, nS, nA, who)
    rbar = np.einsum("sax,sax->sa", T, R)
    A = gamma * T.reshape(nS * nA, nS) - np.repeat(np.eye(nS), nA, axis=0)
    q = _minimal_q(rbar.ravel(), A, d.ravel()).reshape(nS, nA)
    return np.repeat(q[:, :, None], nS, axis=2)


def _sa_weights(w, nS: int, nA: int, who: str) -> np.ndarray:
    if w is None:
        return np.full((nS, nA), 1.0 / (nS * nA))
    d = np.asarray(w, dtype=np.float64)
    if d.shape != (nS, nA) or not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
        raise MetricsError(f"{who}: sa_weights must be [{nS}, {nA}] finite non-negative weights with a positive sum")
    return d / d.sum()


def _norm(q: np.ndarray, d: np.ndarray, p: float) -> float:
    """(Σ d |q|^p)^(1/p), or max |q| over d > 0 for p = ∞."""
    if np.isinf(p):
        on = d > 0
        return float(np.abs(q[on]).max()) if on.any() else 0.0
    return float((d @ np.abs(q) ** p) ** (1.0 / p))


def _standard(q: np.ndarray, d: np.ndarray, p: float, scale: float) -> np.ndarray:
    n = _norm(q, d, p)
    return np.zeros_like(q) if n <= ZERO_TOL * scale or n == 0.0 else q / n


def _check_p(p: float, who: str) -> float:
    if p not in (1, 2, np.inf):
        raise MetricsError(f"{who}: p={p!r} must be 1, 2 or inf")
    return float(p)


def starc_distance(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    transitions: np.ndarray,
    *,
    gamma: float,
    canonicalisation: Literal["value", "minimal"] = "value",
    policy: np.ndarray | None = None,
    p: float = 2,
    sa_weights: np.ndarray | None = None,
) -> float:
    """Exact STARC distance between two tabular reward functions.

        d(R_A, R_B) = ½ ‖s(R_A) − s(R_B)‖,   s(R) = c(R)/‖c(R)‖ (0 when c(R) = 0),
        ‖x‖ = (Σ_{s,a,s'} d(s, a) T(s, a, s') |x(s, a, s')|^p)^(1/p)

    Args:
        reward_a: R_A [nS, nA, nS].
        reward_b: R_B [nS, nA, nS].
        transitions: T [nS, nA, nS].
        gamma: γ in [0, 1) (``"value"``), [0, 1] (``"minimal"``).
        canonicalisation: ``"value"`` (value-adjusted levelling) or ``"minimal"``.
        policy: π [nS, nA] of ``"value"``; default uniform.
        p: 1, 2 or inf; ``"minimal"`` is defined for p = 2 only.
        sa_weights: d [nS, nA] of the norm (normalised here); default uniform.

    Returns:
        The distance in [0, 1].

    Reference: STARC: A General Framework For Quantifying Differences Between Reward
    Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257).
    Differs from official code: see :func:`value_adjusted_levelling` and
    :func:`minimal_canonical`; lucyfarnik/starc's norms are unweighted over all nS·nA·nS
    entries (for these s'-constant canonical rewards and uniform d the normalised rewards,
    hence the distances, are the same); ½ factor as described in the module docstring.
    """
    who = "starc_distance"
    Ra = _reward3(reward_a, who, "reward_a")
    Rb = _reward3(reward_b, who, "reward_b")
    if Ra.shape != Rb.shape:
        raise MetricsError(f"{who}: reward_a {Ra.shape} and reward_b {Rb.shape} differ in shape")
    p = _check_p(p, who)
    nS, nA = Ra.shape[:2]
    d = _sa_weights(sa_weights, nS, nA, who)
    if canonicalisation == "value":
        ca = value_adjusted_levelling(Ra, transitions, gamma=gamma, policy=policy)
        cb = value_adjusted_levelling(Rb, transitions, gamma=gamma, policy=policy)
    elif canonicalisation == "minimal":
        if p != 2:
            raise MetricsError(f"{who}: canonicalisation='minimal' is the least-L2-norm member, defined for p=2 only (got p={p})")
        ca = minimal_canonical(Ra, transitions, gamma=gamma, sa_weights=d)
        cb = minimal_canonical(Rb, transitions, gamma=gamma, sa_weights=d)
    else:
        raise MetricsError(f"{who}: canonicalisation={canonicalisation!r} must be 'value' or 'minimal'")
    qa, qb = ca[:, :, 0].ravel(), cb[:, :, 0].ravel()  # constant in s'
    dw = d.ravel()
    sa = _standard(qa, dw, p, float(np.abs(Ra).max()))
    sb = _standard(qb, dw, p, float(np.abs(Rb).max()))
    return float(min(1.0, 0.5 * _norm(sa - sb, dw, p)))


def starc_distance_transitions(
    state: np.ndarray,
    action: np.ndarray,
    next_state: np.ndarray,
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    *,
    gamma: float,
) -> float:
    """Minimal STARC distance of the empirical MDP defined by logged transitions.

    The N logged transitions (s_i, a_i, s'_i) with rewards r_A,i, r_B,i define an empirical
    MDP: d(s, a) = n(s, a)/N over the pairs seen, T̂(x | s, a) their next-state frequencies,
    r̄(s, a) the mean reward of the pair. Terminal transitions (s'_i = −1) go to an end state
    ⊥ with Φ(⊥) = 0 (episodic shaping, Ng et al.: R + γΦ(s') − Φ(s) with Φ(⊥) = 0). Then, as
    in :func:`minimal_canonical`,

        c(r)(s, a) = r̄(s, a) + γ Σ_x T̂(x | s, a) Φ*(x) − Φ*(s),   Φ*(⊥) = 0,
        Φ* = argmin_Φ Σ_{(s,a) seen} n(s, a) (r̄(s, a) + γ Σ_x T̂(x | s, a) Φ(x) − Φ(s))²
        d = ½ ‖c(r_A)/‖c(r_A)‖ − c(r_B)/‖c(r_B)‖‖,   ‖q‖² = (1/N) Σ_i q(s_i, a_i)²

    This needs only the logged reward values (EPIC needs the reward functions themselves).
    It is 0 between logged rewards that differ by potential shaping (with Φ(⊥) = 0), positive
    rescaling or noise that averages out within a state-action pair. What survives shaping
    is how a reward compares paths that share states. In a tree of distinct histories (LLM
    transcripts, whose only shared state is a group's prompt) the canonical reward keeps
    exactly the differences between the discounted returns of the branches leaving each
    shared state, so the distance asks whether the two rewards rank sibling episodes alike;
    if no state recurs at all, every reward is equivalent to 0 on the data, both canonical
    rewards are 0 and the distance is 0: the data cannot tell the rewards apart.

    Args:
        state: s [N] int codes >= 0 (see ``rollout_transitions``).
        action: a [N] int codes >= 0.
        next_state: s' [N] int codes, −1 for a terminal transition.
        reward_a: r_A [N] logged rewards.
        reward_b: r_B [N].
        gamma: γ in [0, 1].

    Returns:
        The distance in [0, 1].

    Raises:
        MetricsError: bad shapes or values, or a least-squares system with more than
            ``MAX_CELLS`` cells (distinct state-action pairs x distinct states).

    Reference: STARC: A General Framework For Quantifying Differences Between Reward
    Functions (Skalse, Farnik, Motwani, Jenner, Gleave, Abate, 2024, arXiv:2309.15257), the
    minimal canonicalisation, applied to the empirical MDP of the data (this use on logged
    transitions, and the Φ(⊥) = 0 terminal convention, are this library's). Differs from
    official code: see :func:`minimal_canonical`.
    """
    who = "starc_distance_transitions"
    s, a, s2 = (np.asarray(v) for v in (state, action, next_state))
    ra = np.asarray(reward_a, dtype=np.float64)
    rb = np.asarray(reward_b, dtype=np.float64)
    N = s.shape[0] if s.ndim == 1 else -1
    if N < 1 or any(v.shape != (N,) for v in (a, s2, ra, rb)):
        raise MetricsError(f"{who}: state, action, next_state, reward_a and reward_b must be non-empty [N] arrays")
    if not all(np.issubdtype(v.dtype, np.integer) for v in (s, a, s2)) or s.min() < 0 or a.min() < 0 or s2.min() < -1:
        raise MetricsError(f"{who}: state and action must be integer codes >= 0, next_state >= -1")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(rb))):
        raise MetricsError(f"{who}: reward_a and reward_b must be finite")
    if not 0.0 <= gamma <= 1.0:
        raise MetricsError(f"{who}: gamma={gamma!r} must lie in [0, 1]")
    s, a, s2 = s.astype(np.int64), a.astype(np.int64), s2.astype(np.int64)
    pair_key = s * (int(a.max()) + 1) + a
    _, pair_first, g = np.unique(pair_key, return_index=True, return_inverse=True)
    g = g.ravel()
    P = pair_first.size
    cols, col_of = np.unique(np.concatenate([s, s2[s2 >= 0]]), return_inverse=True)
    col_of = col_of.ravel()
    col_s, col_s2 = col_of[:N], np.full(N, -1)
    col_s2[s2 >= 0] = col_of[N:]
    if P * cols.size > MAX_CELLS:
        raise MetricsError(f"{who}: {P:,} distinct state-action pairs x {cols.size:,} distinct states exceed "
                           f"{MAX_CELLS:,} least-squares cells; subsample the transitions")
    n = np.bincount(g, minlength=P).astype(np.float64)
    rbar = np.stack([np.bincount(g, weights=ra, minlength=P), np.bincount(g, weights=rb, minlength=P)], axis=1) / n[:, None]
    A = np.zeros((P, cols.size))
    nt = col_s2 >= 0
    np.add.at(A, (g[nt], col_s2[nt]), 1.0)  # next-state counts, then frequencies: a self-loop
    A *= gamma / n[:, None]                  # seen k times of k is exactly γ (γ − 1 = 0 at γ = 1)
    A[np.arange(P), col_s[pair_first]] -= 1.0
    d = n / N
    q = _minimal_q(rbar, A, d)
    sa = _standard(q[:, 0], d, 2.0, float(np.abs(ra).max()))
    sb = _standard(q[:, 1], d, 2.0, float(np.abs(rb).max()))
    return float(min(1.0, 0.5 * _norm(sa - sb, d, 2.0)))
