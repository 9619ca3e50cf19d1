"""EPIC: the Equivalent-Policy Invariant Comparison pseudometric between reward functions.

Notation as in :mod:`stepcredit.metrics.tabular` (nS states, nA actions, R[s, a, s'], γ), plus
D_S [nS] and D_A [nA], the state and action distributions of the canonicalisation, and the
coverage distribution D over transitions (s, a, s') on which the rewards are compared.

    C(R)(s, a, s') = R(s, a, s') + E[γR(s', A, S') − R(s, A, S') − γR(S, A, S')],
                     S, S' ~ D_S and A ~ D_A independent                      (canonical shaping)
    D_EPIC(R_A, R_B) = √((1 − ρ(C(R_A), C(R_B))) / 2) ∈ [0, 1]               (ρ: Pearson under D)

C removes potential shaping exactly: with Φ_R(s) = E[R(s, A, S')],
C(R) = R + γΦ_R(s') − Φ_R(s) − γE[Φ_R(S)], and C(R + γΦ(s') − Φ(s)) = C(R) for every Φ. The
Pearson correlation removes positive scaling and constant shifts, so D_EPIC is 0 between a
reward and its shaped, rescaled or shifted versions, and 1 between R and −R.

Computation: √((1 − ρ)/2) = ½‖u − v‖ with u, v the standardised canonical rewards (centred,
unit D-weighted L2 norm); the difference form keeps distances near 0 accurate to rounding
(√ of 1 − ρ would turn an error of 1e-16 in ρ into 1e-8).

Degenerate rewards: when a canonical reward has no variance under D (a constant reward, or
any reward that is potential shaping plus a constant), ρ is undefined. The official code
divides by zero and returns nan; here too the distance is **nan**: such a reward orders all
policies alike, and EPIC has no direction to compare it with. A canonical standard deviation
at most ``ZERO_TOL`` times the largest |R| counts as zero (rounding leaves ~1e-16 of it).

Reference for the module: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg,
Russell, Leike, 2021, arXiv:2006.13900).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stepcredit.metrics.tabular import MetricsError

__all__ = [
    "ZERO_TOL",
    "epic_canonical",
    "epic_canonical_sampled",
    "epic_distance",
    "epic_distance_sampled",
    "pearson_distance",
]

#: A canonical reward whose (weighted) spread is at most ZERO_TOL times the raw reward's
#: largest magnitude counts as constant (EPIC: nan; STARC: the zero reward).
ZERO_TOL = 1e-10

#: Reward callables of the sampled estimator are evaluated in chunks of this many triples.
CHUNK = 1 << 20

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _dist(p: np.ndarray | None, n: int, who: str, arg: str) -> np.ndarray:
    if p is None:
        return np.full(n, 1.0 / n)
    q = np.asarray(p, dtype=np.float64)
    if q.shape != (n,) or not np.all(np.isfinite(q)) or np.any(q < 0) or q.sum() <= 0:
        raise MetricsError(f"{who}: {arg} must be [{n}] finite non-negative weights with a positive sum")
    return q / q.sum()


def _reward3(R, who: str, arg: str) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 3 or R.shape[0] != R.shape[2]:
        raise MetricsError(f"{who}: {arg} must have shape [nS, nA, nS], got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise MetricsError(f"{who}: {arg} has non-finite values")
    return R


def epic_canonical(
    reward: np.ndarray,
    *,
    gamma: float,
    state_dist: np.ndarray | None = None,
    action_dist: np.ndarray | None = None,
) -> np.ndarray:
    """EPIC's canonically shaped reward of a tabular reward function.

        Φ_R(s) = Σ_{a,x} D_A(a) D_S(x) R(s, a, x)
        C(R)(s, a, s') = R(s, a, s') + γΦ_R(s') − Φ_R(s) − γ Σ_x D_S(x) Φ_R(x)

    Args:
        reward: R [nS, nA, nS].
        gamma: γ in [0, 1].
        state_dist: D_S [nS] (normalised here); default uniform.
        action_dist: D_A [nA]; default uniform.

    Returns:
        C(R) [nS, nA, nS].

    Reference: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg, Russell,
    Leike, 2021, arXiv:2006.13900), canonically shaped reward. Verified against the official
    tabular code, HumanCompatibleAI/evaluating-rewards@4eb398f9:
    src/evaluating_rewards/distances/tabular.py (``fully_connected_random_canonical_reward``:
    ``shape(rew, mean_rew_s, discount) - discount * mean_rew``, the same expression).
    Differs from official code: none.
    """
    who = "epic_canonical"
    R = _reward3(reward, who, "reward")
    _gamma(gamma, who)
    ds = _dist(state_dist, R.shape[0], who, "state_dist")
    da = _dist(action_dist, R.shape[1], who, "action_dist")
    phi = np.einsum("sax,a,x->s", R, da, ds)
    return R + gamma * phi[None, None, :] - phi[:, None, None] - gamma * float(ds @ phi)


def _gamma(gamma: float, who: str) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise MetricsError(f"{who}: gamma={gamma!r} must lie in [0, 1]")


def _standardised(x: np.ndarray, w: np.ndarray, scale: float) -> np.ndarray | None:
    """(x − E_w x) / sd_w(x), or None when sd_w(x) <= ZERO_TOL · scale (two-pass, centred)."""
    c = x - w @ x
    sd = float(np.sqrt(w @ (c * c)))
    if sd <= ZERO_TOL * scale or sd == 0.0:
        return None
    return c / sd


def pearson_distance(
    x: np.ndarray, y: np.ndarray, *, weights: np.ndarray | None = None, scale: float | None = None
) -> float:
    """√((1 − ρ)/2) of the weighted Pearson correlation ρ of x and y; nan if either is constant.

        u = (x − E_w x)/sd_w(x),  v = (y − E_w y)/sd_w(y),  √((1 − ρ)/2) = ½ √(E_w (u − v)²)

    (population moments under the normalised weights w).

    Args:
        x: [N] values.
        y: [N] values.
        weights: w [N] >= 0 (normalised here), default uniform.
        scale: a value whose spread is at most ``ZERO_TOL · scale`` counts as constant;
            default max(|x|) (resp. |y|). EPIC passes the raw rewards' magnitude.

    Returns:
        The distance in [0, 1], or nan when x or y has no spread under w.

    Reference: Quantifying Differences in Reward Functions (Gleave et al., 2021,
    arXiv:2006.13900), the Pearson distance; official code ``pearson_distance`` in
    HumanCompatibleAI/evaluating-rewards@4eb398f9:src/evaluating_rewards/distances/tabular.py.
    Differs from official code: computed as ½‖u − v‖ instead of √(0.5(1 − ρ)) (equal in exact
    arithmetic, accurate near 0); a constant input gives nan there by 0/0, here by the
    ZERO_TOL test.
    """
    who = "pearson_distance"
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise MetricsError(f"{who}: x and y must be non-empty with equal sizes, got {x.size} and {y.size}")
    sx = float(np.abs(x).max()) if scale is None else scale
    sy = float(np.abs(y).max()) if scale is None else scale
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return _pearson_scaled(x, y, w, sx, sy, who, "weights")


def epic_distance(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    *,
    gamma: float,
    state_dist: np.ndarray | None = None,
    action_dist: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
) -> float:
    """Exact EPIC distance between two tabular reward functions.

        D_EPIC = √((1 − ρ_D(C(R_A), C(R_B))) / 2)

    Args:
        reward_a: R_A [nS, nA, nS].
        reward_b: R_B [nS, nA, nS].
        gamma: γ in [0, 1].
        state_dist: D_S [nS] of the canonicalisation; default uniform.
        action_dist: D_A [nA]; default uniform.
        coverage: D [nS, nA, nS] over transitions for the correlation; default uniform over
            all nS·nA·nS triples (the official code's default). ``TabularMDP.transitions``
            times a state-action weight restricts it to the transitions the dynamics produce.

    Returns:
        The distance in [0, 1]; nan when a canonical reward is constant under D (see the
        module docstring).

    Reference: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg, Russell,
    Leike, 2021, arXiv:2006.13900). Differs from official code: see :func:`pearson_distance`.
    """
    who = "epic_distance"
    Ra = _reward3(reward_a, who, "reward_a")
    Rb = _reward3(reward_b, who, "reward_b")
    if Ra.shape != Rb.shape:
        raise MetricsError(f"{who}: reward_a {Ra.shape} and reward_b {Rb.shape} differ in shape")
    if coverage is not None and np.shape(coverage) != Ra.shape:
        raise MetricsError(f"{who}: coverage must have shape {Ra.shape}, got {np.shape(coverage)}")
    ca = epic_canonical(Ra, gamma=gamma, state_dist=state_dist, action_dist=action_dist)
    cb = epic_canonical(Rb, gamma=gamma, state_dist=state_dist, action_dist=action_dist)
    w = None if coverage is None else np.asarray(coverage, dtype=np.float64).ravel()
    return _pearson_scaled(ca.ravel(), cb.ravel(), w, float(np.abs(Ra).max()), float(np.abs(Rb).max()), who, "coverage")


def _pearson_scaled(x, y, w, sx, sy, who, arg) -> float:
    w = _dist(w, x.size, who, arg)
    u = _standardised(x, w, sx)
    v = _standardised(y, w, sy)
    if u is None or v is None:
        return float("nan")
    d = u - v
    return float(min(1.0, 0.5 * np.sqrt(w @ (d * d))))


# --------------------------------------------------------------------------- sample-based
def _evaluate(fn: RewardFn, s, a, s2, who: str) -> np.ndarray:
    try:
        v = np.asarray(fn(s, a, s2), dtype=np.float64)
    except MetricsError:
        raise
    except Exception as exc:
        raise MetricsError(f"{who}: the reward function raised {type(exc).__name__}: {exc}") from exc
    if v.shape != (len(s),):
        raise MetricsError(f"{who}: the reward function returned shape {v.shape} for {len(s)} transitions")
    if not np.all(np.isfinite(v)):
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise MetricsError(f"{who}: the reward function returned {float(v[i])!r} at (s, a, s') = "
                           f"({_py(s[i])!r}, {_py(a[i])!r}, {_py(s2[i])!r})")
    return v


def _py(x):
    """A NumPy scalar as the Python value, for messages."""
    return x.item() if isinstance(x, np.generic) else x


def _unique(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and inverse indices (hashable objects of mixed types, such as None
    among strings, by a dict; unhashable ones are not deduplicated)."""
    try:
        u, inv = np.unique(x, return_inverse=True)
        return u, inv.ravel()
    except TypeError:
        pass
    try:
        index: dict = {}
        inv = np.fromiter((index.setdefault(v, len(index)) for v in x), np.int64, len(x))
    except TypeError:
        return x, np.arange(len(x))
    u = np.empty(len(index), dtype=object)
    u[:] = list(index)
    return u, inv


def epic_canonical_sampled(
    reward: RewardFn,
    states: np.ndarray,
    actions: np.ndarray,
    next_states: np.ndarray,
    mean_actions: np.ndarray,
    mean_states: np.ndarray,
    *,
    gamma: float,
    mean_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Sample estimate of EPIC's canonical reward on a batch of transitions.

    With the batch (s_i, a_i, s'_i), i < N, and M pairs (a_j, x_j), a_j ~ D_A and x_j ~ D_S
    drawn independently, weights w_j (default 1/M):

        m(y) = Σ_j w_j R(y, a_j, x_j)                    (estimate of Φ_R(y) = E R(y, A, S'))
        Ĉ(R)(s, a, s') = R(s, a, s') + γ m(s') − m(s) − γ Σ_j w_j m(x_j)

    R is evaluated on the batch and on every (y, a_j, x_j) for the distinct states y among
    the batch's s, s' and the x_j: (distinct states)·M evaluations, in chunks. Potential
    shaping cancels exactly for any sample (with μ = Σ_j w_j Φ(x_j), m shifts by γμ − Φ(y) and
    the last term by γ(γμ − μ)), so a shaped reward has the same estimate.

    Args:
        reward: a vectorised R: (s [K], a [K], s' [K]) -> [K] finite floats; states and
            actions may be any NumPy arrays (integers, strings, objects).
        states: s [N].
        actions: a [N].
        next_states: s' [N].
        mean_actions: a_j [M], samples of D_A.
        mean_states: x_j [M], samples of D_S, independent of the a_j.
        gamma: γ in [0, 1].
        mean_weights: w [M] (normalised here), default uniform; with the mesh of all (a, x)
            pairs and w = D_A(a)·D_S(x) the estimate is the exact canonical reward.

    Returns:
        Ĉ(R) [N].

    Reference: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg, Russell,
    Leike, 2021, arXiv:2006.13900), the sample-based approximation of the canonical reward.
    Verified against the official code HumanCompatibleAI/evaluating-rewards@447a8919:
    src/evaluating_rewards/distances/epic_sample.py (``sample_canon_shaping``: mean reward of
    each observation over the (action, next observation) samples, the overall mean over the
    sampled next observations, ``raw + discount * mean_next_obs - mean_obs - discount *
    total``). Differs from official code: optional weights; no L^p rescaling of the result
    (the Pearson correlation that follows ignores it); the official code also sets ``dones``
    to False (here there are no dones: terminal transitions are the caller's to drop).
    """
    return _canonical_sampled(reward, states, actions, next_states, mean_actions, mean_states, gamma,
                              mean_weights, "epic_canonical_sampled")[0]


def _canonical_sampled(reward, states, actions, next_states, mean_actions, mean_states, gamma, mean_weights, who):
    """(Ĉ(R) [N], the largest |R| evaluated: the scale of the constant test)."""
    _gamma(gamma, who)
    s, a, s2 = (np.asarray(v) for v in (states, actions, next_states))
    ma, mx = np.asarray(mean_actions), np.asarray(mean_states)
    N, M = len(s), len(ma)
    if len(a) != N or len(s2) != N or N == 0:
        raise MetricsError(f"{who}: states, actions and next_states must be non-empty with equal lengths "
                           f"({len(s)}, {len(a)}, {len(s2)})")
    if len(mx) != M or M == 0:
        raise MetricsError(f"{who}: mean_actions and mean_states must be non-empty with equal lengths ({M}, {len(mx)})")
    w = _dist(mean_weights, M, who, "mean_weights")
    raw = _evaluate(reward, s, a, s2, who)
    scale = float(np.abs(raw).max())
    ys, inv = _unique(np.concatenate([s, s2, mx]))
    m = np.empty(len(ys))
    rows = max(1, CHUNK // M)
    for start in range(0, len(ys), rows):  # chunks of whole rows: (distinct states) x M
        y = ys[start:start + rows]
        vals = _evaluate(reward, np.repeat(y, M), np.tile(ma, len(y)), np.tile(mx, len(y)), who)
        scale = max(scale, float(np.abs(vals).max()))
        m[start:start + len(y)] = vals.reshape(len(y), M) @ w
    m_s, m_s2, m_x = m[inv[:N]], m[inv[N:2 * N]], m[inv[2 * N:]]
    return raw + gamma * m_s2 - m_s - gamma * float(w @ m_x), scale


def epic_distance_sampled(
    reward_a: RewardFn,
    reward_b: RewardFn,
    states: np.ndarray,
    actions: np.ndarray,
    next_states: np.ndarray,
    mean_actions: np.ndarray,
    mean_states: np.ndarray,
    *,
    gamma: float,
    weights: np.ndarray | None = None,
    mean_weights: np.ndarray | None = None,
) -> float:
    """Sample estimate of the EPIC distance from a batch of transitions drawn from D.

        D̂_EPIC = √((1 − ρ̂(Ĉ(R_A), Ĉ(R_B))) / 2),

    ρ̂ the (weighted) Pearson correlation over the batch, Ĉ from :func:`epic_canonical_sampled`
    with the same (a_j, x_j) samples for both rewards. The reward functions must be callable
    anywhere: EPIC evaluates them on transitions (y, a_j, x_j) that need not occur in the
    data, so logged reward values alone are not enough (see :func:`starc_distance_transitions`
    for a distance computable from logged values).

    Args:
        reward_a, reward_b: vectorised reward functions, as in :func:`epic_canonical_sampled`.
        states, actions, next_states: the batch [N], samples of the coverage distribution D.
        mean_actions, mean_states: [M] samples of D_A and D_S, independent.
        gamma: γ in [0, 1].
        weights: [N] batch weights (normalised here), default uniform.
        mean_weights: [M], default uniform.

    Returns:
        The estimate in [0, 1]; nan when an estimated canonical reward is constant over the
        batch (spread at most ZERO_TOL times the largest |R| evaluated).

    Reference: Quantifying Differences in Reward Functions (Gleave, Dennis, Legg, Russell,
    Leike, 2021, arXiv:2006.13900). Differs from official code: see
    :func:`epic_canonical_sampled` and :func:`pearson_distance`.
    """
    who = "epic_distance_sampled"
    args = (states, actions, next_states, mean_actions, mean_states, gamma, mean_weights, who)
    ca, sa = _canonical_sampled(reward_a, *args)
    cb, sb = _canonical_sampled(reward_b, *args)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return _pearson_scaled(ca, cb, w, sa, sb, who, "weights")
