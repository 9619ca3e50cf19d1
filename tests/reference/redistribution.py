"""Loop oracle of the outcome redistribution ``redistribute`` (METHODS.md section 3, the
ReviBranch idea, arXiv:2508.17452, applied to a group advantage).

Per episode, exactly (Fractions): x_t = 1 (uniform) or the step field; an episode whose weights
are all 0 takes x_t = 1; w_t = x_t / Σ_u x_u;
* r_t = R_i · w_t and return_t = R_i · Σ_{k≥t} w_k, as defined (no rounding scheme);
* A_t = T_i · w_t · A_i with A_i the base outcome advantage (the outcome oracles).

The vectorised code rounds r_t so that its sum is exactly R_i; the diagnostics give the bound
it must meet per step: |r_t − R_i w_t| < (4 T_i + 8) · ulp(|R_i|) and
|return_t − R_i Σ_{k≥t} w_k| < (2 T_i + 4) · ulp(|R_i|) (the rounding of the cumulative
weights, at most one relative ε per addition, plus the floor to a multiple of ulp(|R_i|)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, step_field
from .graph import base_advantage

__all__ = ["redistribute"]


def redistribute(
    records: Sequence[Record],
    weights: str = "uniform",
    base: str = "grpo",
    epsilon: float = 1e-6,
    singleton: str = "raw",
) -> OracleCredit:
    adv = base_advantage(records, base, epsilon, singleton)
    step_adv: list[float] = []
    rewards: list[float] = []
    returns: list[float] = []
    reward_tol: list[float] = []
    return_tol: list[float] = []
    fallback = 0
    zero_weight = 0
    for rec, a in zip(records, adv):
        steps = rec["steps"]
        T = len(steps)
        if weights == "uniform":
            x = [Fraction(1)] * T
        else:
            x = [Fraction(step_field(step, weights)) for step in steps]
            for v in x:
                if v < 0:
                    raise ValueError(f"negative {weights}")
        total = sum(x, Fraction(0))
        if total == 0:
            fallback += 1
            x = [Fraction(1)] * T
            total = Fraction(T)
        R = Fraction(rec["outcome"])
        ulp = math.ulp(abs(float(rec["outcome"])))
        for t in range(T):
            w = x[t] / total
            zero_weight += w == 0
            step_adv.append(float(T * w * Fraction(a)))
            rewards.append(float(R * w))
            returns.append(float(R * sum(x[t:], Fraction(0)) / total))
            reward_tol.append((4 * T + 8) * ulp)
            return_tol.append((2 * T + 4) * ulp)
    return OracleCredit(
        step_advantage=step_adv,
        episode_advantage=list(adv),
        step_return=returns,
        step_reward=rewards,
        diagnostics={
            "fallback_episodes": fallback,
            "zero_weight_steps": zero_weight,
            "step_reward_tolerance": reward_tol,
            "step_return_tolerance": return_tol,
        },
    )
