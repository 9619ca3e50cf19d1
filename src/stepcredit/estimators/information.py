"""Information-gain estimators: step rewards from the policy's belief in the gold answer.

Notation: episode i of group g has steps t = 0..T−1 and outcome R_i. p_t (the step field
``p_answer``) is the policy's probability of the ground-truth answer given the context *before*
step t (p_0: the prompt alone), so a step t < T−1 moves the belief from p_t to p_{t+1}; the
belief after the last step is not observed, and the last step is rewarded with the outcome.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.registry import EstimatorError, check_unit_interval, register
from stepcredit.ops import group_centered, group_count, reverse_discounted_cumsum

__all__ = ["igpo"]

IGPO_PAPER = (
    "Information Gain-based Policy Optimization: A Simple and Effective Approach for Multi-Turn "
    "LLM Agents (Wang, Dai, Ye, Gan, Yao, Deng, Wu, Ying, 2025, arXiv:2510.14967)"
)

VARIANCE_FLOOR = 1e-8  # added to the population variance inside the square root (official code)


def _check_log_domain(ro: Rollouts, p: np.ndarray, used: np.ndarray) -> None:
    """Raise EstimatorError naming the first episode/step whose p_answer enters a log and is <= 0."""
    bad = used & ~(p > 0)
    if bad.any():
        s = int(np.flatnonzero(bad)[0])
        e = int(ro.step_episode[s])
        raise EstimatorError(
            f"estimator 'igpo' with gain='log_prob' needs the step field 'p_answer' > 0 (it takes "
            f"log p); episode {ro.episode_id[e].as_py()!r} step {int(ro.step_index[s])} has "
            f"p_answer={float(p[s])!r}. Use gain='prob', or floor the probabilities"
        )


@register(family="progress", paper=IGPO_PAPER, requires=("p_answer",))
def igpo(
    ro: Rollouts,
    *,
    gain: Literal["prob", "log_prob"] = "prob",
    norm: Literal["joint", "separate"] = "joint",
    gamma: float = 1.0,
    epsilon: float = 1e-6,
    zero_gain: Literal["keep", "drop"] = "keep",
    singleton: Literal["zero", "raw"] = "zero",
) -> Credit:
    """IGPO: information-gain turn rewards, normalised over the group, summed over later turns.

    Turn rewards of episode i (p_t from ``p_answer``, f = identity or log):
        r_t = f(p_{t+1}) − f(p_t)   for t < T−1   (the information gain of step t),
        r_{T−1} = R_i               (the outcome; an episode of one step has only this).
    Normalisation over a set 𝒮 of rewards of the group: all of them (``norm="joint"``), or the
    outcomes and the gains each on their own (``"separate"``):
        r̃ = (r − μ_𝒮) / (σ_𝒮 + ε),   μ = mean, σ = sqrt(Var_pop + 1e-8);
    a set of one reward has σ := 1 and μ := that reward, so r̃ = 0 (``singleton="zero"``, the
    code), or μ := 0 and r̃ = r/(1 + ε) (``"raw"``). Turn advantage, a discounted sum over the
    episode's later turns:
        A_t = r̃_t + γ A_{t+1},   A_T = 0;   with γ = 1, A_t = Σ_{k≥t} r̃_k.
    Example (γ = 1, joint, a group of one two-step episode [p = 0.2, 0.6], R = 1 and one
    one-step episode, R = 0): rewards {0.4, 1, 0}, μ = 7/15, σ ≈ 0.411 → A = [r̃_0 + r̃_1, r̃_1]
    and [r̃ of 0]. A gain of exactly 0 (p_{t+1} = p_t) is a reward of 0 (``zero_gain="keep"``),
    or no reward at all (``"drop"``): left out of the statistics, r̃ = 0, and the step is merged
    into the next one (A_t = A_{t+1}, no discount between them).

    Args:
        ro: rollouts; needs the step field ``p_answer`` (P(gold answer | context before the
            step)). The step field ``reward`` is not used.
        gain: ``"prob"`` p_{t+1} − p_t (the paper; code ``info_gain_type=prob_diff``) or
            ``"log_prob"`` log p_{t+1} − log p_t (``log_prob_diff``, the run script's choice);
            the log needs p > 0 at every step of an episode with two or more steps.
        norm: ``"joint"`` (code default) or ``"separate"`` (the run script's choice).
        gamma: discount γ in [0, 1] between turns (paper and code: 1.0).
        epsilon: ε >= 0 added to σ (code: 1e-6; σ >= 1e-4 already, so 0 is allowed).
        zero_gain: ``"keep"`` (a zero gain is a reward of 0: the current code, which writes
            1e-10 so it is not lost) or ``"drop"`` (earlier code, whose reward positions are the
            non-zero entries).
        singleton: a normalisation set of one reward gives r̃ = 0 (``"zero"``, code) or
            r/(1 + ε) (``"raw"``).

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A_0 (the first step's
        advantage; with γ = 1 the sum of the episode's normalised rewards), step_reward [S] =
        r_t (raw, before normalisation) and step_return [S] = the same discounted sum of the raw
        rewards (with γ = 1: f(p_{T−1}) − f(p_t) + R). Diagnostics: ``gain_steps`` (steps with
        an information gain, i.e. not last), ``zero_gain_steps`` (of those, p_{t+1} = p_t),
        ``singleton_sets`` (normalisation sets of one reward), ``singleton_groups``.

    Reference: Information Gain-based Policy Optimization (Wang et al., 2025, arXiv:2510.14967);
    the turn reward as the paper states it (read in a summary: r_t = π(a | q, o_≤t) −
    π(a | q, o_≤t−1), outcome F1 on the last turn); the normalisation and the advantage as the
    official code computes them (the paper's method section was not available to read).
    Differs from official code: debajoycs98/IGPO@11b5a8e8:verl/trainer/ppo/core_algos.py
    (compute_grpo_outcome_advantage) sums per token, so with γ < 1 it discounts per token and
    restarts at masked observation tokens; here the discount is per turn, as in the paper and in
    GuoqingWang1/IGPO@49a8c4ec (_compute_turn_level_advantage). Its curriculum weights on the F1
    and gain rewards (off by default) and the −2 format penalty of the F1 score are left to the
    caller (scale or set the rewards and outcomes before calling).
    """
    if not epsilon >= 0:
        raise EstimatorError(f"estimator 'igpo': epsilon={epsilon} must be >= 0")
    check_unit_interval("igpo", gamma=gamma)
    p = ro.column("p_answer", by="estimator 'igpo'")
    S, G = ro.n_steps, ro.n_groups
    off = ro.episode_offsets
    last = off[1:] - 1
    is_last = np.zeros(S, dtype=bool)
    is_last[last] = True
    gain_step = ~is_last  # steps t < T−1 of their episode: rewarded by p_{t+1} − p_t

    # raw rewards: the gain of each non-last step, the outcome on the last
    r = np.empty(S)
    if gain == "log_prob":
        used = gain_step.copy()
        used[1:] |= gain_step[:-1]  # p_{t+1} of a gain step too
        if not np.all(p > 0):
            _check_log_domain(ro, p, used)
        with np.errstate(divide="ignore", invalid="ignore"):  # p <= 0 only where unused
            f = np.log(p)
            np.subtract(f[1:], f[:-1], out=r[:-1])
        del f
    else:
        np.subtract(p[1:], p[:-1], out=r[:-1])
    zero = np.zeros(S, dtype=bool)
    np.equal(p[1:], p[:-1], out=zero[:-1])
    zero &= gain_step
    r[zero] = 0.0  # p_{t+1} = p_t: exactly no gain, whatever the log's rounding
    r[last] = ro.outcome

    # normalisation sets: the group, or (group, outcome-or-gain)
    codes = ro.episode_group[ro.step_episode]
    n_sets = G
    if norm == "separate":
        codes = 2 * codes + is_last
        n_sets = 2 * G
    member = ~zero if zero_gain == "drop" else slice(None)
    x, c_member = r[member], codes[member]
    count = group_count(c_member, n_sets)
    c = group_centered(x, c_member, n_sets, "raw" if singleton == "raw" else "zero")
    var = np.bincount(c_member, weights=c * c, minlength=n_sets) / np.maximum(count, 1)
    sigma = np.where(count <= 1, 1.0, np.sqrt(var + VARIANCE_FLOOR))
    c /= (sigma + epsilon)[c_member]
    del x, var
    if zero_gain == "drop":
        norm_r = np.zeros(S)
        norm_r[member] = c
    else:
        norm_r = c
    del c, c_member

    if zero_gain == "drop" and zero.any():
        # a dropped step is merged into the next reward step: sum over the reward steps only,
        # then each dropped step takes the value of the next reward step of its episode
        keep = ~zero
        kept_per_episode = np.add.reduceat(keep.astype(np.int64), off[:-1])
        off_k = np.zeros_like(off)
        np.cumsum(kept_per_episode, out=off_k[1:])
        nxt = np.cumsum(keep) - keep  # reward steps before s = index of the next one at or after s
        adv = reverse_discounted_cumsum(norm_r[keep], off_k, gamma)[nxt]
        ret = reverse_discounted_cumsum(r[keep], off_k, gamma)[nxt]
    else:
        adv = reverse_discounted_cumsum(norm_r, off, gamma)
        ret = reverse_discounted_cumsum(r, off, gamma)
    episode_count = group_count(ro.episode_group, G)
    return Credit(
        step_advantage=adv,
        episode_advantage=adv[off[:-1]],
        episode_offsets=off,
        step_return=ret,
        step_reward=r,
        diagnostics={
            "gain_steps": int(S - ro.n_episodes),
            "zero_gain_steps": int(np.count_nonzero(zero)),
            "singleton_sets": int(np.count_nonzero(count == 1)),
            "singleton_groups": int(np.count_nonzero(episode_count == 1)),
        },
    )
