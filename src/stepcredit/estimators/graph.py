"""Trajectory-graph estimators: step credit from the steps that episodes of a group share.

Notation: group g holds episodes i with steps t = 0..T_i−1 in states s_t^i with actions a_t^i,
and a base outcome advantage A_i (``grpo``, ``drgrpo`` or ``rloo``). The *trajectory graph* of
a group merges identical steps of its episodes into one node n (what "identical" means is the
``merge`` rule); 𝒯(n) is the set of distinct episodes with at least one step in n. A node with
|𝒯(n)| >= 2 is a *merged* node; a node of one episode is *unique*.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.outcome import Base, base_advantage
from stepcredit.estimators.registry import check_positive, register
from stepcredit.ops import dense_codes, first_occurrence

__all__ = ["graph_nodes", "salt"]

SALT_PAPER = (
    "SALT: Step-level Advantage Assignment for Long-horizon Agents via Trajectory Graph "
    "(Li, Wang, Yan, Tian, Xu, Song, Xu, Cheong, 2025, arXiv:2510.20022)"
)

Merge = Literal["transition", "state_action", "state", "history"]


def graph_nodes(ro: Rollouts, merge: Merge = "transition") -> tuple[np.ndarray, int]:
    """Dense node id of every step in its group's trajectory graph.

    Args:
        ro: rollouts with the step field ``state`` (and ``action`` unless ``merge="state"``).
        merge: what makes two steps of a group one node: ``"transition"`` the same
            (s_t, a_t, s_{t+1}), where the end of the episode counts as a next state of its own;
            ``"state_action"`` the same (s_t, a_t); ``"state"`` the same s_t; ``"history"`` the
            same whole prefix (s_0, a_0, ..., s_t, a_t), so the graph is a prefix tree.

    Returns:
        ([S] node id, number of nodes). Steps of different groups never share a node. Equality
        is up to the 64-bit key hash (see ``stepcredit.data.hashing``).
    """
    by = f"estimator 'salt' with merge='{merge}'"
    state, n_state = dense_codes(ro.column("state", by=by))
    key, n_key = dense_codes(ro.episode_group[ro.step_episode] * np.int64(n_state) + state)
    if merge == "state":
        return key, n_key
    action, n_action = dense_codes(ro.column("action", by=by))
    key, n_key = dense_codes(key * np.int64(n_action) + action)
    del action
    if merge == "state_action":
        return key, n_key
    if merge == "transition":
        nxt = np.full(ro.n_steps, n_state, dtype=np.int64)  # n_state: "the episode ended"
        nxt[:-1] = state[1:]
        nxt[ro.episode_offsets[1:] - 1] = n_state
        return dense_codes(key * np.int64(n_state + 1) + nxt)
    return _prefix_nodes(ro, key, n_key)


def _prefix_nodes(ro: Rollouts, pair: np.ndarray, n_pair: int) -> tuple[np.ndarray, int]:
    """Node ids of whole prefixes: step t's id encodes (id of step t−1, pair code of step t).

    The loop runs over the time axis (at most the longest episode), vectorised across the
    episodes at least that long, like ``ops.reverse_discounted_cumsum``."""
    node = np.empty(ro.n_steps, dtype=np.int64)
    lengths = ro.step_counts
    if lengths.size == 0:
        return node, 0
    order = np.argsort(-lengths, kind="stable")
    starts = ro.episode_offsets[:-1][order]
    sorted_len = lengths[order]
    active = np.searchsorted(-sorted_len, -np.arange(int(sorted_len[0])), side="left")
    n_nodes = 0
    for k in range(int(sorted_len[0])):
        idx = starts[: active[k]] + k
        key = pair[idx] if k == 0 else node[idx - 1] * np.int64(n_pair) + pair[idx]
        codes, n = dense_codes(key)
        node[idx] = codes + n_nodes  # ids of different depths never collide
        n_nodes += n
    return node, n_nodes


@register(family="anchor", paper=SALT_PAPER, requires=("state",))
def salt(
    ro: Rollouts,
    *,
    base: Base = "grpo",
    merge: Merge = "transition",
    count: Literal["trajectory", "step"] = "trajectory",
    epsilon: float = 1e-6,
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """SALT: a step shared by several trajectories of a group gets the mean of their advantages.

    Identical steps of the episodes of a group are merged into the nodes of a trajectory graph
    (rule: ``merge``). With A_i the base outcome advantage of episode i and 𝒯(n) the distinct
    episodes through node n, every step t of episode i in node n gets
        A_t^i = (1/|𝒯(n)|) Σ_{j∈𝒯(n)} A_j          (``count="trajectory"``)
        A_t^i = (1/N(n)) Σ_{steps (j,u) in n} A_j   (``count="step"``, N(n) = steps in n),
    and a unique step (|𝒯(n)| = 1) keeps A_t^i = A_i exactly. No re-normalisation follows.
    A step shared by every episode of a group gets the group mean of A: 0 for ``grpo`` and
    ``drgrpo`` (and ``rloo``), whose advantages sum to 0 over a group of two or more. With no
    shared step the result is the base estimator, bit for bit. A one-episode group has only
    unique steps: the base's singleton convention applies (``singleton``).

    Args:
        ro: rollouts; needs the step field ``state`` (the observation without the agent's
            history, or nothing matches and SALT is its base) and ``action`` unless
            ``merge="state"``.
        base: the outcome advantage A_i averaged over the graph: ``"grpo"`` (group std scale),
            ``"drgrpo"`` or ``"rloo"`` (the paper plugs SALT into GRPO and RLOO).
        merge: which steps are one node: ``"transition"`` (default) the same (s_t, a_t, s_{t+1})
            with the episode's end as a next state of its own; ``"state_action"`` the same
            (s_t, a_t); ``"state"`` the same s_t (every action taken in a state shares one
            value); ``"history"`` the same prefix (s_0, a_0, ..., s_t, a_t) (a prefix tree).
        count: an episode that passes through a node several times counts once
            (``"trajectory"``, default: a node's value is a mean over trajectories) or once
            per step (``"step"``).
        epsilon: ε added to the group std by the ``grpo`` base (1e-6); must be > 0.
        singleton: one-episode groups in the base: ``"raw"`` (mean 0, std 1) or ``"zero"``.

    Returns:
        Credit with step_advantage [S] = A_t^i, episode_advantage [E] = the base advantage A_i,
        no step_return or step_reward; diagnostics: the base's (``groups``,
        ``singleton_groups``, ``zero_variance_groups``) plus ``nodes`` (graph nodes of all
        groups), ``merged_nodes`` (nodes of two or more episodes) and ``merged_step_fraction``
        (share of the steps that are in a merged node).

    Reference: SALT: Step-level Advantage Assignment for Long-horizon Agents via Trajectory
    Graph (Li et al., 2025, arXiv:2510.20022; EACL Findings 2026). Only the abstract was read;
    the merge rule (identical (s, a, s') transitions, averaged GRPO advantages) follows the
    description of SALT in GRAFT (Yao et al., 2026, Appendix A.3), a secondary source. The
    once-per-trajectory count, the end-of-episode next state and the variants are our choices.
    Differs from official code: no official code was found.
    """
    check_positive("salt", epsilon=epsilon)
    adv, diagnostics = base_advantage(ro, base, epsilon=epsilon, singleton=singleton)
    node, n_nodes = graph_nodes(ro, merge)
    ep = ro.step_episode
    # one (node, episode) pair per trajectory through the node: node < S and ep < E
    first = first_occurrence(dense_codes(node * np.int64(max(ro.n_episodes, 1)) + ep)[0])
    node_first = node[first]
    members = np.bincount(node_first, minlength=n_nodes)  # |𝒯(n)|
    if count == "trajectory":
        total = np.bincount(node_first, weights=adv[ep[first]], minlength=n_nodes)
        size = members
    else:
        total = np.bincount(node, weights=adv[ep], minlength=n_nodes)
        size = np.bincount(node, minlength=n_nodes)
    del node_first, first
    mean = total / np.maximum(size, 1)
    merged = members[node] >= 2
    # a unique node keeps A_i exactly (a float mean of k copies of A_i may be off by an ulp)
    step_adv = np.where(merged, mean[node], adv[ep])
    diagnostics.update(
        nodes=int(n_nodes),
        merged_nodes=int(np.count_nonzero(members >= 2)),
        merged_step_fraction=float(merged.mean()) if merged.size else 0.0,
    )
    return Credit(
        step_advantage=step_adv,
        episode_advantage=adv,
        episode_offsets=ro.episode_offsets,
        diagnostics=diagnostics,
    )
