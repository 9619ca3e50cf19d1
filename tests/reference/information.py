"""Loop oracle of IGPO (METHODS.md section 3; Wang et al. 2025, arXiv:2510.14967; official code
debajoycs98/IGPO and GuoqingWang1/IGPO, read for the normalisation and the advantage).

Per episode (p_t = the step's ``p_answer``, the belief *before* step t):
* r_t = f(p_{t+1}) − f(p_t) for t < T−1, f = identity ("prob") or math.log ("log_prob"); a
  step with p_{t+1} == p_t has a gain of exactly 0; the last step's reward is the outcome.
Per group (dicts keyed by group id), the normalisation sets: every reward ("joint") or the
outcomes and the gains apart ("separate"); with zero_gain="drop" the zero gains are in no set:
* r̃ = (r − μ) / (σ + ε), σ = sqrt(population variance + 1e-8); a set of one reward: r̃ = 0
  ("zero") or r / (1 + ε) ("raw"); a dropped step: r̃ = 0.
Per episode again, backwards over the steps:
* A_t = r̃_t + γ A_{t+1} at a reward step, A_t = A_{t+1} at a dropped step (merged into the
  next reward step); the raw return the same with r in place of r̃.

Means, centred values and variances are exact (Fractions). With gain="log_prob" the logs are
math.log, which may differ from NumPy's by an ulp; the diagnostics carry a bound on what that
rounding can move each advantage (``step_tolerance``, 0 for "prob").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, group_members, step_field

__all__ = ["igpo"]

VARIANCE_FLOOR = 1e-8


def igpo(
    records: Sequence[Record],
    gain: str = "prob",
    norm: str = "joint",
    gamma: float = 1.0,
    epsilon: float = 1e-6,
    zero_gain: str = "keep",
    singleton: str = "zero",
) -> OracleCredit:
    rewards: list[list[float]] = []
    errors: list[list[float]] = []  # bound on the rounding of each reward (log gains only)
    dropped: list[list[bool]] = []
    zero_steps = 0
    for rec in records:
        p = [float(step_field(s, "p_answer")) for s in rec["steps"]]
        T = len(p)
        r, err, drop = [], [], []
        for t in range(T - 1):
            if p[t + 1] == p[t]:
                zero_steps += 1
                r.append(0.0)
                err.append(0.0)
                drop.append(zero_gain == "drop")
            elif gain == "log_prob":
                a, b = math.log(p[t + 1]), math.log(p[t])
                r.append(a - b)
                err.append(4 * (math.ulp(a) + math.ulp(b)) + 2 * math.ulp(a - b))
                drop.append(False)
            else:
                r.append(p[t + 1] - p[t])
                err.append(0.0)
                drop.append(False)
        r.append(float(rec["outcome"]))
        err.append(0.0)
        drop.append(False)
        rewards.append(r)
        errors.append(err)
        dropped.append(drop)

    # normalisation sets per group
    normed = [[0.0] * len(r) for r in rewards]
    tol = [[0.0] * len(r) for r in rewards]
    n_singleton_sets = 0
    for members in group_members(records).values():
        sets: dict[str, list[tuple[int, int]]] = {}
        for i in members:
            T = len(rewards[i])
            for t in range(T):
                if dropped[i][t]:
                    continue
                kind = "all" if norm == "joint" else ("outcome" if t == T - 1 else "gain")
                sets.setdefault(kind, []).append((i, t))
        for cells in sets.values():
            xs = [Fraction(rewards[i][t]) for i, t in cells]
            n = len(xs)
            if n == 1:
                n_singleton_sets += 1
                i, t = cells[0]
                if singleton == "raw":
                    normed[i][t] = rewards[i][t] / (1.0 + epsilon)
                    tol[i][t] = errors[i][t] / (1.0 + epsilon)
                continue
            mu = sum(xs, Fraction(0)) / n
            c = [x - mu for x in xs]
            var = sum((v * v for v in c), Fraction(0)) / n
            sigma = math.sqrt(float(var + Fraction(VARIANCE_FLOOR)))
            big_e = max(errors[i][t] for i, t in cells)
            mean_abs_c = float(sum((abs(v) for v in c), Fraction(0)) / n)
            d_sigma = 4 * big_e * mean_abs_c / (2 * sigma)
            for (i, t), ci in zip(cells, c):
                normed[i][t] = float(ci) / (sigma + epsilon)
                if big_e:
                    bound = 2 * big_e / (sigma + epsilon) + abs(float(ci)) * d_sigma / (sigma + epsilon) ** 2
                    tol[i][t] = 2 * bound

    # discounted sums over each episode's reward steps; a dropped step takes the next one's
    flat_adv: list[float] = []
    flat_ret: list[float] = []
    flat_rew: list[float] = []
    flat_tol: list[float] = []
    episode_adv: list[float] = []
    episode_tol: list[float] = []
    for i, r in enumerate(rewards):
        T = len(r)
        adv, ret, bound = [0.0] * T, [0.0] * T, [0.0] * T
        a_next = g_next = b_next = 0.0
        for t in reversed(range(T)):
            if dropped[i][t]:
                adv[t], ret[t], bound[t] = a_next, g_next, b_next
                continue
            if t == T - 1:
                adv[t], ret[t], bound[t] = normed[i][t], r[t], tol[i][t]
            else:
                adv[t] = normed[i][t] + gamma * a_next
                ret[t] = r[t] + gamma * g_next
                bound[t] = tol[i][t] + b_next
            a_next, g_next, b_next = adv[t], ret[t], bound[t]
        flat_adv.extend(adv)
        flat_ret.extend(ret)
        flat_rew.extend(r)
        flat_tol.extend(bound)
        episode_adv.append(adv[0])
        episode_tol.append(bound[0])
    groups = group_members(records)
    return OracleCredit(
        step_advantage=flat_adv,
        episode_advantage=episode_adv,
        step_return=flat_ret,
        step_reward=flat_rew,
        diagnostics={
            "gain_steps": sum(len(r) - 1 for r in rewards),
            "zero_gain_steps": zero_steps,
            "singleton_sets": n_singleton_sets,
            "singleton_groups": sum(1 for m in groups.values() if len(m) == 1),
            "step_tolerance": flat_tol,
            "episode_tolerance": episode_tol,
        },
    )
