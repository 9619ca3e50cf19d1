"""Reward redistribution: an episode's outcome spread over its steps by per-step weights.

Notation: episode i has steps t = 0..T_i−1, outcome R_i, non-negative step weights x_t and
normalised weights w_t = x_t / Σ_u x_u (so Σ_t w_t = 1); A_i is a base outcome advantage
(``grpo``, ``drgrpo`` or ``rloo``) of the episode's group.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.data.errors import RolloutsError
from stepcredit.estimators.outcome import base_advantage
from stepcredit.estimators.registry import check_positive, register
from stepcredit.ops import reverse_discounted_cumsum

__all__ = ["redistribute", "redistribution_weights"]

REVIBRANCH_PAPER = (
    "ReviBranch: Deep Reinforcement Learning for Branch-and-Bound with Revived Trajectories "
    "(authors not verified: not in the stored abstract pages, 2025, arXiv:2508.17452)"
)

Weights = Literal["uniform", "importance", "process"]


def redistribution_weights(ro: Rollouts, weights: Weights = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """Per-step weights scaled to at most 1 within each episode, and the fallback mask.

    Args:
        ro: rollouts; needs the step field named by ``weights`` unless it is ``"uniform"``.
        weights: ``"uniform"`` (every x_t = 1), or the step field ``"importance"`` or
            ``"process"`` as x_t (values must be >= 0).

    Returns:
        ([S] x_t / max_u x_u of the episode (1 for every step of a uniform or fallback
        episode), [E] bool: the episode's weights were all 0 and it falls back to uniform).

    Raises:
        RolloutsError: a negative weight, naming the episode, the step and the field.
    """
    E = ro.n_episodes
    if weights == "uniform" or ro.n_steps == 0:
        return np.ones(ro.n_steps), np.zeros(E, dtype=bool)
    x = ro.column(weights, by=f"estimator 'redistribute' with weights='{weights}'")
    negative = np.flatnonzero(x < 0)
    if negative.size:
        s = int(negative[0])
        e = int(ro.step_episode[s])
        raise RolloutsError(
            "<rollouts>",
            f"episode {e}, step {int(ro.step_index[s])}",
            f"steps[].{weights}",
            f"is {float(x[s])!r} in episode '{ro.episode_id[e].as_py()}', a negative weight for "
            f"estimator 'redistribute' with weights='{weights}'",
            f"give '{weights}' as a number >= 0 on every step, or use weights='uniform'",
        )
    peak = np.maximum.reduceat(x, ro.episode_offsets[:-1])
    fallback = peak == 0  # every weight of the episode is 0 (no non-negative sum cancels)
    scale = np.where(fallback, 1.0, peak)
    # x / max keeps the cumulative sums far from overflow and makes constant weights exactly 1
    xn = x / scale[ro.step_episode]
    xn[fallback[ro.step_episode]] = 1.0
    return xn, fallback


@register(family="progress", paper=REVIBRANCH_PAPER)
def redistribute(
    ro: Rollouts,
    *,
    weights: Weights = "uniform",
    base: Literal["grpo", "drgrpo", "rloo"] = "grpo",
    epsilon: float = 1e-6,
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """Importance-weighted redistribution of the outcome over the steps of each episode.

    With w_t = x_t / Σ_u x_u the episode's normalised weights:
        r_t = R_i · w_t, rounded so that Σ_t r_t == R_i exactly (see below),
        A_t = T_i · w_t · A_i   (so Σ_t A_t = T_i · A_i),
        return_t = Σ_{k≥t} r_k  (γ = 1; return_0 = R_i).
    Uniform weights (w_t = 1/T_i) give A_t = A_i exactly, the base estimator; weights that are
    constant within an episode do too. Weights are scale-free: x and c·x give the same result
    (bit for bit when c is a power of two). A step of weight 0 gets A_t = 0 and r_t = 0, unless
    every weight of its episode is 0: such an episode falls back to uniform weights (counted in
    the diagnostics).

    Exact sums: r_t is computed from the rounded cumulative shares
    C_t = sign(R_i) · u · floor(|R_i| · W_t / u), W_t = (Σ_{k≤t} x_k)/(Σ_k x_k), C_{T−1} = R_i,
    u = ulp(|R_i|), as r_t = C_t − C_{t−1} (C_{−1} = 0). Every r_t and every partial sum is a
    multiple of u no larger than |R_i|, so each float addition is exact: Σ_t r_t equals R_i
    bit for bit in any order (and with math.fsum), and return_t = R_i − C_{t−1} exactly.
    r_t stays within (4 T_i + 8) ulp(|R_i|) of R_i · w_t: the rounding of the cumulative
    weights (one relative ε per addition) plus the floor (in practice a few ulp).

    This applies ReviBranch's idea (dense step rewards from a terminal reward by importance-
    weighted redistribution, fed there to a critic-based RL learner for MILP branching) to a
    group advantage: the step advantage redistributes T_i · A_i, not r_t through a critic.

    Args:
        ro: rollouts; needs the step field ``importance`` or ``process`` when ``weights`` names
            it. Immediate ``reward`` values are not used (R_i is the outcome).
        weights: x_t: ``"uniform"`` (1 per step, default), ``"importance"`` or ``"process"``
            (the step field, >= 0; a negative value is an error naming the step).
        base: the outcome advantage A_i: ``"grpo"`` (group std scale), ``"drgrpo"`` or
            ``"rloo"``.
        epsilon: ε added to the group std by the ``grpo`` base (1e-6); must be > 0.
        singleton: one-episode groups in the base: ``"raw"`` (mean 0, std 1) or ``"zero"``.

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = the base advantage A_i,
        step_reward [S] = r_t, step_return [S] = return_t; diagnostics: the base's (``groups``,
        ``singleton_groups``, ``zero_variance_groups``) plus ``fallback_episodes`` (episodes
        with all weights 0, given uniform weights) and ``zero_weight_steps``.

    Reference: ReviBranch: Deep Reinforcement Learning for Branch-and-Bound with Revived
    Trajectories (2025, arXiv:2508.17452); only the abstract was read, so the weighting rule
    w_t = x_t / Σ x from a step field, the exact-sum rounding and the fallback are ours.
    Differs from official code: no official code was found.
    """
    check_positive("redistribute", epsilon=epsilon)
    adv, diagnostics = base_advantage(ro, base, epsilon=epsilon, singleton=singleton)
    xn, fallback = redistribution_weights(ro, weights)
    zero_weight_steps = 0 if weights == "uniform" else int(
        np.count_nonzero((ro.column(weights) == 0) & ~fallback[ro.step_episode])
    )
    off = ro.episode_offsets
    ep = ro.step_episode
    # cumulative weight within each episode, summed left to right (the time loop of ops, run on
    # the reversed steps: a reverse cumulative sum of the reversed array is a forward one)
    rev_off = off[-1] - off[::-1]
    cum = reverse_discounted_cumsum(xn[::-1], rev_off, 1.0)[::-1]
    last = off[1:] - 1
    total = cum[last]  # > 0: every episode has a weight > 0 after the fallback
    T = ro.step_counts.astype(np.float64)

    # step advantage: multiply before dividing, so a weight equal to the mean gives exactly 1
    step_adv = xn * T[ep] / total[ep] * adv[ep]

    # exact redistribution of R through rounded cumulative shares (see the docstring)
    R = ro.outcome
    mag = np.abs(R)
    u = np.spacing(mag)  # ulp(|R|): a power of two, > 0 even for R = 0
    share = np.minimum(cum / total[ep], 1.0)  # W_t in [0, 1], non-decreasing within an episode
    C = np.floor(mag[ep] * share / u[ep]) * u[ep]
    C[last] = mag
    prev = np.empty_like(C)
    prev[1:] = C[:-1]
    prev[off[:-1]] = 0.0
    sign = np.where(R < 0, -1.0, 1.0)[ep]
    step_reward = sign * (C - prev)
    step_return = sign * (mag[ep] - prev)
    diagnostics.update(
        fallback_episodes=int(np.count_nonzero(fallback)),
        zero_weight_steps=zero_weight_steps,
    )
    return Credit(
        step_advantage=step_adv,
        episode_advantage=adv,
        episode_offsets=off,
        step_return=step_return,
        step_reward=step_reward,
        diagnostics=diagnostics,
    )
