"""Step labels for process reward models: first errors, aggregated verifications, Monte-Carlo
estimation, and preference pairs (NumPy only).

Notation: a batch holds E episodes of S steps in all, episode e owning the steps
``episode_offsets[e]:episode_offsets[e+1]`` (at least one each); t is the position of a step
inside its episode (0-based). A step label y_t ∈ [0, 1] says how likely step t is correct
(1 = correct). A *first error* is the position of the first incorrect step of an episode, −1
when every step is correct (the ProcessBench convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stepcredit.ops import dense_codes
from stepcredit.prm.feature_model import PRMError

__all__ = [
    "Aggregation",
    "PreferencePairs",
    "aggregate_verifications",
    "first_error",
    "hard_labels",
    "preference_pairs",
    "soft_labels",
]

MATH_SHEPHERD_PAPER = (
    "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations "
    "(Wang, Li et al., 2024, arXiv:2312.08935)"
)
SPARK_PAPER = (
    "SPARK: Stepwise Process-Aware Rewards for Reference-Free Reinforcement Learning "
    "(Rahman, Gorantla et al., 2025, arXiv:2512.03244)"
)
PROCESSBENCH_PAPER = (
    "ProcessBench: Identifying Process Errors in Mathematical Reasoning "
    "(Zheng, Zhang et al., 2024, arXiv:2412.06559)"
)
OPRL_PAPER = (
    "Online Process Reward Learning for Agentic Reinforcement Learning "
    "(Liu, Wang et al., 2025, arXiv:2509.19199)"
)


# ---------------------------------------------------------------------- shared checks
def _float_array(fn: str, name: str, x, ndim: int = 1) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise PRMError(f"{fn}: argument '{name}' must be numeric, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise PRMError(f"{fn}: argument '{name}' must be {ndim}-D, got shape {a.shape}")
    return a.astype(np.float64)


def _require_finite(fn: str, name: str, a: np.ndarray, where: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(a) if where is None else (~np.isfinite(a) & where)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise PRMError(f"{fn}: argument '{name}' has a non-finite value at index {idx if len(idx) > 1 else idx[0]}")


def _check_offsets(fn: str, offsets, n_steps: int, name: str = "episode_offsets") -> np.ndarray:
    """[E+1] int64 CSR offsets: 0 first, n_steps last, every episode at least one step."""
    a = np.asarray(offsets)
    if a.ndim != 1 or a.size < 1 or not np.issubdtype(a.dtype, np.integer):
        raise PRMError(f"{fn}: argument '{name}' must be a 1-D integer array [E+1], got shape {a.shape}, dtype {a.dtype}")
    a = a.astype(np.int64)
    if a[0] != 0:
        raise PRMError(f"{fn}: argument '{name}' must start at 0, got {a[0]}")
    if a[-1] != n_steps:
        raise PRMError(f"{fn}: argument '{name}' must end at the number of steps {n_steps}, got {a[-1]}")
    empty = np.flatnonzero(np.diff(a) < 1)
    if empty.size:
        raise PRMError(f"{fn}: argument '{name}': episode {int(empty[0])} has no steps (offsets must increase strictly)")
    return a


def _first_flagged(flag: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[E] position (within its episode) of the first True of ``flag`` [S], −1 if none."""
    n_steps = flag.size
    if offsets.size == 1:
        return np.empty(0, dtype=np.int64)
    position = np.arange(n_steps, dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    first = np.minimum.reduceat(np.where(flag, position, n_steps), offsets[:-1])
    return np.where(first == n_steps, -1, first).astype(np.int64)


# ---------------------------------------------------------------------- first errors
def first_error(step_correct, episode_offsets) -> np.ndarray:
    """Position of the first incorrect step of each episode, −1 if every step is correct.

        f_e = min{t : step t of episode e is incorrect},   f_e = −1 if there is none.

    Args:
        step_correct: [S] bool (or 0/1) ground-truth correctness of each step.
        episode_offsets: [E+1] CSR offsets (every episode at least one step).

    Returns:
        [E] int64 in {−1, 0, .., T_e − 1}.

    Reference: the label convention of ProcessBench: Identifying Process Errors in Mathematical
    Reasoning (Zheng, Zhang et al., 2024, arXiv:2412.06559): "label" is the index of the
    earliest erroneous step, −1 when all steps are correct (QwenLM/ProcessBench evaluation
    code). Differs from official code: none.
    """
    fn = "first_error"
    correct = _float_array(fn, "step_correct", step_correct)
    bad = np.flatnonzero((correct != 0.0) & (correct != 1.0))
    if bad.size:
        raise PRMError(f"{fn}: argument 'step_correct' must be bool or 0/1, got {float(correct[bad[0]])!r} at step {int(bad[0])}")
    offsets = _check_offsets(fn, episode_offsets, correct.size)
    return _first_flagged(correct == 0.0, offsets)


# ---------------------------------------------------------------------- verifications
@dataclass(frozen=True)
class Aggregation:
    """What :func:`aggregate_verifications` returns.

    Attributes:
        labels: [S] float64 aggregated step labels in [0, 1].
        n_votes: [S] int64 number of votes present for each step.
        mean_pairwise_agreement: P̄, the mean over rated steps (≥ 2 votes) of the fraction of
            ordered vote pairs that agree; NaN without rated steps.
        fraction_unanimous: fraction of rated steps whose hard votes all agree; NaN without
            rated steps.
        fleiss_kappa: κ = (P̄ − P̄_e) / (1 − P̄_e) over rated steps; NaN without rated steps or
            when every vote falls in one class (P̄_e = 1, κ undefined).
        n_rated: number of rated steps (≥ 2 votes), the steps the statistics are over.
    """

    labels: np.ndarray
    n_votes: np.ndarray
    mean_pairwise_agreement: float
    fraction_unanimous: float
    fleiss_kappa: float
    n_rated: int


def aggregate_verifications(
    votes,
    mask=None,
    *,
    method: Literal["majority", "mean", "all"] = "majority",
    tie: Literal["zero", "half", "one"] = "zero",
) -> Aggregation:
    """Combine K independent verifications of each step into one label, with agreement statistics.

    Each verifier k gives step s a vote v_sk ∈ [0, 1] (1 = the step is correct; a hard vote
    is 0 or 1, a soft vote a verifier's probability); ``mask`` marks the votes present. The
    hard vote is h_sk = 1[v_sk > 1/2]. With n_s votes present, of which n_s⁺ are hard 1 and
    n_s⁻ = n_s − n_s⁺ hard 0:

        majority:  y_s = 1 if n_s⁺ > n_s⁻,  0 if n_s⁺ < n_s⁻,  the ``tie`` value otherwise
                   (``"zero"`` 0, ``"half"`` 0.5, ``"one"`` 1);
        mean:      y_s = (1/n_s) Σ_k v_sk   (a soft label; soft votes enter as they are);
        all:       y_s = 1[n_s⁺ = n_s]      (correct only if every verifier says so).

    The default tie rule 0 is the conservative one: a step half the verifiers reject is not
    taught as correct. Agreement statistics over the rated steps R (n_s ≥ 2) on the hard votes:

        P_s  = [n_s⁺(n_s⁺ − 1) + n_s⁻(n_s⁻ − 1)] / [n_s(n_s − 1)]   (agreeing ordered pairs),
        P̄   = (1/|R|) Σ_{s∈R} P_s,                                   ``mean_pairwise_agreement``
        unanimous = (1/|R|) Σ_{s∈R} 1[n_s⁺ = n_s or n_s⁻ = n_s],      ``fraction_unanimous``
        p⁺ = Σ_R n_s⁺ / Σ_R n_s,   P̄_e = (p⁺)² + (1 − p⁺)²,   κ = (P̄ − P̄_e) / (1 − P̄_e).

    κ is Fleiss' kappa (Fleiss 1971, "Measuring nominal scale agreement among many raters",
    Psychological Bulletin 76(5)) with two categories; with a different number of votes per
    step we keep the same formulas (P_s per step, category shares over all votes), which is
    Fleiss' statistic exactly when every step has the same number of votes.

    Args:
        votes: [S, K] votes in [0, 1] (bool or 0/1 for hard votes); absent entries may hold
            anything (NaN included).
        mask: [S, K] bool, True where a vote is present; None = all present.
        method: ``"majority"``, ``"mean"`` or ``"all"``.
        tie: the label of a majority tie (an even split): ``"zero"``, ``"half"`` or ``"one"``.

    Returns:
        :class:`Aggregation`.

    Raises:
        PRMError: bad shapes, a present vote outside [0, 1], or a step without any vote.

    Reference: SPARK: Stepwise Process-Aware Rewards for Reference-Free Reinforcement Learning
    (Rahman, Gorantla et al., 2025, arXiv:2512.03244) trains PRMs on "multiple independent
    verifications" aggregated at the step level (abstract); its exact rule (vote count, tie
    handling) was not verified: this is our generic aggregation, not SPARK's code.
    Differs from official code: not compared (none read).
    """
    fn = "aggregate_verifications"
    if method not in ("majority", "mean", "all"):
        raise PRMError(f"{fn}: argument 'method' must be 'majority', 'mean' or 'all', got {method!r}")
    if tie not in ("zero", "half", "one"):
        raise PRMError(f"{fn}: argument 'tie' must be 'zero', 'half' or 'one', got {tie!r}")
    v = _float_array(fn, "votes", votes, ndim=2)
    if mask is None:
        present = np.ones(v.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != v.shape:
            raise PRMError(f"{fn}: argument 'mask' must have the shape of 'votes' {v.shape}, got {m.shape}")
        if m.dtype != np.bool_:
            raise PRMError(f"{fn}: argument 'mask' must be bool, got dtype {m.dtype}")
        present = m
    out_of_range = present & ~((v >= 0.0) & (v <= 1.0))  # NaN fails both comparisons
    if out_of_range.any():
        s, k = (int(i) for i in np.argwhere(out_of_range)[0])
        raise PRMError(f"{fn}: argument 'votes' must lie in [0, 1] where present, got {float(v[s, k])!r} at step {s}, vote {k}")
    n = present.sum(axis=1).astype(np.int64)
    empty = np.flatnonzero(n == 0)
    if empty.size:
        raise PRMError(f"{fn}: step {int(empty[0])} has no vote (every step needs at least one present vote)")
    pos = (present & (np.where(present, v, 0.0) > 0.5)).sum(axis=1).astype(np.int64)
    neg = n - pos
    if method == "majority":
        tie_value = {"zero": 0.0, "half": 0.5, "one": 1.0}[tie]
        labels = np.where(pos > neg, 1.0, np.where(pos < neg, 0.0, tie_value))
    elif method == "all":
        labels = (pos == n).astype(np.float64)
    else:
        labels = np.where(present, v, 0.0).sum(axis=1) / n
    rated = n >= 2
    n_rated = int(rated.sum())
    if n_rated == 0:
        agreement = unanimous = kappa = float("nan")
    else:
        nr, pr, qr = n[rated], pos[rated], neg[rated]
        p_s = (pr * (pr - 1) + qr * (qr - 1)) / (nr * (nr - 1))
        agreement = float(p_s.mean())
        unanimous = float(((pr == nr) | (qr == nr)).mean())
        total_pos, total = int(pr.sum()), int(nr.sum())
        if total_pos in (0, total):
            kappa = float("nan")
        else:
            p_plus = total_pos / total
            p_e = p_plus * p_plus + (1.0 - p_plus) * (1.0 - p_plus)
            kappa = float((agreement - p_e) / (1.0 - p_e))
    labels.setflags(write=False)
    n.setflags(write=False)
    return Aggregation(labels, n, agreement, unanimous, kappa, n_rated)


# ---------------------------------------------------------------------- Monte-Carlo labels
def soft_labels(n_correct, n_rollouts) -> np.ndarray:
    """Math-Shepherd soft estimation (SE): the fraction of continuations that reach a correct answer.

        y_t^SE = (1/N) Σ_{j=1..N} 1[a_j = a*] = n_correct_t / N_t,

    where from step t the completer samples N_t continuations with final answers a_j and a* is
    the gold answer.

    Args:
        n_correct: [S] number of continuations from each step that reached a correct answer.
        n_rollouts: [S] (or a scalar) number N of continuations from each step (≥ 1).

    Returns:
        [S] float64 in [0, 1].

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935), soft estimation (SE). Differs from official
    code: none.
    """
    fn = "soft_labels"
    k = _float_array(fn, "n_correct", n_correct)
    n = np.asarray(n_rollouts)
    if n.ndim not in (0, 1) or (n.ndim == 1 and n.shape != k.shape):
        raise PRMError(f"{fn}: argument 'n_rollouts' must be a scalar or have the shape of 'n_correct' {k.shape}, got {n.shape}")
    n = np.broadcast_to(_float_array(fn, "n_rollouts", n, ndim=n.ndim), k.shape)
    _require_finite(fn, "n_correct", k)
    _require_finite(fn, "n_rollouts", n)
    bad = np.flatnonzero((n < 1) | (n != np.round(n)))
    if bad.size:
        raise PRMError(f"{fn}: argument 'n_rollouts' must be an integer >= 1, got {float(n[bad[0]])!r} at step {int(bad[0])}")
    bad = np.flatnonzero((k < 0) | (k > n) | (k != np.round(k)))
    if bad.size:
        raise PRMError(
            f"{fn}: argument 'n_correct' must be an integer in [0, n_rollouts], got {float(k[bad[0]])!r} "
            f"(n_rollouts {float(n[bad[0]])!r}) at step {int(bad[0])}"
        )
    return k / n


def hard_labels(soft, threshold: float = 0.0) -> np.ndarray:
    """Hard step labels from soft ones: 1 where the soft label exceeds the threshold.

        y_t = 1[ŷ_t > threshold].

    With the default threshold 0 this is Math-Shepherd's hard estimation (HE): a step is good
    (1) if *any* of its continuations reaches the correct answer, y_t^HE = 1[∃ j: a_j = a*],
    i.e. 1[y_t^SE > 0]. Other thresholds (e.g. 0.5) give a majority-style cut.

    Args:
        soft: [S] soft labels (e.g. from :func:`soft_labels`), finite.
        threshold: the cut; strictly above it is 1.

    Returns:
        [S] float64 in {0, 1}.

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935), hard estimation (HE). Differs from official
    code: none.
    """
    fn = "hard_labels"
    y = _float_array(fn, "soft", soft)
    _require_finite(fn, "soft", y)
    if not np.isfinite(threshold):
        raise PRMError(f"{fn}: argument 'threshold' must be finite, got {threshold!r}")
    return (y > threshold).astype(np.float64)


# ---------------------------------------------------------------------- preference pairs
@dataclass(frozen=True)
class PreferencePairs:
    """Episode index pairs (preferred, dispreferred) within groups.

    Attributes:
        preferred: [P] int64 episode index of the preferred member of each pair.
        dispreferred: [P] int64 episode index of the dispreferred member.
    """

    preferred: np.ndarray
    dispreferred: np.ndarray

    def __len__(self) -> int:
        return int(self.preferred.size)


def preference_pairs(
    outcome,
    episode_group,
    *,
    pairing: Literal["success", "ordered"] = "success",
    threshold: float = 0.0,
) -> PreferencePairs:
    """All (preferred, dispreferred) episode pairs of each group, from the outcomes.

        ``"success"``: P = {(i, j): g_i = g_j, R_i > θ, R_j ≤ θ}   (success × failure),
        ``"ordered"``: P = {(i, j): g_i = g_j, R_i > R_j}          (every strictly ordered pair).

    With 0/1 outcomes and θ ∈ [0, 1) both give the same pairs. A group whose members all
    succeed or all fail gives no pair. Order: groups by first appearance, then i, then j, each
    in input order. The number of candidate pairs is Σ_g n_g² (memory grows with the square of
    the largest group).

    Args:
        outcome: [E] episode outcomes R_i, finite.
        episode_group: [E] group id of each episode (any hashable scalar type Arrow encodes:
            ints or strings).
        pairing: ``"success"`` (OPRL's success/failure pairs) or ``"ordered"``.
        threshold: θ, the success threshold of ``"success"`` (success means R > θ).

    Returns:
        :class:`PreferencePairs`.

    Reference: Online Process Reward Learning for Agentic Reinforcement Learning (Liu, Wang
    et al., 2025, arXiv:2509.19199): trajectory-level DPO on preferred/dispreferred
    trajectories of a group. The paper's exact pairing was not read; its official code
    (Tongyi-ConvAI/Tongyi-Character, ``CharacterRL-iStar/istar/rm_utils.py``,
    ``compute_eto_loss_rm``) pairs every success (acc > 0) with every failure (acc ≤ 0) of each
    environment group, although its docstring says "one-to-one": ``"success"`` with θ = 0
    follows the code. Differs from official code: none for ``"success"``.
    """
    fn = "preference_pairs"
    if pairing not in ("success", "ordered"):
        raise PRMError(f"{fn}: argument 'pairing' must be 'success' or 'ordered', got {pairing!r}")
    r = _float_array(fn, "outcome", outcome)
    _require_finite(fn, "outcome", r)
    if not np.isfinite(threshold):
        raise PRMError(f"{fn}: argument 'threshold' must be finite, got {threshold!r}")
    g = np.asarray(episode_group)
    if g.shape != r.shape:
        raise PRMError(f"{fn}: argument 'episode_group' must have the shape of 'outcome' {r.shape}, got {g.shape}")
    n_ep = r.size
    if n_ep == 0:
        empty = np.empty(0, dtype=np.int64)
        return PreferencePairs(empty, empty.copy())
    try:
        codes, n_groups = dense_codes(g)
    except Exception as exc:  # pyarrow cannot encode the ids (mixed or unsupported types)
        raise PRMError(f"{fn}: argument 'episode_group' could not be encoded as group ids ({exc})") from None
    order = np.argsort(codes, kind="stable")
    size = np.bincount(codes, minlength=n_groups)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    reps = size[codes[order]]  # partners of each sorted position: its whole group
    left_pos = np.repeat(np.arange(n_ep), reps)
    block_start = np.repeat(np.cumsum(reps) - reps, reps)
    right_pos = start[codes[order]][left_pos] + (np.arange(left_pos.size) - block_start)
    left, right = order[left_pos], order[right_pos]
    if pairing == "success":
        win = r > threshold
        keep = win[left] & ~win[right]
    else:
        keep = r[left] > r[right]
    return PreferencePairs(left[keep].astype(np.int64), right[keep].astype(np.int64))
