"""Loop oracles of the outcome-level group baselines (METHODS.md section 1).

Notation: group g holds episodes i with outcomes R_i; n = |g|. std is the unbiased (ddof=1)
standard deviation. Singleton groups (n = 1): ``singleton="raw"`` takes the group mean as 0
and the std as 1 (verl), ``singleton="zero"`` gives the episode an advantage of 0 (TRL).
All means and centred values are exact (Fractions); see the package docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, broadcast, exact, group_members, step_field

__all__ = ["drgrpo", "episode_weight", "grpo", "reinforce_pp", "rloo"]


def _centred(records: Sequence[Record], singleton: str) -> tuple[list[Fraction], list[int]]:
    """c_i = R_i − mean_g R exactly, and n_i = the size of episode i's group.

    A singleton's mean is 0 with "raw" (so c_i = R_i) and R_i itself with "zero" (c_i = 0).
    """
    c: list[Fraction] = [Fraction(0)] * len(records)
    n: list[int] = [0] * len(records)
    for members in group_members(records).values():
        outcomes = [exact(records[i]["outcome"]) for i in members]
        if len(members) == 1:
            mean = Fraction(0) if singleton == "raw" else outcomes[0]
        else:
            total = Fraction(0)
            for r in outcomes:
                total += r
            mean = total / len(outcomes)
        for i, r in zip(members, outcomes):
            c[i] = r - mean
            n[i] = len(members)
    return c, n


def _unbiased_std(values: list[Fraction]) -> float:
    """sqrt(Σ (v − mean)² / (n − 1)), the variance exact, for n >= 2."""
    mean = sum(values, Fraction(0)) / len(values)
    ss = Fraction(0)
    for v in values:
        ss += (v - mean) ** 2
    return math.sqrt(float(ss / (len(values) - 1)))


def grpo(
    records: Sequence[Record],
    scale: str = "group",
    epsilon: float = 1e-6,
    singleton: str = "raw",
) -> OracleCredit:
    """GRPO: A_i = (R_i − mean_g R) / (F + ε).

    F is the group's unbiased std (``scale="group"``; 1 for a singleton under "raw"), the
    unbiased std of every outcome of the batch (``"batch"``; 1 for a batch of one episode), or
    F + ε is replaced by 1 (``"none"``: A_i = R_i − mean_g R).
    """
    c, n = _centred(records, singleton)
    adv = [0.0] * len(records)
    if scale == "group":
        for members in group_members(records).values():
            if len(members) == 1:
                std = 1.0  # verl: a singleton's std is 1 ("zero" has c = 0 anyway)
            else:
                std = _unbiased_std([exact(records[i]["outcome"]) for i in members])
            for i in members:
                adv[i] = float(c[i]) / (std + epsilon)
    elif scale == "batch":
        if len(records) > 1:
            std = _unbiased_std([exact(rec["outcome"]) for rec in records])
        else:
            std = 1.0
        for i in range(len(records)):
            adv[i] = float(c[i]) / (std + epsilon)
    elif scale == "none":
        adv = [float(ci) for ci in c]
    else:
        raise ValueError(scale)
    return broadcast(records, adv)


def drgrpo(records: Sequence[Record], singleton: str = "raw") -> OracleCredit:
    """Dr. GRPO: A_i = R_i − mean_g R."""
    c, _ = _centred(records, singleton)
    return broadcast(records, [float(ci) for ci in c])


def rloo(records: Sequence[Record], singleton: str = "raw") -> OracleCredit:
    """RLOO: A_i = R_i − (1/(n−1)) Σ_{j≠i} R_j, straight from the leave-one-out definition.

    A singleton has no other episode: A_i = R_i ("raw") or 0 ("zero").
    """
    adv = [0.0] * len(records)
    for members in group_members(records).values():
        if len(members) == 1:
            i = members[0]
            adv[i] = float(records[i]["outcome"]) if singleton == "raw" else 0.0
            continue
        for i in members:
            others = Fraction(0)
            for j in members:
                if j != i:
                    others += exact(records[j]["outcome"])
            adv[i] = float(exact(records[i]["outcome"]) - others / (len(members) - 1))
    return broadcast(records, adv)


def episode_weight(rec: Record, weight: str) -> int:
    """w_i of REINFORCE++'s batch whitening: the episode's steps, its tokens, or 1."""
    if weight == "steps":
        return len(rec["steps"])
    if weight == "tokens":
        total = 0
        for step in rec["steps"]:
            total += step_field(step, "tokens")  # KeyError-like TypeError if absent: intended
        return total
    if weight == "episodes":
        return 1
    raise ValueError(weight)


def reinforce_pp(
    records: Sequence[Record],
    weight: str = "steps",
    epsilon: float = 1e-8,
    singleton: str = "raw",
) -> OracleCredit:
    """REINFORCE++-baseline: c_i = R_i − mean_g R, then weighted whitening over the batch.

    With w_i the episode's weight (its steps, its tokens, or 1) and N = Σ w_i:
    μ = Σ w c / N,  σ² = Σ w (c − μ)² / N · N/(N − 1),  A_i = (c_i − μ) / sqrt(σ² + ε).
    N <= 1: the variance is undefined and A_i = c_i − μ. N = 0 (every weight 0, e.g. no
    tokens at all): μ is undefined too and A_i = 0 (``ops.weighted_whiten``'s convention).
    """
    c, _ = _centred(records, singleton)
    w = [episode_weight(rec, weight) for rec in records]
    N = sum(w)
    if N == 0:
        return broadcast(records, [0.0] * len(records))
    mu = Fraction(0)
    for wi, ci in zip(w, c):
        mu += wi * ci
    mu /= N
    if N <= 1:
        return broadcast(records, [float(ci - mu) for ci in c])
    ss = Fraction(0)
    for wi, ci in zip(w, c):
        ss += wi * (ci - mu) ** 2
    var = ss / N * Fraction(N, N - 1)
    denom = math.sqrt(float(var) + epsilon)
    return broadcast(records, [float(ci - mu) / denom for ci in c])
