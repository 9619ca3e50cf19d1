"""Loop oracle of G-RA, Gated Reward Accumulation (Sun, Li et al. 2025, arXiv:2508.10548).

For each episode: gate g = 1 if outcome >= θ else 0; immediate rewards u_t = reward_t
(absent = 0) or w · process_t. ``target="reward"``: r'_t = g·r_t (source reward) or
r_t + g·w·p_t (source process), outcome unchanged. ``target="outcome"``: R' = R + g·Σ_t u_t
(summed left to right), with step rewards set to 0 for source reward.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import Record, step_field

__all__ = ["gated"]


def gated(records: Sequence[Record], threshold=1.0, source="reward", weight=1.0, target="reward") -> tuple[list[float], list[float]]:
    """(outcomes [E], step rewards [S]) after the transform."""
    outcomes, rewards = [], []
    for rec in records:
        g = 1.0 if rec["outcome"] >= threshold else 0.0
        total = 0.0
        for step in rec["steps"]:
            r = step_field(step, "reward", 0.0)
            u = r if source == "reward" else weight * step["process"]
            total += g * u
            if target == "reward":
                rewards.append(g * r if source == "reward" else r + g * u)
            else:
                rewards.append(0.0 if source == "reward" else r)
        outcomes.append(rec["outcome"] + total if target == "outcome" else rec["outcome"])
    return outcomes, rewards
