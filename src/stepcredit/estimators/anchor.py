"""Anchor-state estimators: step credit from states that recur within a group.

Notation: group g holds episodes i with steps t = 0..T_i−1 in states s_t^i, immediate rewards
r_t^i and outcome R_i (added to the last step's reward). An *anchor state* is a state that
occurs more than once among the steps of a group, in several episodes or revisited in one; its
*step group* holds every step of the group taken in that state.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data import Credit, Rollouts, hash_keys
from stepcredit.estimators.registry import check_positive, check_unit_interval, register
from stepcredit.estimators.value import step_rewards_with_outcome
from stepcredit.ops import (
    dense_codes,
    group_centered,
    group_count,
    group_scale,
    reverse_discounted_cumsum,
)

__all__ = ["gigpo", "step_groups"]

GIGPO_PAPER = (
    "Group-in-Group Policy Optimization for LLM Agent Training "
    "(Feng, Xue, Liu, An, 2025, arXiv:2505.10978)"
)


def step_groups(ro: Rollouts, match: Literal["exact", "normalized"] = "exact") -> tuple[np.ndarray, int]:
    """Dense id of each step's (group, state) pair: the anchor-state step groups.

    Args:
        ro: rollouts with the step field ``state``.
        match: ``"exact"`` compares the state keys as given; ``"normalized"`` first lower-cases
            string states and collapses runs of white space (integer states are exact).

    Returns:
        ([S] step-group id, number of step groups). Two steps share an id iff they are in the
        same group and their states match (up to the 64-bit state hash, see data.md).
    """
    state = ro.column("state", by="anchor-state step groups")
    if match == "normalized":
        raw = ro.key_values["state"]
        if pa.types.is_string(raw.type):
            text = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(raw), r"\s+", " "))
            state = hash_keys(text)
    state_id, n_states = dense_codes(state)
    pair = ro.episode_group[ro.step_episode] * np.int64(n_states) + state_id
    return dense_codes(pair)


@register(family="anchor", paper=GIGPO_PAPER, requires=("state",), reads_reward=True)
def gigpo(
    ro: Rollouts,
    *,
    omega: float = 1.0,
    gamma: float = 0.95,
    norm: Literal["mean_std", "mean"] = "mean_std",
    epsilon: float = 1e-6,
    match: Literal["exact", "normalized"] = "exact",
    episode_stats: Literal["episodes", "steps"] = "episodes",
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """GiGPO: episode-level group advantage plus anchor-state step-level advantage.

    Episode (macro) part, over the episodes of group g, with R_i = R_i^outcome + Σ_t r_t^i the
    episode's total reward:
        A^E_i = (R_i − mean_g R) / F_g,  F = std + ε (``norm="mean_std"``) or 1 (``"mean"``).
    Step (micro) part, over the step group G(s̃) of every anchor state s̃ of the group, with the
    discounted return R_t^i = Σ_{k≥t} γ^{k−t} r_k^i (outcome on the last step):
        A^S_t^i = (R_t^i − mean_{G(s̃)} R_t) / F_{G(s̃)};  a step group of one member gets A^S = 0.
    Combined: A_t^i = A^E_i + ω · A^S_t^i. std is unbiased (ddof = 1). With no repeated state
    in a group every A^S is 0 and A = A^E, which is ``grpo`` (``norm="mean"``: ``drgrpo``) on
    the total reward.

    Args:
        ro: rollouts; needs the step field ``state`` (the environment state without the agent's
            history, or nothing matches and GiGPO degrades to GRPO).
        omega: weight ω of the step part (paper and code: 1.0).
        gamma: discount γ of the step returns (paper's experiments: 0.95).
        norm: ``"mean_std"`` divides by std + ε (the paper's F), ``"mean"`` by 1 (the official
            code's default ``mean_norm``).
        epsilon: ε added to the std (code: 1e-6); must be > 0.
        match: ``"exact"`` state keys, or ``"normalized"`` (lower-case, white space collapsed).
            The code's optional difflib similarity clustering (order-dependent) is not offered.
        episode_stats: ``"episodes"`` (the paper: each episode counts once in mean_g and
            std_g) or ``"steps"`` (the official code's default ``compute_mean_std_cross_steps``:
            statistics over step rows, so longer episodes weigh more).
        singleton: a one-member group's episode part is R_i / (1 + ε) ("raw", the code: mean
            0, std 1) or 0 ("zero"). With ``episode_stats="steps"`` a member is a step row, so
            a group of one multi-step episode is all-equal and gets 0.

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A^E, step_return [S] =
        R_t and step_reward [S]; diagnostics: ``anchor_groups`` (step groups with >= 2 steps),
        ``anchored_step_fraction`` (share of steps in one), ``singleton_groups``.

    Reference: Group-in-Group Policy Optimization for LLM Agent Training (Feng et al., 2025,
    arXiv:2505.10978), Eqs. 3-8.
    Differs from official code: langfengQ/verl-agent gigpo/core_gigpo.py defaults to
    mode="mean_norm" (here ``norm="mean"``) and to episode statistics over step rows (here
    ``episode_stats="steps"``); its invalid-action penalty is a reward transform, not part of
    the estimator; its similarity mode is not implemented.
    """
    check_positive("gigpo", epsilon=epsilon)
    check_unit_interval("gigpo", gamma=gamma)
    codes, G = ro.episode_group, ro.n_groups
    r = step_rewards_with_outcome(ro)
    total = np.add.reduceat(r, ro.episode_offsets[:-1])
    count = group_count(codes, G)

    # episode part: statistics over episodes (paper) or over step rows (official code)
    if episode_stats == "episodes":
        values, stat_codes, first_row = total, codes, slice(None)
    else:
        values, stat_codes, first_row = total[ro.step_episode], codes[ro.step_episode], ro.episode_offsets[:-1]
    c = group_centered(values, stat_codes, G, singleton)
    f_ep = group_scale(c, stat_codes, G, epsilon) if norm == "mean_std" else np.ones(G)
    episode_adv = c[first_row] / f_ep[codes]  # all rows of an episode share its centred value

    # step part
    ret = reverse_discounted_cumsum(r, ro.episode_offsets, gamma)
    sg, n_sg = step_groups(ro, match)
    sg_count = group_count(sg, n_sg)
    c_step = group_centered(ret, sg, n_sg, "zero")  # a one-step group: A^S = 0
    step_adv = c_step / group_scale(c_step, sg, n_sg, epsilon)[sg] if norm == "mean_std" else c_step
    anchored = sg_count[sg] > 1
    adv = episode_adv[ro.step_episode] + omega * step_adv
    return Credit(
        step_advantage=adv,
        episode_advantage=episode_adv,
        episode_offsets=ro.episode_offsets,
        step_return=ret,
        step_reward=r,
        diagnostics={
            "anchor_groups": int(np.sum(sg_count > 1)),
            "anchored_step_fraction": float(anchored.mean()) if anchored.size else 0.0,
            "singleton_groups": int(np.sum(count == 1)),
        },
    )
