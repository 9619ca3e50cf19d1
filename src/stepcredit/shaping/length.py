"""Length-based step rewards: LASER and its dynamic, difficulty-aware variant LASER-D.

Notation: episode i has outcome R_i, response length L_i = Σ_t tokens_t (the step field
``tokens`` summed over the episode) and is *correct* when R_i ≥ θ (``correct_threshold``;
θ = 1 fits 0/1 outcomes and the official code's scores 1 / −0.5 / −1). λ = ``scale`` is the
size of the length reward and L_T a target length. LASER's reward is a step function of the
length, added to the outcome, R'_i = R_i + b_i, with

    kind="reward"  (default):  b_i = +λ · 1[correct_i ∧ L_i ≤ L_T]
    kind="penalty":            b_i = −λ · 1[correct_i ∧ L_i > L_T]
    kind="hybrid":             b_i = +λ · 1[correct_i ∧ L_i ≤ L_T] − λ · 1[correct_i ∧ L_i > L_T]

and, with ``explore=True`` (LASER-DE), also b_i = +λ · 1[¬correct_i ∧ L_i > L_T]: a wrong
response that explored beyond the target is encouraged. Wrong responses are otherwise
unchanged.

LASER-D (``laser_d``) gives every group g a difficulty level from its accuracy
a_g = (#correct in g) / |g|: "easy" if a_g ≥ 2/3, "medium" if 1/3 ≤ a_g < 2/3, else "hard", and
each level ℓ its own target L_T^ℓ, the smallest candidate length L ∈ {L_min, L_min + ΔL, …,
≤ L_max} with

    ⌊ c_ℓ(L) · n_ℓ ⌋ ≥ K,    c_ℓ(L) = |{h ∈ H_ℓ : h ≤ L}| / |H_ℓ|,

capped by the batch's longest response (and equal to it when no candidate qualifies): H_ℓ are
the monitored lengths of level ℓ (a bounded memory kept in the transform's state), c_ℓ(L) their
coverage at L, n_ℓ = ⌊2n/3⌋, ⌊n/3⌋, 1 for easy, medium, hard the least number of correct
responses a group of that level has (n = group size), and K = ``expected_correct``: L_T^ℓ is
the shortest length within which a level's group is still expected to keep K correct answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.shaping.registry import Shaped, ShapingError, register_transform

__all__ = ["LEVELS", "episode_lengths", "group_levels", "laser", "laser_d", "laser_d_targets", "length_bonus"]

LASER_PAPER = (
    "Learn to Reason Efficiently with Adaptive Length-based Reward Shaping "
    "(Liu, Zhou et al., 2025, arXiv:2505.15612)"
)
#: Difficulty levels of LASER-D, easiest first (the official code's "high", "medium", "low").
LEVELS = ("easy", "medium", "hard")
STATE_VERSION = 1
_MAX_CANDIDATES = 1_000_000

Kind = Literal["reward", "penalty", "hybrid"]


# ---------------------------------------------------------------------- shared pieces
def episode_lengths(ro: Rollouts, by: str) -> np.ndarray:
    """[E] int64 response length L_i = Σ_t tokens_t of each episode."""
    tokens = ro.column("tokens", by=by)
    if ro.n_episodes == 0:
        return np.zeros(0, dtype=np.int64)
    return np.add.reduceat(tokens, ro.episode_offsets[:-1]).astype(np.int64)


def length_bonus(
    length: np.ndarray,
    correct: np.ndarray,
    target: np.ndarray,
    *,
    scale: float,
    kind: Kind,
    explore: bool,
) -> np.ndarray:
    """[E] LASER's step-function length reward b_i (see the module docstring).

    Args:
        length: [E] response lengths L_i.
        correct: [E] bool, R_i ≥ θ.
        target: [E] the target length L_T of each episode (per level for LASER-D).
        scale: λ.
        kind: "reward", "penalty" or "hybrid".
        explore: add +λ for wrong responses longer than the target (LASER-DE).

    Returns:
        [E] float64 b_i ∈ {−λ, 0, +λ}.
    """
    within = length <= target
    b = np.zeros(length.shape, dtype=np.float64)
    if kind in ("reward", "hybrid"):
        b[correct & within] = scale
    if kind in ("penalty", "hybrid"):
        b[correct & ~within] = -scale
    if explore:
        b[~correct & ~within] = scale
    return b


def _check_common(who: str, scale: float, kind: str, correct_threshold: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ShapingError(f"{who}: scale={scale!r} must be a finite number > 0 (λ, the length reward)")
    if kind not in ("reward", "penalty", "hybrid"):
        raise ShapingError(f"{who}: kind={kind!r} must be 'reward', 'penalty' or 'hybrid'")
    if not math.isfinite(correct_threshold):
        raise ShapingError(f"{who}: correct_threshold={correct_threshold!r} must be a finite number")


def _check_int(who: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ShapingError(f"{who}: {name}={value!r} must be an int >= {low}")


def _summary(ro: Rollouts, length: np.ndarray, correct: np.ndarray, bonus: np.ndarray) -> dict[str, Any]:
    E = max(ro.n_episodes, 1)
    return {
        "correct_fraction": float(np.count_nonzero(correct) / E),
        "rewarded_fraction": float(np.count_nonzero(bonus > 0) / E),
        "penalised_fraction": float(np.count_nonzero(bonus < 0) / E),
        "mean_length": float(length.mean()) if length.size else 0.0,
    }


# ---------------------------------------------------------------------- LASER
@register_transform(paper=LASER_PAPER, requires=("tokens",), writes=("outcome",))
def laser(
    ro: Rollouts,
    *,
    target_length: int = 4096,
    scale: float = 0.5,
    kind: Kind = "reward",
    correct_threshold: float = 1.0,
    explore: bool = False,
) -> Shaped:
    """LASER: a correct response within the target length gets +λ (a step function of length).

        R'_i = R_i + b_i,  b_i = +λ·1[R_i ≥ θ ∧ L_i ≤ L_T]            (kind="reward")
                              = −λ·1[R_i ≥ θ ∧ L_i > L_T]            (kind="penalty")
                              = ±λ for R_i ≥ θ, + if L_i ≤ L_T        (kind="hybrid")
        explore=True (LASER-DE): also b_i = +λ·1[R_i < θ ∧ L_i > L_T]
    with L_i = Σ_t tokens_t. Wrong responses are otherwise unchanged; step rewards are not
    read or changed.

    Args:
        ro: rollouts; needs the step field ``tokens``.
        target_length: L_T in tokens, >= 0 (the paper's runs: 2048, 4096, 8192 with a 16384
            context); set it to the scale of your data.
        scale: λ, the length reward (length_reward_scalar), > 0.
        kind: "reward" (+λ within L_T), "penalty" (−λ beyond L_T) or "hybrid" (both).
        correct_threshold: θ: an episode is correct when R_i ≥ θ.
        explore: also give +λ to wrong responses longer than L_T (LASER-DE's exploration term,
            without its n-gram repetition check).

    Returns:
        Shaped rollouts with R' as the outcome; diagnostics: ``correct_fraction``,
        ``rewarded_fraction`` (b > 0), ``penalised_fraction`` (b < 0), ``mean_length``,
        ``target_length``.

    Reference: Learn to Reason Efficiently with Adaptive Length-based Reward Shaping (Liu,
    Zhou, Deng, Huang, Liu, Deng, Zhang, He, 2025, arXiv:2505.15612): LASER "employs a step
    function as the reward, controlled by a target length" (abstract). The rule above is the
    official code's (hkust-nlp/Laser@78b09dda:verl/utils/reward_score/length_penalty.py,
    ``compute_length_reward_larse``; λ = 0.5 and L_T = 4096 in
    scripts/training/laser-1.5b/laser-1.5b-l4096.sh); the paper's equations were not read.
    Differs from official code: the code counts a response as correct when its score is
    exactly 1.0 (correct 1, wrong −0.5, no answer −1); here R ≥ θ. Its LASER-DE exploration
    term (``compute_length_reward_larse_de``) applies only to wrong answers scored −0.5 (not to
    unformatted ones), skips responses whose tokens end in a repeated n-gram (we have token
    counts, not token ids, so there is no repetition check here), and always uses the
    "reward" kind for correct responses; here ``kind`` applies with or without ``explore``.
    """
    who = "transform 'laser'"
    _check_common(who, scale, kind, correct_threshold)
    _check_int(who, "target_length", target_length, 0)
    length = episode_lengths(ro, who)
    correct = ro.outcome >= correct_threshold
    bonus = length_bonus(length, correct, np.full(length.shape, target_length), scale=scale, kind=kind, explore=explore)
    diagnostics = {**_summary(ro, length, correct, bonus), "target_length": int(target_length)}
    return Shaped(ro.with_outcome(ro.outcome + bonus), diagnostics)


# ---------------------------------------------------------------------- LASER-D
def group_levels(correct: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """[G] difficulty level of each group: 0 easy (a ≥ 2/3), 1 medium (1/3 ≤ a < 2/3), 2 hard.

    Compared exactly in integers: a = c/n ≥ 2/3 ⟺ 3c ≥ 2n, a ≥ 1/3 ⟺ 3c ≥ n.
    """
    n = np.bincount(group, minlength=n_groups)
    c = np.bincount(group, weights=correct, minlength=n_groups).astype(np.int64)
    return np.where(3 * c >= 2 * n, 0, np.where(3 * c >= n, 1, 2))


def level_minimum_correct(n: int) -> tuple[int, int, int]:
    """n_ℓ for easy, medium, hard: ⌊2n/3⌋, ⌊n/3⌋, 1 (the least #correct of a group of size n)."""
    return (2 * n) // 3, n // 3, 1


def laser_d_targets(
    lengths: Mapping[str, list[int]] | Mapping[str, np.ndarray],
    *,
    group_size: int,
    expected_correct: int,
    min_length: int,
    max_length: int,
    length_step: int,
) -> dict[str, int | None]:
    """LASER-D's uncapped target per level from monitored lengths (None: no candidate qualifies).

        L_T^ℓ = min{ L ∈ {L_min, L_min + ΔL, …, ≤ L_max} : ⌊c_ℓ(L) · n_ℓ⌋ ≥ K },
    with c_ℓ(L) = |{h ∈ H_ℓ : h ≤ L}| / |H_ℓ| (0 for an empty H_ℓ), compared exactly as
    |{h ≤ L}| · n_ℓ ≥ K · |H_ℓ|; the caller caps it by the batch's longest response.

    Args:
        lengths: level name -> H_ℓ, the monitored lengths.
        group_size: n, the rollouts per group.
        expected_correct: K >= 1.
        min_length, max_length, length_step: the candidate grid.

    Returns:
        level name -> L_T^ℓ (an int) or None.
    """
    candidates = np.arange(min_length, max_length + 1, length_step, dtype=np.int64)
    out: dict[str, int | None] = {}
    for level, n_min in zip(LEVELS, level_minimum_correct(group_size)):
        h = np.sort(np.asarray(lengths.get(level, []), dtype=np.int64))
        covered = np.searchsorted(h, candidates, side="right")
        ok = (covered * n_min >= expected_correct * h.size) & (h.size > 0)
        out[level] = int(candidates[np.argmax(ok)]) if ok.any() else None
    return out


def _empty_state() -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "batches": 0,
        "lengths": {level: [] for level in LEVELS},
        "targets": {level: None for level in LEVELS},
    }


def _read_state(state: Any, who: str) -> dict[str, Any]:
    """Validate a state given back by the caller; a fresh copy (the input is not modified)."""
    if state is None:
        return _empty_state()

    def bad(why: str) -> ShapingError:
        return ShapingError(f"{who}: invalid state: {why}; pass back the state this transform returned, or None")

    if not isinstance(state, Mapping):
        raise bad(f"expected a dict, got {type(state).__name__}")
    if set(state) != {"version", "batches", "lengths", "targets"}:
        raise bad(f"expected the keys batches, lengths, targets, version; got {', '.join(sorted(map(str, state)))}")
    if state["version"] != STATE_VERSION:
        raise bad(f"version {state['version']!r} is not {STATE_VERSION}")
    batches = state["batches"]
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
        raise bad(f"batches={batches!r} is not an int >= 0")
    out = {"version": STATE_VERSION, "batches": batches, "lengths": {}, "targets": {}}
    for key in ("lengths", "targets"):
        if not isinstance(state[key], Mapping) or set(state[key]) != set(LEVELS):
            raise bad(f"{key} must map each of {', '.join(LEVELS)}")
    for level in LEVELS:
        values = state["lengths"][level]
        if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise bad(f"lengths[{level!r}] must be a list of ints >= 0")
        out["lengths"][level] = list(values)
        t = state["targets"][level]
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0):
            raise bad(f"targets[{level!r}]={t!r} must be an int >= 0 or null")
        out["targets"][level] = t
    return out


def _laser_d_check(who: str, **p: Any) -> None:
    _check_common(who, p["scale"], p["kind"], p["correct_threshold"])
    _check_int(who, "min_length", p["min_length"], 0)
    _check_int(who, "length_step", p["length_step"], 1)
    _check_int(who, "max_length", p["max_length"], 0)
    if p["max_length"] < p["min_length"]:
        raise ShapingError(f"{who}: max_length={p['max_length']} must be >= min_length={p['min_length']}")
    n_candidates = (p["max_length"] - p["min_length"]) // p["length_step"] + 1
    if n_candidates > _MAX_CANDIDATES:
        raise ShapingError(
            f"{who}: min_length..max_length in steps of length_step gives {n_candidates} candidate "
            f"lengths, more than {_MAX_CANDIDATES}; use a larger length_step"
        )
    _check_int(who, "expected_correct", p["expected_correct"], 1)
    _check_int(who, "group_size", p["group_size"], 0)
    _check_int(who, "monitor_size", p["monitor_size"], 1)
    _check_int(who, "update_every", p["update_every"], 1)
    if p["monitor"] not in ("correct", "all"):
        raise ShapingError(f"{who}: monitor={p['monitor']!r} must be 'correct' or 'all'")


@register_transform(paper=LASER_PAPER, requires=("tokens",), writes=("outcome",))
def laser_d(
    ro: Rollouts,
    *,
    state: dict[str, Any] | None = None,
    scale: float = 0.5,
    kind: Kind = "reward",
    correct_threshold: float = 1.0,
    explore: bool = False,
    min_length: int = 16,
    max_length: int = 4096,
    length_step: int = 16,
    expected_correct: int = 1,
    group_size: int = 0,
    monitor: Literal["correct", "all"] = "correct",
    monitor_size: int = 1024,
    update_every: int = 20,
) -> Shaped:
    """LASER-D: LASER with a target length per difficulty level, adapted from monitored lengths.

    Each batch (the module docstring has the equations):
      1. correct_i = R_i ≥ θ; each group's level from its accuracy: easy (a ≥ 2/3), medium
         (1/3 ≤ a < 2/3), hard (a < 1/3);
      2. the monitored lengths H_ℓ (in the state) get this batch's lengths, per level of their
         group: the correct responses' (``monitor="correct"``) or all responses'
         (``monitor="all"``, as the official code), keeping the last ``monitor_size`` per level;
      3. every ``update_every`` batches, from the first one on (so the first batch's targets
         come from its own responses), the targets are recomputed:
         L_T^ℓ = min{L on the grid : ⌊c_ℓ(L) · n_ℓ⌋ ≥ K}, n_ℓ = ⌊2n/3⌋, ⌊n/3⌋, 1;
         in between, the last targets are kept;
      4. each episode gets b_i of LASER (``kind``, ``explore``) with the target of its group's
         level, capped by this batch's longest response (which is also the target of a level
         whose candidates never qualify, e.g. with n < 3 for medium): R'_i = R_i + b_i.

    Args:
        ro: rollouts; needs the step field ``tokens``.
        state: the state this transform returned for the previous batch (None on the first).
        scale: λ, the length reward (length_reward_scalar), > 0.
        kind: "reward" (+λ within L_T), "penalty" (−λ beyond L_T) or "hybrid" (both).
        correct_threshold: θ: an episode is correct when R_i ≥ θ.
        explore: also give +λ to wrong responses longer than their target (LASER-DE, without
            its n-gram repetition check).
        min_length: the smallest candidate target L_min (paper: 4096; a default for short
            agent episodes here).
        max_length: the largest candidate target L_max (paper: 16384).
        length_step: the candidate spacing ΔL (paper: 1024).
        expected_correct: K, the correct responses a group should keep within its target.
        group_size: n, the rollouts per group; 0 = the largest group of the batch (paper: 8).
        monitor: which lengths are monitored: "correct" (correct responses) or "all" (every
            response of the level's groups, as the official code).
        monitor_size: the most monitored lengths kept per level (the last ones).
        update_every: recompute the targets every this many batches (the code's
            monitor_freq: 20).

    Returns:
        Shaped rollouts with R' as the outcome; ``Shaped.state``: the next state (a
        JSON-serialisable dict: version, batches seen, the monitored lengths per level, the
        uncapped targets per level, null where no candidate qualified); diagnostics:
        ``target_easy``/``_medium``/``_hard`` (the targets applied), ``groups_easy``/
        ``_medium``/``_hard`` (groups per level), ``updated`` (targets recomputed this batch),
        ``monitored`` (lengths kept), ``correct_fraction``, ``rewarded_fraction``,
        ``penalised_fraction``, ``mean_length``.

    Reference: Learn to Reason Efficiently with Adaptive Length-based Reward Shaping (Liu,
    Zhou, Deng, Huang, Liu, Deng, Zhang, He, 2025, arXiv:2505.15612): LASER-D is "dynamic and
    difficulty-aware", penalising "lengthy CoTs more for easy queries" (abstract). The rule
    above is read from the official code (hkust-nlp/Laser@78b09dda:
    verl/utils/reward_score/length_penalty.py, ``_choose_target_length`` with
    ``round_method="floor"`` and ``compute_length_reward_larse_d``; the monitor in
    verl/trainer/ppo/ray_trainer.py, ``_count_accuracy_bands_metrics``; candidates 4096..16384
    step 1024, monitor_freq 20, n = 8 in scripts/training/laser-d-1.5b/laser-d-1.5b-l4096.sh);
    the paper's equations were not read. Differs from official code: (1) the code monitors a
    separate fixed set of 500 training prompts, regenerated every 20 steps; here the training
    batches themselves, in a sliding window; (2) its coverage counts all responses of a
    level's prompts (here ``monitor="all"``; the default ``"correct"`` counts correct
    responses, so that c_ℓ(L)·n_ℓ is an expected number of correct responses within L; the
    paper's definition could not be checked); (3) its monitor
    bins prompts as hard a ≤ 1/3, medium 1/3 < a ≤ 2/3, easy a > 2/3 while its reward uses
    a ≥ 2/3 and a ≥ 1/3; here the reward's bins for both; (4) it compares ⌊ratio · n_ℓ⌋ in
    floats ((1/49)·49 < 1), here exactly in integers; (5) correct means score == 1.0 there,
    R ≥ θ here; (6) its candidate grid can exceed the upper bound when it is not on the grid.
    """
    who = "transform 'laser_d'"
    _laser_d_check(
        who, scale=scale, kind=kind, correct_threshold=correct_threshold, min_length=min_length,
        max_length=max_length, length_step=length_step, expected_correct=expected_correct,
        group_size=group_size, monitor=monitor, monitor_size=monitor_size, update_every=update_every,
    )
    st = _read_state(state, who)
    length = episode_lengths(ro, who)
    correct = ro.outcome >= correct_threshold
    group = ro.episode_group
    level_of_group = group_levels(correct, group, ro.n_groups)
    level = level_of_group[group]
    # 2. monitored lengths, per level, in input order; the last monitor_size kept
    watched = correct if monitor == "correct" else np.ones(length.shape, dtype=bool)
    for j, name in enumerate(LEVELS):
        new = length[watched & (level == j)].tolist()
        st["lengths"][name] = (st["lengths"][name] + new)[-monitor_size:]
    # 3. targets recomputed on the first batch and every update_every batches
    updated = st["batches"] % update_every == 0
    if updated:
        n = group_size if group_size > 0 else int(np.bincount(group, minlength=1).max())
        st["targets"] = laser_d_targets(
            st["lengths"], group_size=n, expected_correct=expected_correct,
            min_length=min_length, max_length=max_length, length_step=length_step,
        )
    st["batches"] += 1
    # 4. targets capped by the batch's longest response
    longest = int(length.max()) if length.size else 0
    applied = [longest if st["targets"][name] is None else min(st["targets"][name], longest) for name in LEVELS]
    target = np.asarray(applied, dtype=np.int64)[level]
    bonus = length_bonus(length, correct, target, scale=scale, kind=kind, explore=explore)
    diagnostics: dict[str, Any] = {f"target_{name}": applied[j] for j, name in enumerate(LEVELS)}
    diagnostics.update({f"groups_{name}": int(np.count_nonzero(level_of_group == j)) for j, name in enumerate(LEVELS)})
    diagnostics["updated"] = bool(updated)
    diagnostics["monitored"] = sum(len(v) for v in st["lengths"].values())
    diagnostics.update(_summary(ro, length, correct, bonus))
    return Shaped(ro.with_outcome(ro.outcome + bonus), diagnostics, st)
