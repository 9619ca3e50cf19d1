"""Loop oracle of generalised advantage estimation (Schulman et al. 2016; METHODS.md section 1).

Episode i has steps t = 0..T−1 with rewards r_t (an absent reward is 0; the outcome R is added
to the last step's reward) and values V_t; V_T = 0 after the last step.

    δ_t = r_t + γ V_{t+1} − V_t,    A_t = δ_t + γλ A_{t+1} (A_T = 0),    return_t = A_t + V_t.

The recursion is evaluated step by step in float64, in exactly the order the definition writes
it (this is the definition; an exact evaluation would differ from *any* float implementation by
the rounding of γV, which is not what the test is about). The optional whitening over all steps
of the batch is computed exactly (Fractions), like the group statistics of the outcome oracles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, exact, step_field

__all__ = ["gae"]


def gae(
    records: Sequence[Record],
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = False,
) -> OracleCredit:
    """GAE per step; ``whiten`` makes the advantages mean 0, unbiased variance 1 over all steps
    (weights 1, ε = 1e-8 added to the variance; a single step gives A − μ = 0).

    Returns:
        OracleCredit with step_advantage, episode_advantage (A at each episode's first step,
        after whitening), step_return (A + V before whitening) and step_reward.
    """
    advantages: list[float] = []
    returns: list[float] = []
    rewards: list[float] = []
    for rec in records:
        steps = rec["steps"]
        T = len(steps)
        r = [float(step_field(s, "reward", 0.0)) for s in steps]
        r[T - 1] = r[T - 1] + float(rec["outcome"])
        v = [float(step_field(s, "value")) for s in steps]
        a = [0.0] * T
        a_next = 0.0
        for t in reversed(range(T)):
            v_next = v[t + 1] if t + 1 < T else 0.0  # the episode has ended: V_T = 0
            delta = r[t] + gamma * v_next - v[t]
            a[t] = delta + gamma * lam * a_next if t + 1 < T else delta
            a_next = a[t]
        advantages.extend(a)
        returns.extend(a_t + v_t for a_t, v_t in zip(a, v))
        rewards.extend(r)

    if whiten:
        S = len(advantages)
        mu = sum((exact(x) for x in advantages), Fraction(0)) / S
        if S <= 1:
            advantages = [float(exact(x) - mu) for x in advantages]
        else:
            ss = sum(((exact(x) - mu) ** 2 for x in advantages), Fraction(0))
            denom = math.sqrt(float(ss / (S - 1)) + 1e-8)  # Σ(x−μ)²/S · S/(S−1)
            advantages = [float(exact(x) - mu) / denom for x in advantages]

    episode_adv: list[float] = []
    start = 0
    for rec in records:
        episode_adv.append(advantages[start])
        start += len(rec["steps"])
    return OracleCredit(
        step_advantage=advantages,
        episode_advantage=episode_adv,
        step_return=returns,
        step_reward=rewards,
    )
