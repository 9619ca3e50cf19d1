"""Loop oracles of the PRM shaping transforms (METHODS.md section 4): Clip and Delta (Gao et al.
2024, arXiv:2410.15115), episode aggregation (min / mean / last), and ReNorm (arXiv:2509.25598,
in the unverified form the transform documents).

Each oracle takes the record format (a list of episode dicts) and returns an
:class:`OracleShaped`: the outcome [E], the step reward column [S] (an absent reward is 0) and
the ``process`` column [S] after the transform. Per episode and per step, written from the
definitions with for-loops; sums over an episode's steps are exact (Fractions), elementwise
terms are the float operations the definitions name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from . import Record, step_field

__all__ = ["OracleShaped", "aggregate", "prm_clip", "prm_delta", "renorm"]


@dataclass(frozen=True)
class OracleShaped:
    """Rollout fields after a transform, as plain lists (episodes and steps in input order)."""

    outcome: list[float]
    reward: list[float]
    process: list[float]


def _unchanged(records: Sequence[Record]) -> tuple[list[float], list[list[float]], list[list[float]]]:
    outcome = [float(rec["outcome"]) for rec in records]
    reward = [[float(step_field(s, "reward", 0.0)) for s in rec["steps"]] for rec in records]
    process = [[float(s["process"]) for s in rec["steps"]] for rec in records]
    return outcome, reward, process


def _flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def _combine(records, shaped: list[list[float]], target: str, weight: float) -> OracleShaped:
    """r'_t = r_t + w r̃_t ("reward"), R' = R + w Σ_t r̃_t ("outcome"), p_t ← w r̃_t ("process")."""
    outcome, reward, process = _unchanged(records)
    for i, terms in enumerate(shaped):
        if target == "reward":
            reward[i] = [r + weight * x for r, x in zip(reward[i], terms)]
        elif target == "outcome":
            total = sum((Fraction(x) for x in terms), Fraction(0))
            outcome[i] = float(Fraction(outcome[i]) + Fraction(weight) * total)
        else:
            process[i] = [weight * x for x in terms]
    return OracleShaped(outcome, _flat(reward), _flat(process))


def clip_terms(ps: list[float], eta: float) -> list[float]:
    """r̃_t = min(p_t − η, 0)."""
    return [min(p - eta, 0.0) for p in ps]


def delta_terms(ps: list[float], last_step: str) -> list[float]:
    """r̃_t = p_t − p_{t+1} (t < T−1); r̃_{T−1} = 0 ("drop") or p_{T−1} ("keep")."""
    T = len(ps)
    terms = []
    for t in range(T):
        if t + 1 < T:
            terms.append(ps[t] - ps[t + 1])
        else:
            terms.append(0.0 if last_step == "drop" else ps[t])
    return terms


def prm_clip(records: Sequence[Record], eta: float = 0.5, weight: float = 1.0, target: str = "reward") -> OracleShaped:
    shaped = [clip_terms([float(s["process"]) for s in rec["steps"]], eta) for rec in records]
    return _combine(records, shaped, target, weight)


def prm_delta(
    records: Sequence[Record], weight: float = 1.0, target: str = "reward", last_step: str = "drop"
) -> OracleShaped:
    shaped = [delta_terms([float(s["process"]) for s in rec["steps"]], last_step) for rec in records]
    return _combine(records, shaped, target, weight)


def episode_score(ps: list[float], how: str) -> float:
    """S = min_t p_t, (1/T) Σ_t p_t (exact sum) or p_{T−1}."""
    if how == "min":
        best = ps[0]
        for p in ps[1:]:
            if p < best:
                best = p
        return best
    if how == "mean":
        return float(sum((Fraction(p) for p in ps), Fraction(0)) / len(ps))
    return ps[-1]


def aggregate(records: Sequence[Record], how: str, mode: str = "add", weight: float = 1.0) -> OracleShaped:
    """R' = R + w S ("add") or w S ("replace"); steps unchanged."""
    outcome, reward, process = _unchanged(records)
    for i, rec in enumerate(records):
        s = episode_score([float(st["process"]) for st in rec["steps"]], how)
        outcome[i] = weight * s if mode == "replace" else float(Fraction(outcome[i]) + Fraction(weight * s))
    return OracleShaped(outcome, _flat(reward), _flat(process))


def renorm(records: Sequence[Record], form: str = "combined", target: str = "reward") -> OracleShaped:
    """Per the transform's (unverified) definition, p_t and R in [0, 1]:

    * target "outcome": R' = mean_t p_t + R − 1 (exact), steps unchanged;
    * "combined": r'_t = r_t + (p_t + R − 1) for t < T−1, r'_{T−1} = r_{T−1} + (p_{T−1} − 1),
      R unchanged (the estimator adds R at the last step);
    * "separate": r'_t = r_t + (p_t − ½), R' = R − ½.
    """
    outcome, reward, process = _unchanged(records)
    for i, rec in enumerate(records):
        R = outcome[i]
        ps = process[i]
        T = len(ps)
        if target == "outcome":
            mean_p = sum((Fraction(p) for p in ps), Fraction(0)) / T
            outcome[i] = float(mean_p + Fraction(R) - 1)
            continue
        for t in range(T):
            if form == "separate":
                u = ps[t] - 0.5
            elif t + 1 < T:
                u = ps[t] + R - 1.0
            else:
                u = ps[t] - 1.0
            reward[i][t] = reward[i][t] + u
        if form == "separate":
            outcome[i] = R - 0.5
    return OracleShaped(outcome, _flat(reward), _flat(process))
