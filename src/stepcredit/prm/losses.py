"""Preference and reward-model losses on log-probabilities and scores (PyTorch).

Needs the ``torch`` extra (``pip install 'stepcredit[torch]'``). Every loss takes tensors and
returns a differentiable tensor: a scalar with ``reduction="mean"`` (default) or ``"sum"``, the
per-item losses with ``"none"``. Inputs are never modified; nothing is detached unless the
docstring says so (reward-model margins and rank weights are constants).

Notation: σ(x) = 1/(1 + e^{−x}); a response (or trajectory) y has log-probability
log π(y) = Σ_tokens log π(y_k | y_<k) under the policy π and log π_ref(y) under the frozen
reference; its implicit reward is β·(log π(y) − log π_ref(y)) (DPO's reparameterisation).
"Chosen" (y_c) and "rejected" (y_r) name the preferred and dispreferred member of a pair.
Numerically, −log σ(x) is computed as softplus(−x) (``logsigmoid``), which does not overflow.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("stepcredit.prm.losses needs PyTorch: pip install 'stepcredit[torch]'") from err

from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.labels import _check_offsets

__all__ = [
    "bradley_terry_loss",
    "classification_loss",
    "dpo_loss",
    "implicit_prm_ce_loss",
    "implicit_step_rewards",
    "madpo_loss",
    "madpo_weights",
    "regression_loss",
    "tpo_adaptive_logratio",
    "tpo_listwise_loss",
    "trajectory_dpo_loss",
]

Reduction = Literal["mean", "sum", "none"]

DPO_PAPER = (
    "Direct Preference Optimization: Your Language Model is Secretly a Reward Model "
    "(Rafailov, Sharma et al., 2023, arXiv:2305.18290)"
)
MADPO_PAPER = (
    "Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference Optimization "
    "(Rho, 2025, arXiv:2510.05342)"
)
TPO_PAPER = (
    "TPO: Aligning Large Language Models with Multi-branch & Multi-step Preference Trees "
    "(Liao, Chu, Wang, 2024, arXiv:2410.12854)"
)
IMPLICIT_PRM_PAPER = "Free Process Rewards without Process Labels (Yuan, Li et al., 2024, arXiv:2412.01981)"
OPRL_PAPER = (
    "Online Process Reward Learning for Agentic Reinforcement Learning "
    "(Liu, Wang et al., 2025, arXiv:2509.19199)"
)
HELPSTEER2_PAPER = (
    "HelpSteer2-Preference: Complementing Ratings with Preferences "
    "(Wang, Dong et al., 2024, arXiv:2410.01257)"
)

#: τ of MADPO's released notebook: ln(0.999/0.001), the margin at which a reward model is 99.9% sure
MADPO_TAU = math.log(0.999 / 0.001)


# ---------------------------------------------------------------------- shared checks
def _tensor(fn: str, name: str, x, ndim: int | tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise PRMError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(x).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in dims:
        raise PRMError(f"{fn}: argument '{name}' must be {' or '.join(f'{d}-D' for d in dims)}, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise PRMError(f"{fn}: argument '{name}' must be a floating-point tensor, got {x.dtype}")
    return x


def _same_shape(fn: str, **tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise PRMError(f"{fn}: arguments must have the same shape, got {shapes}")


def _mask(fn: str, mask, like: torch.Tensor) -> torch.Tensor:
    """The mask as a bool tensor of ``like``'s shape (None = all True)."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise PRMError(f"{fn}: argument 'mask' must be a bool torch.Tensor")
    if mask.shape != like.shape:
        raise PRMError(f"{fn}: argument 'mask' must have shape {tuple(like.shape)}, got {tuple(mask.shape)}")
    return mask


def _check_beta(fn: str, beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise PRMError(f"{fn}: argument 'beta' must be finite and > 0, got {beta!r}")


def _reduce(fn: str, losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        # an empty batch has no mean: 0 (still attached to the graph), like the empty-pair case of OPRL's code
        return losses.mean() if losses.numel() else losses.sum()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise PRMError(f"{fn}: argument 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}")


def _masked_mean(fn: str, losses: torch.Tensor, m: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-item losses over the masked items (``"none"`` keeps the shape, 0 outside the mask)."""
    kept = torch.where(m, losses, torch.zeros_like(losses))
    if reduction == "none":
        return kept
    if reduction == "sum":
        return kept.sum()
    if reduction == "mean":
        return kept.sum() / m.sum().clamp(min=1)
    raise PRMError(f"{fn}: argument 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}")


# ---------------------------------------------------------------------- DPO and MADPO
def _dpo_logits(fn, logp_chosen, logp_rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    for name, x in (("logp_chosen", logp_chosen), ("logp_rejected", logp_rejected),
                    ("ref_chosen", ref_chosen), ("ref_rejected", ref_rejected)):
        _tensor(fn, name, x, 1)
    _same_shape(fn, logp_chosen=logp_chosen, logp_rejected=logp_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    return (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """DPO: the logistic loss of the implicit reward margin of each preference pair.

        ℓ_i = −log σ(β [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))]).

    Equal log-ratios give ℓ = log 2; swapping chosen and rejected turns ℓ(x) into ℓ(−x)
    (ℓ(x) − ℓ(−x) = −x).

    Args:
        logp_chosen: [N] log π(y_c), summed over each response's tokens (or a trajectory's).
        logp_rejected: [N] log π(y_r).
        ref_chosen: [N] log π_ref(y_c).
        ref_rejected: [N] log π_ref(y_r).
        beta: β > 0, the strength of the implicit KL penalty (paper default 0.1).
        reduction: ``"mean"`` over pairs, ``"sum"``, or ``"none"`` ([N]).

    Returns:
        The loss (scalar, or [N]).

    Reference: Direct Preference Optimization: Your Language Model is Secretly a Reward Model
    (Rafailov, Sharma et al., 2023, arXiv:2305.18290), eq. 7. Differs from official code: none.
    """
    fn = "dpo_loss"
    _check_beta(fn, beta)
    x = _dpo_logits(fn, logp_chosen, logp_rejected, ref_chosen, ref_rejected)
    return _reduce(fn, -F.logsigmoid(beta * x), reduction)


def madpo_weights(
    margin: torch.Tensor,
    *,
    c_max: float = 2.0,
    c_min: float = 0.5,
    lambda_: float = 1.0,
    tau: float = MADPO_TAU,
) -> torch.Tensor:
    """MADPO's per-pair weight from a reward model's margin (a constant: no gradient).

    With Δ = r̂(y_c) − r̂(y_r) the reward model's margin in favour of the chosen response:

        c(|Δ|) = c_min + (c_max − c_min) / (1 + ((c_max − 1)/(1 − c_min)) · e^{λ(|Δ| − τ)}),
        w(Δ)   = σ(c(|Δ|)·Δ) / σ(Δ)   if Δ > −τ,   w(Δ) = 1 otherwise.

    c decreases from ≈ c_max at small margins to c_min at large ones, and c(τ) = 1. A pair the
    reward model finds easy (large Δ > 0) gets c < 1, so w < 1 (dampened); a hard, small
    positive margin gets c > 1, so w > 1 (amplified); Δ = 0 gives w = 1; a pair the reward
    model strongly disputes (Δ ≤ −τ) keeps w = 1. ``c_max = c_min = 1`` gives w ≡ 1 (plain DPO).

    Args:
        margin: [N] Δ, the reward model's score of the chosen minus that of the rejected response.
        c_max: the largest amplification (> 1, or 1 together with c_min = 1).
        c_min: the smallest (in [0, 1)).
        lambda_: λ > 0, the steepness of c.
        tau: τ ≥ 0, the margin at which c = 1 (default ln(0.999/0.001) ≈ 6.907).

    Returns:
        [N] weights w (detached).

    Reference: Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference
    Optimization (Rho, 2025, arXiv:2510.05342); the weight is verified against the official
    code sirano1004/Margin-Apative-Direct-Preference-Optimization@389e654f:utils/loss_functions.py
    (``MADPOLoss.coef`` and the chosen-side weight of ``forward``); defaults from its
    ``notebooks/MADPO.ipynb`` (β 0.1, c_max 2, c_min 1/c_max, λ 1, τ ln(0.999/0.001)); the
    paper text itself was not read. Differs from official code: none.
    """
    fn = "madpo_weights"
    _tensor(fn, "margin", margin, 1)
    if c_max == 1.0 and c_min == 1.0:
        return torch.ones_like(margin).detach()
    if not (0.0 <= c_min < 1.0 < c_max and math.isfinite(c_max)):
        raise PRMError(f"{fn}: need 0 <= c_min < 1 < c_max (or c_min = c_max = 1), got c_min={c_min!r}, c_max={c_max!r}")
    if not (math.isfinite(lambda_) and lambda_ > 0):
        raise PRMError(f"{fn}: argument 'lambda_' must be finite and > 0, got {lambda_!r}")
    if not (math.isfinite(tau) and tau >= 0):
        raise PRMError(f"{fn}: argument 'tau' must be finite and >= 0, got {tau!r}")
    d = margin.detach()
    k = (c_max - 1.0) / (1.0 - c_min)
    # 1 + k e^{λ(|Δ|−τ)} written as e^{log1p-free} softplus form: log(1 + e^{z}) with z = log k + λ(|Δ|−τ)
    z = math.log(k) + lambda_ * (d.abs() - tau)
    c = c_min + (c_max - c_min) * torch.exp(-F.softplus(z))
    w = torch.exp(F.logsigmoid(c * d) - F.logsigmoid(d))
    return torch.where(d > -tau, w, torch.ones_like(w))


def madpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    margin: torch.Tensor,
    *,
    beta: float = 0.1,
    c_max: float = 2.0,
    c_min: float = 0.5,
    lambda_: float = 1.0,
    tau: float = MADPO_TAU,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """MADPO: DPO with a per-pair weight from a reward model's margin estimate.

        ℓ_i = w(Δ_i) · [−log σ(β [(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))])],

    with w from :func:`madpo_weights` (a constant). ``reduction="mean"`` divides the weighted
    sum by the number of pairs, as the official code does (not by Σ w).

    Args:
        logp_chosen, logp_rejected, ref_chosen, ref_rejected: [N] as in :func:`dpo_loss`.
        margin: [N] the reward model's r̂(y_c) − r̂(y_r) (detached inside).
        beta: β (paper default 0.1).
        c_max, c_min, lambda_, tau: the weight's parameters (:func:`madpo_weights`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss (scalar, or [N]).

    Reference: Margin Adaptive DPO: Leveraging Reward Model for Granular Control in Preference
    Optimization (Rho, 2025, arXiv:2510.05342), L = E[−w(h_φ̂) log σ(β h_θ)]. Differs from
    official code: none (sirano1004/Margin-Apative-Direct-Preference-Optimization@389e654f:
    utils/loss_functions.py, ``MADPOLoss``, which takes the pair as (y1, y2, choice); here the
    pair is already ordered chosen-first).
    """
    fn = "madpo_loss"
    _check_beta(fn, beta)
    x = _dpo_logits(fn, logp_chosen, logp_rejected, ref_chosen, ref_rejected)
    _tensor(fn, "margin", margin, 1)
    _same_shape(fn, logp_chosen=logp_chosen, margin=margin)
    w = madpo_weights(margin, c_max=c_max, c_min=c_min, lambda_=lambda_, tau=tau).to(x.dtype)
    return _reduce(fn, -w * F.logsigmoid(beta * x), reduction)


# ---------------------------------------------------------------------- TPO
def tpo_listwise_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    variant: Literal["pairwise", "lambda", "code"] = "pairwise",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """TPO's preference-list ranking loss over lists of responses scored by a reward.

    List b holds responses i (``mask`` true) with rewards y_i and implicit log-ratios
    s_i = log π(y_i) − log π_ref(y_i) (pass :func:`tpo_adaptive_logratio` as ``logps`` with
    zero ``ref_logps`` to use the adaptive step reward). P_b = {(i, j) : y_i > y_j}:

        ``"pairwise"``: ℓ_b = (1/|P_b|) Σ_{P_b} −log σ(β (s_i − s_j))
                       (every ordered pair, RankNet-style; a list of two is exactly DPO);
        ``"lambda"``:  ℓ_b = Σ_{P_b} Δ_ij [−log σ(β (s_i − s_j))] / Σ_{P_b} Δ_ij,
                       Δ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)|,  G = 2^y − 1,  D(τ) = log₂(1 + τ),
                       τ_i the rank of s_i in its list (1 = highest; ties by position; no gradient)
                       (LiPO-λ's LambdaLoss weights, normalised so a list of two is DPO);
        ``"code"``:    ℓ_b = −log σ(β L_b),  L_b = (1/(n_b(n_b − 1))) Σ_{i,j} −log σ((s_i − s_j) sign(y_i − y_j)),
                       the sum over all n_b² ordered pairs of members, the diagonal and tied
                       pairs included (log 2 each): the loss as released.

    Lists without a strictly ordered pair (fewer than two members, or all rewards tied) are
    left out of the mean (``"code"``: lists of fewer than two members), and so are ``"lambda"``
    lists whose weights all round to 0 (rewards 1e-45 apart); with none left the loss is 0.
    ``"lambda"`` needs rewards on a small scale (G = 2^y − 1; e.g. y ∈ [0, 1]).

    Args:
        logps: [B, N] log π of each response (summed over its tokens).
        ref_logps: [B, N] log π_ref.
        rewards: [B, N] rewards y of each response (any order; only their comparisons matter).
        mask: [B, N] bool, True for the list members; None = all.
        beta: β > 0 (0.5 in the official ``tpo_train.py``).
        variant: ``"pairwise"``, ``"lambda"`` or ``"code"``.
        reduction: ``"mean"`` over lists, ``"sum"``, or ``"none"`` ([B], 0 for left-out lists).

    Returns:
        The loss.

    Reference: TPO: Aligning Large Language Models with Multi-branch & Multi-step Preference
    Trees (Liao, Chu, Wang, 2024, arXiv:2410.12854), "Preference List Ranking". The paper's
    exact list loss (its LambdaRank weights) was not verified; ``"pairwise"`` and ``"lambda"``
    are our forms of it (``"lambda"`` uses the weights of LiPO: Listwise Preference
    Optimization through Learning-to-Rank, Liu, Qin et al., 2024, arXiv:2402.01878, which TPO
    builds on). Differs from official code: MrBlankness/TPO@9682de45:loss.py
    (``lambda_rank_loss``, ``TPOLoss``) is ``variant="code"``: no λ weights despite the name,
    and the ranking loss wrapped in a further −log σ(β ·); the code applies that wrap to the
    batch mean (batch size 1 in its scripts), here to each list.
    """
    fn = "tpo_listwise_loss"
    _check_beta(fn, beta)
    for name, x in (("logps", logps), ("ref_logps", ref_logps), ("rewards", rewards)):
        _tensor(fn, name, x, 2)
    _same_shape(fn, logps=logps, ref_logps=ref_logps, rewards=rewards)
    if variant not in ("pairwise", "lambda", "code"):
        raise PRMError(f"{fn}: argument 'variant' must be 'pairwise', 'lambda' or 'code', got {variant!r}")
    m = _mask(fn, mask, logps)
    zero = torch.zeros_like(logps)
    s = torch.where(m, logps - ref_logps, zero)
    y = torch.where(m, rewards.detach(), zero)
    both = m.unsqueeze(2) & m.unsqueeze(1)  # [B, N, N]: i and j are members
    diff = s.unsqueeze(2) - s.unsqueeze(1)  # s_i − s_j
    y_diff = y.unsqueeze(2) - y.unsqueeze(1)
    if variant == "code":
        n = m.sum(dim=1).to(s.dtype)
        terms = torch.where(both, -F.logsigmoid(diff * torch.sign(y_diff)), torch.zeros_like(diff))
        used = n >= 2
        inner = terms.sum(dim=(1, 2)) / torch.where(used, n * (n - 1), torch.ones_like(n))
        per_list = -F.logsigmoid(beta * inner)
    else:
        pairs = both & (y_diff > 0)
        if variant == "pairwise":
            weight = pairs.to(s.dtype)
        else:
            with torch.no_grad():
                key = torch.where(m, s, torch.full_like(s, -math.inf))
                order = torch.sort(key, dim=1, descending=True, stable=True).indices
                rank = torch.empty_like(order)
                rank.scatter_(1, order, torch.arange(1, s.shape[1] + 1, device=s.device).expand_as(order))
                inv_d = 1.0 / torch.log2(1.0 + rank.to(s.dtype))
                gain = torch.pow(2.0, y) - 1.0
                delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * (inv_d.unsqueeze(2) - inv_d.unsqueeze(1)).abs()
                weight = torch.where(pairs, delta, torch.zeros_like(delta))
        total = weight.sum(dim=(1, 2))
        used = total > 0  # a pair exists (and, for "lambda", its weights did not all round to 0)
        per_list = (weight * -F.logsigmoid(beta * diff)).sum(dim=(1, 2)) / torch.where(used, total, torch.ones_like(total))
    per_list = torch.where(used, per_list, torch.zeros_like(per_list))
    if reduction == "none":
        return per_list
    return _masked_mean(fn, per_list, used, reduction)


def tpo_adaptive_logratio(
    token_logratio: torch.Tensor,
    token_step: torch.Tensor,
    hidden: torch.Tensor,
) -> torch.Tensor:
    """TPO's adaptive step reward: a response's log-ratio as a similarity-weighted mean over its steps.

    For response n of a list (response 0 the top-ranked one) with steps k:

        ρ̄_{n,k} = mean of the token log-ratios log π − log π_ref over the tokens of step k,
        h̄_{n,k} = mean of the hidden states of those tokens,
        w_{n,k} = 1 + cos(h̄_{n,k}, h̄_{0,k})   if step k exists in response n and in response 0,
                 0 otherwise,
        s_n     = Σ_k w_{n,k} ρ̄_{n,k} / Σ_k w_{n,k}   (0 if every weight is 0).

    Steps that are semantically close to the best response's step (shared sub-trajectories)
    weigh up to 2, dissimilar ones down to 0, so the list loss concentrates on the steps where
    responses diverge. Gradients flow through ρ̄ and through the weights (as in the official
    code); detach ``hidden`` for constant weights.

    Args:
        token_logratio: [B, N, T] per-token log π − log π_ref.
        token_step: [B, N, T] int step index of each token (0, 1, ..), −1 for tokens in no step
            (prompt, padding).
        hidden: [B, N, T, H] the policy's last hidden states.

    Returns:
        [B, N] s_n, to pass as ``logps`` (with zero ``ref_logps``) to :func:`tpo_listwise_loss`.

    Reference: TPO: Aligning Large Language Models with Multi-branch & Multi-step Preference
    Trees (Liao, Chu, Wang, 2024, arXiv:2410.12854), "Adaptive Step Reward". Verified against
    MrBlankness/TPO@9682de45:loss.py (``compute_step_weights``, ``compute_weighted_logits``).
    Differs from official code: there step index 0 marks non-step tokens and steps start at 1;
    here −1 marks them and steps start at 0. Cosines use torch's ``cosine_similarity``
    (norms clamped at 1e-8), as the code does.
    """
    fn = "tpo_adaptive_logratio"
    _tensor(fn, "token_logratio", token_logratio, 3)
    _tensor(fn, "hidden", hidden, 4)
    if not isinstance(token_step, torch.Tensor) or token_step.dtype not in (torch.int32, torch.int64):
        raise PRMError(f"{fn}: argument 'token_step' must be an integer torch.Tensor")
    if token_step.shape != token_logratio.shape or hidden.shape[:3] != token_logratio.shape:
        raise PRMError(
            f"{fn}: 'token_step' {tuple(token_step.shape)} and 'hidden' {tuple(hidden.shape)} must match "
            f"'token_logratio' {tuple(token_logratio.shape)} in [B, N, T]"
        )
    if token_step.numel() and int(token_step.min()) < -1:
        raise PRMError(f"{fn}: argument 'token_step' must be >= -1, got {int(token_step.min())}")
    n_steps = int(token_step.max()) + 1 if token_step.numel() else 0
    batch, n_resp = token_logratio.shape[:2]
    if n_steps <= 0:
        return token_logratio.sum(dim=2) * 0.0
    onehot = (token_step.unsqueeze(-1) == torch.arange(n_steps, device=token_step.device)).to(token_logratio.dtype)
    count = onehot.sum(dim=2)  # [B, N, K]
    present = count > 0
    safe = count.clamp(min=1)
    rho = torch.einsum("bntk,bnt->bnk", onehot, token_logratio) / safe
    h = torch.einsum("bntk,bnth->bnkh", onehot, hidden.to(token_logratio.dtype)) / safe.unsqueeze(-1)
    cos = F.cosine_similarity(h, h[:, :1].expand_as(h), dim=-1, eps=1e-8)  # [B, N, K]
    valid = present & present[:, :1]
    w = torch.where(valid, 1.0 + cos, torch.zeros_like(cos))
    total = w.sum(dim=2)
    nonzero = total > 0
    return torch.where(nonzero, (w * rho).sum(dim=2) / torch.where(nonzero, total, torch.ones_like(total)), torch.zeros_like(total))


# ---------------------------------------------------------------------- reward-model losses
def bradley_terry_loss(
    score_chosen: torch.Tensor,
    score_rejected: torch.Tensor,
    *,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Bradley-Terry pairwise loss of a reward model: ℓ_i = −log σ(s_c − s_r).

    Invariant to adding the same constant to both scores; a reward model's scores are defined
    only up to such a shift.

    Args:
        score_chosen: [N] reward-model scores s_c of the preferred responses.
        score_rejected: [N] scores s_r of the dispreferred ones.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Reference: HelpSteer2-Preference: Complementing Ratings with Preferences (Wang, Dong et al.,
    2024, arXiv:2410.01257) compares this Bradley-Terry loss with regression on ratings for
    reward-model training. Differs from official code: none.
    """
    fn = "bradley_terry_loss"
    _tensor(fn, "score_chosen", score_chosen, 1)
    _tensor(fn, "score_rejected", score_rejected, 1)
    _same_shape(fn, score_chosen=score_chosen, score_rejected=score_rejected)
    return _reduce(fn, -F.logsigmoid(score_chosen - score_rejected), reduction)


def regression_loss(
    pred: torch.Tensor,
    soft_label: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Squared error of step scores against soft (Monte-Carlo) labels, over the masked steps.

        L = Σ_t m_t (p_t − y_t)² / Σ_t m_t   (``"mean"``; 0 when no step is masked in).

    Args:
        pred: [S] (or any shape) predicted step scores p_t.
        soft_label: soft labels y_t ∈ [0, 1] (e.g. :func:`stepcredit.prm.labels.soft_labels`), the shape of ``pred``.
        mask: bool, True for the steps that count; None = all.
        reduction: ``"mean"`` over masked steps, ``"sum"``, or ``"none"`` (0 outside the mask).

    Returns:
        The loss.

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935) trains on hard (HE) or soft (SE) step labels; the
    squared-error objective on soft labels is our choice (the paper trains with cross-entropy,
    see :func:`classification_loss`). Differs from official code: not compared.
    """
    fn = "regression_loss"
    _tensor(fn, "pred", pred, tuple(range(1, 4)))
    _tensor(fn, "soft_label", soft_label, tuple(range(1, 4)))
    _same_shape(fn, pred=pred, soft_label=soft_label)
    m = _mask(fn, mask, pred)
    y = torch.where(m, soft_label, pred.detach())
    return _masked_mean(fn, (pred - y) ** 2, m, reduction)


def classification_loss(
    logit: torch.Tensor,
    hard_label: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Binary cross-entropy of step logits against step labels, over the masked steps.

        ℓ_t = −[y_t log σ(z_t) + (1 − y_t) log(1 − σ(z_t))],   L = Σ_t m_t ℓ_t / Σ_t m_t.

    Labels may be hard (0/1) or soft in [0, 1] (cross-entropy fits soft Monte-Carlo labels too).

    Args:
        logit: [S] (or any shape) step logits z_t.
        hard_label: labels y_t, the shape of ``logit``.
        mask: bool, True for the steps that count; None = all.
        reduction: ``"mean"`` over masked steps, ``"sum"``, or ``"none"`` (0 outside the mask).

    Returns:
        The loss.

    Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations
    (Wang, Li et al., 2024, arXiv:2312.08935): the PRM is trained with a per-step binary
    cross-entropy. Differs from official code: not compared.
    """
    fn = "classification_loss"
    _tensor(fn, "logit", logit, tuple(range(1, 4)))
    _tensor(fn, "hard_label", hard_label, tuple(range(1, 4)))
    _same_shape(fn, logit=logit, hard_label=hard_label)
    m = _mask(fn, mask, logit)
    y = torch.where(m, hard_label, torch.zeros_like(hard_label))
    if bool(((y < 0) | (y > 1)).any()):
        raise PRMError(f"{fn}: argument 'hard_label' must lie in [0, 1] on the masked steps")
    losses = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
    return _masked_mean(fn, losses, m, reduction)


# ---------------------------------------------------------------------- implicit PRM and OPRL
def implicit_step_rewards(
    token_logratio: torch.Tensor,
    step_token_offsets,
    *,
    beta: float = 0.05,
) -> torch.Tensor:
    """Implicit process reward of each step: β times the sum of its tokens' log-ratios.

        r_t = β Σ_{k ∈ step t} (log π_φ(y_k | y_<k) − log π_ref(y_k | y_<k)) = q_t − q_{t−1},

    the difference of the implicit Q-values q_t = β Σ_{k ≤ end of step t} log-ratio at the step
    ends. A step without tokens gets 0.

    Args:
        token_logratio: [K] per-token log π_φ − log π_ref, the tokens of all steps in order.
        step_token_offsets: [S+1] CSR offsets: step t owns tokens offsets[t]:offsets[t+1]
            (array-like of ints; empty steps allowed).
        beta: β (paper default 0.05).

    Returns:
        [S] step rewards (differentiable in ``token_logratio``).

    Reference: Free Process Rewards without Process Labels (Yuan, Li et al., 2024,
    arXiv:2412.01981): q_φ^t = Σ_{i ≤ t} β log(π_φ(y_i|y_<i)/π_ref(y_i|y_<i)) and the process
    reward r_φ^t = q_φ^t − q_φ^{t−1}. Differs from official code: none.
    """
    fn = "implicit_step_rewards"
    _check_beta(fn, beta)
    _tensor(fn, "token_logratio", token_logratio, 1)
    off = np.asarray(step_token_offsets)
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise PRMError(f"{fn}: argument 'step_token_offsets' must be a 1-D integer array [S+1], got shape {off.shape}")
    if off[0] != 0 or off[-1] != token_logratio.shape[0] or (np.diff(off) < 0).any():
        raise PRMError(
            f"{fn}: argument 'step_token_offsets' must be non-decreasing from 0 to the number of tokens "
            f"{token_logratio.shape[0]}, got {off[0]}..{off[-1]}"
        )
    counts = torch.as_tensor(np.diff(off), dtype=torch.long, device=token_logratio.device)
    n_steps = int(off.size - 1)
    step_of_token = torch.repeat_interleave(torch.arange(n_steps, device=token_logratio.device), counts)
    sums = torch.zeros(n_steps, dtype=token_logratio.dtype, device=token_logratio.device)
    return beta * sums.index_add(0, step_of_token, token_logratio)


def implicit_prm_ce_loss(
    logratio: torch.Tensor,
    outcome: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.05,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Cross-entropy objective of the implicit PRM on outcome labels only.

        r_φ(y) = β Σ_k (log π_φ(y_k | y_<k) − log π_ref(y_k | y_<k)) = β log(π_φ(y)/π_ref(y)),
        ℓ     = −[l log σ(r_φ(y)) + (1 − l) log(1 − σ(r_φ(y)))],   l ∈ {0, 1} the outcome label.

    Trained so, the model's token log-ratios are process rewards (:func:`implicit_step_rewards`).

    Args:
        logratio: [N] per-response sums log π_φ(y) − log π_ref(y), or [N, T] per-token
            log-ratios summed over ``mask``.
        outcome: [N] labels l (0/1; values in [0, 1] act as soft labels).
        mask: [N, T] bool for token log-ratios (None = all tokens); not allowed with [N].
        beta: β (paper default 0.05).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Reference: Free Process Rewards without Process Labels (Yuan, Li et al., 2024,
    arXiv:2412.01981), the CE objective as written in PRIME-RL/ImplicitPRM@c0441755:README.md
    (there maximised; here its negative is minimised). Differs from official code: none.
    """
    fn = "implicit_prm_ce_loss"
    _check_beta(fn, beta)
    _tensor(fn, "logratio", logratio, (1, 2))
    _tensor(fn, "outcome", outcome, 1)
    if logratio.dim() == 2:
        m = _mask(fn, mask, logratio)
        total = torch.where(m, logratio, torch.zeros_like(logratio)).sum(dim=1)
    else:
        if mask is not None:
            raise PRMError(f"{fn}: argument 'mask' applies only to [N, T] token log-ratios")
        total = logratio
    if total.shape != outcome.shape:
        raise PRMError(f"{fn}: argument 'outcome' must have shape {tuple(total.shape)}, got {tuple(outcome.shape)}")
    if bool(((outcome < 0) | (outcome > 1)).any()):
        raise PRMError(f"{fn}: argument 'outcome' must lie in [0, 1]")
    losses = F.binary_cross_entropy_with_logits(beta * total, outcome.to(total.dtype), reduction="none")
    return _reduce(fn, losses, reduction)


def trajectory_dpo_loss(
    step_logratio: torch.Tensor,
    episode_offsets,
    preferred,
    dispreferred,
    *,
    beta: float = 0.05,
    aggregate: Literal["sum", "mean"] = "sum",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """OPRL's trajectory-level DPO loss for an implicit PRM, on preferred/dispreferred episodes.

    With each step's log-ratio sum ρ_t = Σ_{tokens of step t} (log π_φ − log π_old) (the
    reference is the policy before the update, π_θold), the trajectory score is

        ``"sum"``:  Q(τ) = β Σ_t ρ_t = β log(π_φ(τ)/π_θold(τ))   (the paper's DPO form),
        ``"mean"``: Q(τ) = β (1/T) Σ_t ρ_t                       (the official code),

    and over the pairs (τ⁺, τ⁻) (e.g. :func:`stepcredit.prm.labels.preference_pairs`):

        ℓ = −log σ(Q(τ⁺) − Q(τ⁻)).

    With no pair the loss is 0 (attached to the graph), as in the official code.

    Args:
        step_logratio: [S] per-step sums of the token log-ratios (unscaled).
        episode_offsets: [E+1] CSR offsets of the episodes' steps.
        preferred: [P] episode indices of τ⁺.
        dispreferred: [P] episode indices of τ⁻.
        beta: β (0.05 in the official scripts).
        aggregate: ``"sum"`` or ``"mean"`` over a trajectory's steps.
        reduction: ``"mean"`` over pairs, ``"sum"``, or ``"none"`` ([P]).

    Returns:
        The loss.

    Reference: Online Process Reward Learning for Agentic Reinforcement Learning (Liu, Wang
    et al., 2025, arXiv:2509.19199). The ``"sum"`` form follows METHODS-NOTES 5.3's reading of
    the paper (secondary, not re-read here); the ``"mean"`` form is verified against the
    official code, Tongyi-ConvAI/Tongyi-Character ``CharacterRL-iStar/istar/rm_utils.py``
    (``compute_eto_loss_rm``: per-step β-scaled sums, averaged over each trajectory's steps,
    all success × failure pairs of a group, one mean over all pairs of the batch).
    Differs from official code: ``aggregate="sum"`` by default (the code averages).
    """
    fn = "trajectory_dpo_loss"
    _check_beta(fn, beta)
    if aggregate not in ("sum", "mean"):
        raise PRMError(f"{fn}: argument 'aggregate' must be 'sum' or 'mean', got {aggregate!r}")
    _tensor(fn, "step_logratio", step_logratio, 1)
    off = _check_offsets(fn, episode_offsets, int(step_logratio.shape[0]))
    n_ep = off.size - 1
    idx = []
    for name, x in (("preferred", preferred), ("dispreferred", dispreferred)):
        a = np.asarray(x)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise PRMError(f"{fn}: argument '{name}' must be a 1-D integer array, got shape {a.shape}, dtype {a.dtype}")
        a = a.astype(np.int64)
        bad = np.flatnonzero((a < 0) | (a >= n_ep))
        if bad.size:
            raise PRMError(f"{fn}: argument '{name}' holds episode index {int(a[bad[0]])} at pair {int(bad[0])}, outside 0..{n_ep - 1}")
        idx.append(a)
    if idx[0].shape != idx[1].shape:
        raise PRMError(f"{fn}: arguments 'preferred' {idx[0].shape} and 'dispreferred' {idx[1].shape} must have the same shape")
    dev = step_logratio.device
    counts = torch.as_tensor(np.diff(off), dtype=torch.long, device=dev)
    episode_of_step = torch.repeat_interleave(torch.arange(n_ep, device=dev), counts)
    q = torch.zeros(n_ep, dtype=step_logratio.dtype, device=dev).index_add(0, episode_of_step, step_logratio)
    if aggregate == "mean":
        q = q / counts.to(q.dtype)
    q = beta * q
    win = torch.as_tensor(idx[0], device=dev)
    lose = torch.as_tensor(idx[1], device=dev)
    losses = -F.logsigmoid(q[win] - q[lose])
    if losses.numel() == 0 and reduction != "none":
        return step_logratio.sum() * 0.0
    return _reduce(fn, losses, reduction)
