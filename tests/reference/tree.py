"""Loop oracle of the ``tree`` estimator (PORTool, arXiv:2510.26020; SLATE, arXiv:2602.23440).

Per group g (dicts keyed by group id, then by node id):
* the parent of step t of an episode is the node of step t − 1, or the group's ROOT for t = 0;
  the node ids form a tree iff every node has one parent wherever it occurs (``is_tree``);
* m(n): the episodes with a step at n; the node score R(n) = V(n) + β u(n), V(n) the mean
  (or max) outcome over m(n), or the mean of the step field ``process``/``reward`` over n's
  steps; u(n) the mean of ``tool_field`` over n's steps;
* the children C(p) of a parent p (ROOT included): the distinct nodes whose parent is p;
  A^fork(n) = (R(n) − mean_{C(p(n))} R) / F, F = unbiased std + ε ("mean_std") or 1
  ("mean"), and 0 for an only child;
* A^traj_i = GRPO of the outcomes over the group (the outcome oracle's ``grpo``, scale
  "group" for "mean_std" and "none" for "mean");
* A_t = w A^fork(n) + (1 − w) A^traj_i.

Node scores, means and variances are exact (Fractions). ``diagnostics["step_tolerance"]`` is
a bound on the rounding of any float implementation (see ``_rounding``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, group_members, step_field
from .outcome import grpo

__all__ = ["ROOT", "is_tree", "tree"]

ROOT = ("root",)  # the parent of a first step (compared within a group only)


def _parents(records: Sequence[Record], members: list[int]) -> dict:
    """node -> set of the parents it follows in the group's episodes (a list of (node, t))."""
    parents: dict = {}
    for i in members:
        seen = set()
        prev = ROOT
        for t, step in enumerate(records[i]["steps"]):
            node = step["node"]
            parents.setdefault(node, set()).add(prev)
            if node in seen:  # twice in one episode: two depths, never a tree
                parents[node].add(("again", i, t))
            seen.add(node)
            prev = node
    return parents


def is_tree(records: Sequence[Record]) -> bool:
    """Whether every node of every group has one parent and occurs once per episode."""
    for members in group_members(records).values():
        if any(len(ps) != 1 for ps in _parents(records, members).values()):
            return False
    return True


def _rounding(values: list[Fraction], n_members: int, scale: float) -> float:
    """How far a float evaluation of a centred node score may be off, divided by the scale F.

    Every node score is a sum of at most ``n_members`` floats of magnitude <= M (the spread
    of the group's outcomes, or the largest field value), each already rounded once, divided
    by a count: its error is below (n + 2) ulp(M); a centred value carries two of them.
    """
    m = max((abs(float(v)) for v in values), default=0.0)
    return 4 * (n_members + 2) * math.ulp(m) / scale


def tree(
    records: Sequence[Record],
    weight: float = 0.5,
    score: str = "mean_outcome",
    norm: str = "mean_std",
    epsilon: float = 1e-6,
    tool_weight: float = 0.0,
    tool_field: str = "grounding",
    singleton: str = "raw",
) -> OracleCredit:
    if not is_tree(records):
        raise ValueError("the node ids do not form a tree")
    traj = grpo(records, scale="group" if norm == "mean_std" else "none", epsilon=epsilon, singleton=singleton)
    episode_adv = traj.episode_advantage
    beta = Fraction(tool_weight)

    node_score: dict[tuple, Fraction] = {}  # (group, node) -> R(n), exact
    node_fork: dict[tuple, float] = {}
    node_tol: dict[tuple, float] = {}
    node_steps: dict[tuple, int] = {}
    siblings: dict[tuple, int] = {}  # (group, node) -> |C(p(n))|
    forks = 0
    for gid, members in group_members(records).items():
        # the episodes and steps at each node
        rows: dict = {}  # node -> list of (episode, step)
        for i in members:
            for t, step in enumerate(records[i]["steps"]):
                rows.setdefault(step["node"], []).append((i, t))
        parent = {node: next(iter(ps)) for node, ps in _parents(records, members).items()}
        magnitude: list[Fraction] = []  # what the rounding bound scales with
        outcomes = [Fraction(records[i]["outcome"]) for i in members]
        lowest = min(outcomes)
        for node, at in rows.items():
            episodes = sorted({i for i, _ in at})
            if score == "mean_outcome":
                v = sum((Fraction(records[i]["outcome"]) for i in episodes), Fraction(0)) / len(episodes)
            elif score == "max_outcome":
                v = max(Fraction(records[i]["outcome"]) for i in episodes)
            else:
                v = sum((Fraction(step_field(records[i]["steps"][t], score, 0.0)) for i, t in at), Fraction(0)) / len(at)
            if score.endswith("outcome"):
                magnitude.append(v - lowest)
            else:
                magnitude.append(v)
            if tool_weight != 0.0:
                u = sum((Fraction(step_field(records[i]["steps"][t], tool_field, 0.0)) for i, t in at), Fraction(0)) / len(at)
                v += beta * u
                magnitude.append(beta * u)
            node_score[(gid, node)] = v
            node_steps[(gid, node)] = len(at)
        if score.endswith("outcome"):
            magnitude += [o - lowest for o in outcomes]
        # siblings: the distinct children of each parent
        children: dict = {}
        for node in rows:
            children.setdefault(parent[node], []).append(node)
        for kids in children.values():
            for k in kids:
                siblings[(gid, k)] = len(kids)
            values = [node_score[(gid, k)] for k in kids]
            if len(kids) == 1:
                node_fork[(gid, kids[0])] = 0.0
                node_tol[(gid, kids[0])] = 0.0
                continue
            forks += 1
            mean = sum(values, Fraction(0)) / len(values)
            var = sum(((v - mean) ** 2 for v in values), Fraction(0)) / (len(values) - 1)
            scale = math.sqrt(float(var)) + epsilon if norm == "mean_std" else 1.0
            for k, v in zip(kids, values):
                node_fork[(gid, k)] = float(v - mean) / scale
                node_tol[(gid, k)] = _rounding(magnitude, len(members), scale)

    step_adv: list[float] = []
    step_reward: list[float] = []
    step_tol: list[float] = []
    n_steps = branching = shared = 0
    for i, rec in enumerate(records):
        for step in rec["steps"]:
            key = (rec["group_id"], step["node"])
            step_adv.append(weight * node_fork[key] + (1.0 - weight) * episode_adv[i])
            step_reward.append(float(node_score[key]))
            step_tol.append(weight * node_tol[key])
            n_steps += 1
            branching += siblings[key] >= 2
            shared += node_steps[key] >= 2
    sizes = [len(m) for m in group_members(records).values()]
    return OracleCredit(
        step_advantage=step_adv,
        episode_advantage=list(episode_adv),
        step_reward=step_reward,
        diagnostics={
            "nodes": len(node_score),
            "forks": forks,
            "branching_step_fraction": branching / n_steps if n_steps else 0.0,
            "shared_step_fraction": shared / n_steps if n_steps else 0.0,
            "singleton_groups": sum(1 for s in sizes if s == 1),
            "step_tolerance": step_tol,
        },
    )
