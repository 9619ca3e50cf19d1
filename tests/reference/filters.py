"""Loop oracles of the credit filters ``prof``, ``zero_variance`` and ``replay``, written from
their definitions with dicts and for-loops over groups, episodes and steps (records in, plain
lists out). They import nothing from ``stepcredit``.

PROF (Ye et al. 2025, arXiv:2509.03403; the official code's form, see
``stepcredit.filters.prof``): per episode i, s_i = +1 if R_i ≥ θ else −1, v̄_i the mean of its
``process`` scores, b_i = 1[H_i < H_min or H_i > H_max];
* code:  c_i = (1/H_i) Σ_h 2 (v_{i,h} − v̄_B) s_i − λ b_i  (v̄_B: mean of the batch's scores);
* paper: c_i = s_i (v̄_i − λ b_i);
per group: k = min(remove, n), k_+ = min(k, round((n_+ − n_− + k)/2)) (Python's round: half to
even); if k_+ > 0 remove the min(k_+, n_+) correct with the lowest c, then the rest of k from the
incorrect with the lowest c; else k incorrect with the lowest c; ties: the earlier episode first.
Variant "correct": the incorrect are removed by the smallest random key
splitmix64(fnv1a64(episode_id) ⊕ splitmix64(seed)) instead (written here byte by byte).

With ``exact=True`` the ranking uses c itself, exactly (Fractions), which is the definition.
With ``exact=False`` it uses the filter's documented float key κ_i (s_i v̄_i − (λ/2) b_i, or
s_i (v̄_i − λ b_i)) with v̄_i = (left-to-right float sum of the sorted scores) / H_i: the key
orders like c within a (group, class), and computing it with the filter's float operations
makes near-ties (scores closer than rounding) come out the same, so that the comparison checks
the selection logic bit for bit. A separate test checks exact == float on inputs whose exact
scores have no near-ties.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from . import Record, group_members, step_field

__all__ = ["prof", "random_key", "replay", "zero_variance"]

MASK = (1 << 64) - 1


# ---------------------------------------------------------------------- hashing (for variant="correct")
def _splitmix64(z: int) -> int:
    z &= MASK
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return z


def _fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) & MASK
    return _splitmix64(h)  # stepcredit's string hash: FNV-1a, then the splitmix64 finaliser


def random_key(episode_id: str, seed: int) -> int:
    return _splitmix64(_fnv1a64(episode_id) ^ _splitmix64(seed & MASK))


# ---------------------------------------------------------------------- PROF
def _float_mean(values: list[float]) -> float:
    total = 0.0
    for v in sorted(values):
        total += v
    return total / len(values)


def prof(
    records: Sequence[Record],
    remove: int = 4,
    correct_threshold: float = 1.0,
    length_penalty: float = 10.0,
    min_steps: int = 2,
    max_steps: int = 30,
    score: str = "code",
    variant: str = "both",
    seed: int = 0,
    active: Sequence[bool] | None = None,
    exact: bool = False,
) -> dict[str, Any]:
    """Returns {"weight": [E], "diagnostics": {...}, "c": {i: Fraction}, "key": {i: float}}."""
    E = len(records)
    active = [True] * E if active is None else list(active)
    lam = Fraction(length_penalty)
    # v̄_B over the steps of the episodes taking part
    all_scores = [Fraction(step_field(s, "process")) for i, r in enumerate(records) if active[i] for s in r["steps"]]
    vbar_b = sum(all_scores, Fraction(0)) / len(all_scores) if all_scores else Fraction(0)
    c: dict[int, Fraction] = {}
    key: dict[int, float] = {}
    correct: dict[int, bool] = {}
    flagged: dict[int, bool] = {}
    for i, rec in enumerate(records):
        if not active[i]:
            continue
        v = [step_field(s, "process") for s in rec["steps"]]
        H = len(v)
        o = rec["outcome"] >= correct_threshold
        s = 1 if o else -1
        b = 1 if (H < min_steps or H > max_steps) else 0
        if score == "code":
            c[i] = sum((2 * (Fraction(x) - vbar_b) * s for x in v), Fraction(0)) / H - lam * b
            key[i] = float(s) * _float_mean(v) - (0.5 * length_penalty) * float(b)
        else:
            c[i] = s * (sum(map(Fraction, v), Fraction(0)) / H - lam * b)
            key[i] = float(s) * (_float_mean(v) - length_penalty * float(b))
        correct[i] = o
        flagged[i] = bool(b)

    weight = [1.0 if a else 0.0 for a in active]
    dropped_pos = dropped_neg = emptied = 0
    for members in group_members(records).values():
        members = [i for i in members if active[i]]
        if not members:
            continue
        pos = [i for i in members if correct[i]]
        neg = [i for i in members if not correct[i]]
        n = len(members)
        k = min(remove, n)
        k_pos = min(k, round((len(pos) - len(neg) + k) / 2))
        r_pos = min(k_pos, len(pos)) if k_pos > 0 else 0
        r_neg = k - r_pos

        def by_score(i: int):
            return (c[i] if exact else key[i], i)

        pos_sorted = sorted(pos, key=by_score)
        if variant == "correct":
            neg_sorted = sorted(neg, key=lambda i: (random_key(records[i]["episode_id"], seed), i))
        else:
            neg_sorted = sorted(neg, key=by_score)
        for i in pos_sorted[:r_pos]:
            weight[i] = 0.0
        for i in neg_sorted[:r_neg]:
            weight[i] = 0.0
        dropped_pos += r_pos
        dropped_neg += r_neg
        emptied += r_pos + r_neg == n
    considered = sum(active)
    kept_pos = sum(1 for i in correct if correct[i]) - dropped_pos
    kept_neg = sum(1 for i in correct if not correct[i]) - dropped_neg
    diagnostics = {
        "dropped_fraction": (dropped_pos + dropped_neg) / considered if considered else 0.0,
        "dropped_correct": dropped_pos,
        "dropped_incorrect": dropped_neg,
        "kept_correct": kept_pos,
        "kept_incorrect": kept_neg,
        "length_penalized": sum(flagged.values()),
        "emptied_groups": emptied,
    }
    return {"weight": weight, "diagnostics": diagnostics, "c": c, "key": key}


# ---------------------------------------------------------------------- zero_variance
def zero_variance(
    records: Sequence[Record],
    action: str = "drop",
    tolerance: float = 0.0,
    singletons: str = "keep",
    active: Sequence[bool] | None = None,
) -> dict[str, Any]:
    E = len(records)
    active = [True] * E if active is None else list(active)
    weight = [1.0 if a else 0.0 for a in active]
    n_groups = n_coll = n_coll_eps = n_single = 0
    for members in group_members(records).values():
        members = [i for i in members if active[i]]
        if not members:
            continue
        n_groups += 1
        n_single += len(members) == 1
        outs = [Fraction(records[i]["outcome"]) for i in members]
        equal = max(outs) - min(outs) <= Fraction(tolerance)
        collapsed = equal and (len(members) >= 2 or singletons == "collapsed")
        if collapsed:
            n_coll += 1
            n_coll_eps += len(members)
            if action == "drop":
                for i in members:
                    weight[i] = 0.0
    n_eps = sum(active)
    frac_eps = n_coll_eps / n_eps if n_eps else 0.0
    return {
        "weight": weight,
        "diagnostics": {
            "collapsed_groups": n_coll,
            "collapsed_fraction": n_coll / n_groups if n_groups else 0.0,
            "collapsed_episodes": n_coll_eps,
            "collapsed_episode_fraction": frac_eps,
            "singleton_groups": n_single,
            "dropped_fraction": frac_eps if action == "drop" else 0.0,
        },
    }


# ---------------------------------------------------------------------- replay
def _fields(rec: Record) -> tuple:
    """Step fields other than reward, whether each key field holds integers, component names."""
    keys, fields = {}, set()
    for s in rec["steps"]:
        for name, v in s.items():
            if v is None or name == "reward":
                continue
            fields.add(name)
            if name in ("state", "action", "node", "reference"):
                keys[name] = isinstance(v, int)
    return frozenset(fields), tuple(sorted(keys.items())), tuple(sorted(rec.get("rewards") or {}))


def replay(
    batches: Sequence[Sequence[Record]],
    success_threshold: float = 1.0,
    per_group: int = 1,
    max_groups: int = 1000,
    replay_weight: float = 1.0,
    tolerance: float = 0.0,
) -> list[dict[str, Any]]:
    """Run replay over a sequence of batches from an empty memory; one result per batch:
    {"added": [records], "weight": [E'], "diagnostics": {...}, "memory": {gid: [records]},
    "order": [gid, least recently updated first]}."""
    memory: dict[str, list[Record]] = {}
    updated_at: dict[str, tuple[int, int]] = {}  # gid -> (batch, position of its last success)
    out = []
    for b, records in enumerate(batches):
        # insertion
        taken = {r["episode_id"] for r in records}
        batch_fields = set()
        for r in records:
            batch_fields.add(_fields(r))
        added, incompatible, failed = [], 0, 0
        for gid, members in group_members(records).items():
            outs = [Fraction(records[i]["outcome"]) for i in members]
            if not (max(outs) - min(outs) <= Fraction(tolerance) and max(outs) < Fraction(success_threshold)):
                continue
            failed += 1
            if not memory.get(gid):
                continue
            rec = memory[gid][-1]
            if {_fields(rec)} != batch_fields:
                incompatible += 1
                continue
            new = copy.deepcopy(rec)
            eid, n = f"{rec['episode_id']}#replay{b}", 1
            while eid in taken:
                n += 1
                eid = f"{rec['episode_id']}#replay{b}#{n}"
            taken.add(eid)
            new["episode_id"] = eid
            added.append(new)
        # memory update, episode by episode
        last_success: dict[str, int] = {}
        for pos, rec in enumerate(records):
            if rec["outcome"] >= success_threshold:
                gid = rec["group_id"]
                memory[gid] = (memory.get(gid, []) + [copy.deepcopy(rec)])[-per_group:]
                last_success[gid] = pos
        for gid, pos in last_success.items():  # updated in this batch, at its last success
            updated_at[gid] = (b, pos)
        forgotten = 0
        while len(memory) > max_groups:
            oldest = min(memory, key=lambda g: updated_at[g])
            del memory[oldest], updated_at[oldest]
            forgotten += 1
        out.append({
            "added": added,
            "weight": [1.0] * len(records) + [replay_weight] * len(added),
            "diagnostics": {
                "inserted": len(added),
                "failed_groups": failed,
                "unrepaired_groups": failed - len(added),
                "incompatible": incompatible,
                "remembered_groups": len(memory),
                "remembered_episodes": sum(len(v) for v in memory.values()),
                "forgotten_groups": forgotten,
            },
            "memory": copy.deepcopy(memory),
            "order": sorted(memory, key=lambda g: updated_at[g]),
        })
    return out
