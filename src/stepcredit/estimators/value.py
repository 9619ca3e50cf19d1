"""Critic-based estimators: advantages from per-step value estimates.

Notation: episode i has steps t = 0..T−1 with immediate rewards r_t (the outcome R is added to
the last step's reward), value estimates V_t = V(s_t) from the step field ``value``, and
V_T = 0 after the last step (the episode has ended).
"""

from __future__ import annotations

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.registry import check_unit_interval, register
from stepcredit.ops import reverse_discounted_cumsum, weighted_whiten

__all__ = ["gae"]

GAE_PAPER = (
    "High-Dimensional Continuous Control Using Generalized Advantage Estimation "
    "(Schulman et al., 2016, arXiv:1506.02438)"
)


def step_rewards_with_outcome(ro: Rollouts) -> np.ndarray:
    """[S] immediate rewards with each episode's outcome added to its last step."""
    r = np.array(ro.reward, dtype=np.float64, copy=True)
    r[ro.episode_offsets[1:] - 1] += ro.outcome
    return r


@register(family="value", paper=GAE_PAPER, requires=("value",), reads_reward=True)
def gae(
    ro: Rollouts,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = False,
) -> Credit:
    """Generalised advantage estimation over the steps of each episode.

    δ_t = r_t + γ V_{t+1} − V_t,   A_t = Σ_{k≥0} (γλ)^k δ_{t+k} = δ_t + γλ A_{t+1},
    return_t = A_t + V_t (before any whitening). With λ = 1 and V = 0, A_t is the discounted
    return-to-go; with λ = 0 it is the one-step TD error.

    Args:
        ro: rollouts; needs the step field ``value``.
        gamma: discount γ in [0, 1] (verl's default 1.0; the paper's experiments use 0.99+).
        lam: GAE λ in [0, 1] (verl's default 1.0).
        whiten: whiten the advantages over all steps of the batch (mean 0, unbiased var 1, as
            verl does over tokens); returns are not whitened.

    Returns:
        Credit with step_advantage [S] = A_t, step_return [S], step_reward [S] (r_t with the
        outcome on the last step) and episode_advantage [E] = A at the episode's first step.

    Reference: High-Dimensional Continuous Control Using Generalized Advantage Estimation
    (Schulman et al., 2016, arXiv:1506.02438). Differs from official code: none; per step, not
    per token (a trainer that wants per-token GAE gives one step per token).
    """
    check_unit_interval("gae", gamma=gamma, lam=lam)
    v = ro.column("value", by="estimator 'gae'")
    r = step_rewards_with_outcome(ro)
    # δ_t = r_t + γ V_{t+1} − V_t, built in place; V after the last step of an episode is 0
    delta = np.empty_like(v)
    np.multiply(v[1:], gamma, out=delta[:-1])
    delta[ro.episode_offsets[1:] - 1] = 0.0
    delta += r
    delta -= v
    adv = reverse_discounted_cumsum(delta, ro.episode_offsets, gamma * lam)
    ret = adv + v
    if whiten:
        adv = weighted_whiten(adv, np.ones_like(adv), 1e-8)
    return Credit(
        step_advantage=adv,
        episode_advantage=adv[ro.episode_offsets[:-1]],
        episode_offsets=ro.episode_offsets,
        step_return=ret,
        step_reward=r,
    )
