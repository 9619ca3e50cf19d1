"""Tree estimators: step credit from rollouts that share prefixes (PORTool, SLATE).

Notation: the episodes of a group g are sampled as a tree. Every step carries a ``node`` id;
equal ids in one group are one shared step, listed again in every episode that passes through
it (ids of different groups never match). The parent p(n) of node n is the node of the step
before it in an episode, or the group's root for a first step; C(p) is the set of distinct
children of p, and the *siblings* of n are C(p(n)). m(n) is the set of episodes through n (the
episodes with a step at n), R_i an episode's outcome. std is the unbiased (ddof = 1) standard
deviation and ε the stabiliser.

The node ids must form a tree in every group: a node has one parent wherever it occurs (so it
also has one depth, and occurs at most once in an episode). ``tree`` checks this and raises
:class:`stepcredit.data.RolloutsError` naming the first step that breaks it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts, RolloutsError
from stepcredit.estimators.registry import check_positive, check_unit_interval, register
from stepcredit.ops import dense_codes, group_centered, group_count, group_scale

__all__ = ["node_parents", "tree"]

PORTOOL_PAPER = (
    "PORTool: Tool-Use LLM Training with Rewarded Tree (Wu, Zhu, Zhang, Chatterjee, Zhu, Mo, "
    "Luo, Gao, 2025, arXiv:2510.26020); sibling-only mode: Truncated Step-Level Sampling with "
    "Process Rewards for Retrieval-Augmented Reasoning (SLATE; Samarinas, Chang, Zamani, 2026, "
    "arXiv:2602.23440)"
)


def node_parents(ro: Rollouts) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense (group, node) id of every step and the parent of every node, tree checked.

    Args:
        ro: rollouts with the step field ``node``.

    Returns:
        (code [S], node_parent [N], N): ``code[s]`` in 0..N−1 names the node of step s, two
        steps share a code iff they are in the same group and have the same node id (up to the
        64-bit hash, see data.md); ``node_parent[n]`` is the code of n's parent, or N + g for a
        first step of group g (the group's root).

    Raises:
        RolloutsError: (source ``"<rollouts>"``) at the first step whose node has another
            parent elsewhere in its group, or occurs twice in its episode.
    """
    node = ro.column("node", by="estimator 'tree'")
    step_group = ro.episode_group[ro.step_episode]
    code, n = dense_codes(node)
    # node ids are scoped by group: re-encode (group, node) pairs unless no id is in two groups
    owner = np.empty(n, dtype=np.int64)
    owner[code] = step_group  # any one writer per node
    if not np.array_equal(owner[code], step_group):
        code, n = dense_codes(step_group * np.int64(n) + code)
    del owner, step_group
    parent = np.empty(ro.n_steps, dtype=np.int64)
    parent[1:] = code[:-1]
    parent[ro.episode_offsets[:-1]] = n + ro.episode_group  # first steps hang from the root
    node_parent = np.empty(n, dtype=np.int64)
    node_parent[code] = parent  # any one writer per node; every step must agree with it
    if not np.array_equal(node_parent[code], parent):
        raise _not_a_tree(ro, code, parent)
    # One parent per node is enough: the steps before node n in any episode are then the
    # chain p(n), p(p(n)), ... down to the root, fixed by n alone, so n has one depth and
    # cannot occur twice in an episode.
    return code, node_parent, n


def _not_a_tree(ro: Rollouts, code: np.ndarray, parent: np.ndarray) -> RolloutsError:
    """The error for the first step whose parent differs from its node's first occurrence."""
    _, first = np.unique(code, return_index=True)  # codes are dense: first[c] for c = 0..N-1
    f = first[code]
    s = int(np.flatnonzero(parent != parent[f])[0])
    f_s = int(f[s])
    names = ro.key_values["node"]
    e, t = int(ro.step_episode[s]), int(ro.step_index[s])
    e2, t2 = int(ro.step_episode[f_s]), int(ro.step_index[f_s])

    def parent_of(step: int) -> str:
        if ro.step_index[step] == 0:
            return "the start of the episode (the group's root)"
        return f"node {names[step - 1].as_py()!r}"

    name = names[s].as_py()
    if e == e2:
        problem = (
            f"node {name!r} occurs twice in this episode (steps {t2} and {t}); a tree node is "
            "one step, on one path"
        )
    else:
        problem = (
            f"node {name!r} follows {parent_of(s)} here but {parent_of(f_s)} in episode {e2} "
            f"('{ro.episode_id[e2].as_py()}'), step {t2}: a tree node has one parent"
        )
    return RolloutsError(
        source="<rollouts>",
        record=f"episode {e} ('{ro.episode_id[e].as_py()}'), step {t}",
        field="steps[].node",
        problem=problem,
        fix=(
            "give a shared step the same node id in every episode of the group that passes "
            "through it (after the same parent), and new ids once the episodes diverge"
        ),
    )


@register(
    family="tree", paper=PORTOOL_PAPER, requires=("node",),
    reads_reward=lambda p: p["score"] == "reward" or (p["tool_field"] == "reward" and p["tool_weight"] != 0),
)
def tree(
    ro: Rollouts,
    *,
    weight: float = 0.5,
    score: Literal["mean_outcome", "max_outcome", "process", "reward"] = "mean_outcome",
    norm: Literal["mean_std", "mean"] = "mean_std",
    epsilon: float = 1e-6,
    tool_weight: float = 0.0,
    tool_field: Literal["grounding", "process", "reward"] = "grounding",
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """Tree rollouts: fork-relative step advantage among siblings, blended with GRPO.

    Node score (PORTool's step-wise reward; one value per node, shared by every episode
    through it):
        R(n) = V(n) + β · u(n),
    with V(n) from ``score``: ``"mean_outcome"`` mean_{i ∈ m(n)} R_i (the share of correct
    answers below n for 0/1 outcomes), ``"max_outcome"`` max_{i ∈ m(n)} R_i (whether some
    episode below n succeeds), or the mean over n's steps of the step field ``process`` /
    ``reward`` (SLATE's judge reward of the step); u(n) the mean of ``tool_field`` over n's
    steps (tool-call success) and β = ``tool_weight`` (0: off).
    Fork-relative advantage, among the distinct children of n's parent (each child once):
        A^fork(n) = (R(n) − mean_{c ∈ C(p(n))} R(c)) / F,  F = std_{C(p(n))} R + ε
        (``norm="mean_std"``) or 1 (``"mean"``);  A^fork(n) = 0 when n has no sibling.
    Trajectory-relative advantage (GRPO on the outcomes of the group's episodes, F as above):
        A^traj_i = (R_i − mean_g R) / F_g.
    Blend, for step t of episode i at node n:
        A_t = w · A^fork(n) + (1 − w) · A^traj_i.
    w = 0 gives ``grpo`` exactly (``norm="mean"``: ``drgrpo``); w = 1 gives SLATE's
    sibling-only advantage (with ``score="reward"`` or ``"process"`` its judge reward). The
    children of the group's root are the episodes' first steps, so with no shared prefix every
    first step gets A^fork = (R_i − mean_g R)/F, GRPO's advantage (groups of two or more), and
    every later step, an only child, gets A^fork = 0.

    Args:
        ro: rollouts; needs the step field ``node`` (ids forming a tree in each group), plus
            ``process`` for score="process" and ``tool_field`` when tool_weight != 0.
        weight: w in [0, 1], the weight of the fork-relative part (the PORTool paper's value
            is not verified; 0.5 is our choice). 1 is SLATE.
        score: what siblings are compared on: "mean_outcome" (default), "max_outcome",
            "process" or "reward" (a shared node's steps normally hold one value; if they
            differ, their mean is used).
        norm: "mean_std" divides both parts by std + ε (GRPO, SLATE), "mean" by 1.
        epsilon: ε added to the std (SLATE's code and verl: 1e-6); must be > 0.
        tool_weight: β, the weight of the tool-call term u(n) in R(n) (0: not used).
        tool_field: the step field u is read from: "grounding" (1 if the action executed,
            default), "process" or "reward".
        singleton: a one-episode group's trajectory part is R_i / (1 + ε) ("raw", verl's
            GRPO) or 0 ("zero"). Its fork part is 0 (its first step has no sibling).

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A^traj_i (the
        trajectory-relative part: ``grpo``'s, or ``drgrpo``'s with norm="mean"), step_reward
        [S] = R(n) of the step's node, step_return None; diagnostics: ``nodes`` (distinct nodes of all groups),
        ``forks`` (parents, group roots included, with two or more children),
        ``branching_step_fraction`` (share of steps whose node has a sibling, i.e. a non-zero
        fork denominator), ``shared_step_fraction`` (share of steps whose node is on two or
        more episodes), ``singleton_groups``.

    Reference: PORTool: Tool-Use LLM Training with Rewarded Tree (Wu et al., 2025,
    arXiv:2510.26020), abstract: step rewards from the ability to reach a correct answer plus
    tool-call success, one reward per shared step, fork-relative advantages blended with
    trajectory-relative ones (the exact reward, normalisation and blend weight are not
    verified: the method section was not available); SLATE (Samarinas et al., 2026,
    arXiv:2602.23440), Eq. 5: A^(j) = (r^(j) − mean r)/(std r + 1e-6) over the k siblings.
    Differs from official code: PORTool has no official code found. SLATE
    (algoprog/SLATE@09223bce, slate/training/step_level_algos.py, compute_step_level_advantage)
    gives NaN for k = 1 (torch.std of one value); here a node without siblings gets 0.
    """
    check_unit_interval("tree", weight=weight)
    check_positive("tree", epsilon=epsilon)
    code, node_parent, N = node_parents(ro)
    G, codes = ro.n_groups, ro.episode_group
    step_episode = ro.step_episode
    count = np.bincount(code, minlength=N)  # |m(n)|: an episode has at most one step at n

    # node scores, in outcome units shifted by one member of the group (siblings only ever
    # compare differences, and 1e6 + 1e-7 noise keeps its noise this way)
    if score in ("mean_outcome", "max_outcome"):
        ref = np.empty(G, dtype=np.float64)
        ref[codes] = ro.outcome  # any one member of each group
        shift = ref[codes]
        x = (ro.outcome - shift)[step_episode]
        if score == "mean_outcome":
            node_score = np.bincount(code, weights=x, minlength=N) / count
        else:
            node_score = np.full(N, -np.inf)
            np.maximum.at(node_score, code, x)
        del x
    else:
        field = ro.column(score, by=f"estimator 'tree' with score='{score}'")
        node_score = np.bincount(code, weights=field, minlength=N) / count
        shift = None
    if tool_weight != 0.0:
        u = ro.column(tool_field, by=f"estimator 'tree' with tool_weight != 0 and tool_field='{tool_field}'")
        node_score += tool_weight * (np.bincount(code, weights=u, minlength=N) / count)

    # fork-relative part: siblings are the nodes with one parent (group roots N..N+G-1)
    P = N + G
    children = group_count(node_parent, P)
    c = group_centered(node_score, node_parent, P, "zero")  # an only child: 0
    fork = c / group_scale(c, node_parent, P, epsilon)[node_parent] if norm == "mean_std" else c
    del c

    # trajectory-relative part: GRPO over the episodes of each group (as outcome.grpo)
    c_ep = group_centered(ro.outcome, codes, G, singleton)
    traj = c_ep / group_scale(c_ep, codes, G, epsilon)[codes] if norm == "mean_std" else c_ep

    adv = fork[code]
    adv *= weight
    adv += (1.0 - weight) * traj[step_episode]
    step_reward = node_score[code]
    if shift is not None:
        step_reward += shift[step_episode]
    branching = children[node_parent] >= 2  # [N] nodes with a sibling
    S = ro.n_steps
    return Credit(
        step_advantage=adv,
        episode_advantage=traj,
        episode_offsets=ro.episode_offsets,
        step_reward=step_reward,
        diagnostics={
            "nodes": int(N),
            "forks": int(np.count_nonzero(children >= 2)),
            "branching_step_fraction": float(count[branching].sum() / S) if S else 0.0,
            "shared_step_fraction": float(count[count >= 2].sum() / S) if S else 0.0,
            "singleton_groups": int(np.count_nonzero(group_count(codes, G) == 1)),
        },
    )
