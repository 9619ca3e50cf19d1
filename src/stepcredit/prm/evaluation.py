"""Evaluation of process and outcome reward models (NumPy only).

* ProcessBench-style first-error identification: :func:`predict_first_error`,
  :func:`processbench_f1`;
* pairwise trajectory accuracy by length (Plan-RewardBench-style): :func:`pairwise_accuracy`;
* consistency on contrast pairs: :func:`contrast_consistency`;
* best-of-N selection against unguided sampling: :func:`best_of_n`.

Notation as in :mod:`stepcredit.prm.labels`: E episodes, S steps, ``episode_offsets`` [E+1];
p_t is a model's score of step t (higher = more likely correct). Results are dicts of plain
floats and ints (JSON-ready); a rate over an empty set is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from stepcredit.ops import dense_codes
from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.labels import _check_offsets, _first_flagged, _float_array, _require_finite

__all__ = [
    "best_of_n",
    "contrast_consistency",
    "pairwise_accuracy",
    "predict_first_error",
    "processbench_f1",
]

PLAN_REWARDBENCH_PAPER = (
    "Aligning Agents via Planning: A Benchmark for Trajectory-Level Reward Modeling "
    "(Wang, Hu et al., 2026, arXiv:2604.08178)"
)


def _int_array(fn: str, name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise PRMError(f"{fn}: argument '{name}' must be a 1-D integer array, got shape {a.shape}, dtype {a.dtype}")
    return a.astype(np.int64)


def _mean_or_nan(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


# ---------------------------------------------------------------------- ProcessBench
def predict_first_error(scores, episode_offsets, threshold: float = 0.5) -> np.ndarray:
    """Predicted first erroneous step of each episode: the first step scored below the threshold.

        f̂_e = min{t : p_t < threshold},   f̂_e = −1 if no step of episode e is below it.

    Args:
        scores: [S] step scores p_t (e.g. a PRM's probability that the step is correct), finite.
        episode_offsets: [E+1] CSR offsets.
        threshold: steps scored strictly below it are predicted incorrect.

    Returns:
        [E] int64 in {−1, 0, .., T_e − 1}.

    Reference: ProcessBench: Identifying Process Errors in Mathematical Reasoning (Zheng, Zhang
    et al., 2024, arXiv:2412.06559): a PRM's step predictions are turned into the index of the
    first step predicted incorrect, −1 if none. Differs from official code:
    QwenLM/ProcessBench@04d347e7:code/run_eval_prm_trl.py takes the argmax of a two-class
    head per step, i.e. p_t ≤ 1/2 counts as incorrect (argmax picks class 0 on a tie); here
    the cut is strict (p_t < threshold), so a score of exactly 0.5 is predicted correct.
    """
    fn = "predict_first_error"
    p = _float_array(fn, "scores", scores)
    _require_finite(fn, "scores", p)
    if not math.isfinite(threshold):
        raise PRMError(f"{fn}: argument 'threshold' must be finite, got {threshold!r}")
    offsets = _check_offsets(fn, episode_offsets, p.size)
    return _first_flagged(p < threshold, offsets)


def processbench_f1(pred_first_error, true_first_error) -> dict[str, float]:
    """ProcessBench scores: accuracy on the erroneous and on the correct episodes, and their harmonic mean.

        error_acc   = mean_{e: f_e ≠ −1} 1[f̂_e = f_e]   (exact index of the earliest error),
        correct_acc = mean_{e: f_e = −1} 1[f̂_e = −1]    (no error predicted),
        f1          = 2 · error_acc · correct_acc / (error_acc + correct_acc).

    Edge cases: with no erroneous episode ``error_acc`` is NaN and so is ``f1`` (likewise with
    no correct episode); when both accuracies are 0, ``f1`` is 0 (the limit of the harmonic
    mean), where the official script divides 0 by 0.

    Args:
        pred_first_error: [E] predicted first error indices (−1 = none), e.g. from
            :func:`predict_first_error`.
        true_first_error: [E] ground-truth first error indices (−1 = none), e.g. from
            :func:`stepcredit.prm.labels.first_error`.

    Returns:
        ``{"error_acc", "correct_acc", "f1"}`` as fractions in [0, 1] (the paper reports them
        ×100), plus ``"n_error"`` and ``"n_correct"`` (episode counts).

    Reference: ProcessBench: Identifying Process Errors in Mathematical Reasoning (Zheng, Zhang
    et al., 2024, arXiv:2412.06559): "F1 score is the harmonic mean of accuracy on erroneous and
    correct samples". Verified against QwenLM/ProcessBench@04d347e7:code/run_eval_prm_trl.py
    (``acc1``, ``acc2``, ``f1``). Differs from official code: fractions instead of percentages;
    f1 = 0 instead of 0/0 when both accuracies are 0.
    """
    fn = "processbench_f1"
    pred = _int_array(fn, "pred_first_error", pred_first_error)
    true = _int_array(fn, "true_first_error", true_first_error)
    if pred.shape != true.shape:
        raise PRMError(f"{fn}: arguments 'pred_first_error' {pred.shape} and 'true_first_error' {true.shape} must have the same shape")
    for name, a in (("pred_first_error", pred), ("true_first_error", true)):
        bad = np.flatnonzero(a < -1)
        if bad.size:
            raise PRMError(f"{fn}: argument '{name}' must be >= -1, got {int(a[bad[0]])} at episode {int(bad[0])}")
    erroneous = true != -1
    error_acc = _mean_or_nan((pred == true)[erroneous].astype(np.float64))
    correct_acc = _mean_or_nan((pred == -1)[~erroneous].astype(np.float64))
    if math.isnan(error_acc) or math.isnan(correct_acc):
        f1 = float("nan")
    elif error_acc + correct_acc == 0.0:
        f1 = 0.0
    else:
        f1 = 2.0 * error_acc * correct_acc / (error_acc + correct_acc)
    return {
        "error_acc": error_acc,
        "correct_acc": correct_acc,
        "f1": f1,
        "n_error": int(erroneous.sum()),
        "n_correct": int((~erroneous).sum()),
    }


# ---------------------------------------------------------------------- pairwise accuracy
def _win(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a > b, 1/2 where equal, 0 where a < b."""
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def pairwise_accuracy(
    scores,
    better,
    worse,
    lengths=None,
    *,
    edges: Sequence[float] = (4, 8, 16, 32),
    pair_length: Literal["max", "mean", "better"] = "max",
) -> dict:
    """Accuracy of preferring the better trajectory of each pair, overall and by trajectory length.

        acc = (1/P) Σ_p c_p,   c_p = 1 if s(better_p) > s(worse_p), 1/2 if equal, 0 otherwise.

    A tie counts as a coin flip (1/2): a model that scores everything the same gets 0.5, the
    chance level, never credit for a preference it does not express. Pairs are bucketed by
    their length L_p (``pair_length``: the longer of the two, their mean, or the better
    one's), with bucket k = [edges[k−1], edges[k]) and open ends: m edges give m + 1 buckets
    (−∞, e_0), [e_0, e_1), .., [e_{m−1}, ∞).

    Args:
        scores: [E] the model's trajectory scores, finite.
        better: [P] episode index of the better trajectory of each pair.
        worse: [P] episode index of the worse one.
        lengths: [E] trajectory lengths (e.g. steps or tokens; ``Rollouts.step_counts``); None =
            no length breakdown (one bucket).
        edges: strictly increasing bucket edges.
        pair_length: how a pair's length is taken from its two trajectories.

    Returns:
        ``{"accuracy", "ties", "n_pairs", "buckets"}``: ``ties`` the fraction of tied pairs,
        ``buckets`` a list of ``{"low", "high", "n_pairs", "accuracy"}`` (``low``/``high`` the
        bucket edges, ±inf at the ends; ``accuracy`` NaN for an empty bucket).

    Reference: Aligning Agents via Planning: A Benchmark for Trajectory-Level Reward Modeling
    (Wang, Hu et al., 2026, arXiv:2604.08178), Plan-RewardBench: a "unified pairwise protocol"
    reporting accuracy across trajectory lengths (abstract). Its tie rule and length buckets
    were not verified: the tie = 1/2 rule and the buckets here are our protocol.
    Differs from official code: not released at the time of writing.
    """
    fn = "pairwise_accuracy"
    s = _float_array(fn, "scores", scores)
    _require_finite(fn, "scores", s)
    b, w = _int_array(fn, "better", better), _int_array(fn, "worse", worse)
    if b.shape != w.shape:
        raise PRMError(f"{fn}: arguments 'better' {b.shape} and 'worse' {w.shape} must have the same shape")
    for name, idx in (("better", b), ("worse", w)):
        bad = np.flatnonzero((idx < 0) | (idx >= s.size))
        if bad.size:
            raise PRMError(f"{fn}: argument '{name}' holds episode index {int(idx[bad[0]])} at pair {int(bad[0])}, outside 0..{s.size - 1}")
    if pair_length not in ("max", "mean", "better"):
        raise PRMError(f"{fn}: argument 'pair_length' must be 'max', 'mean' or 'better', got {pair_length!r}")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise PRMError(f"{fn}: argument 'edges' must be finite and strictly increasing, got {list(edges)!r}")
    c = _win(s[b], s[w])
    out = {
        "accuracy": _mean_or_nan(c),
        "ties": _mean_or_nan((s[b] == s[w]).astype(np.float64)),
        "n_pairs": int(c.size),
    }
    if lengths is None:
        out["buckets"] = [{"low": -math.inf, "high": math.inf, "n_pairs": int(c.size), "accuracy": out["accuracy"]}]
        return out
    ln = _float_array(fn, "lengths", lengths)
    if ln.shape != s.shape:
        raise PRMError(f"{fn}: argument 'lengths' must have the shape of 'scores' {s.shape}, got {ln.shape}")
    _require_finite(fn, "lengths", ln)
    if pair_length == "max":
        lp = np.maximum(ln[b], ln[w])
    elif pair_length == "mean":
        lp = (ln[b] + ln[w]) / 2.0
    else:
        lp = ln[b]
    bucket = np.digitize(lp, e)  # k such that e[k-1] <= L < e[k]
    n_buckets = e.size + 1
    count = np.bincount(bucket, minlength=n_buckets)
    total = np.bincount(bucket, weights=c, minlength=n_buckets)
    bounds = np.concatenate(([-math.inf], e, [math.inf]))
    out["buckets"] = [
        {
            "low": float(bounds[k]),
            "high": float(bounds[k + 1]),
            "n_pairs": int(count[k]),
            "accuracy": float(total[k] / count[k]) if count[k] else float("nan"),
        }
        for k in range(n_buckets)
    ]
    return out


# ---------------------------------------------------------------------- contrast pairs
def contrast_consistency(score_aa, score_ab, score_bb, score_ba) -> dict:
    """How often a model ranks each task's own answer above the answer of its contrast task.

    A contrast pair is two lexically similar tasks a, b with different correct answers A, B;
    s(x, Y) is the model's score of task x answered with Y. Per pair p, two comparisons:

        c_p^a = 1[s(a, A) > s(a, B)],   c_p^b = 1[s(b, B) > s(b, A)]   (ties: 1/2 each),

        consistency         = (1/P) Σ_p 1[s(a, A) > s(a, B) and s(b, B) > s(b, A)]
                              (strict: a tie in either comparison makes the pair inconsistent),
        comparison_accuracy = (1/2P) Σ_p (c_p^a + c_p^b).

    A model that ignores the task and scores answers alone can win at most one comparison of a
    pair, so its ``consistency`` is 0 while its ``comparison_accuracy`` can reach 1/2.

    Args:
        score_aa: [P] s(a, A), task a with its own answer.
        score_ab: [P] s(a, B), task a with the contrast task's answer.
        score_bb: [P] s(b, B).
        score_ba: [P] s(b, A).

    Returns:
        ``{"consistency", "comparison_accuracy", "ties", "n_pairs"}``; ``ties`` is the fraction
        of the 2P comparisons that are tied.

    Reference: our definition, after the contrast sets of Evaluating Models' Local Decision
    Boundaries via Contrast Sets (Gardner, Artzi et al., 2020, arXiv:2004.02709), whose
    "contrast consistency" is the fraction of whole contrast sets answered correctly.
    Differs from official code: none (no official code for this protocol).
    """
    fn = "contrast_consistency"
    arrays = []
    for name, x in (("score_aa", score_aa), ("score_ab", score_ab), ("score_bb", score_bb), ("score_ba", score_ba)):
        a = _float_array(fn, name, x)
        _require_finite(fn, name, a)
        arrays.append(a)
    aa, ab, bb, ba = arrays
    if not (aa.shape == ab.shape == bb.shape == ba.shape):
        raise PRMError(f"{fn}: the four score arrays must have the same shape, got {[a.shape for a in arrays]}")
    both = (aa > ab) & (bb > ba)
    comparisons = np.concatenate((_win(aa, ab), _win(bb, ba)))
    ties = np.concatenate((aa == ab, bb == ba)).astype(np.float64)
    return {
        "consistency": _mean_or_nan(both.astype(np.float64)),
        "comparison_accuracy": _mean_or_nan(comparisons),
        "ties": _mean_or_nan(ties),
        "n_pairs": int(aa.size),
    }


# ---------------------------------------------------------------------- best of N
def best_of_n(scores, group, success) -> dict:
    """Success of the top-scored episode of each group, against unguided (random) choice.

    For group g with members M_g, scores s_i and successes y_i, let T_g = argmax-set
    {i ∈ M_g : s_i = max_{j∈M_g} s_j}. Ties are broken uniformly at random, in expectation
    (exactly, no sampling):

        best_of_n = (1/G) Σ_g (1/|T_g|) Σ_{i∈T_g} y_i,
        random    = (1/G) Σ_g (1/|M_g|) Σ_{i∈M_g} y_i   (pick one member uniformly: the
                                                          unguided baseline, i.e. pass@1),
        oracle    = (1/G) Σ_g max_{i∈M_g} y_i            (a perfect verifier; pass@N for 0/1 y).

    Every group counts once, whatever its size.

    Args:
        scores: [E] the model's episode scores (e.g. min or last step score), finite.
        group: [E] group id of each episode (the N candidates of one task share an id).
        success: [E] outcome of each episode (0/1 success, or any finite reward).

    Returns:
        ``{"best_of_n", "random", "oracle", "n_groups", "mean_group_size"}`` (NaN rates and 0
        counts for no episodes).

    Reference: best-of-N reranking as evaluated in Math-Shepherd: Verify and Reinforce LLMs
    Step-by-step without Human Annotations (Wang, Li et al., 2024, arXiv:2312.08935) and Free
    Process Rewards without Process Labels (Yuan, Li et al., 2024, arXiv:2412.01981). The
    exact expectation over ties is ours. Differs from official code: not compared.
    """
    fn = "best_of_n"
    s = _float_array(fn, "scores", scores)
    y = _float_array(fn, "success", success)
    _require_finite(fn, "scores", s)
    _require_finite(fn, "success", y)
    g = np.asarray(group)
    if not (s.shape == y.shape == g.shape):
        raise PRMError(f"{fn}: arguments 'scores' {s.shape}, 'group' {g.shape} and 'success' {y.shape} must have the same shape")
    if s.size == 0:
        nan = float("nan")
        return {"best_of_n": nan, "random": nan, "oracle": nan, "n_groups": 0, "mean_group_size": nan}
    try:
        codes, n_groups = dense_codes(g)
    except Exception as exc:  # pyarrow cannot encode the ids
        raise PRMError(f"{fn}: argument 'group' could not be encoded as group ids ({exc})") from None
    size = np.bincount(codes, minlength=n_groups).astype(np.float64)
    top_score = np.full(n_groups, -np.inf)
    np.maximum.at(top_score, codes, s)
    top = s == top_score[codes]
    n_top = np.bincount(codes, weights=top.astype(np.float64), minlength=n_groups)
    top_success = np.bincount(codes, weights=np.where(top, y, 0.0), minlength=n_groups)
    best_y = np.full(n_groups, -np.inf)
    np.maximum.at(best_y, codes, y)
    return {
        "best_of_n": float(np.mean(top_success / n_top)),
        "random": float(np.mean(np.bincount(codes, weights=y, minlength=n_groups) / size)),
        "oracle": float(np.mean(best_y)),
        "n_groups": int(n_groups),
        "mean_group_size": float(s.size / n_groups),
    }
