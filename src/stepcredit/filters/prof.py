"""PROF: the PRocess cOnsistency Filter (Ye et al. 2025), a credit filter.

Notation: a group (the n rollouts of one prompt) holds episodes i with outcome R_i, correctness
o_i = 1[R_i ≥ θ] (θ = ``correct_threshold``), sign s_i = 2o_i − 1 ∈ {−1, +1}, H_i steps with
process (PRM) scores v_{i,1..H_i} (the step field ``process``) and their mean
v̄_i = (1/H_i) Σ_h v_{i,h}; v̄_B is the mean of every step score of the batch; the length flag is
b_i = 1[H_i < H_min or H_i > H_max]; λ is the length penalty. n_+ / n_− count the group's correct
/ incorrect episodes, n = n_+ + n_−.

PROF uses the PRM only to choose which rollouts are trained on: per group it removes the correct
rollouts whose process scores support them least and the incorrect ones whose process scores
look best, in numbers that keep the correct/incorrect balance; the kept rollouts are then
trained with plain GRPO on the outcome (the pipeline re-runs the estimator on them).

Episodes that an earlier filter dropped (``credit.episode_weight`` 0) take no part: they are
not counted in n_+, n_−, v̄_B, and keep weight 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.data.hashing import hash_keys, splitmix64
from stepcredit.filters.registry import FilterError, Filtered, register_filter

__all__ = ["prof"]

PROF_PAPER = (
    "Beyond Correctness: Harmonizing Process and Outcome Rewards through RL Training "
    "(Ye, Yu, Zhang, Chen, Sadagopan, Huang, Zhang, Beniwal, 2025, arXiv:2509.03403)"
)

_U64 = (1 << 64) - 1


def active_mask(ro: Rollouts, credit: Credit) -> np.ndarray:
    """[E] bool: the episodes an earlier filter kept (``credit.episode_weight`` > 0; all when None)."""
    w = credit.episode_weight
    if w is None:
        return np.ones(ro.n_episodes, dtype=bool)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (ro.n_episodes,):
        raise ValueError(f"credit.episode_weight has shape {w.shape}, the rollouts have E={ro.n_episodes} episodes")
    return w > 0


def episode_mean(values: np.ndarray, ro: Rollouts) -> np.ndarray:
    """[E] mean of a [S] step column over each episode's steps, in float64:
    v̄_i = (((x_(1) + x_(2)) + x_(3)) + ...) / H_i, the episode's values x_(1) ≤ x_(2) ≤ ...
    summed left to right in ascending order.

    Summing sorted values makes the mean a function of the multiset of scores: two episodes
    with the same scores in any order get bit-identical means, so an exact tie stays a tie.
    The loop runs over the step position (at most the longest episode), vectorised across the
    episodes that are that long.
    """
    E = ro.n_episodes
    sums = np.zeros(E)
    if E == 0:
        return sums
    counts = ro.step_counts
    sv = values[np.lexsort((values, ro.step_episode))]  # episodes stay in place, values ascend
    by_len = np.argsort(-counts, kind="stable")  # longest first: the episodes with a step t are a prefix
    start = ro.episode_offsets[:-1][by_len]
    length = counts[by_len]
    acc = np.zeros(E)
    alive = np.searchsorted(-length, -np.arange(int(length[0])), side="left")  # count with length > t
    for t, m in enumerate(alive):
        acc[:m] += sv[start[:m] + t]
    sums[by_len] = acc
    return sums / counts


def random_keys(ro: Rollouts, seed: int) -> np.ndarray:
    """[E] uint64 pseudo-random key of each episode: splitmix64(hash(episode_id) XOR splitmix64(seed)).

    A function of the episode's id and the seed only: deterministic, independent of the order
    of the episodes, and different from batch to batch (new ids).
    """
    s = splitmix64(np.array([seed & _U64], dtype=np.uint64))[0]
    return splitmix64(hash_keys(ro.episode_id) ^ s)


@register_filter(paper=PROF_PAPER, requires=("process",))
def prof(
    ro: Rollouts,
    credit: Credit,
    *,
    remove: int = 4,
    correct_threshold: float = 1.0,
    length_penalty: float = 10.0,
    min_steps: int = 2,
    max_steps: int = 30,
    score: Literal["code", "paper"] = "code",
    variant: Literal["both", "correct"] = "both",
    seed: int = 0,
) -> Filtered:
    """PROF: per group, drop the correct rollouts with the weakest and the incorrect ones with the strongest process scores.

    Consistency score (``score="code"``, the official code):
        c_i = (1/H_i) Σ_h 2 (v_{i,h} − v̄_B) s_i − λ b_i  =  2 s_i (v̄_i − v̄_B) − λ b_i;
    ``score="paper"`` (the paper's form as a secondary summary gives it; not verified in the
    paper itself):
        c_i = s_i (v̄_i − λ b_i).
    Per group, with k = min(``remove``, n) episodes to remove:
        k_+ = min(k, round((n_+ − n_− + k) / 2))   (round half to even, as Python's round);
        if k_+ > 0: remove the r_+ = min(k_+, n_+) correct episodes with the lowest c, then the
        r_− = k − r_+ incorrect episodes with the lowest c; else remove the k incorrect episodes
        with the lowest c.
    The kept group has n_+ − r_+ correct and n_− − r_− incorrect episodes, as balanced as k
    allows. Since c is sign-flipped for incorrect episodes, "lowest c" there means the highest
    process scores: wrong answers whose reasoning the PRM rates well are removed.
    ``variant="correct"`` (the official ``prof_grpo_correct``) ranks only the correct episodes by
    c and removes the r_− incorrect ones at random: the episodes with the smallest key
    splitmix64(hash(episode_id) ⊕ splitmix64(seed)), deterministic for a given seed and ids.

    Which episodes are removed depends on c only through its order within one group and one
    correctness class. There, the code form's batch centring −2 s_i v̄_B is a constant and its
    factor 2 a positive scale, so the code form orders like κ_i = s_i v̄_i − (λ/2) b_i and the
    paper form like κ_i = s_i (v̄_i − λ b_i): the two agree exactly when no episode of the class
    is length-flagged (or λ = 0), and differ only through the length penalty, which for correct
    episodes acts at half strength in the code form (relative to the PRM spread), and for
    incorrect episodes points the other way (the code removes a length-flagged wrong answer
    first, the paper form keeps it).

    The ranking uses κ_i in float64, with v̄_i the left-to-right sum of the episode's scores in
    ascending order divided by H_i (episodes with the same scores in any order tie exactly); two
    scores closer than float rounding may rank either way. Ties (equal κ, or equal random keys)
    are broken by episode order: the earlier episode is removed first.

    A group of at most ``remove`` episodes is removed entirely (k = n): use groups larger than
    ``remove`` (the official runs: n = 8, remove 4).

    Args:
        ro: rollouts with the step field ``process`` (PRM scores, e.g. in [0, 1]).
        credit: the estimator's credit; only ``episode_weight`` is read (episodes with weight 0
            are ignored).
        remove: number of episodes removed per group (the official ``prof_filter``), >= 0.
        correct_threshold: θ; an episode is correct when its outcome R ≥ θ.
        length_penalty: λ >= 0, subtracted for a step count outside [min_steps, max_steps].
        min_steps: H_min; fewer steps are penalised.
        max_steps: H_max >= min_steps; more steps are penalised.
        score: ``"code"`` (official code, centred on the batch mean, ×2) or ``"paper"``.
        variant: ``"both"`` (rank correct and incorrect) or ``"correct"`` (rank the correct
            ones; remove incorrect ones at random).
        seed: seed of the random removal of ``variant="correct"``.

    Returns:
        Filtered with weight [E] in {0, 1} (1 kept); diagnostics: ``dropped_fraction`` (of the
        episodes considered), ``dropped_correct``, ``dropped_incorrect``, ``kept_correct``,
        ``kept_incorrect``, ``length_penalized`` (episodes with b_i = 1), ``emptied_groups``
        (groups with no episode left).

    Reference: Beyond Correctness: Harmonizing Process and Outcome Rewards through RL Training
    (Ye, Yu, Zhang, Chen, Sadagopan, Huang, Zhang, Beniwal, 2025, arXiv:2509.03403): "retains
    correct responses with higher averaged process values and incorrect responses with lower
    averaged process values, while maintaining positive/negative training sample balance"
    (abstract). Defaults from the official run script (n = 8, prof_filter = 4,
    len_step_reward_coef = 10, max_step = 30).

    Differs from official code: (amazon-science/PROF-GRPO@8164ec23,
    prof_grpo/prof_grpo_both/prof_ray_trainer.py: compute_verify_step_level_score,
    filter_trajectories, as read for the project's notes; not re-read here) H_i is the
    episode's step count (the code counts the PRM's "\\n\\n"-separated segments); groups may
    have any size (the code's have exactly n); ties are broken by episode order; the random
    removal of the "correct" variant uses the hash above, not the code's random generator; the
    code then truncates the batch to a multiple of the GPU count (not done here).
    """
    who = "filter 'prof'"
    if remove < 0:
        raise FilterError(f"{who}: remove={remove} must be >= 0 (episodes removed per group)")
    if length_penalty < 0:
        raise FilterError(f"{who}: length_penalty={length_penalty} must be >= 0")
    if min_steps < 0:
        raise FilterError(f"{who}: min_steps={min_steps} must be >= 0")
    if max_steps < min_steps:
        raise FilterError(f"{who}: max_steps={max_steps} must be >= min_steps={min_steps}")
    process = ro.column("process", by=who)
    active = active_mask(ro, credit)
    weight = active.astype(np.float64)
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return Filtered(weight, diagnostics=_diagnostics(0, 0, 0, 0, 0, 0, 0))

    correct = ro.outcome[idx] >= correct_threshold
    sign = np.where(correct, 1.0, -1.0)
    H = ro.step_counts[idx]
    flagged = (H < min_steps) | (H > max_steps)
    mean = episode_mean(process, ro)[idx]
    # κ: orders like c within one (group, class); see the docstring
    if score == "code":
        key = sign * mean - (0.5 * length_penalty) * flagged
    else:
        key = sign * (mean - length_penalty * flagged)

    codes = ro.episode_group[idx]
    G = ro.n_groups
    n_pos = np.bincount(codes, weights=correct.astype(np.float64), minlength=G).astype(np.int64)
    n = np.bincount(codes, minlength=G)
    n_neg = n - n_pos
    k = np.minimum(remove, n)
    k_pos = np.minimum(k, np.rint((n_pos - n_neg + k) / 2.0).astype(np.int64))  # rint: half to even
    r_pos = np.where(k_pos > 0, np.minimum(k_pos, n_pos), 0)
    r_neg = k - r_pos

    cls = (~correct).astype(np.int64)  # 0 correct, 1 incorrect
    if variant == "correct":
        rand = random_keys(ro, seed)[idx]
        rank_key = np.where(correct, key, 0.0)
        rand_key = np.where(correct, np.uint64(0), rand)
        order = np.lexsort((np.arange(idx.size), rand_key, rank_key, cls, codes))
    else:
        order = np.lexsort((np.arange(idx.size), key, cls, codes))
    seg = (codes * 2 + cls)[order]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    seg_start = np.repeat(starts, np.diff(np.r_[starts, seg.size]))
    rank = np.empty(idx.size, dtype=np.int64)
    rank[order] = np.arange(idx.size) - seg_start
    quota = np.where(correct, r_pos[codes], r_neg[codes])
    removed = rank < quota

    weight[idx[removed]] = 0.0
    kept_per_group = np.bincount(codes, weights=(~removed).astype(np.float64), minlength=G)
    emptied = int(np.sum((n > 0) & (kept_per_group == 0)))
    return Filtered(
        weight,
        diagnostics=_diagnostics(
            idx.size,
            int(np.sum(removed & correct)),
            int(np.sum(removed & ~correct)),
            int(np.sum(~removed & correct)),
            int(np.sum(~removed & ~correct)),
            int(flagged.sum()),
            emptied,
        ),
    )


def _diagnostics(considered, dropped_pos, dropped_neg, kept_pos, kept_neg, flagged, emptied) -> dict:
    dropped = dropped_pos + dropped_neg
    return {
        "dropped_fraction": dropped / considered if considered else 0.0,
        "dropped_correct": dropped_pos,
        "dropped_incorrect": dropped_neg,
        "kept_correct": kept_pos,
        "kept_incorrect": kept_neg,
        "length_penalized": flagged,
        "emptied_groups": emptied,
    }
