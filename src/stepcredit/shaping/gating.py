"""Gated Reward Accumulation (G-RA): immediate rewards count only when the outcome is reached.

Notation: episode i has outcome R_i (the high-level reward) and immediate step rewards
u_t^i, t = 0..T_i−1: the step ``reward`` column (``source="reward"``) or w·``process``
(``source="process"``, a process reward model's scores with weight w). The gate of episode i
is g_i = 1[R_i ≥ θ].
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.shaping.registry import Shaped, register_transform

__all__ = ["gated"]

GRA_PAPER = (
    "Stabilizing Long-term Multi-turn Reinforcement Learning with Gated Rewards "
    "(Sun, Li et al., 2025, arXiv:2508.10548)"
)


def _requires(p) -> tuple[str, ...]:
    return ("process",) if p["source"] == "process" else ("reward",)


def _writes(p) -> tuple[str, ...]:
    if p["target"] == "outcome":  # the rewards moved into the outcome are set to 0
        return ("outcome", "reward") if p["source"] == "reward" else ("outcome",)
    return ("reward",)


@register_transform(paper=GRA_PAPER, requires=_requires, writes=_writes)
def gated(
    ro: Rollouts,
    *,
    threshold: float = 1.0,
    source: Literal["reward", "process"] = "reward",
    weight: float = 1.0,
    target: Literal["reward", "outcome"] = "reward",
) -> Shaped:
    """G-RA: immediate rewards accumulate only in episodes whose outcome reaches a threshold.

        g_i = 1[R_i ≥ θ],   total reward of episode i = R_i + g_i · Σ_t u_t^i,
    with u_t = ``reward`` (``source="reward"``) or w · ``process`` (``source="process"``).
    ``target="reward"`` keeps the gated immediate rewards as step rewards:
        ``source="reward"``:  r'_t = g_i r_t;   ``source="process"``: r'_t = r_t + g_i w p_t;
    ``target="outcome"`` moves them into the outcome, R'_i = R_i + g_i Σ_t u_t, and sets every
    step reward to 0 (``source="reward"``; with ``"process"`` the step rewards are kept), so
    that outcome-only estimators (grpo, rloo) see the gated total and nothing is counted twice.
    Below the threshold nothing is added, whatever the immediate rewards: a policy cannot
    collect step rewards without reaching the outcome.

    Args:
        ro: rollouts; needs ``process`` for ``source="process"``.
        threshold: θ, the outcome an episode must reach for its immediate rewards to count.
        source: ``"reward"`` (the step reward column) or ``"process"`` (PRM scores).
        weight: w, the weight of the process scores (``source="process"`` only).
        target: ``"reward"`` (step rewards) or ``"outcome"`` (added to the outcome).

    Returns:
        Shaped rollouts; diagnostics: ``gated_fraction`` (episodes whose immediate rewards were
        discarded), ``discarded`` (the sum of |u| discarded), ``added`` (the sum of u kept).

    Reference: Stabilizing Long-term Multi-turn Reinforcement Learning with Gated Rewards
    (Sun, Li et al., 2025, arXiv:2508.10548): "accumulates immediate rewards only when
    high-level (long-term) rewards meet a predefined threshold" (abstract). The paper applies
    the gate across several reward levels (completion, then tests); here one level, the
    outcome; chain two ``gated`` stages for more. Differs from official code: none found.
    """
    gate = (ro.outcome >= threshold).astype(np.float64)
    step_gate = np.repeat(gate, ro.step_counts)
    u = ro.reward if source == "reward" else weight * ro.column("process", by="transform 'gated'")
    kept = step_gate * u
    off = ro.episode_offsets
    diagnostics = {
        "gated_fraction": float(1.0 - gate.mean()) if gate.size else 0.0,
        "discarded": float(np.abs(u[step_gate == 0]).sum()),
        "added": float(kept.sum()),
    }
    if target == "outcome":
        outcome = ro.outcome + np.add.reduceat(kept, off[:-1])
        out = ro.with_outcome(outcome)
        if source == "reward" and "reward" in ro.columns:
            out = out.replace_columns(reward=np.zeros(ro.n_steps))
        return Shaped(out, diagnostics)
    reward = kept if source == "reward" else ro.reward + kept
    return Shaped(ro.replace_columns(reward=reward), diagnostics)
