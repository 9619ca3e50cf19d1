"""Loop oracle of TP-GRPO (METHODS.md section 3; Tong et al. 2026, arXiv:2602.06422; official code
YunzeTong/TurningPoint-GRPO scripts/my_train_sd3_fast_with_op3.py, read for every formula).

Per episode, with values v_0..v_{T−1} (the step's ``value``) and v_T = R (the outcome):
* d_t = v_{t+1} − v_t, Δ = R − v_0, s_t = sign(d_t)·sign(Δ), B_t = R − v_t;
* turning point: step 0 if sign(d_0)·sign(R − v_1) > 0; step t >= 1 if s_{t−1} < 0 < s_t
  ("consistent") or sign(d_{t−1})·sign(d_t) < 0 ("sign_flip"), and sign(d_t)·sign(R − v_{t+1}) > 0.
Per group (dicts keyed by group id):
* balanced: if the group's turning points have B > 0 and B < 0, each sign keeps the
  k = min(#pos, #neg) with the largest |B|, and every one tied with the k-th; a turning point
  with B = 0 is never rewarded (its bonus would be 0);
* r_t = η B_t at a kept turning point where η B_t != 0, else d_t;
* per step index t, over the group's episodes with a step t: A = (r − mean) / (std_pop + ε);
  one episode: 0 ("zero") or r / (1 + ε) ("raw").

Means, centred values and variances are exact (Fractions); the std is sqrt of the exact
variance rounded to float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, group_members, step_field

__all__ = ["turning_point"]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def turning_point(
    records: Sequence[Record],
    eta: float = 1.0,
    indicator: str = "consistent",
    balanced: bool = True,
    epsilon: float = 1e-4,
    singleton: str = "zero",
) -> OracleCredit:
    incr: list[list[float]] = []
    long_term: list[list[float]] = []
    is_tp: list[list[bool]] = []
    for rec in records:
        R = float(rec["outcome"])
        v = [float(step_field(s, "value")) for s in rec["steps"]] + [R]
        T = len(v) - 1
        d = [v[t + 1] - v[t] for t in range(T)]
        s = [_sign(d[t]) * _sign(R - v[0]) for t in range(T)]
        tp = []
        for t in range(T):
            follows = _sign(d[t]) * _sign(R - v[t + 1]) > 0
            if t == 0:
                flips = True
            elif indicator == "consistent":
                flips = s[t - 1] < 0 and s[t] > 0
            else:
                flips = _sign(d[t - 1]) * _sign(d[t]) < 0
            tp.append(follows and flips)
        incr.append(d)
        long_term.append([R - v[t] for t in range(T)])
        is_tp.append(tp)

    kept = [[False] * len(d) for d in incr]
    for members in group_members(records).values():
        pos = [(i, t) for i in members for t in range(len(incr[i])) if is_tp[i][t] and long_term[i][t] > 0]
        neg = [(i, t) for i in members for t in range(len(incr[i])) if is_tp[i][t] and long_term[i][t] < 0]
        if balanced and pos and neg:
            k = min(len(pos), len(neg))
            chosen = []
            for side in (pos, neg):
                mags = sorted((abs(long_term[i][t]) for i, t in side), reverse=True)
                cut = mags[k - 1]
                chosen += [(i, t) for i, t in side if abs(long_term[i][t]) >= cut]
        else:
            chosen = pos + neg
        for i, t in chosen:
            kept[i][t] = True

    rewards: list[list[float]] = []
    n_kept = 0
    for i, d in enumerate(incr):
        r = []
        for t in range(len(d)):
            bonus = eta * long_term[i][t]
            if kept[i][t] and bonus != 0:
                r.append(bonus)
                n_kept += 1
            else:
                r.append(d[t])
        rewards.append(r)

    adv = [[0.0] * len(r) for r in rewards]
    n_singleton = 0
    for members in group_members(records).values():
        cells: dict[int, list[int]] = {}
        for i in members:
            for t in range(len(rewards[i])):
                cells.setdefault(t, []).append(i)
        for t, episodes in cells.items():
            if len(episodes) == 1:
                n_singleton += 1
                i = episodes[0]
                adv[i][t] = rewards[i][t] / (1.0 + epsilon) if singleton == "raw" else 0.0
                continue
            xs = [Fraction(rewards[i][t]) for i in episodes]
            mu = sum(xs, Fraction(0)) / len(xs)
            c = [x - mu for x in xs]
            std = math.sqrt(float(sum((v * v for v in c), Fraction(0)) / len(xs)))
            for i, ci in zip(episodes, c):
                adv[i][t] = float(ci) / (std + epsilon)

    return OracleCredit(
        step_advantage=[a for row in adv for a in row],
        episode_advantage=[row[0] for row in adv],
        step_return=None,
        step_reward=[x for row in rewards for x in row],
        diagnostics={
            "turning_points": sum(sum(row) for row in is_tp),
            "kept_turning_points": n_kept,
            "singleton_positions": n_singleton,
        },
    )
