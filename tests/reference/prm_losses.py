"""Loop oracles of the preference and reward-model losses (stepcredit.prm.losses), written again
from the papers' definitions with Python floats, lists and for-loops (no torch, no NumPy).

Every oracle returns the per-item losses as a list and the reduced value as the plain mean
(over the items that count); the tests compare them with the torch versions in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "bce_with_logit",
    "bradley_terry",
    "classification",
    "dpo",
    "implicit_ce",
    "implicit_step_rewards",
    "madpo",
    "madpo_weight",
    "neg_log_sigmoid",
    "regression",
    "tpo",
    "tpo_adaptive",
    "trajectory_dpo",
]


def neg_log_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x}), written so that it cannot overflow."""
    if x >= 0:
        return math.log1p(math.exp(-x))
    return -x + math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


def dpo(lc, lr, rc, rr, beta):
    """ℓ_i = −log σ(β[(lc − rc) − (lr − rr)])."""
    per = [neg_log_sigmoid(beta * ((lc[i] - rc[i]) - (lr[i] - rr[i]))) for i in range(len(lc))]
    return per, mean(per)


def madpo_weight(delta, c_max, c_min, lam, tau):
    """c(|Δ|) = c_min + (c_max − c_min)/(1 + (c_max − 1)/(1 − c_min) e^{λ(|Δ|−τ)});
    w = σ(cΔ)/σ(Δ) if Δ > −τ else 1."""
    if c_max == 1.0 and c_min == 1.0:
        return 1.0
    if delta <= -tau:
        return 1.0
    k = (c_max - 1.0) / (1.0 - c_min)
    expo = lam * (abs(delta) - tau)
    if expo > 700:  # the fraction underflows to 0: c = c_min
        c = c_min
    else:
        c = c_min + (c_max - c_min) / (1.0 + k * math.exp(expo))
    return math.exp(neg_log_sigmoid(delta) - neg_log_sigmoid(c * delta))


def madpo(lc, lr, rc, rr, margin, beta, c_max, c_min, lam, tau):
    per = []
    for i in range(len(lc)):
        w = madpo_weight(margin[i], c_max, c_min, lam, tau)
        per.append(w * neg_log_sigmoid(beta * ((lc[i] - rc[i]) - (lr[i] - rr[i]))))
    return per, mean(per)


def _rank_desc(values):
    """1-based ranks, highest first, ties by position."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    rank = [0] * len(values)
    for r, i in enumerate(order, start=1):
        rank[i] = r
    return rank


def tpo(logps, ref_logps, rewards, mask, beta, variant):
    """Per list: the members, their log-ratios s and rewards y, then the variant's sum over pairs."""
    per, used = [], []
    for b in range(len(logps)):
        members = [i for i in range(len(logps[b])) if mask[b][i]]
        s = {i: logps[b][i] - ref_logps[b][i] for i in members}
        y = {i: rewards[b][i] for i in members}
        if variant == "code":
            n = len(members)
            if n < 2:
                per.append(0.0)
                used.append(False)
                continue
            total = []
            for i in members:
                for j in members:
                    d = y[i] - y[j]
                    sign = 1.0 if d > 0 else (-1.0 if d < 0 else 0.0)
                    total.append(neg_log_sigmoid((s[i] - s[j]) * sign))
            inner = math.fsum(total) / (n * (n - 1))
            per.append(neg_log_sigmoid(beta * inner))
            used.append(True)
            continue
        pairs = [(i, j) for i in members for j in members if y[i] > y[j]]
        if not pairs:
            per.append(0.0)
            used.append(False)
            continue
        if variant == "pairwise":
            weights = {p: 1.0 for p in pairs}
        else:
            ranks = _rank_desc([s[i] for i in members])
            rank = {i: ranks[k] for k, i in enumerate(members)}
            gain = {i: 2.0 ** y[i] - 1.0 for i in members}
            inv_d = {i: 1.0 / math.log2(1.0 + rank[i]) for i in members}
            weights = {(i, j): abs(gain[i] - gain[j]) * abs(inv_d[i] - inv_d[j]) for (i, j) in pairs}
        total = math.fsum(weights.values())
        if total == 0.0:  # λ weights that all round to 0 (rewards 1e-45 apart): left out
            per.append(0.0)
            used.append(False)
            continue
        num = math.fsum(weights[(i, j)] * neg_log_sigmoid(beta * (s[i] - s[j])) for (i, j) in pairs)
        per.append(num / total)
        used.append(True)
    kept = [p for p, u in zip(per, used) if u]
    return per, mean(kept)


def tpo_adaptive(token_logratio, token_step, hidden):
    """s_n = Σ_k w_{n,k} ρ̄_{n,k} / Σ_k w_{n,k}, w = 1 + cos(h̄_{n,k}, h̄_{0,k}) where both have step k."""
    out = []
    for b in range(len(token_logratio)):
        def step_means(n):
            rho, hid = {}, {}
            for t, k in enumerate(token_step[b][n]):
                if k < 0:
                    continue
                rho.setdefault(k, []).append(token_logratio[b][n][t])
                hid.setdefault(k, []).append(hidden[b][n][t])
            rho_bar = {k: math.fsum(v) / len(v) for k, v in rho.items()}
            h_bar = {k: [math.fsum(col) / len(v) for col in zip(*v)] for k, v in hid.items()}
            return rho_bar, h_bar

        _, ref_h = step_means(0)
        row = []
        for n in range(len(token_logratio[b])):
            rho_bar, h_bar = step_means(n)
            num, den = [], []
            for k in rho_bar:
                if k not in ref_h:
                    continue
                a, r = h_bar[k], ref_h[k]
                na = max(math.sqrt(math.fsum(x * x for x in a)), 1e-8)
                nr = max(math.sqrt(math.fsum(x * x for x in r)), 1e-8)
                cos = math.fsum(x * z for x, z in zip(a, r)) / (na * nr)
                w = 1.0 + cos
                num.append(w * rho_bar[k])
                den.append(w)
            total = math.fsum(den)
            row.append(math.fsum(num) / total if total > 0 else 0.0)
        out.append(row)
    return out


def bradley_terry(sc, sr):
    per = [neg_log_sigmoid(sc[i] - sr[i]) for i in range(len(sc))]
    return per, mean(per)


def regression(pred, label, mask):
    per = [(pred[i] - label[i]) ** 2 if mask[i] else 0.0 for i in range(len(pred))]
    kept = [per[i] for i in range(len(pred)) if mask[i]]
    return per, (math.fsum(kept) / len(kept) if kept else 0.0)


def bce_with_logit(z, y):
    """−[y log σ(z) + (1 − y) log(1 − σ(z))] = y·(−log σ(z)) + (1 − y)·(−log σ(−z))."""
    return y * neg_log_sigmoid(z) + (1.0 - y) * neg_log_sigmoid(-z)


def classification(logit, label, mask):
    per = [bce_with_logit(logit[i], label[i]) if mask[i] else 0.0 for i in range(len(logit))]
    kept = [per[i] for i in range(len(logit)) if mask[i]]
    return per, (math.fsum(kept) / len(kept) if kept else 0.0)


def implicit_step_rewards(token_logratio, offsets, beta):
    return [beta * math.fsum(token_logratio[offsets[t]:offsets[t + 1]]) for t in range(len(offsets) - 1)]


def implicit_ce(token_logratios, outcome, beta):
    """r = β Σ_tokens log-ratio; ℓ = −[l log σ(r) + (1 − l) log(1 − σ(r))]."""
    per = [bce_with_logit(beta * math.fsum(row), outcome[i]) for i, row in enumerate(token_logratios)]
    return per, mean(per)


def trajectory_dpo(step_logratio, offsets, preferred, dispreferred, beta, aggregate):
    q = []
    for e in range(len(offsets) - 1):
        steps = step_logratio[offsets[e]:offsets[e + 1]]
        total = math.fsum(steps)
        q.append(beta * (total if aggregate == "sum" else total / len(steps)))
    per = [neg_log_sigmoid(q[i] - q[j]) for i, j in zip(preferred, dispreferred)]
    return per, mean(per)
