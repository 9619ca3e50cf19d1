"""Loop oracles of the reward-model evaluation metrics (stepcredit.prm.evaluation), from their
definitions: loops over episodes, pairs and groups, exact shares with Fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["best_of_n", "contrast", "pairwise", "predict_first_error", "processbench"]


def predict_first_error(scores, offsets, threshold):
    out = []
    for e in range(len(offsets) - 1):
        f = -1
        for t, s in enumerate(range(offsets[e], offsets[e + 1])):
            if scores[s] < threshold:
                f = t
                break
        out.append(f)
    return out


def processbench(pred, true):
    """As QwenLM/ProcessBench's run_eval_prm_trl.py: acc on label != -1 (exact match), acc on label == -1."""
    err = [p == t for p, t in zip(pred, true) if t != -1]
    cor = [p == -1 for p, t in zip(pred, true) if t == -1]
    acc1 = float(Fraction(sum(err), len(err))) if err else math.nan
    acc2 = float(Fraction(sum(cor), len(cor))) if cor else math.nan
    if math.isnan(acc1) or math.isnan(acc2):
        f1 = math.nan
    elif acc1 + acc2 == 0:
        f1 = 0.0
    else:
        f1 = 2 * acc1 * acc2 / (acc1 + acc2)
    return {"error_acc": acc1, "correct_acc": acc2, "f1": f1, "n_error": len(err), "n_correct": len(cor)}


def _credit(a, b):
    return Fraction(1) if a > b else Fraction(1, 2) if a == b else Fraction(0)


def pairwise(scores, better, worse, lengths, edges, pair_length):
    credits = [_credit(scores[b], scores[w]) for b, w in zip(better, worse)]
    out = {
        "accuracy": float(sum(credits, Fraction(0)) / len(credits)) if credits else math.nan,
        "ties": float(Fraction(sum(scores[b] == scores[w] for b, w in zip(better, worse)), len(credits))) if credits else math.nan,
        "n_pairs": len(credits),
    }
    if lengths is None:
        return out
    bounds = [-math.inf, *edges, math.inf]
    buckets = []
    for k in range(len(bounds) - 1):
        members = []
        for p, (b, w) in enumerate(zip(better, worse)):
            if pair_length == "max":
                L = max(lengths[b], lengths[w])
            elif pair_length == "mean":
                L = (lengths[b] + lengths[w]) / 2
            else:
                L = lengths[b]
            if bounds[k] <= L < bounds[k + 1]:
                members.append(credits[p])
        buckets.append({
            "low": bounds[k],
            "high": bounds[k + 1],
            "n_pairs": len(members),
            "accuracy": float(sum(members, Fraction(0)) / len(members)) if members else math.nan,
        })
    out["buckets"] = buckets
    return out


def contrast(aa, ab, bb, ba):
    n = len(aa)
    both = sum(1 for p in range(n) if aa[p] > ab[p] and bb[p] > ba[p])
    comps = [_credit(aa[p], ab[p]) for p in range(n)] + [_credit(bb[p], ba[p]) for p in range(n)]
    ties = sum(1 for p in range(n) if aa[p] == ab[p]) + sum(1 for p in range(n) if bb[p] == ba[p])
    if n == 0:
        return {"consistency": math.nan, "comparison_accuracy": math.nan, "ties": math.nan, "n_pairs": 0}
    return {
        "consistency": float(Fraction(both, n)),
        "comparison_accuracy": float(sum(comps, Fraction(0)) / (2 * n)),
        "ties": float(Fraction(ties, 2 * n)),
        "n_pairs": n,
    }


def best_of_n(scores, group, success):
    """Per group: the expected success of a uniform pick among the top-scored members, of a
    uniform pick among all members, and the best member's success; then the mean over groups."""
    members: dict = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    bon, rnd, orc = [], [], []
    for idx in members.values():
        top = max(scores[i] for i in idx)
        tied = [i for i in idx if scores[i] == top]
        bon.append(sum((Fraction(success[i]) for i in tied), Fraction(0)) / len(tied))
        rnd.append(sum((Fraction(success[i]) for i in idx), Fraction(0)) / len(idx))
        orc.append(Fraction(max(success[i] for i in idx)))
    g = len(members)
    return {
        "best_of_n": float(sum(bon, Fraction(0)) / g),
        "random": float(sum(rnd, Fraction(0)) / g),
        "oracle": float(sum(orc, Fraction(0)) / g),
        "n_groups": g,
    }
