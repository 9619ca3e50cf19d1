"""Loop oracle of GiGPO (METHODS.md section 2; Feng et al. 2025, arXiv:2505.10978, Eqs. 3-8).

Per group g (dicts keyed by group id, then by state):
* the episode score R_i = Σ_t r_t^i with the outcome added to the last step's reward;
* A^E_i = (R_i − mean_g R) / F, F = std_g + ε ("mean_std") or 1 ("mean"), over episodes (or over
  step rows with episode_stats="steps"); a one-member group: mean 0 and std 1 ("raw") or 0;
* the step return R_t = r_t + γ R_{t+1};
* the step group of (g, state) holds every step of g in that state; A^S = (R_t − mean) / F over
  it, 0 for a step group of one;
* A = A^E + ω A^S.

Float arithmetic of the rewards and returns follows the definition's order (the same rounding
as any implementation that evaluates it in that order); means, centred values and variances are
exact (Fractions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction

from . import OracleCredit, Record, step_field

__all__ = ["gigpo", "match_key"]


def match_key(state, match: str):
    """The key states are compared by: as given, or lower-cased with white space collapsed."""
    if match == "normalized" and isinstance(state, str):
        return re.sub(r"[ \t\n\r\f\v]+", " ", state.lower()).strip()
    return state


def _centre(values: list[float], singleton: str, one_member_is_zero: bool) -> tuple[list[Fraction], float | None]:
    """Exact centred values and the unbiased std (None for one member)."""
    xs = [Fraction(v) for v in values]
    if len(xs) == 1:
        if one_member_is_zero or singleton == "zero":
            return [Fraction(0)], None
        return xs, None  # mean 0
    mean = sum(xs, Fraction(0)) / len(xs)
    c = [x - mean for x in xs]
    var = sum((v * v for v in c), Fraction(0)) / (len(xs) - 1)
    return c, math.sqrt(float(var))


def _rounding(values: list[float], scale: float) -> float:
    """How far any float evaluation of a centred value over ``values`` may be off: the sums
    that produced the values (episode totals, step returns) are rounded at the magnitude of the
    largest of them, a few ulps, whatever the order of summation. Divided by the scale F."""
    return 8 * math.ulp(max(abs(v) for v in values)) / scale


def _scale(std: float | None, norm: str, epsilon: float) -> float:
    if norm == "mean":
        return 1.0
    return (1.0 if std is None else std) + epsilon


def gigpo(
    records: Sequence[Record],
    omega: float = 1.0,
    gamma: float = 0.95,
    norm: str = "mean_std",
    epsilon: float = 1e-6,
    match: str = "exact",
    episode_stats: str = "episodes",
    singleton: str = "raw",
) -> OracleCredit:
    # rewards (outcome on the last step), episode scores and step returns, per episode
    rewards: list[list[float]] = []
    scores: list[float] = []
    returns: list[list[float]] = []
    for rec in records:
        r = [float(step_field(s, "reward", 0.0)) for s in rec["steps"]]
        r[-1] = r[-1] + rec["outcome"]
        total = 0.0
        for x in r:
            total += x
        ret = [0.0] * len(r)
        following = 0.0
        for t in range(len(r) - 1, -1, -1):
            ret[t] = r[t] + gamma * following if t < len(r) - 1 else r[t]
            following = ret[t]
        rewards.append(r)
        scores.append(total)
        returns.append(ret)

    # episode part
    episode_adv = [0.0] * len(records)
    episode_tol = [0.0] * len(records)
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec["group_id"], []).append(i)
    for members in groups.values():
        if episode_stats == "episodes":
            c, std = _centre([scores[i] for i in members], singleton, False)
            for i, ci in zip(members, c):
                episode_adv[i] = float(ci) / _scale(std, norm, epsilon)
                episode_tol[i] = _rounding([scores[j] for j in members], _scale(std, norm, epsilon))
        else:  # statistics over step rows: episode i counts once per step
            rows = [i for i in members for _ in records[i]["steps"]]
            c, std = _centre([scores[i] for i in rows], singleton, False)
            for i, ci in zip(rows, c):
                episode_adv[i] = float(ci) / _scale(std, norm, epsilon)
                episode_tol[i] = _rounding([scores[j] for j in rows], _scale(std, norm, epsilon))

    # step part: step groups keyed by (group, state)
    step_groups: dict[tuple, list[tuple[int, int]]] = {}
    for i, rec in enumerate(records):
        for t, step in enumerate(rec["steps"]):
            key = (rec["group_id"], type(step["state"]).__name__, match_key(step["state"], match))
            step_groups.setdefault(key, []).append((i, t))
    step_adv = [[0.0] * len(rec["steps"]) for rec in records]
    step_tol = [[0.0] * len(rec["steps"]) for rec in records]
    anchor_groups = 0
    anchored = 0
    for members in step_groups.values():
        c, std = _centre([returns[i][t] for i, t in members], singleton, True)
        if len(members) > 1:
            anchor_groups += 1
            anchored += len(members)
        for (i, t), ci in zip(members, c):
            step_adv[i][t] = float(ci) / _scale(std, norm, epsilon)
            if len(members) > 1:
                step_tol[i][t] = _rounding([returns[j][u] for j, u in members], _scale(std, norm, epsilon))

    flat_adv: list[float] = []
    flat_ret: list[float] = []
    flat_rew: list[float] = []
    flat_tol: list[float] = []
    for i in range(len(records)):
        for t in range(len(records[i]["steps"])):
            flat_adv.append(episode_adv[i] + omega * step_adv[i][t])
            flat_tol.append(episode_tol[i] + abs(omega) * step_tol[i][t])
            flat_ret.append(returns[i][t])
            flat_rew.append(rewards[i][t])
    n_steps = len(flat_adv)
    return OracleCredit(
        step_advantage=flat_adv,
        episode_advantage=episode_adv,
        step_return=flat_ret,
        step_reward=flat_rew,
        diagnostics={
            "anchor_groups": anchor_groups,
            "anchored_step_fraction": anchored / n_steps if n_steps else 0.0,
            # absolute error bounds of any float implementation (see _rounding)
            "step_tolerance": flat_tol,
            "episode_tolerance": episode_tol,
        },
    )
