"""PPO's clipped surrogate for the trainer: per-step and per-token coefficients and the update loops.

The policies own their parameters and gradients; these functions turn advantages, weights and
the ratio π_θ/π_old into the coefficients c with ∇L = Σ c ∇ log π (``policy.ascend``), per step
(tabular, MLP, GRU policies) or per token (the language-model policy, whose token advantages come
from ``Credit.to_padded``).

Reference: Proximal Policy Optimization Algorithms (Schulman et al., 2017, arXiv:1707.06347).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["clipped_surrogate_coef", "clipped_surrogate_token_coef", "old_token_log_prob", "ppo_update", "ppo_update_tokens"]


def clipped_surrogate_coef(
    log_prob: np.ndarray, old_log_prob: np.ndarray, advantage: np.ndarray, weight: np.ndarray, clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step coefficients c_t with ∇L = Σ_t c_t ∇ log π(a_t|s_t) for PPO's clipped surrogate.

        L = (1/S) Σ_t w_t min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t),  ρ_t = exp(log π_t − log π_old,t)
        c_t = w_t ρ_t A_t / S, or 0 where the clip is active: A_t > 0 and ρ_t > 1+ε, or
        A_t < 0 and ρ_t < 1−ε (there the min is the constant clipped term).

    Args:
        log_prob: [S] log π_θ(a_t|s_t) under the current parameters.
        old_log_prob: [S] log π_old(a_t|s_t) of the behaviour policy.
        advantage: [S] A_t.
        weight: [S] w_t >= 0 (the episode weight of the step's episode).
        clip: ε > 0.

    Returns:
        ([S] c_t, [S] bool clip active).

    Reference: Proximal Policy Optimization Algorithms (Schulman et al., 2017, arXiv:1707.06347), Eq. 7.
    """
    ratio = np.exp(np.asarray(log_prob, dtype=np.float64) - old_log_prob)
    a = np.asarray(advantage, dtype=np.float64)
    clipped = ((a > 0) & (ratio > 1.0 + clip)) | ((a < 0) & (ratio < 1.0 - clip))
    S = max(a.size, 1)
    return np.where(clipped, 0.0, weight * ratio * a / S), clipped


def clipped_surrogate_token_coef(
    token_log_prob: np.ndarray,
    old_token_log_prob: np.ndarray,
    token_advantage: np.ndarray,
    token_weight: np.ndarray,
    response_mask: np.ndarray,
    clip: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token coefficients of PPO's clipped surrogate with one ratio per token (PPO/GRPO for LMs).

        L = (1/N) Σ_{t,k} w_{t,k} min(ρ_{t,k} A_{t,k}, clip(ρ_{t,k}, 1−ε, 1+ε) A_{t,k}),
        ρ_{t,k} = exp(log p_θ(y_{t,k}|…) − log p_old(y_{t,k}|…)), N = Σ mask (response tokens),
        c_{t,k} = w_{t,k} ρ_{t,k} A_{t,k} / N, or 0 where the clip is active (A > 0 and
        ρ > 1+ε, or A < 0 and ρ < 1−ε) and off the mask; ∇L = Σ_{t,k} c_{t,k} ∇ log p_θ(y_{t,k}|…).

    Args:
        token_log_prob: [S, T] log p_θ of each response token under the current parameters.
        old_token_log_prob: [S, T] the behaviour log-probabilities (:func:`old_token_log_prob`).
        token_advantage: [S, T] A_{t,k} (``credit.to_padded(response_mask, rows="steps")``).
        token_weight: [S, T] w_{t,k} >= 0 (the episode weights, likewise expanded).
        response_mask: [S, T] bool or 0/1, the response tokens.
        clip: ε > 0.

    Returns:
        ([S, T] c_{t,k}, [S, T] bool clip active, False off the mask).

    Reference: Proximal Policy Optimization Algorithms (Schulman et al., 2017, arXiv:1707.06347),
    Eq. 7, with the token as the unit as in DeepSeekMath's GRPO (Shao et al., 2024,
    arXiv:2402.03300) and the token-mean normalisation of DAPO (Yu et al., 2025, arXiv:2503.14476).
    """
    mask = np.asarray(response_mask).astype(bool)
    lp = np.asarray(token_log_prob, dtype=np.float64)
    ratio = np.exp(np.where(mask, lp - np.asarray(old_token_log_prob, dtype=np.float64), 0.0))
    a = np.where(mask, np.asarray(token_advantage, dtype=np.float64), 0.0)
    clipped = mask & (((a > 0) & (ratio > 1.0 + clip)) | ((a < 0) & (ratio < 1.0 - clip)))
    N = max(int(mask.sum()), 1)
    coef = np.where(mask & ~clipped, np.asarray(token_weight, dtype=np.float64) * ratio * a / N, 0.0)
    return coef, clipped


def old_token_log_prob(token_log_prob: np.ndarray, step_log_prob: np.ndarray, response_mask: np.ndarray) -> np.ndarray:
    """Per-token behaviour log-probabilities whose row sums are the recorded step log-probabilities.

        old_{t,k} = log p_θ(y_{t,k}|…) + (logp_t − Σ_k log p_θ(y_{t,k}|…)) / L_t  on the mask, 0 off it,

    so that Π_k ρ_{t,k} = π_θ(a_t|s_t) / π_old(a_t|s_t), the step ratio. Taken at the start of the
    update: for steps the current parameters sampled, the shift is float round-off (the ratios
    start at 1); for replayed episodes of older policies it spreads the step's log-ratio evenly
    over its tokens (the per-token behaviour values were not recorded).

    Args:
        token_log_prob: [S, T] the current per-token log-probabilities (0 off the mask).
        step_log_prob: [S] the recorded behaviour log π_old(a_t|s_t).
        response_mask: [S, T] bool or 0/1; every row has at least one token.

    Returns:
        [S, T] float64.
    """
    mask = np.asarray(response_mask).astype(bool)
    lp = np.where(mask, np.asarray(token_log_prob, dtype=np.float64), 0.0)
    n = mask.sum(axis=1)
    if np.any(n == 0):
        raise ValueError(f"old_token_log_prob: step {int(np.flatnonzero(n == 0)[0])} has no response token")
    shift = (np.asarray(step_log_prob, dtype=np.float64) - lp.sum(axis=1)) / n
    return np.where(mask, lp + shift[:, None], 0.0)


def ppo_update_tokens(
    policy: Any,
    batch: Any,
    old_log_prob: np.ndarray,
    token_advantage: np.ndarray,
    token_weight: np.ndarray,
    *,
    lr: float,
    clip: float,
    epochs: int,
    kl_coef: float = 0.0,
) -> float:
    """The token-level twin of :func:`ppo_update`: one ratio and one clip per response token.

    The per-token behaviour log-probabilities are :func:`old_token_log_prob` of the policy's
    token log-probabilities before the first epoch and the recorded step ``old_log_prob``; each
    epoch recomputes the token log-probabilities, the coefficients of
    :func:`clipped_surrogate_token_coef` and calls ``policy.ascend(batch, c [S, T], lr, kl_coef)``.

    Args:
        policy: a token-level policy (``LMPolicy``): ``token_log_prob(batch) -> [S, T]`` and
            ``ascend(batch, c, lr, kl_coef)``.
        batch: its prepared steps (``policy.steps(rollouts)``), with ``response_mask`` [S, T].
        old_log_prob: [S] recorded behaviour log π_old(a_t|s_t).
        token_advantage: [S, T] (``credit.to_padded(batch.response_mask, rows="steps")``).
        token_weight: [S, T] per-token weights (the episode weights over the mask).
        lr, clip, epochs, kl_coef: Adam's step size, ε, epochs, β.

    Returns:
        The share of response tokens whose clip was active, averaged over the epochs.
    """
    mask = np.asarray(batch.response_mask).astype(bool)
    cur = policy.token_log_prob(batch)
    old = old_token_log_prob(cur, old_log_prob, mask)
    n_tok = int(mask.sum())
    frac = 0.0
    for epoch in range(epochs):
        lp = cur if epoch == 0 else policy.token_log_prob(batch)
        coef, clipped = clipped_surrogate_token_coef(lp, old, token_advantage, token_weight, mask, clip)
        policy.ascend(batch, coef, lr, kl_coef)
        frac += float(clipped.sum()) / n_tok / epochs if n_tok else 0.0
    return frac


def ppo_update(
    policy: Any,
    entries: Any,
    old_log_prob: np.ndarray,
    advantage: np.ndarray,
    weight: np.ndarray,
    *,
    lr: float,
    clip: float,
    epochs: int,
    kl_coef: float = 0.0,
) -> float:
    """``epochs`` full-batch ascent steps on the clipped surrogate (minus β·KL to the initial policy).

    Each epoch recomputes log π_θ of the stored steps, the coefficients of
    :func:`clipped_surrogate_coef`, and calls ``policy.ascend``. All advantages 0 (or all
    weights 0) and β = 0 leave the policy unchanged. A token-level policy
    (``policy.token_level`` True: ``LMPolicy``) goes to :func:`ppo_update_tokens`, with
    ``advantage`` and ``weight`` given per token ([S, T]) or per step ([S], then expanded over
    each step's response tokens).

    Args:
        policy: the policy to update in place: anything with ``log_prob(steps) -> [S]`` and
            ``ascend(steps, c, lr, kl_coef)`` (``TabularPolicy``, ``MLPPolicy``, ``GRUPolicy``).
        entries: the stored steps as the policy indexes them: [S] table entries for
            ``TabularPolicy`` (``policy.entries``), a ``StepBatch`` for the torch policies
            (``policy.steps(rollouts)``), an ``LMBatch`` for ``LMPolicy``.
        old_log_prob: [S] behaviour log-probabilities.
        advantage: [S] step advantages ([S, T] token advantages for a token-level policy).
        weight: [S] step weights (the episode weight of each step's episode; [S, T] likewise).
        lr, clip, epochs, kl_coef: step size (Adam's for the torch policies), ε, epochs, β.

    Returns:
        The share of steps (tokens, for a token-level policy) whose clip was active, averaged
        over the epochs.
    """
    if getattr(policy, "token_level", False):
        mask = np.asarray(entries.response_mask).astype(bool)
        adv, w = np.asarray(advantage, dtype=np.float64), np.asarray(weight, dtype=np.float64)
        adv = adv[:, None] * mask if adv.ndim == 1 else adv
        w = w[:, None] * mask if w.ndim == 1 else w
        return ppo_update_tokens(policy, entries, old_log_prob, adv, w, lr=lr, clip=clip, epochs=epochs, kl_coef=kl_coef)
    frac = 0.0
    for _ in range(epochs):
        coef, clipped = clipped_surrogate_coef(policy.log_prob(entries), old_log_prob, advantage, weight, clip)
        policy.ascend(entries, coef, lr, kl_coef)
        frac += float(clipped.mean()) / epochs if clipped.size else 0.0
    return frac
