"""Loop oracle of PAR, Preference As Reward (METHODS.md section 4; Fu, Zhao et al. 2025,
arXiv:2502.18770; official code PorUna-byte/PAR, trainers/reward_shaper.py).

For each episode i with reward-model score R_i and references r_1..r_M:

    R'_i = (1/M) Σ_m σ(k (R_i − r_m)),   σ(x) = 1 / (1 + e^{−x}),   R'_i = 1/2 when M = 0.

References: the other episodes of the group in input order ("group", the first maxref), the
group mean ("group_mean"), or the named components of the record's "rewards" object
("components", the first maxref names). The argument k (R_i − r_m) is computed exactly
(Fractions) and rounded once; the mean of the sigmoids with math.fsum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from . import Record, group_members

__all__ = ["par", "sigmoid"]


def sigmoid(x: float) -> float:
    """σ(x) by the textbook formula, written the way that cannot overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def par(
    records: Sequence[Record],
    reference: str = "group",
    components: str = "",
    k: float = 1.0,
    maxref: int = 10,
) -> tuple[list[float], list[int]]:
    """The shaped outcomes R' and the number of references M of each episode."""
    members = group_members(records)
    names = [n.strip() for n in components.split(",")][:maxref] if reference == "components" else []
    shaped: list[float] = []
    counts: list[int] = []
    for i, rec in enumerate(records):
        R = Fraction(rec["outcome"])
        group = members[rec["group_id"]]
        if reference == "group":
            refs = [Fraction(records[j]["outcome"]) for j in group if j != i][:maxref]
        elif reference == "group_mean":
            refs = [sum((Fraction(records[j]["outcome"]) for j in group), Fraction(0)) / len(group)]
        else:
            refs = [Fraction(rec["rewards"][n]) for n in names]
        counts.append(len(refs))
        if not refs:
            shaped.append(0.5)
            continue
        sig = [sigmoid(float(Fraction(k) * (R - r))) for r in refs]
        shaped.append(math.fsum(sig) / len(refs))
    return shaped, counts
