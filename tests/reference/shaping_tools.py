"""Loop oracle of the ``tool_call`` reward transform (ToolRL, Qian et al. 2025,
arXiv:2504.13958, section 3.3), written from the paper's definitions over the records:

    r_name = |N_G ∩ N_P| / |N_G ∪ N_P|;  per matched pair (G_j, P_j) of the same tool name:
    |keys ∩| / |keys ∪| + #{k ∈ keys(G_j): P_j[k] = G_j[k]};  S_max = 1 + |G| + Σ_j |keys(G_j)|;
    R_correct = (hi − lo) · R_max / S_max + lo,  R_max over *every* one-to-one matching
    (enumerated exhaustively: no assignment algorithm), or the official code's greedy pass.

The call text is parsed again here, independently, for the shapes the transform documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from . import Record

__all__ = ["parse", "step_rewards", "tool_call"]


def _one(obj: Any):
    if not isinstance(obj, dict):
        return None
    if "name" not in obj:
        for key in ("function", "function_call"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj.get("name"), str):
        return None
    args: Any = {}
    for key in ("arguments", "parameters", "args"):
        if key in obj:
            args = obj[key]
            break
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return (obj["name"], args)


def _many(obj: Any):
    if isinstance(obj, dict) and "name" not in obj and "tool_calls" in obj:
        obj = obj["tool_calls"]
    items = obj if isinstance(obj, list) else [obj]
    calls = [_one(x) for x in items]
    return None if any(c is None for c in calls) else calls


def parse(text: Any):
    """[(name, args), ...] or None (not a well-formed call)."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            return _many(json.loads(s))
        except ValueError:
            return None
    if "<tool_call>" not in s or s.count("<tool_call>") != s.count("</tool_call>"):
        return None
    blocks = re.findall(r"<tool_call>(.*?)</tool_call>", s, re.S)
    if not blocks:
        return None
    calls = []
    decoder = json.JSONDecoder()
    for b in blocks:  # whitespace-separated JSON values, each a call or an array of calls
        rest = b.strip()
        while rest:
            try:
                value, end = decoder.raw_decode(rest)
            except ValueError:
                return None
            got = _many(value)
            if got is None:
                return None
            calls.extend(got)
            rest = rest[end:].strip()
    return calls


def _equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _pair(g, p) -> float:
    ga, pa = g[1], p[1]
    union = set(ga) | set(pa)
    keys = 1.0 if not union else len(set(ga) & set(pa)) / len(union)
    values = 0.0
    for k in ga:
        if k in pa and _equal(ga[k], pa[k]):
            values += 1.0
    return keys + values


def _best(gt, pd, j: int, used: frozenset) -> float:
    """Exhaustive: the best total over matchings of gt[j:] into unused same-name calls."""
    if j == len(gt):
        return 0.0
    best = _best(gt, pd, j + 1, used)  # gt[j] unmatched
    for i, p in enumerate(pd):
        if i not in used and p[0] == gt[j][0]:
            best = max(best, _pair(gt[j], p) + _best(gt, pd, j + 1, used | {i}))
    return best


def _greedy(gt, pd) -> float:
    used, total = set(), 0.0
    for g in gt:
        best, pick = 0.0, None
        for i, p in enumerate(pd):
            if i in used or p[0] != g[0]:
                continue
            sc = _pair(g, p)
            if sc > best:
                best, pick = sc, i
        if pick is not None:
            used.add(pick)
            total += best
    return total


def _name_overlap(gt, pd, multiset: bool) -> float:
    a, b = [g[0] for g in gt], [p[0] for p in pd]
    if not multiset:
        union = set(a) | set(b)
        return len(set(a) & set(b)) / len(union) if union else 1.0
    if sorted(a) == sorted(b):
        return 1.0
    inter = sum(min(a.count(n), b.count(n)) for n in set(a) & set(b))
    return inter / (len(a) + len(b) - inter)


def step_rewards(
    records: Sequence[Record],
    format_max: float = 1.0,
    format_min: float = 0.0,
    correct_max: float = 3.0,
    correct_min: float = -3.0,
    matching: str = "optimal",
    name_match: str = "set",
    empty_reference: str = "zero",
) -> list[float]:
    """The reward added to every step (0 for steps without a reference), steps flat."""
    out = []
    for rec in records:
        for step in rec["steps"]:
            ref = step.get("reference")
            if ref is None or str(ref).strip() in ("", "null"):
                out.append(0.0)
                continue
            gt = parse(ref)
            if gt is None:
                raise ValueError(f"bad reference {ref!r}")
            pd = parse(step.get("action"))
            fmt = format_max if pd is not None else format_min
            if not gt:
                if empty_reference == "zero":
                    out.append(fmt)
                else:
                    out.append(fmt + (correct_max if pd == [] else correct_min))
                continue
            if pd is None:
                out.append(fmt + correct_min)
                continue
            s_max = 1.0 + len(gt) + sum(len(g[1]) for g in gt)
            pairs = _best(gt, pd, 0, frozenset()) if matching == "optimal" else _greedy(gt, pd)
            r_max = _name_overlap(gt, pd, name_match == "multiset") + pairs
            out.append(fmt + (correct_max - correct_min) * r_max / s_max + correct_min)
    return out


def tool_call(records: Sequence[Record], target: str = "reward", **params) -> tuple[list[float], list[float]]:
    """(outcome per record, step reward per step) after the transform."""
    added = step_rewards(records, **params)
    outcomes, rewards = [], []
    s = 0
    for rec in records:
        total = 0.0
        for step in rec["steps"]:
            r = step.get("reward") or 0.0
            rewards.append(r + added[s] if target == "reward" else r)
            total += added[s]
            s += 1
        outcomes.append(rec["outcome"] + total if target == "outcome" else rec["outcome"])
    return outcomes, rewards
