"""Loop oracles of LASER and LASER-D (METHODS.md section 6; Liu et al. 2025, arXiv:2505.15612;
official code hkust-nlp/Laser, verl/utils/reward_score/length_penalty.py).

LASER: L = Σ_t tokens_t; correct = R ≥ θ; b = +λ for a correct response with L ≤ L_T
("reward"), −λ for a correct one with L > L_T ("penalty"), both ("hybrid"); with explore, +λ
for a wrong one with L > L_T; R' = R + b.

LASER-D, one batch given a state: a group's accuracy a = #correct / |group| (an exact
Fraction) gives its level, easy a ≥ 2/3, medium 1/3 ≤ a < 2/3, hard otherwise; the batch's
monitored lengths (correct responses, or all with monitor="all") are appended per level in
input order and the last monitor_size kept; when batches % update_every == 0 each level's
target is the first candidate L = min_length, min_length + step, ... ≤ max_length whose
coverage c = #{h ≤ L} / |H| (a Fraction) satisfies floor(c · n_ℓ) ≥ K, n_ℓ = floor(2n/3),
floor(n/3), 1, else none; the target applied is min(target, longest response of the batch),
or the longest when none.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from . import Record, group_members

__all__ = ["LEVELS", "laser", "laser_d"]

LEVELS = ("easy", "medium", "hard")


def _length(rec: Record) -> int:
    return sum(int(step["tokens"]) for step in rec["steps"])


def _bonus(length: int, correct: bool, target: int, scale: float, kind: str, explore: bool) -> float:
    if correct:
        if length <= target:
            return scale if kind in ("reward", "hybrid") else 0.0
        return -scale if kind in ("penalty", "hybrid") else 0.0
    if explore and length > target:
        return scale
    return 0.0


def laser(
    records: Sequence[Record],
    target_length: int = 4096,
    scale: float = 0.5,
    kind: str = "reward",
    correct_threshold: float = 1.0,
    explore: bool = False,
) -> list[float]:
    """The shaped outcomes R' = R + b."""
    out = []
    for rec in records:
        correct = rec["outcome"] >= correct_threshold
        out.append(rec["outcome"] + _bonus(_length(rec), correct, target_length, scale, kind, explore))
    return out


def laser_d(
    records: Sequence[Record],
    state: dict[str, Any] | None,
    scale: float = 0.5,
    kind: str = "reward",
    correct_threshold: float = 1.0,
    explore: bool = False,
    min_length: int = 16,
    max_length: int = 4096,
    length_step: int = 16,
    expected_correct: int = 1,
    group_size: int = 0,
    monitor: str = "correct",
    monitor_size: int = 1024,
    update_every: int = 20,
) -> tuple[list[float], dict[str, Any], dict[str, Any]]:
    """(shaped outcomes, next state, {"target_LEVEL": applied target, "groups_LEVEL": count})."""
    if state is None:
        state = {"version": 1, "batches": 0, "lengths": {lv: [] for lv in LEVELS}, "targets": {lv: None for lv in LEVELS}}
    state = copy.deepcopy(state)
    members = group_members(records)
    level_of: dict[str, str] = {}
    for gid, idx in members.items():
        a = Fraction(sum(1 for i in idx if records[i]["outcome"] >= correct_threshold), len(idx))
        level_of[gid] = "easy" if a >= Fraction(2, 3) else "medium" if a >= Fraction(1, 3) else "hard"
    for lv in LEVELS:
        new = []
        for rec in records:
            correct = rec["outcome"] >= correct_threshold
            if level_of[rec["group_id"]] == lv and (monitor == "all" or correct):
                new.append(_length(rec))
        kept = state["lengths"][lv] + new
        state["lengths"][lv] = kept[len(kept) - monitor_size:] if len(kept) > monitor_size else kept
    if state["batches"] % update_every == 0:
        n = group_size if group_size > 0 else max(len(idx) for idx in members.values())
        n_min = {"easy": (2 * n) // 3, "medium": n // 3, "hard": 1}
        for lv in LEVELS:
            H = state["lengths"][lv]
            target = None
            L = min_length
            while L <= max_length and H:
                coverage = Fraction(sum(1 for h in H if h <= L), len(H))
                if math.floor(coverage * n_min[lv]) >= expected_correct:
                    target = L
                    break
                L += length_step
            state["targets"][lv] = target
    state["batches"] += 1
    longest = max(_length(rec) for rec in records)
    applied = {
        lv: longest if state["targets"][lv] is None else min(state["targets"][lv], longest) for lv in LEVELS
    }
    out = []
    for rec in records:
        correct = rec["outcome"] >= correct_threshold
        target = applied[level_of[rec["group_id"]]]
        out.append(rec["outcome"] + _bonus(_length(rec), correct, target, scale, kind, explore))
    diagnostics: dict[str, Any] = {f"target_{lv}": applied[lv] for lv in LEVELS}
    for lv in LEVELS:
        diagnostics[f"groups_{lv}"] = sum(1 for g in level_of.values() if g == lv)
    return out, state, diagnostics
