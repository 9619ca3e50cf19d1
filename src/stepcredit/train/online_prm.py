"""OPRL's online implicit process reward model: scored as β·log π_φ/π_old, trained by trajectory DPO.

Notation: π_φ is the PRM, a second policy object of the trained policy's class (tabular, MLP,
GRU or LM), created from the same initial state as the policy (OPRL initialises the PRM from
the policy); π_old is the behaviour policy that collected the batch, whose log-probabilities
logp_t = log π_old(a_t|s_t) the collector records. For a stored step t of episode e:

    ρ_t = log π_φ(a_t|s_t) − logp_t                    (for the LM policy log π_φ is the sum
                                                        over the action's tokens)
    r_t = β ρ_t                                        (the implicit step reward, ``process``)
    Q(τ_e) = β Σ_{t∈e} ρ_t   (``q="sum"``)  or  β (1/T_e) Σ_{t∈e} ρ_t   (``q="mean"``)

The PRM loss over the P (success, failure) pairs of the batch's groups (every success paired
with every failure of its group, :func:`stepcredit.prm.labels.preference_pairs`; success is
the environment's ``info["success"]`` in the trainer, outcome > 0 otherwise):

    L(φ) = (1/P) Σ_{(i,j)} −log σ(Q(τ_i) − Q(τ_j)),   m_p = Q(τ_i) − Q(τ_j)

and its gradient, through the policy class's own ``ascend`` (so every policy class works): with
g_e = (1/P) [Σ_{p: i_p = e} σ(−m_p) − Σ_{p: j_p = e} σ(−m_p)] = −∂L/∂Q(τ_e),

    −∇_φ L = Σ_t c_t ∇_φ log π_φ(a_t|s_t),   c_t = β g_{e(t)}   (sum)  or  β g_{e(t)} / T_{e(t)}   (mean).

One iteration of the trainer (OPRL's ``update=after``): the policy collects a batch; the PRM's
admissible-action sets are synchronised with the policy's (:func:`sync_action_sets`); the
PRM scores the batch (r_t, the ``process`` column); the pipeline computes the credit (the
``oprl`` estimator reads r_t); the policy takes its PPO steps; then the PRM takes ``epochs``
ascent steps on −L on the same batch, with π_old = the recorded logp_t as the reference.
With no pair (every group all-success or all-failure) the loss is 0 and the PRM is unchanged.

Reference: Online Process Reward Learning for Agentic Reinforcement Learning (Liu, Wang et al.,
2025, arXiv:2509.19199). The ``"mean"`` trajectory score and all-pairs pairing follow the
official code (Tongyi-ConvAI/Tongyi-Character ``CharacterRL-iStar``, ``rm_utils.py``
``compute_eto_loss_rm``, as recorded in ``stepcredit.prm.losses.trajectory_dpo_loss``); the
``"sum"`` form is the paper's DPO objective β log π_φ(τ)/π_old(τ) as reproduced by secondary
summaries (the paper's method section was not read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.policies import TabularPolicy
from stepcredit.prm.labels import preference_pairs
from stepcredit.shaping.preference import sigmoid

__all__ = ["OnlinePRM", "PRMUpdate", "sync_action_sets", "trajectory_dpo_coefficients"]

Aggregate = Literal["sum", "mean"]


@dataclass(frozen=True)
class PRMUpdate:
    """The trajectory DPO loss of one batch and its per-step ascent coefficients.

    Attributes:
        loss: L = (1/P) Σ_p −log σ(m_p) (0 with no pair).
        coef: [S] c_t with −∇L = Σ_t c_t ∇ log π_φ(a_t|s_t).
        pairs: P.
        accuracy: share of pairs with m_p > 0 (None with no pair).
        margin: [P] m_p = Q(τ_i) − Q(τ_j).
    """

    loss: float
    coef: np.ndarray
    pairs: int
    accuracy: float | None
    margin: np.ndarray


def trajectory_dpo_coefficients(
    step_logratio: np.ndarray,
    episode_offsets: np.ndarray,
    preferred: np.ndarray,
    dispreferred: np.ndarray,
    *,
    beta: float = 0.05,
    aggregate: Aggregate = "sum",
) -> PRMUpdate:
    """OPRL's trajectory DPO loss and the per-step coefficients of its ascent direction (NumPy).

        Q_e = β Σ_{t∈e} ρ_t (``"sum"``) or β (1/T_e) Σ_{t∈e} ρ_t (``"mean"``),
        L = (1/P) Σ_p −log σ(Q_{i_p} − Q_{j_p}) = (1/P) Σ_p softplus(−m_p),
        g_e = (1/P) [Σ_{p: i_p = e} σ(−m_p) − Σ_{p: j_p = e} σ(−m_p)],
        c_t = β g_{e(t)} (sum) or β g_{e(t)} / T_{e(t)} (mean),

    so that −∂L/∂ρ_t = c_t, and with ρ_t = log π_φ(a_t|s_t) − log π_old(a_t|s_t) the gradient
    of −L in the PRM's parameters is Σ_t c_t ∇ log π_φ(a_t|s_t) (what ``policy.ascend`` takes).
    The same loss as :func:`stepcredit.prm.losses.trajectory_dpo_loss` (torch), here without
    torch so that the tabular policy needs NumPy only.

    Args:
        step_logratio: [S] ρ_t.
        episode_offsets: [E+1] CSR offsets (every episode >= 1 step).
        preferred: [P] episode index i_p of each pair's preferred trajectory.
        dispreferred: [P] episode index j_p of its dispreferred one.
        beta: β > 0.
        aggregate: ``"sum"`` or ``"mean"`` over each trajectory's steps.

    Returns:
        :class:`PRMUpdate`.
    """
    rho = np.asarray(step_logratio, dtype=np.float64)
    off = np.asarray(episode_offsets, dtype=np.int64)
    win = np.asarray(preferred, dtype=np.int64)
    lose = np.asarray(dispreferred, dtype=np.int64)
    if not beta > 0:
        raise ValueError(f"trajectory_dpo_coefficients: beta={beta} must be > 0")
    if aggregate not in ("sum", "mean"):
        raise ValueError(f"trajectory_dpo_coefficients: aggregate={aggregate!r} must be 'sum' or 'mean'")
    if win.shape != lose.shape or win.ndim != 1:
        raise ValueError(f"trajectory_dpo_coefficients: preferred {win.shape} and dispreferred {lose.shape} must be [P]")
    E = off.size - 1
    counts = np.diff(off)
    P = win.size
    if P == 0:
        return PRMUpdate(0.0, np.zeros(rho.size), 0, None, np.zeros(0))
    q = np.add.reduceat(rho, off[:-1]) if E else np.zeros(0)
    per_step = np.full(E, beta) if aggregate == "sum" else beta / counts
    q = q * per_step
    m = q[win] - q[lose]
    s = sigmoid(-m)  # σ(−m_p) = −∂ softplus(−m)/∂m
    g = (np.bincount(win, weights=s, minlength=E) - np.bincount(lose, weights=s, minlength=E)) / P
    loss = float(np.logaddexp(0.0, -m).mean())
    return PRMUpdate(loss, np.repeat(g * per_step, counts), P, float(np.mean(m > 0)), m)


def sync_action_sets(prm: Any, policy: Any) -> None:
    """Give the PRM the admissible-action sets A(s) the policy has registered.

    The PRM never acts, so it would otherwise know only the actions of the stored steps, and
    its softmax over A(s) would run over fewer actions than π_old's: r_t would not compare like
    with like. Tabular: the policy's new (state, action) entries are replayed in creation order,
    so the PRM's entry ids equal the policy's and a new entry starts at logit 0, as the
    policy's did. Torch policies: the ``valid_*`` arrays of the policy's state dict replace the
    PRM's (its parameters and Adam moments are kept).
    """
    sd = policy.state_dict()
    if isinstance(policy, TabularPolicy):
        k = prm.n_entries
        if policy.n_entries > k:
            states = sd["states"][sd["entry_state"][k:]]
            prm.entries([str(s) for s in states.tolist()], [str(a) for a in sd["entry_action"][k:].tolist()])
        return
    keys = ("valid_states", "valid_offsets", "valid_actions")
    mine = prm.state_dict()
    if all(np.array_equal(mine[k], sd[k]) for k in keys):
        return
    mine.update({k: sd[k] for k in keys})
    prm.load_state_dict(mine)


def _steps(model: Any, ro: Rollouts) -> Any:
    if isinstance(model, TabularPolicy):
        return model.entries(ro.key_values["state"].to_pylist(), ro.key_values["action"].to_pylist())
    return model.steps(ro)


class OnlinePRM:
    """OPRL's implicit PRM: a policy object π_φ scored against π_old and trained by trajectory DPO.

    See the module docstring for the equations. The object holds the PRM's parameters (its
    ``model``, a policy of the trained policy's class) and the hyperparameters; it draws no
    random numbers, and its state dict is the model's (plain arrays).

    Args:
        model: the PRM policy, in the policy's initial state (same class, same seed).
        beta: β > 0 (0.05 in the paper and code).
        lr: the step size of ``model.ascend`` (the tabular policy's gradient step; Adam's for
            the torch policies).
        epochs: ascent steps per batch (>= 1).
        q: the trajectory score: ``"mean"`` (official code) or ``"sum"`` (paper) of the step
            log-ratios.
    """

    def __init__(self, model: Any, *, beta: float = 0.05, lr: float = 1.0, epochs: int = 1, q: Aggregate = "mean") -> None:
        if not (np.isfinite(beta) and beta > 0) or not (np.isfinite(lr) and lr > 0) or epochs < 1 or q not in ("sum", "mean"):
            raise ValueError(f"OnlinePRM: beta={beta} and lr={lr} must be > 0, epochs={epochs} >= 1, q={q!r} 'sum' or 'mean'")
        self.model, self.beta, self.lr, self.epochs, self.q = model, float(beta), float(lr), int(epochs), q

    def score(self, ro: Rollouts, policy: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        """The implicit step rewards of a collected batch.

        Args:
            ro: the batch (needs ``logp``, the behaviour log-probabilities).
            policy: the behaviour policy (its admissible-action sets are copied first).

        Returns:
            (the PRM's prepared steps, [S] log π_φ(a_t|s_t), [S] r_t = β (log π_φ − logp_t)).
        """
        sync_action_sets(self.model, policy)
        steps = _steps(self.model, ro)
        lp = np.asarray(self.model.log_prob(steps), dtype=np.float64)
        return steps, lp, self.beta * (lp - ro.column("logp", by="the online PRM"))

    def update(self, ro: Rollouts, steps: Any, log_prob: np.ndarray, success: np.ndarray | None = None) -> dict[str, Any]:
        """``epochs`` ascent steps on −L over the batch's (success, failure) pairs (OPRL's update=after).

        Args:
            ro: the scored batch (outcome, groups, ``logp``).
            steps: the PRM's prepared steps of ``ro`` (from :meth:`score`).
            log_prob: [S] log π_φ before the update (from :meth:`score`).
            success: [E] bool, which episodes succeeded (the trainer passes the environment's
                ``info["success"]``); None: outcome > 0, as the official code's ``acc > 0``.

        Returns:
            Metrics before the update: ``prm_loss``, ``prm_pair_accuracy`` (share of pairs with
            Q⁺ > Q⁻; None with no pair), ``prm_pairs``.
        """
        won = ro.outcome > 0 if success is None else np.asarray(success, dtype=bool)
        pairs = preference_pairs(won.astype(np.float64), ro.episode_group, pairing="success", threshold=0.5)
        old = ro.column("logp", by="the online PRM")
        first: PRMUpdate | None = None
        token_level = getattr(self.model, "token_level", False)
        for epoch in range(self.epochs):
            lp = log_prob if epoch == 0 else np.asarray(self.model.log_prob(steps), dtype=np.float64)
            upd = trajectory_dpo_coefficients(lp - old, ro.episode_offsets, pairs.preferred, pairs.dispreferred,
                                              beta=self.beta, aggregate=self.q)
            if first is None:
                first = upd
            if upd.pairs == 0:
                break
            coef = upd.coef[:, None] * np.asarray(steps.response_mask, dtype=np.float64) if token_level else upd.coef
            self.model.ascend(steps, coef, self.lr)
        assert first is not None
        return {"prm_loss": first.loss, "prm_pair_accuracy": first.accuracy, "prm_pairs": first.pairs}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The PRM model's state dict (plain arrays)."""
        return self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the PRM model from :meth:`state_dict`."""
        self.model.load_state_dict(state)
