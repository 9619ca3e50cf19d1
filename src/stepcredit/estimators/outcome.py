"""Outcome-level group baselines: every step of an episode gets the episode's advantage.

Notation: a group g holds G episodes with outcomes R_1..R_G (episodes sampled for the same
task); mean and std are over the group, std is the unbiased (ddof=1) standard deviation; ε is
the stabiliser. Singleton groups follow ``stepcredit.ops``: ``singleton="raw"`` (default, verl)
takes mean 0 and std 1, ``singleton="zero"`` gives advantage 0.

For all of these, ``Credit.episode_advantage`` is A_i and ``Credit.step_advantage`` repeats it
over the episode's steps.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.estimators.registry import check_positive, register
from stepcredit.ops import (
    Singleton,
    group_centered,
    group_count,
    group_scale,
    group_std,
    weighted_whiten,
)

__all__ = ["Base", "base_advantage", "drgrpo", "grpo", "reinforce_pp", "rloo"]

GRPO_PAPER = (
    "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models "
    "(Shao et al., 2024, arXiv:2402.03300)"
)
DRGRPO_PAPER = "Understanding R1-Zero-Like Training: A Critical Perspective (Liu et al., 2025, arXiv:2503.20783)"
RLOO_PAPER = (
    "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback "
    "in LLMs (Ahmadian et al., 2024, arXiv:2402.14740)"
)
RPP_PAPER = (
    "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models "
    "(Hu, 2025, arXiv:2501.03262)"
)


def _outcome_credit(ro: Rollouts, episode_advantage: np.ndarray, **diagnostics) -> Credit:
    return Credit(
        step_advantage=np.repeat(episode_advantage, ro.step_counts),
        episode_advantage=episode_advantage,
        episode_offsets=ro.episode_offsets,
        diagnostics=diagnostics,
    )


def _group_stats(ro: Rollouts, singleton: Singleton) -> tuple[np.ndarray, np.ndarray, dict]:
    codes, G = ro.episode_group, ro.n_groups
    count = group_count(codes, G)
    c = group_centered(ro.outcome, codes, G, singleton)
    with np.errstate(over="ignore"):  # a raw singleton's c is R itself; |R| > 1e154 squares to inf
        std = group_std(c, codes, G)
    diag = {
        "groups": G,
        "singleton_groups": int(np.sum(count == 1)),
        "zero_variance_groups": int(np.sum((count > 1) & (std == 0.0))),
    }
    return c, count, diag


@register(family="outcome", paper=GRPO_PAPER)
def grpo(
    ro: Rollouts,
    *,
    scale: Literal["group", "batch", "none"] = "group",
    epsilon: float = 1e-6,
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """GRPO group-relative advantage: A_i = (R_i − mean_g R) / (std_g R + ε).

    ``scale`` chooses the denominator (TRL's ``scale_rewards``): ``"group"`` the group std
    (paper), ``"batch"`` the unbiased std of all outcomes of the batch, ``"none"`` no division
    (then A_i = R_i − mean_g R, Dr. GRPO). A group whose outcomes are all equal gets A = 0.
    A singleton group gives R_i / (1 + ε) with ``singleton="raw"`` (verl: mean 0, std 1) or 0
    with ``"zero"`` (TRL). A batch of one episode takes the batch std as 1.

    Args:
        ro: rollouts; needs outcome and group_id only.
        scale: "group", "batch" or "none".
        epsilon: added to the std (verl 1e-6; TRL uses 1e-4).
        singleton: convention for one-episode groups, "raw" or "zero".

    Returns:
        Credit with episode_advantage [E] = A_i and step_advantage [S] = A of the step's episode.

    Reference: DeepSeekMath (Shao et al., 2024, arXiv:2402.03300), eq. for outcome supervision.
    Differs from official code: none (the paper has no released code; matches verl 0.9
    ``compute_grpo_outcome_advantage`` and TRL's ``scale_rewards`` semantics).
    """
    check_positive("grpo", epsilon=epsilon)
    c, count, diag = _group_stats(ro, singleton)
    if scale == "group":
        adv = c / group_scale(c, ro.episode_group, ro.n_groups, epsilon)[ro.episode_group]
    elif scale == "batch":
        E = ro.n_episodes
        if E > 1:
            x = ro.outcome - ro.outcome[0]
            d = x - x.mean()
            batch_std = float(np.sqrt(np.dot(d, d) / (E - 1)))
        else:
            batch_std = 1.0
        adv = c / (batch_std + epsilon)
    else:
        adv = c
    return _outcome_credit(ro, adv, **diag)


@register(family="outcome", paper=DRGRPO_PAPER)
def drgrpo(ro: Rollouts, *, singleton: Literal["raw", "zero"] = "raw") -> Credit:
    """Dr. GRPO advantage: A_i = R_i − mean_g R (no division by the std).

    Dr. GRPO also changes the loss aggregation (a constant normaliser instead of each
    response's length); that belongs to the trainer, not to the advantage.

    Args:
        ro: rollouts; needs outcome and group_id only.
        singleton: one-episode groups give R_i ("raw", verl) or 0 ("zero").

    Returns:
        Credit with episode_advantage [E] = A_i.

    Reference: Understanding R1-Zero-Like Training: A Critical Perspective (Liu et al., 2025,
    arXiv:2503.20783). Differs from official code: none.
    """
    c, _, diag = _group_stats(ro, singleton)
    return _outcome_credit(ro, c, **diag)


@register(family="outcome", paper=RLOO_PAPER)
def rloo(ro: Rollouts, *, singleton: Literal["raw", "zero"] = "raw") -> Credit:
    """RLOO leave-one-out baseline: A_i = R_i − (1/(G−1)) Σ_{j≠i} R_j = G/(G−1) (R_i − mean_g R).

    The baseline of each episode is the mean outcome of the *other* episodes of its group.
    A singleton group has no other episode: A_i = R_i with ``singleton="raw"`` (verl), 0 with
    ``"zero"``.

    Args:
        ro: rollouts; needs outcome and group_id only.
        singleton: convention for one-episode groups, "raw" or "zero".

    Returns:
        Credit with episode_advantage [E] = A_i.

    Reference: Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs (Ahmadian et al., 2024, arXiv:2402.14740). Differs from official code: none.
    """
    c, count, diag = _group_stats(ro, singleton)
    n = count[ro.episode_group].astype(np.float64)
    factor = np.where(n > 1, n / np.maximum(n - 1, 1), 1.0)
    return _outcome_credit(ro, c * factor, **diag)


@register(family="outcome", paper=RPP_PAPER)
def reinforce_pp(
    ro: Rollouts,
    *,
    weight: Literal["steps", "tokens", "episodes"] = "steps",
    epsilon: float = 1e-8,
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """REINFORCE++-baseline: group-mean baseline, then whitening over the whole batch.

    c_i = R_i − mean_g R, then A_i = (c_i − μ) / sqrt(σ² + ε) where μ and σ² are the weighted
    mean and Bessel-corrected weighted variance of c over the batch with weight w_i per episode:
    its number of steps (``"steps"``, default), of tokens (``"tokens"``, needs the ``tokens``
    step field; this is verl's token-level whitening when each response is one episode) or 1
    (``"episodes"``); N = Σ w_i in the Bessel factor N/(N−1).

    Args:
        ro: rollouts; needs outcome and group_id, and tokens when weight="tokens".
        weight: what each episode's advantage is weighted by in the batch statistics.
        epsilon: added to the variance (verl: 1e-8).
        singleton: a one-episode group's mean is 0 ("raw", verl) or the episode itself ("zero").

    Returns:
        Credit with episode_advantage [E] = A_i.

    Reference: REINFORCE++ (Hu, 2025, arXiv:2501.03262), the "-baseline" variant for
    reasoning. Differs from official code: verl whitens per token; the default here weights by
    steps (weight="tokens" reproduces verl).
    """
    check_positive("reinforce_pp", epsilon=epsilon)
    c, _, diag = _group_stats(ro, singleton)
    if weight == "steps":
        w = ro.step_counts
    elif weight == "tokens":
        tokens = ro.column("tokens", by="estimator 'reinforce_pp' with weight='tokens'")
        w = np.add.reduceat(tokens, ro.episode_offsets[:-1])
    else:
        w = np.ones(ro.n_episodes)
    return _outcome_credit(ro, weighted_whiten(c, w, epsilon), **diag)


#: The outcome estimators other estimators can build on (``base=...``).
Base = Literal["grpo", "drgrpo", "rloo"]


def base_advantage(
    ro: Rollouts, base: Base, *, epsilon: float = 1e-6, singleton: Singleton = "raw"
) -> tuple[np.ndarray, dict]:
    """[E] the outcome advantage A_i of a group baseline, and its diagnostics.

    ``grpo`` uses its group scale (std_g + ε); ``epsilon`` is ignored by the other bases.
    """
    if base == "grpo":
        credit = grpo(ro, scale="group", epsilon=epsilon, singleton=singleton)
    elif base == "drgrpo":
        credit = drgrpo(ro, singleton=singleton)
    elif base == "rloo":
        credit = rloo(ro, singleton=singleton)
    else:
        raise ValueError(f"unknown base outcome estimator {base!r}; valid: grpo, drgrpo, rloo")
    return credit.episode_advantage, dict(credit.diagnostics)
