"""Progress- and potential-based estimators: step credit from per-step value estimates.

Notation: episode i of group g has steps t = 0..T−1 taken in states s_t, immediate rewards r_t
(0 where absent; the outcome R_i is added to the last step's reward where a method uses
immediate rewards) and the step field ``value`` v_t, read as a value of the state *before*
step t: v_t = V(s_t). s_T is the state after the last step (the episode has ended).

* ``pav`` reads v_t as the success probability V^μ(s_t) of a *prover* policy μ, and credits a
  step with its progress V^μ(s_{t+1}) − V^μ(s_t), with the outcome as the value after the last
  step (Setlur et al. 2024).
* ``potential`` reads v_t as a potential Φ(s_t) and shapes the rewards with
  γΦ(s_{t+1}) − Φ(s_t), Φ(s_T) = 0 (Ng, Harada and Russell 1999). :func:`with_potential` fills
  the ``value`` column from a Python function of the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc

from stepcredit.data import Credit, Rollouts
from stepcredit.data.schema import FLOAT_COLUMNS
from stepcredit.estimators.outcome import base_advantage
from stepcredit.estimators.registry import EstimatorError, check_unit_interval, register
from stepcredit.estimators.value import step_rewards_with_outcome
from stepcredit.ops import group_centered, group_count, reverse_discounted_cumsum

__all__ = ["pav", "potential", "with_potential"]

PAV_PAPER = (
    "Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning "
    "(Setlur et al., 2024, arXiv:2410.08146)"
)
POTENTIAL_PAPER = (
    "Policy Invariance Under Reward Transformations: Theory and Application to Reward Shaping "
    "(Ng, Harada, Russell, 1999, ICML)"
)

def _next_value(ro: Rollouts, v: np.ndarray, after_last: np.ndarray | float) -> np.ndarray:
    """[S] v_{t+1} within each episode, and ``after_last`` ([E] or a scalar) after its last step."""
    nxt = np.empty_like(v)
    nxt[:-1] = v[1:]
    nxt[ro.episode_offsets[1:] - 1] = after_last
    return nxt


@register(family="progress", paper=PAV_PAPER, requires=("value",))
def pav(
    ro: Rollouts,
    *,
    alpha: float = 3.0,
    base: Literal["rloo", "drgrpo", "grpo"] = "rloo",
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """PAV: the outcome advantage plus α times each step's progress under a prover policy.

    The step field ``value`` is the prover's success probability V^μ(s_t) of the state before
    step t. The progress (the prover's advantage) of step t is
        A^μ_t = Q^μ(s_t, a_t) − V^μ(s_t) = V^μ(s_{t+1}) − V^μ(s_t),
    with the outcome as the value after the last step: A^μ_{T−1} = R_i − V^μ(s_{T−1}). The
    paper's policy gradient weights step t by the effective reward Q^π(s_t, a_t) + α A^μ_t
    (Eq. 5), Q^π estimated by the sampled outcome R_i and a baseline subtracted; here the
    baseline is the group's, through the outcome estimator ``base``:
        A_t = A^base_i + α (V^μ(s_{t+1}) − V^μ(s_t)).
    The progress is per step, not summed over later steps (Eq. 4 sums E[A^μ] over steps, and its
    gradient weights each step by its own A^μ). Σ_t A^μ_t = R_i − V^μ(s_0). α = 0 gives ``base``.
    Immediate rewards (``reward``) are not used: the outcome is the only reward. The outcome
    must be on the scale of the values (a success probability: 1 correct, 0 wrong).

    Args:
        ro: rollouts; needs the step field ``value`` = V^μ of the state before the step.
        alpha: weight α >= 0 of the progress (the paper's RL runs: 5.0 for Gemma 2B, 3.0 for
            9B, gains for α in 0.5..6; its beam search used 0.2..0.5).
        base: outcome advantage A^base_i: ``"rloo"`` (default; leave-one-out baseline, keeps the
            paper's reward scale, so its α carries over), ``"drgrpo"`` (R − group mean) or
            ``"grpo"`` ((R − mean)/(std + 1e-6); the progress term is not divided by the std).
        singleton: a one-episode group's A^base is its raw outcome ("raw", as in the base
            estimators) or 0 ("zero"); the progress term is kept either way.

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A^base_i (the outcome
        part, shared by the episode's steps), step_reward [S] = α A^μ_t (the dense process
        reward) and no step_return; diagnostics: ``groups``, ``singleton_groups``,
        ``zero_variance_groups`` (of the base), ``mean_progress`` (mean A^μ_t over steps),
        ``negative_progress_fraction`` (share of steps with A^μ_t < 0).

    Reference: Rewarding Progress: Scaling Automated Process Verifiers for LLM Reasoning
    (Setlur et al., 2024, arXiv:2410.08146), Eqs. 2, 4, 5 and App. E.
    Differs from official code: no official code released. The paper's RL (REINFORCE) uses a
    learned per-state value baseline of the effective reward; here a group baseline of the
    outcome only (``base``), and the progress term is not centred.
    """
    if not alpha >= 0.0:
        raise EstimatorError(f"estimator 'pav': alpha={alpha} must be >= 0")
    v = ro.column("value", by="estimator 'pav'")
    episode_adv, base_diagnostics = base_advantage(ro, base, singleton=singleton)
    progress = _next_value(ro, v, ro.outcome)
    progress -= v  # A^μ_t = V_{t+1} − V_t, with V after the last step = R_i
    step_reward = alpha * progress
    adv = episode_adv[ro.step_episode] + step_reward
    S = ro.n_steps
    return Credit(
        step_advantage=adv,
        episode_advantage=episode_adv,
        episode_offsets=ro.episode_offsets,
        step_reward=step_reward,
        diagnostics={
            **base_diagnostics,
            "mean_progress": float(progress.mean()) if S else 0.0,
            "negative_progress_fraction": float(np.count_nonzero(progress < 0.0) / S) if S else 0.0,
        },
    )


@register(family="progress", paper=POTENTIAL_PAPER, requires=("value",), reads_reward=True)
def potential(
    ro: Rollouts,
    *,
    gamma: float = 1.0,
    scale: float = 1.0,
    baseline: Literal["group", "none"] = "group",
    singleton: Literal["raw", "zero"] = "raw",
) -> Credit:
    """Potential-based reward shaping with Φ(s_t) = ``value``, and group-baselined shaped returns.

    With Φ_t = Φ(s_t) the step field ``value`` and Φ_T = 0 after the last step (terminal):
        r'_t = r_t + k (γ Φ_{t+1} − Φ_t)            (r_t with the outcome on the last step)
        G'_t = Σ_{j≥t} γ^{j−t} r'_j = G_t − k Φ_t   (the shaping telescopes)
        A_t  = G'_t − b_g,  b_g = mean over the group's episodes of G'_0 (``baseline="group"``)
    where G_t is the unshaped discounted return-to-go and k = ``scale``. For any Φ, the shaped
    MDP has the same optimal policies as the original one (Ng et al. 1999, Theorem 1; its
    optimal Q' = Q − kΦ). That is a statement about the *optimal policy of the shaped MDP*, not
    a gain: on sampled returns with γ = 1 the shaping only subtracts kΦ(s_t) from every G_t, so
    this is REINFORCE with the state-dependent baseline kΦ(s_t) (plus the group baseline); it
    reduces variance when Φ ≈ V, and leaves the expected gradient unchanged. With γ < 1 the
    same holds for the discounted objective. Within a group whose episodes share s_0, kΦ(s_0)
    is common to all G'_0 and cancels in b_g.

    Args:
        ro: rollouts; needs the step field ``value`` = Φ of the state before the step (use
            :func:`with_potential` to compute it from a function of ``state``).
        gamma: discount γ in [0, 1], used both in the shaping term and in the returns (the
            invariance needs the same γ in both).
        scale: shaping weight k (any real number: kΦ is a potential too); 0 gives the unshaped
            returns.
        baseline: ``"group"`` subtracts the group mean of the episodes' shaped total returns
            G'_0; ``"none"`` subtracts nothing (A_t = G'_t).
        singleton: with ``baseline="group"``, a one-episode group's baseline is 0 ("raw": A_t
            = G'_t) or its own G'_0 ("zero": episode advantage 0, A_t = G'_t − G'_0).

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = G'_0 − b_g (the first
        step's advantage), step_return [S] = G'_t, step_reward [S] = r'_t; diagnostics:
        ``singleton_groups``, ``mean_shaping`` (mean of k(γΦ_{t+1} − Φ_t) over steps).

    Reference: Policy Invariance Under Reward Transformations: Theory and Application to Reward
    Shaping (Ng, Harada, Russell, 1999, ICML), Theorem 1.
    Differs from official code: no official code (a textbook transformation).
    """
    check_unit_interval("potential", gamma=gamma)
    phi = ro.column("value", by="estimator 'potential'")
    codes, G = ro.episode_group, ro.n_groups
    # shaping k(γΦ_{t+1} − Φ_t), Φ after an episode's last step = 0, built in place
    shaping = _next_value(ro, phi, 0.0)
    shaping *= gamma
    shaping -= phi
    shaping *= scale
    r = step_rewards_with_outcome(ro)
    r += shaping
    mean_shaping = float(shaping.mean()) if shaping.size else 0.0
    del shaping
    ret = reverse_discounted_cumsum(r, ro.episode_offsets, gamma)
    first = ro.episode_offsets[:-1]
    total = ret[first]  # G'_0 of each episode
    if baseline == "group":
        episode_adv = group_centered(total, codes, G, singleton)
        # A_t = (G'_t − G'_0) + (G'_0 − b_g): the in-episode difference first, exact at t = 0
        adv = ret - total[ro.step_episode]
        adv += episode_adv[ro.step_episode]
    else:
        episode_adv = total
        adv = ret.copy()
    return Credit(
        step_advantage=adv,
        episode_advantage=episode_adv,
        episode_offsets=ro.episode_offsets,
        step_return=ret,
        step_reward=r,
        diagnostics={
            "singleton_groups": int(np.sum(group_count(codes, G) == 1)),
            "mean_shaping": mean_shaping,
        },
    )


def with_potential(
    ro: Rollouts, phi: Callable[[Any], float], *, column: str = "value"
) -> Rollouts:
    """Rollouts whose ``column`` holds Φ(state) of every step, from a Python function Φ.

    Φ is called once per distinct state (with the state's original value, a string or an
    integer), not once per step; the results are scattered back to the steps. Use it to run
    ``potential`` (or any estimator reading ``value``) with a hand-written potential, e.g. a
    distance-to-goal heuristic.

    Args:
        ro: rollouts with the step field ``state``.
        phi: the potential, a function of one state returning a finite number.
        column: the float step column to fill (default ``value``; replaced if present).

    Returns:
        A new Rollouts, identical except for ``column`` [S] = Φ(state of the step).

    Raises:
        MissingColumnError: the rollouts have no ``state``.
        ValueError: ``column`` is not a float step column, or Φ returned a non-number or a
            non-finite value (the message names the state).
    """
    if column not in FLOAT_COLUMNS:
        raise ValueError(f"column={column!r} is not a float step column; use one of {', '.join(FLOAT_COLUMNS)}")
    ro.column("state", by="with_potential")  # MissingColumnError naming 'state'
    enc = pc.dictionary_encode(ro.key_values["state"])
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    states = enc.dictionary.to_pylist()
    values = np.empty(len(states), dtype=np.float64)
    for k, state in enumerate(states):  # one call per distinct state (a Python function)
        out = phi(state)
        try:
            x = float(out)
        except (TypeError, ValueError):
            raise ValueError(f"phi({state!r}) returned {out!r}, which is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"phi({state!r}) returned {out!r}; the potential must be a finite number")
        values[k] = x
    return ro.replace_columns(**{column: values[codes]})
