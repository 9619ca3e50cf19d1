"""Contrast pairs for PRM consistency on ``arith_chain``: two near-identical tasks, different answers.

A contrast pair is task a (a seeded ``arith_chain`` task) and task b, the same task with the
operand of its **last** operation changed so that the correct final answer changes (A ≠ B); the
question texts differ in one number. Each task is played on its correct path to the last step;
the four single-step episodes scored are the last step of a answered A and B, and of b answered
B and A (``state`` = the environment's observation before the last step, which includes the
question; ``action`` = the stated number). A PRM consistent with the task scores
s(a, A) > s(a, B) and s(b, B) > s(b, A); one that reads only the answer cannot win both
(:func:`stepcredit.prm.evaluation.contrast_consistency`).

Reference: contrast sets after Evaluating Models' Local Decision Boundaries via Contrast Sets
(Gardner, Artzi et al., 2020, arXiv:2004.02709); the construction for arith_chain is ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.prm.feature_model import PRMError

__all__ = ["ContrastSet", "arith_contrast_set", "contrast_scores"]


@dataclass(frozen=True)
class ContrastSet:
    """P contrast pairs as 4P single-step episodes, in the order (a, A), (a, B), (b, B), (b, A) per pair.

    Attributes:
        rollouts: the 4P episodes (group ``pair{p}``; outcome 1 where the answer is the task's own).
        answers: [P, 2] int64 (A, B).
    """

    rollouts: Rollouts
    answers: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.answers.shape[0])


def _last_state(env: Any, start: int, ops: list[tuple[str, int]], true: list[int]) -> str:
    """The observation before the last step, on the correct path of the task (start, ops)."""
    _, info = env.reset(seed=0, options={"start": start, "ops": ops})
    for v in true[1:-1]:
        _, _, _, _, info = env.step(str(v))
    return str(info["state"])


def arith_contrast_set(n_pairs: int, *, env_kwargs: Mapping[str, Any] | None = None, first_task: int = 0) -> ContrastSet:
    """Build ``n_pairs`` contrast pairs from the arith_chain tasks ``first_task``, ``first_task + 1``, ...

    Task b changes the last operand n to the nearest other admissible operand (n + 1, else n − 1,
    within the environment's range) that changes the final answer; a task where none does is
    skipped (the next seed is used).

    Args:
        n_pairs: P >= 1.
        env_kwargs: arith_chain's parameters (``length``, ``max_number``, ...).
        first_task: the first task seed.
    """
    from stepcredit.envs import make_env
    from stepcredit.envs.arith_chain import _apply

    if n_pairs < 1:
        raise PRMError(f"arith_contrast_set: n_pairs={n_pairs} must be >= 1")
    kw = dict(env_kwargs or {})
    env = make_env("arith_chain", **kw)
    max_number = int(getattr(env, "max_number"))
    records: list[dict[str, Any]] = []
    answers: list[tuple[int, int]] = []
    seed = first_task
    while len(answers) < n_pairs:
        env.reset(seed=seed)
        start, ops_t = env.task
        ops = [tuple(o) for o in ops_t]
        op, n = ops[-1]
        low = 2 if op == "multiply" else 1
        true_a = [start]
        for o, k in ops:
            true_a.append(_apply(o, k, true_a[-1]))
        twin = None
        for m in (n + 1, n - 1, n + 2, n - 2):
            if low <= m <= max(low, max_number) and _apply(op, m, true_a[-2]) != true_a[-1]:
                twin = m
                break
        seed += 1
        if twin is None:
            continue
        ops_b = ops[:-1] + [(op, twin)]
        true_b = true_a[:-1] + [_apply(op, twin, true_a[-2])]
        sa = _last_state(env, start, ops, true_a)
        sb = _last_state(env, start, ops_b, true_b)
        A, B = true_a[-1], true_b[-1]
        p = len(answers)
        for tag, state, ans, own in (("aA", sa, A, 1.0), ("aB", sa, B, 0.0), ("bB", sb, B, 1.0), ("bA", sb, A, 0.0)):
            records.append({"episode_id": f"pair{p}/{tag}", "group_id": f"pair{p}", "outcome": own,
                            "steps": [{"state": state, "action": str(ans)}], "meta": {"task_seed": seed - 1}})
        answers.append((A, B))
    return ContrastSet(Rollouts.from_records(records), np.asarray(answers, dtype=np.int64))


def contrast_scores(model: Any, cs: ContrastSet) -> dict[str, float]:
    """Score a contrast set with a PRM and return :func:`~stepcredit.prm.evaluation.contrast_consistency`."""
    from stepcredit.prm.evaluation import contrast_consistency

    s = np.asarray(model.score_steps(cs.rollouts), dtype=np.float64).reshape(cs.n_pairs, 4)
    return contrast_consistency(s[:, 0], s[:, 1], s[:, 2], s[:, 3])
