"""Process-reward (PRM) shaping: Clip, Delta, episode aggregation, and ReNorm.

Notation: episode i has steps t = 0..T_i−1 with process-reward-model scores p_t (the step
field ``process``, usually in [0, 1]), immediate rewards r_t (the ``reward`` column, 0 where
absent) and outcome R_i (the success reward). A transform turns the p_t into shaped process
rewards r̃_t and combines them with the rewards the estimator reads; w ≥ 0 is a weight.
The *process return* of an episode is Σ_t r̃_t.

Where the shaped rewards go (``target``, for ``prm_clip`` and ``prm_delta``):

* ``"reward"``: r'_t = r_t + w·r̃_t, the step rewards of PPO/GAE with dense rewards (the
  paper's setting); estimators that read step rewards (gae, gigpo, potential) still add the
  outcome R_i at the last step;
* ``"outcome"``: R'_i = R_i + w·Σ_t r̃_t, for estimators that read only the outcome (grpo, rloo);
* ``"process"``: p_t ← w·r̃_t, so that a later transform composes, e.g. ``prm_clip`` with
  ``target="process"`` then ``prm_delta``: the paper's "Clip then Delta".

Raw summed PRM scores, R + Σ_t p_t, grow with every extra high-scoring step, so a policy can
raise its return by padding trajectories with correct-looking but useless steps. Clip and
Delta bound the process return whatever the length: Clip's terms are all ≤ 0, Delta's sum
telescopes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.shaping.registry import Shaped, ShapingError, register_transform

__all__ = ["prm_clip", "prm_delta", "prm_last", "prm_mean", "prm_min", "renorm"]

CLIP_DELTA_PAPER = (
    "On Designing Effective RL Reward at Training Time for LLM Reasoning "
    "(Gao, Xu et al., 2024, arXiv:2410.15115)"
)
AGGREGATION_PAPER = (
    "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations "
    "(Wang, Li et al., 2024, arXiv:2312.08935)"
)
RENORM_PAPER = (
    "Hybrid Reward Normalization for Process-supervised Non-verifiable Agentic Tasks "
    "(Xu, Li et al., 2025, arXiv:2509.25598)"
)

Target = Literal["reward", "outcome", "process"]


# ---------------------------------------------------------------------- shared helpers
def _check_choice(transform: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    # the registry checks Literal values; a direct call of the function is checked here
    if value not in choices:
        raise ShapingError(
            f"transform '{transform}': parameter {name}={value!r} is invalid; expected one of "
            f"{', '.join(map(repr, choices))}"
        )


def _check_weight(transform: str, weight: float) -> None:
    if not (np.isfinite(weight) and weight >= 0.0):
        raise ShapingError(
            f"transform '{transform}': parameter weight={weight!r} must be a finite number >= 0 "
            "(a negative weight would reward what the transform penalises)"
        )


def _process(ro: Rollouts, transform: str) -> np.ndarray:
    return ro.column("process", by=f"transform '{transform}'")


def _episode_sums(x: np.ndarray, ro: Rollouts) -> np.ndarray:
    """[E] Σ over each episode's steps of the [S] values x."""
    if ro.n_episodes == 0:
        return np.zeros(0)
    return np.add.reduceat(x, ro.episode_offsets[:-1])


def _target_writes(p) -> tuple[str, ...]:
    return ({"reward": "reward", "outcome": "outcome", "process": "process"}[p["target"]],)


def _apply_target(ro: Rollouts, shaped: np.ndarray, target: str, weight: float) -> Rollouts:
    """Combine the [S] shaped process rewards r̃ with the rollouts as ``target`` says."""
    if target == "reward":
        return ro.replace_columns(reward=ro.reward + weight * shaped)
    if target == "outcome":
        return ro.with_outcome(ro.outcome + weight * _episode_sums(shaped, ro))
    return ro.replace_columns(process=weight * shaped)


def _process_diagnostics(shaped: np.ndarray, ro: Rollouts) -> dict[str, float]:
    returns = _episode_sums(shaped, ro)
    return {
        "mean_process_return": float(returns.mean()) if returns.size else 0.0,
        "max_process_return": float(returns.max()) if returns.size else 0.0,
    }


# ---------------------------------------------------------------------- Clip and Delta
@register_transform(paper=CLIP_DELTA_PAPER, requires=("process",), writes=_target_writes)
def prm_clip(
    ro: Rollouts,
    *,
    eta: float = 0.5,
    weight: float = 1.0,
    target: Target = "reward",
) -> Shaped:
    """Clip: PRM scores become penalties below a threshold, so extra steps can never pay.

        r̃_t = min(p_t − η, 0)
    Every r̃_t ≤ 0, so the process return Σ_t r̃_t is ≤ 0 and can only fall (or stay) as steps
    are appended: a policy gains nothing by padding its trajectory with steps the PRM likes,
    while steps the PRM scores below η are still penalised. Combined with the rewards as
    ``target`` says (module docstring): r'_t = r_t + w r̃_t, R' = R + w Σ_t r̃_t, or p_t ← w r̃_t.

    Args:
        ro: rollouts; needs the step field ``process`` (PRM scores p_t).
        eta: η, the threshold below which a step is penalised (for scores in [0, 1]; 0.5 is our
            default, the paper's value was not verified).
        weight: w >= 0, the weight of the shaped process rewards.
        target: ``"reward"`` (step rewards), ``"outcome"`` (added to the outcome) or
            ``"process"`` (replace ``process``, for a later transform such as ``prm_delta``).

    Returns:
        Shaped rollouts; diagnostics: ``penalised_fraction`` (steps with p_t < η),
        ``mean_process_return`` and ``max_process_return`` (of Σ_t r̃_t over episodes,
        before the weight).

    Reference: On Designing Effective RL Reward at Training Time for LLM Reasoning (Gao, Xu
    et al., 2024, arXiv:2410.15115): "Clipping" keeps "the accumulative reward of any reasoning
    trajectory ... upper-bounded" (abstract); the form min(p − η, 0) matches the paper's Figure
    2 (only steps scored below η receive a reward, a negative one) as described in stored
    descriptions of the figure; the method text and the paper's η were not reachable. The
    paper adds the refined rewards to the success reward in PPO with GAE (``target="reward"``);
    ``"outcome"`` and ``"process"`` are ours.
    Differs from official code: none found (no code located).
    """
    _check_choice("prm_clip", "target", target, ("reward", "outcome", "process"))
    _check_weight("prm_clip", weight)
    p = _process(ro, "prm_clip")
    shaped = np.minimum(p - eta, 0.0)
    diagnostics = {
        "penalised_fraction": float(np.mean(p < eta)) if p.size else 0.0,
        **_process_diagnostics(shaped, ro),
    }
    return Shaped(_apply_target(ro, shaped, target, weight), diagnostics)


@register_transform(paper=CLIP_DELTA_PAPER, requires=("process",), writes=_target_writes)
def prm_delta(
    ro: Rollouts,
    *,
    weight: float = 1.0,
    target: Target = "reward",
    last_step: Literal["drop", "keep"] = "drop",
) -> Shaped:
    """Delta: each step is rewarded by how much its PRM score exceeds the next step's.

        r̃_t = p_t − p_{t+1}  for t < T−1;   last step: r̃_{T−1} = 0 (``last_step="drop"``)
                                                        or r̃_{T−1} = p_{T−1} (``"keep"``).
    The sum telescopes: the process return from step t is Σ_{k≥t} r̃_k = p_t − p_{T−1}
    (``"drop"``) or p_t (``"keep"``), so the whole process return is p_0 − p_{T−1} or p_0,
    whatever the length: repeating steps, or inserting steps of any score after the first (and,
    for ``"drop"``, before the last), leaves it unchanged; with scores in [0, 1] it is at most 1.
    Opposite in sign to Ng's potential shaping Φ(s') − Φ(s): the aim is a bounded return, not
    policy invariance. Combined with the rewards as ``target`` says (module docstring). With
    GAE and γ < 1 the telescoping is only approximate.

    Args:
        ro: rollouts; needs the step field ``process`` (PRM scores p_t, or the output of
            ``prm_clip`` with ``target="process"``: Clip then Delta).
        weight: w >= 0, the weight of the shaped process rewards.
        target: ``"reward"`` (step rewards), ``"outcome"`` (added to the outcome) or
            ``"process"`` (replace ``process``).
        last_step: the last step's shaped reward: ``"drop"`` (0: its PRM score is not used, as
            in the paper's Figure 2) or ``"keep"`` (p_{T−1}, so the process return is p_0).

    Returns:
        Shaped rollouts; diagnostics: ``mean_process_return`` and ``max_process_return`` (of
        Σ_t r̃_t over episodes, before the weight).

    Reference: On Designing Effective RL Reward at Training Time for LLM Reasoning (Gao, Xu
    et al., 2024, arXiv:2410.15115): "Delta" keeps the accumulated reward upper-bounded
    (abstract). The last-step handling was not verified against the method text: stored
    descriptions of the paper's Figure 2 show the last step's process reward crossed out and
    delta rewards on the other steps only, hence the default ``"drop"``; ``"keep"`` is the
    variant whose return is exactly p_0.
    Differs from official code: none found (no code located).
    """
    _check_choice("prm_delta", "target", target, ("reward", "outcome", "process"))
    _check_choice("prm_delta", "last_step", last_step, ("drop", "keep"))
    _check_weight("prm_delta", weight)
    p = _process(ro, "prm_delta")
    last = ro.episode_offsets[1:] - 1
    following = np.empty_like(p)
    following[:-1] = p[1:]
    # after the last step: p itself (r̃ = p − p = 0 exactly) or nothing (r̃ = p)
    following[last] = p[last] if last_step == "drop" else 0.0
    shaped = p - following
    return Shaped(_apply_target(ro, shaped, target, weight), _process_diagnostics(shaped, ro))


# ---------------------------------------------------------------------- episode aggregation
def _aggregate(ro: Rollouts, transform: str, how: str, mode: str, weight: float) -> Shaped:
    """S_i = min / mean / last of the episode's p_t; R' = R + w S_i ("add") or w S_i ("replace")."""
    _check_choice(transform, "mode", mode, ("add", "replace"))
    _check_weight(transform, weight)
    p = _process(ro, transform)
    off = ro.episode_offsets
    if ro.n_episodes == 0:
        score = np.zeros(0)
    elif how == "min":
        score = np.minimum.reduceat(p, off[:-1])
    elif how == "mean":
        score = np.add.reduceat(p, off[:-1]) / ro.step_counts
    else:
        score = p[off[1:] - 1]
    outcome = weight * score if mode == "replace" else ro.outcome + weight * score
    diagnostics = {"mean_score": float(score.mean()) if score.size else 0.0}
    return Shaped(ro.with_outcome(outcome), diagnostics)


@register_transform(paper=AGGREGATION_PAPER, requires=("process",), writes=("outcome",))
def prm_min(ro: Rollouts, *, mode: Literal["add", "replace"] = "add", weight: float = 1.0) -> Shaped:
    """Episode PRM score = the lowest step score, combined with the outcome.

        S_i = min_t p_t,   R'_i = R_i + w S_i (``mode="add"``) or R'_i = w S_i (``"replace"``).
    A trajectory is as good as its worst step: adding well-scored steps never raises S_i, so
    the min cannot be gamed by padding (it can only fall), and one wrong step caps the score.
    Writes the outcome, so it suits outcome-only estimators (grpo, rloo) too.

    Args:
        ro: rollouts; needs the step field ``process`` (PRM scores p_t).
        mode: ``"add"`` (R' = R + w S_i) or ``"replace"`` (R' = w S_i: the PRM alone).
        weight: w >= 0, the weight of the episode score.

    Returns:
        Shaped rollouts with the new outcome; diagnostics: ``mean_score`` (mean S_i).

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935), which scores a solution by the minimum of its
    step scores for verification (as summarised in a secondary source; not re-read in the
    paper). Using it as an RL outcome is ours. Differs from official code: none found.
    """
    return _aggregate(ro, "prm_min", "min", mode, weight)


@register_transform(paper=AGGREGATION_PAPER, requires=("process",), writes=("outcome",))
def prm_mean(ro: Rollouts, *, mode: Literal["add", "replace"] = "add", weight: float = 1.0) -> Shaped:
    """Episode PRM score = the mean step score, combined with the outcome.

        S_i = (1/T_i) Σ_t p_t,   R'_i = R_i + w S_i (``mode="add"``) or w S_i (``"replace"``).
    Bounded by the score range whatever the length (unlike the sum), but padding with steps
    scored above the current mean raises it: prefer ``prm_min`` when padding is a risk.

    Args:
        ro: rollouts; needs the step field ``process`` (PRM scores p_t).
        mode: ``"add"`` (R' = R + w S_i) or ``"replace"`` (R' = w S_i: the PRM alone).
        weight: w >= 0, the weight of the episode score.

    Returns:
        Shaped rollouts with the new outcome; diagnostics: ``mean_score`` (mean S_i).

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935) aggregates step scores by their minimum; the mean
    is the common alternative aggregation (no single primary source).
    Differs from official code: none found.
    """
    return _aggregate(ro, "prm_mean", "mean", mode, weight)


@register_transform(paper=AGGREGATION_PAPER, requires=("process",), writes=("outcome",))
def prm_last(ro: Rollouts, *, mode: Literal["add", "replace"] = "add", weight: float = 1.0) -> Shaped:
    """Episode PRM score = the last step's score, combined with the outcome.

        S_i = p_{T_i−1},   R'_i = R_i + w S_i (``mode="add"``) or w S_i (``"replace"``).
    The last step's score of a PRM trained on Monte-Carlo step labels estimates the chance the
    finished trajectory is correct, i.e. it acts as an outcome reward model.

    Args:
        ro: rollouts; needs the step field ``process`` (PRM scores p_t).
        mode: ``"add"`` (R' = R + w S_i) or ``"replace"`` (R' = w S_i: the PRM alone).
        weight: w >= 0, the weight of the episode score.

    Returns:
        Shaped rollouts with the new outcome; diagnostics: ``mean_score`` (mean S_i).

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935) aggregates step scores by their minimum; the last
    step's score is the common alternative aggregation (no single primary source).
    Differs from official code: none found.
    """
    return _aggregate(ro, "prm_last", "last", mode, weight)


# ---------------------------------------------------------------------- ReNorm
def _renorm_writes(p) -> tuple[str, ...]:
    if p["target"] == "outcome":
        return ("outcome",)
    return ("reward",) if p["form"] == "combined" else ("reward", "outcome")


def _check_unit_interval(transform: str, what: str, x: np.ndarray, where: np.ndarray) -> None:
    bad = ~((x >= 0.0) & (x <= 1.0))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ShapingError(
            f"transform '{transform}': {what} must lie in [0, 1] (found {float(x[i])!r} in episode "
            f"{int(where[i])}); rescale it first, e.g. a judge's score/max_score"
        )


@register_transform(paper=RENORM_PAPER, requires=("process",), writes=_renorm_writes)
def renorm(
    ro: Rollouts,
    *,
    form: Literal["combined", "separate"] = "combined",
    target: Literal["reward", "outcome"] = "reward",
) -> Shaped:
    """ReNorm (Principle Process Reward): process and outcome rewards offset by 1/2 each.

    UNVERIFIED: the form consistent with the paper's abstract and with a reviewer's description
    of it, not verified against the method section (see Reference). With p_t and R in [0, 1]:

        ``form="combined"``:  u_t = (p_t − ½) + (R − ½) = p_t + R − 1   at every step,
    so every step of a successful episode (R = 1) scores in [0, 1] and every step of a failed
    one (R = 0) in [−1, 0]: a high process score can never lift a failed trajectory above a
    successful one. ``form="separate"``: u_t = p_t − ½ at every step and the outcome R − ½.

    ``target="reward"``: the estimator sees u_t added to the step rewards. As step-reward
    estimators add the outcome to the last step, ``"combined"`` writes r'_t = r_t + u_t for
    t < T−1 and r'_{T−1} = r_{T−1} + p_{T−1} − 1 (= u_{T−1} − R) and keeps R (so the last step
    also totals r + u, and filters still read the true outcome); ``"separate"`` writes r'_t = r_t + p_t − ½
    and R' = R − ½. ``target="outcome"`` (for outcome-only estimators; ours): R' = p̄ + R − 1
    with p̄ the episode's mean process score (the mean of the per-step rewards of either form),
    in [0, 1] for successes and [−1, 0] for failures; step rewards unchanged.

    Args:
        ro: rollouts; needs the step field ``process`` with scores in [0, 1] and outcomes in
            [0, 1] (the range property needs both; others are refused).
        form: ``"combined"`` (u_t = p_t + R − 1 at every step) or ``"separate"`` (p_t − ½ per
            step, R − ½ as the outcome).
        target: ``"reward"`` (step rewards) or ``"outcome"`` (one episode reward).

    Returns:
        Shaped rollouts; diagnostics: ``mean_step_reward`` (mean of the per-step rewards of the
        form, u_t), ``success_fraction`` (episodes with R = 1).

    Raises:
        ShapingError: a process score or an outcome outside [0, 1].

    Reference: Hybrid Reward Normalization for Process-supervised Non-verifiable Agentic Tasks
    (Xu, Li et al., 2025, arXiv:2509.25598): ReNorm "calibrate[s] outcome and process rewards"
    (abstract). Only the abstract was reachable; an ICLR 2026 review of the submission
    ("Principle Process Reward For Search Agents") describes ReNorm as "subtracting 1/2 from
    both the outcome and process rewards", which both forms satisfy.
    Differs from official code: the official repository (peiranxu/ppr) could not be read; an
    authors' development snapshot (Zhuohao-Li/OpenTool-PRM@7f386e2a, verl/trainer/main_ppo.py,
    verl/utils/reward_score/pc_reward_turn.py) writes judge scores score/max ∈ [0, 1] at each
    non-final turn and the exact-match outcome at the last token, with no normalisation yet.
    """
    _check_choice("renorm", "form", form, ("combined", "separate"))
    _check_choice("renorm", "target", target, ("reward", "outcome"))
    p = _process(ro, "renorm")
    _check_unit_interval("renorm", "the process scores", p, ro.step_episode)
    _check_unit_interval("renorm", "the outcome", ro.outcome, np.arange(ro.n_episodes))
    R = ro.outcome
    R_step = np.repeat(R, ro.step_counts)
    u = p + R_step - 1.0 if form == "combined" else p - 0.5
    diagnostics = {
        "mean_step_reward": float(u.mean()) if u.size else 0.0,
        "success_fraction": float(np.mean(R == 1.0)) if R.size else 0.0,
    }
    if target == "outcome":
        counts = ro.step_counts
        mean_p = _episode_sums(p, ro) / counts if ro.n_episodes else np.zeros(0)
        return Shaped(ro.with_outcome(mean_p + R - 1.0), diagnostics)
    if form == "separate":
        out = ro.replace_columns(reward=ro.reward + u).with_outcome(R - 0.5)
        return Shaped(out, diagnostics)
    add = u.copy()
    last = ro.episode_offsets[1:] - 1
    add[last] = p[last] - 1.0  # u − R: the estimator adds R back at the last step
    return Shaped(ro.replace_columns(reward=ro.reward + add), diagnostics)
