"""Loop oracles: every estimator written again from the paper's definition, slowly and plainly.

The oracles take the rollout *record* format (a list of episode dicts, see
``stepcredit.data.rollouts``) and return an :class:`OracleCredit` with plain Python lists:
steps flat with the episodes in input order, one episode advantage per record. They use dicts
and for-loops over groups, episodes and steps, and never import ``stepcredit.estimators`` or
``stepcredit.ops``: they are what the vectorised code is checked against.

Group statistics are computed *exactly* with :class:`fractions.Fraction` (every float is a
fraction, so sums, means and centred values carry no rounding) and converted to float only at
the end; a std is ``math.sqrt(float(exact variance))``. Test data holds outcomes such as
1e6 + 1e-7 noise, whose small differences a naively rounded float mean would lose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = ["OracleCredit", "broadcast", "exact", "group_members", "step_field"]

Record = Mapping[str, Any]


@dataclass(frozen=True)
class OracleCredit:
    """What an oracle returns (mirrors ``stepcredit.Credit``, as plain lists).

    Attributes:
        step_advantage: [S] one advantage per step, episodes in input order.
        episode_advantage: [E] one advantage per episode.
        step_return: [S] return targets (GAE) or None.
        step_reward: [S] the rewards used (GAE: outcome added at the last step) or None.
        diagnostics: counts the estimator reports (e.g. GiGPO's anchor groups) or None.
    """

    step_advantage: list[float]
    episode_advantage: list[float]
    step_return: list[float] | None = None
    step_reward: list[float] | None = None
    diagnostics: dict | None = None


def exact(x: float | int) -> Fraction:
    """The exact rational value of a float or int."""
    return Fraction(x)


def group_members(records: Sequence[Record]) -> dict[str, list[int]]:
    """group_id -> indices of its episodes, in input order (groups need not be contiguous)."""
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec["group_id"], []).append(i)
    return groups


def step_field(step: Mapping[str, Any], name: str, default: float | None = None) -> Any:
    """A step's field; an absent (or null) field gives ``default``."""
    v = step.get(name)
    return default if v is None else v


def broadcast(records: Sequence[Record], episode_advantage: list[float]) -> OracleCredit:
    """Outcome estimators: every step of episode i gets the episode's advantage A_i."""
    steps: list[float] = []
    for rec, a in zip(records, episode_advantage):
        for _ in rec["steps"]:
            steps.append(a)
    return OracleCredit(step_advantage=steps, episode_advantage=list(episode_advantage))
