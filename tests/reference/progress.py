"""Loop oracles of the progress-based estimators (METHODS.md section 3).

``pav`` (Setlur et al. 2024, arXiv:2410.08146, Eqs. 2, 4, 5): episode i has prover values
V_t = value of step t (the state before it) and outcome R_i, taken as the value after the last
step. Progress A^μ_t = V_{t+1} − V_t (V_T = R_i); A_t = A^base_i + α A^μ_t with A^base the
GRPO / Dr. GRPO / RLOO outcome advantage (the outcome oracles, exact group statistics).

``potential`` (Ng, Harada, Russell 1999): Φ_t = value of step t, Φ_T = 0;
r'_t = r_t + k (γ Φ_{t+1} − Φ_t) (r_t with the outcome added at the last step),
G'_t = r'_t + γ G'_{t+1} (G'_T = 0), A_t = G'_t − b_g with b_g the exact mean of G'_0 over the
group's episodes (``baseline="group"``; a singleton: 0 for "raw", its own G'_0 for "zero") or 0
(``"none"``).

Float arithmetic of rewards, progress and returns follows the definition's order (the rounding
any implementation evaluating it in that order has); group means are exact (Fractions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, exact, group_members, step_field
from . import outcome as ref_outcome

__all__ = ["pav", "potential"]


def pav(
    records: Sequence[Record],
    alpha: float = 3.0,
    base: str = "rloo",
    singleton: str = "raw",
) -> OracleCredit:
    """A_t = A^base_i + α (V_{t+1} − V_t), V after the last step = R_i.

    Returns:
        OracleCredit with step_advantage, episode_advantage (A^base), step_reward (α A^μ_t) and
        diagnostics (groups, singleton_groups, zero_variance_groups, mean_progress,
        negative_progress_fraction).
    """
    base_fn = {"grpo": ref_outcome.grpo, "drgrpo": ref_outcome.drgrpo, "rloo": ref_outcome.rloo}[base]
    base_adv = base_fn(records, singleton=singleton).episode_advantage
    advantages: list[float] = []
    rewards: list[float] = []
    progress_sum = Fraction(0)
    negative = 0
    for rec, a in zip(records, base_adv):
        v = [float(step_field(s, "value")) for s in rec["steps"]]
        T = len(v)
        for t in range(T):
            v_after = v[t + 1] if t + 1 < T else float(rec["outcome"])  # the outcome ends it
            progress = v_after - v[t]
            progress_sum += exact(progress)
            negative += progress < 0.0
            reward = alpha * progress
            rewards.append(reward)
            advantages.append(a + reward)
    S = len(advantages)
    groups = group_members(records)
    zero_var = 0  # groups of two or more whose std, as a float, is 0 (exact variance rounded)
    for members in groups.values():
        if len(members) > 1:
            xs = [exact(records[i]["outcome"]) for i in members]
            mean = sum(xs, Fraction(0)) / len(xs)
            zero_var += float(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / (len(xs) - 1)) == 0.0
    return OracleCredit(
        step_advantage=advantages,
        episode_advantage=list(base_adv),
        step_reward=rewards,
        diagnostics={
            "groups": len(groups),
            "singleton_groups": sum(len(m) == 1 for m in groups.values()),
            "zero_variance_groups": zero_var,
            "mean_progress": float(progress_sum / S) if S else 0.0,
            "negative_progress_fraction": negative / S if S else 0.0,
        },
    )


def potential(
    records: Sequence[Record],
    gamma: float = 1.0,
    scale: float = 1.0,
    baseline: str = "group",
    singleton: str = "raw",
) -> OracleCredit:
    """Shaped rewards, shaped returns-to-go, and the group-baselined advantages.

    Returns:
        OracleCredit with step_advantage, episode_advantage (the first step's), step_return
        (G'_t), step_reward (r'_t), and diagnostics: singleton_groups, mean_shaping, and
        ``step_tolerance`` / ``episode_tolerance``: how far any float evaluation of
        G'_t − b_g may be off (8 ulps of the largest |G'| of the group: the centring of values
        that were themselves rounded at that magnitude).
    """
    shaped_returns: list[list[float]] = []
    shaped_rewards: list[list[float]] = []
    shaping_sum = Fraction(0)
    for rec in records:
        steps = rec["steps"]
        T = len(steps)
        r = [float(step_field(s, "reward", 0.0)) for s in steps]
        r[T - 1] = r[T - 1] + float(rec["outcome"])
        phi = [float(step_field(s, "value")) for s in steps]
        shaped = []
        for t in range(T):
            phi_next = phi[t + 1] if t + 1 < T else 0.0  # terminal: Φ = 0
            f = scale * (gamma * phi_next - phi[t])
            shaping_sum += exact(f)
            shaped.append(r[t] + f)
        ret = [0.0] * T
        for t in reversed(range(T)):
            ret[t] = shaped[t] + gamma * ret[t + 1] if t + 1 < T else shaped[t]
        shaped_rewards.append(shaped)
        shaped_returns.append(ret)

    baselines = [Fraction(0)] * len(records)
    tolerance = [0.0] * len(records)
    groups = group_members(records)
    for members in groups.values():
        largest = max(abs(x) for i in members for x in shaped_returns[i])
        for i in members:
            tolerance[i] = 8 * math.ulp(largest)
        if baseline == "none":
            continue
        if len(members) == 1:
            i = members[0]
            baselines[i] = Fraction(0) if singleton == "raw" else exact(shaped_returns[i][0])
            continue
        mean = sum((exact(shaped_returns[i][0]) for i in members), Fraction(0)) / len(members)
        for i in members:
            baselines[i] = mean

    step_adv: list[float] = []
    step_tol: list[float] = []
    episode_adv: list[float] = []
    for i, ret in enumerate(shaped_returns):
        episode_adv.append(float(exact(ret[0]) - baselines[i]))
        for g in ret:
            step_adv.append(float(exact(g) - baselines[i]))
            step_tol.append(tolerance[i] if baseline == "group" else 0.0)
    S = len(step_adv)
    return OracleCredit(
        step_advantage=step_adv,
        episode_advantage=episode_adv,
        step_return=[g for ret in shaped_returns for g in ret],
        step_reward=[x for shaped in shaped_rewards for x in shaped],
        diagnostics={
            "singleton_groups": sum(len(m) == 1 for m in groups.values()),
            "mean_shaping": float(shaping_sum / S) if S else 0.0,
            "step_tolerance": step_tol,
            "episode_tolerance": [t if baseline == "group" else 0.0 for t in tolerance],
        },
    )
