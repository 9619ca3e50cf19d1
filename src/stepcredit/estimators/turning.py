"""Turning-point estimators: incremental step rewards from a value trajectory.

Notation: episode i of group g has steps t = 0..T−1 and outcome R_i. v_t (the step field
``value``) is the value of the state *before* step t (v_0: the start), and v_T = R_i, the
outcome after the last step. The increment of step t is d_t = v_{t+1} − v_t, so Σ_t d_t =
R_i − v_0 = Δ_i, the episode's global change, and s_t = sign(d_t)·sign(Δ_i) says whether step t
moves with (+1) or against (−1) the episode's overall trend.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.registry import EstimatorError, check_positive, register
from stepcredit.ops import group_centered, group_count

__all__ = ["turning_point", "turning_points"]

TP_PAPER = (
    "Alleviating Sparse Rewards by Modeling Step-Wise and Long-Term Sampling Effects in "
    "Flow-Based GRPO (Tong, Liu, Zhao, He, Zhang, Zhang, Zhang, Liu, Huang, Wang, Jiang, Huang, "
    "2026, arXiv:2602.06422)"
)


def _increments(ro: Rollouts, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[S] d_t = v_{t+1} − v_t, [S] B_t = R − v_t, [S] R − v_{t+1} (0 at the last step)."""
    off = ro.episode_offsets
    last = off[1:] - 1
    R = ro.outcome[ro.step_episode]
    v_next = np.empty_like(v)
    v_next[:-1] = v[1:]
    v_next[last] = ro.outcome
    d = v_next - v
    long_term = R - v
    rest = np.subtract(R, v_next, out=R)  # R − v_{t+1}
    rest[last] = 0.0  # R − v_T = R − R
    return d, long_term, rest


def turning_points(ro: Rollouts, indicator: Literal["consistent", "sign_flip"] = "consistent") -> np.ndarray:
    """[S] bool: is step t a turning point (before any balancing)?

    Every turning point must be *followed consistently*: sign(d_t)·sign(R − v_{t+1}) > 0 (the
    rest of the trajectory moves the way step t did). The first step needs only that. A later
    step t >= 1 must also flip the trend: ``"consistent"`` s_{t−1} < 0 < s_t (the previous step
    went against the episode's global change Δ, this one goes with it), ``"sign_flip"``
    sign(d_{t−1})·sign(d_t) < 0 (any change of direction). The last step is never one
    (R − v_T = 0).

    Args:
        ro: rollouts with the step field ``value``.
        indicator: ``"consistent"`` or ``"sign_flip"``.
    """
    v = ro.column("value", by="turning points")
    d, _, rest = _increments(ro, v)
    return _indicator(ro, v, d, rest, indicator)


def _indicator(ro: Rollouts, v: np.ndarray, d: np.ndarray, rest: np.ndarray, indicator: str) -> np.ndarray:
    off = ro.episode_offsets
    sd = np.sign(d)
    tp = sd * np.sign(rest) > 0  # consistent follow-up
    later = np.ones(d.shape[0], dtype=bool)
    later[off[:-1]] = False  # steps t >= 1 of their episode
    if indicator == "consistent":
        trend = np.sign(ro.outcome - v[off[:-1]])[ro.step_episode]  # sign(Δ), Δ = R − v_0
        s = sd * trend
        flip = np.zeros_like(later)
        flip[1:] = (s[:-1] < 0) & (s[1:] > 0)
    else:
        flip = np.zeros_like(later)
        flip[1:] = sd[:-1] * sd[1:] < 0
    tp &= flip | ~later
    return tp


def _balance(codes: np.ndarray, n_groups: int, tp: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Keep, in each group with turning points of both signs of B, the min(#pos, #neg) of each
    sign with the largest |B| (ties at the cut all kept); elsewhere keep them all."""
    idx = np.flatnonzero(tp & (b != 0))
    keep = np.zeros(tp.shape[0], dtype=bool)
    if idx.size == 0:
        return keep
    g, bv = codes[idx], b[idx]
    side = (bv > 0).astype(np.int64)  # 0 = negative, 1 = positive
    mag = np.abs(bv)
    cell = 2 * g + side
    cnt = np.bincount(cell, minlength=2 * n_groups).reshape(n_groups, 2)
    k = cnt.min(axis=1)  # per group; 0 when a sign is missing: no balancing
    order = np.lexsort((-mag, cell))  # by cell, largest |B| first
    start = np.zeros(2 * n_groups + 1, dtype=np.int64)
    np.cumsum(cnt.ravel(), out=start[1:])
    kk = np.repeat(k, 2)
    thr = np.full(2 * n_groups, -np.inf)
    has = kk > 0
    thr[has] = mag[order][start[:-1][has] + kk[has] - 1]  # the k-th largest |B| of each cell
    keep[idx] = mag >= thr[cell]
    return keep


@register(family="progress", paper=TP_PAPER, requires=("value",))
def turning_point(
    ro: Rollouts,
    *,
    eta: float = 1.0,
    indicator: Literal["consistent", "sign_flip"] = "consistent",
    balanced: bool = True,
    epsilon: float = 1e-4,
    singleton: Literal["zero", "raw"] = "zero",
) -> Credit:
    """TP-GRPO: incremental step rewards, with the long-term reward at turning points.

    Step reward (v_T = R):
        d_t = v_{t+1} − v_t,   B_t = R − v_t = Σ_{k≥t} d_k,
        r_t = η B_t at a kept turning point (where η B_t ≠ 0), else r_t = d_t.
    Turning points (``indicator="consistent"``, the shipped run script), with
    s_t = sign(d_t)·sign(R − v_0):
        step 0:   sign(d_0)·sign(R − v_1) > 0,
        step t≥1: s_{t−1} < 0,  s_t > 0  and  sign(d_t)·sign(R − v_{t+1}) > 0;
    ``"sign_flip"`` replaces the s condition by sign(d_{t−1})·sign(d_t) < 0. ``balanced``: in a
    group whose turning points have B of both signs, only min(#B>0, #B<0) of each sign are kept,
    those with the largest |B| (all of those tied at the cut). Advantage, per step index t,
    over the episodes of the group that have a step t (no sum over later steps):
        A_t = (r_t − mean r_t) / (std_pop r_t + ε);
    a step index reached by one episode of the group gives 0 (``singleton="zero"``, the code's
    np.std) or r_t/(1 + ε) (``"raw"``). Example: v = [0.5, 0.2, 0.6], R = 1 (Δ = 0.5): d =
    [−0.3, 0.4, 0.4]; step 1 flips to the global trend and is followed upward, so r = [−0.3,
    B_1 = 0.8, 0.4]; Σ_t d_t = Δ. Strictly monotone values (T >= 2, every d_t with Δ's sign)
    have one turning point, step 0, whose reward is η B_0 = η Δ.

    Args:
        ro: rollouts; needs the step field ``value`` (v_t, the value of the state before step
            t: in the paper, the reward of a deterministic completion from that state). The
            step field ``reward`` is not used.
        eta: η >= 0, the weight of the long-term reward (shipped script: 1.0); η = 0 gives the
            increments d_t everywhere.
        indicator: ``"consistent"`` or ``"sign_flip"`` (the code's
            ``indicator_wo_delta_global_constraint``, with the consistency check kept).
        balanced: balance positive and negative turning points per group (the script's
            ``use_balanced_bonus``).
        epsilon: ε > 0 added to the population std (code: 1e-4).
        singleton: a step index with one episode in its group gives 0 (``"zero"``, code) or
            r_t/(1 + ε) (``"raw"``).

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A_0 (the first step's
        advantage), step_reward [S] = r_t, step_return None. Diagnostics: ``turning_points``
        (found), ``kept_turning_points`` (rewarded with η B_t after balancing),
        ``singleton_positions`` ((group, step index) pairs with one episode).

    Reference: Alleviating Sparse Rewards by Modeling Step-Wise and Long-Term Sampling Effects
    in Flow-Based GRPO (Tong et al., 2026, arXiv:2602.06422); a method for diffusion denoising
    steps, transferred here to agent steps (value ↔ the reward of a deterministic completion).
    Differs from official code: YunzeTong/TurningPoint-GRPO@f9f6ff4e:
    scripts/my_train_sd3_fast_with_op3.py balances within a per-process sampling batch (not a
    prompt group) and classifies and ranks turning points by the global change Δ
    (``use_delta_global``), here by the bonus B_t actually given (same signs under
    ``"consistent"``); its torch.topk breaks ties arbitrarily, here ties at the cut are kept.
    """
    if not eta >= 0:
        raise EstimatorError(f"estimator 'turning_point': eta={eta} must be >= 0")
    check_positive("turning_point", epsilon=epsilon)
    v = ro.column("value", by="estimator 'turning_point'")
    G = ro.n_groups
    d, long_term, rest = _increments(ro, v)
    tp = _indicator(ro, v, d, rest, indicator)
    del rest
    group = ro.episode_group[ro.step_episode]
    kept = _balance(group, G, tp, long_term) if balanced else tp
    bonus = eta * long_term
    bonus_at = kept & (bonus != 0)
    r = np.where(bonus_at, bonus, d)
    del bonus, long_term, d

    # per (group, step index) normalisation
    t = ro.step_index
    T = int(t.max()) + 1 if t.size else 1
    cell = group * T + t
    n_cells = G * T
    if n_cells > 4 * max(ro.n_steps, 1):  # sparse cells: number them densely
        _, cell = np.unique(cell, return_inverse=True)
        n_cells = int(cell.max()) + 1 if cell.size else 0
    count = group_count(cell, n_cells)
    c = group_centered(r, cell, n_cells, "raw" if singleton == "raw" else "zero")
    var = np.bincount(cell, weights=c * c, minlength=n_cells) / np.maximum(count, 1)
    scale = np.where(count == 1, 1.0, np.sqrt(var)) + epsilon
    adv = c / scale[cell]
    return Credit(
        step_advantage=adv,
        episode_advantage=adv[ro.episode_offsets[:-1]],
        episode_offsets=ro.episode_offsets,
        step_reward=r,
        diagnostics={
            "turning_points": int(np.count_nonzero(tp)),
            "kept_turning_points": int(np.count_nonzero(bonus_at)),
            "singleton_positions": int(np.count_nonzero(count == 1)),
        },
    )
