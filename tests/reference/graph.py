"""Loop oracle of SALT (METHODS.md section 2; Li et al. 2025, arXiv:2510.20022).

Per group (dicts keyed by group id, then by node key):
* the base outcome advantage A_i of every episode (the outcome oracles: grpo, drgrpo, rloo);
* the node key of every step: (s_t, a_t, s_{t+1} or "end") for merge="transition",
  (s_t, a_t), s_t, or the whole prefix ((s_0, a_0), ..., (s_t, a_t)) for "history";
* a node's value: the exact mean of A_j over the distinct episodes j with a step in it
  (count="trajectory") or over its steps (count="step"); a node of one episode: A_i itself.

Keys carry their Python type, so the integer 5 and the string "5" are different states, as
in ``stepcredit.data.hashing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record
from . import outcome as ref_outcome

__all__ = ["base_advantage", "node_key", "salt"]

_END = ("<the episode ended>",)  # a next state no real key (a (type, value) pair) can equal


def base_advantage(records: Sequence[Record], base: str, epsilon: float, singleton: str) -> list[float]:
    """A_i of the base outcome estimator (group scale for grpo)."""
    if base == "grpo":
        return ref_outcome.grpo(records, scale="group", epsilon=epsilon, singleton=singleton).episode_advantage
    if base == "drgrpo":
        return ref_outcome.drgrpo(records, singleton=singleton).episode_advantage
    if base == "rloo":
        return ref_outcome.rloo(records, singleton=singleton).episode_advantage
    raise ValueError(base)


def _key(value) -> tuple:
    return (type(value).__name__, value)


def node_key(steps: Sequence[dict], t: int, merge: str) -> tuple:
    """The key two steps of a group must share to be one node of the trajectory graph."""
    s = _key(steps[t]["state"])
    if merge == "state":
        return (s,)
    a = _key(steps[t]["action"])
    if merge == "state_action":
        return (s, a)
    if merge == "transition":
        nxt = _key(steps[t + 1]["state"]) if t + 1 < len(steps) else _END
        return (s, a, nxt)
    if merge == "history":
        return tuple((_key(step["state"]), _key(step["action"])) for step in steps[: t + 1])
    raise ValueError(merge)


def salt(
    records: Sequence[Record],
    base: str = "grpo",
    merge: str = "transition",
    count: str = "trajectory",
    epsilon: float = 1e-6,
    singleton: str = "raw",
) -> OracleCredit:
    adv = base_advantage(records, base, epsilon, singleton)

    # the nodes of every group's graph: (group, key) -> the (episode, step) pairs in it
    nodes: dict[tuple, list[tuple[int, int]]] = {}
    for i, rec in enumerate(records):
        for t in range(len(rec["steps"])):
            nodes.setdefault((rec["group_id"], node_key(rec["steps"], t, merge)), []).append((i, t))

    step_adv = [[0.0] * len(rec["steps"]) for rec in records]
    merged_nodes = 0
    merged_steps = 0
    for members in nodes.values():
        episodes: list[int] = []
        for i, _ in members:
            if i not in episodes:
                episodes.append(i)
        if len(episodes) == 1:
            for i, t in members:
                step_adv[i][t] = adv[i]  # a unique step keeps its episode's advantage
            continue
        merged_nodes += 1
        merged_steps += len(members)
        counted = episodes if count == "trajectory" else [i for i, _ in members]
        total = Fraction(0)
        for i in counted:
            total += Fraction(adv[i])
        value = float(total / len(counted))
        for i, t in members:
            step_adv[i][t] = value

    flat = [a for row in step_adv for a in row]
    return OracleCredit(
        step_advantage=flat,
        episode_advantage=list(adv),
        diagnostics={
            "nodes": len(nodes),
            "merged_nodes": merged_nodes,
            "merged_step_fraction": merged_steps / len(flat) if flat else 0.0,
        },
    )
