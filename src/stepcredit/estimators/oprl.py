"""OPRL: outcome advantages plus step advantages from implicit process rewards.

Notation: group g holds K_g episodes (a singleton group: K_g = 1); episode i has steps
t = 0..T_i−1 and outcome R_i; the step field ``process`` holds the implicit step reward r_t of
an online implicit PRM π_φ,

    r_t = r_φ(a_t) = β Σ_{tokens of a_t} (log π_φ − log π_θold)   (β = 0.05),

which the trainer computes when ``TrainConfig.online_prm="oprl"`` (``stepcredit.train.online_prm``:
the PRM is trained online, alternately with the policy, by a trajectory-level DPO loss on the
success/failure pairs of each group). The estimator only reads r_t: any per-step score in
``process`` works.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.outcome import base_advantage
from stepcredit.estimators.registry import EstimatorError, register
from stepcredit.ops import group_count

__all__ = ["oprl", "oprl_step_advantage"]

OPRL_PAPER = (
    "Online Process Reward Learning for Agentic Reinforcement Learning "
    "(Liu, Wang et al., 2025, arXiv:2509.19199)"
)

Baseline = Literal["group_steps", "first_steps"]


def oprl_step_advantage(ro: Rollouts, r: np.ndarray, baseline: Baseline = "group_steps") -> np.ndarray:
    """[S] the step-level RLOO advantage A^S_t of step rewards r_t within each group.

        A^S_t = K_g/(K_g − 1) · (r_t − b_g),   K_g >= 2;   A^S_t = 0 when K_g = 1,

    with the baseline b_g the mean of r over every step of every episode of the group
    (``"group_steps"``) or over the first step of each of its episodes (``"first_steps"``,
    the official code). r_t − b_g is computed as (r_t − r_ref) − mean_g(r − r_ref), r_ref a
    step of the group, so that rewards with a large common offset keep their differences.

    Args:
        ro: rollouts (groups and episode offsets are read).
        r: [S] step rewards.
        baseline: ``"group_steps"`` or ``"first_steps"``.

    Returns:
        [S] float64.
    """
    codes, G = ro.episode_group, ro.n_groups
    if ro.n_steps == 0:
        return np.zeros(0)
    ep = ro.step_episode
    step_group = codes[ep]
    first = ro.episode_offsets[:-1]
    K = group_count(codes, G)
    # r_ref: the first step of the group's first episode (every group has >= 1 step)
    present, first_ep = np.unique(codes, return_index=True)
    ref = np.zeros(G)
    ref[present] = r[first[first_ep]]
    d = r - ref[step_group]
    if baseline == "group_steps":
        n_steps = np.bincount(step_group, minlength=G)
        mean_d = np.bincount(step_group, weights=d, minlength=G) / np.maximum(n_steps, 1)
    elif baseline == "first_steps":
        mean_d = np.bincount(codes, weights=d[first], minlength=G) / np.maximum(K, 1)
    else:
        raise EstimatorError(f"estimator 'oprl': baseline={baseline!r} must be 'group_steps' or 'first_steps'")
    factor = np.where(K > 1, K / np.maximum(K - 1, 1), 0.0)  # K = 1: no other episode, A^S = 0
    return factor[step_group] * (d - mean_d[step_group])


@register(family="implicit", paper=OPRL_PAPER, requires=("process",))
def oprl(
    ro: Rollouts,
    *,
    w: float = 1.0,
    baseline: Literal["group_steps", "first_steps"] = "group_steps",
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """OPRL advantage: the episode's RLOO advantage plus w times the step's RLOO implicit reward.

    With r_t the step field ``process`` (the implicit step reward r_φ(a_t), see the module
    docstring) and K = K_g the number of episodes of the group:
        A^E_i = K/(K−1) (R_i − mean_g R)                 (RLOO over the group's episodes)
        A^S_t = K/(K−1) (r_t − b_g)                      (K >= 2; 0 for a singleton group)
        A_t   = A^E_i + w · A^S_t
    The step baseline b_g is the mean of r over every step of the group's episodes
    (``baseline="group_steps"``, default: the reading of the official code's docstring,
    "advantage compared to all other steps in the same group"; the paper's own formula was not
    read, so this is UNVERIFIED) or over each episode's first step only (``"first_steps"``:
    what the official code computes, because it keeps one row per trajectory before averaging).
    Neither is a leave-one-out of the step itself: K/(K−1) is the episode-level RLOO factor,
    applied to a step reward as the official code does. A singleton group gets A^S_t = 0 (no other episode to
    compare with) and A^E_i = R_i (``singleton="raw"``, as ``rloo``) or 0 (``"zero"``).

    Args:
        ro: rollouts; needs the step field ``process`` (r_t) besides outcome and group_id.
        w: weight of the step term (the official scripts use 1.0); finite, any sign.
        baseline: ``"group_steps"`` (default) or ``"first_steps"`` (official code).
        singleton: A^E of a one-episode group: R_i ("raw", as ``rloo``) or 0 ("zero").

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A^E_i, step_reward [S] =
        r_t; diagnostics: ``groups``, ``singleton_groups``, ``zero_variance_groups`` (of the
        outcome term), ``mean_abs_process`` (mean |r_t|) and ``mean_abs_step_advantage``
        (mean |A^S_t|).

    Reference: Online Process Reward Learning for Agentic Reinforcement Learning (Liu, Wang
    et al., 2025, arXiv:2509.19199; its code is released as iStar, "Agentic Reinforcement
    Learning with Implicit Step Rewards").
    Differs from official code: Tongyi-ConvAI/Tongyi-Character@e73c0ea4 istar/core_istar.py
    (``compute_istar_rloo_advantage``, ``step_rloo_reward``) builds the step baseline from each
    trajectory's first step (``baseline="first_steps"`` reproduces it; the default averages
    every step of the group) and gives a singleton group's step term the raw r_t (here 0).
    METHODS-NOTES reports that the code divides the implicit rewards by the batch's largest
    |reverse cumulative sum| over a step's tokens (PRIME's ``batch_norm``); that was not
    re-read and is not reproduced (it needs token-level rewards).
    """
    if not np.isfinite(w):
        raise EstimatorError(f"estimator 'oprl': w={w} must be a finite number")
    r = ro.column("process", by="estimator 'oprl'")
    episode_adv, diagnostics = base_advantage(ro, "rloo", singleton=singleton)
    step_term = oprl_step_advantage(ro, r, baseline)
    adv = episode_adv[ro.step_episode] + w * step_term
    S = ro.n_steps
    diagnostics.update(
        mean_abs_process=float(np.abs(r).mean()) if S else 0.0,
        mean_abs_step_advantage=float(np.abs(step_term).mean()) if S else 0.0,
    )
    return Credit(
        step_advantage=adv,
        episode_advantage=episode_adv,
        episode_offsets=ro.episode_offsets,
        step_reward=np.array(r, dtype=np.float64),
        diagnostics=diagnostics,
    )
