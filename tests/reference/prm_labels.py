"""Loop oracles of the step-label helpers (stepcredit.prm.labels), from their definitions, with
plain lists, dicts and for-loops over episodes, steps and votes; counts and shares exactly with
Fractions.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["aggregate", "first_error", "hard", "pairs", "soft"]


def first_error(step_correct, offsets):
    out = []
    for e in range(len(offsets) - 1):
        f = -1
        for t, s in enumerate(range(offsets[e], offsets[e + 1])):
            if not step_correct[s]:
                f = t
                break
        out.append(f)
    return out


def aggregate(votes, mask, method, tie):
    """Per step: count the present hard votes (v > 1/2), then the label and the statistics."""
    labels, n_votes, rated = [], [], []
    for s, row in enumerate(votes):
        present = [v for k, v in enumerate(row) if mask[s][k]]
        pos = sum(1 for v in present if v > 0.5)
        neg = len(present) - pos
        if method == "majority":
            label = 1.0 if pos > neg else 0.0 if pos < neg else {"zero": 0.0, "half": 0.5, "one": 1.0}[tie]
        elif method == "all":
            label = 1.0 if pos == len(present) else 0.0
        else:
            label = float(sum(Fraction(v) for v in present) / len(present))
        labels.append(label)
        n_votes.append(len(present))
        if len(present) >= 2:
            rated.append((pos, neg))
    if not rated:
        return labels, n_votes, None, None, None, 0
    agree = []
    for pos, neg in rated:
        n = pos + neg
        agree_pairs = 0
        for i in range(n):  # count ordered pairs of votes that agree, one by one
            for j in range(n):
                if i != j and ((i < pos) == (j < pos)):
                    agree_pairs += 1
        agree.append(Fraction(agree_pairs, n * (n - 1)))
    p_bar = sum(agree, Fraction(0)) / len(agree)
    unanimous = Fraction(sum(1 for pos, neg in rated if pos == 0 or neg == 0), len(rated))
    total_pos = sum(pos for pos, _ in rated)
    total = sum(pos + neg for pos, neg in rated)
    if total_pos in (0, total):
        kappa = None
    else:
        p = Fraction(total_pos, total)
        p_e = p * p + (1 - p) * (1 - p)
        kappa = float((p_bar - p_e) / (1 - p_e))
    return labels, n_votes, float(p_bar), float(unanimous), kappa, len(rated)


def soft(n_correct, n_rollouts):
    return [float(Fraction(int(k), int(n))) for k, n in zip(n_correct, n_rollouts)]


def hard(soft_values, threshold):
    return [1.0 if v > threshold else 0.0 for v in soft_values]


def pairs(outcome, group, pairing, threshold):
    """Groups in order of first appearance; within a group every (i, j) in input order."""
    members: dict = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    out = []
    for g, idx in members.items():
        for i in idx:
            for j in idx:
                if pairing == "success":
                    ok = outcome[i] > threshold and not outcome[j] > threshold
                else:
                    ok = outcome[i] > outcome[j]
                if ok:
                    out.append((i, j))
    return out
