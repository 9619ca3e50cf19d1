"""The feature PRM: logistic or ridge regression on hashed features of each step's (state, action).

A process reward model maps each step of a rollout to a score (:meth:`FeaturePRM.score_steps`:
``[S]`` float64). This one is linear in fixed hashed features, so it trains in seconds on a CPU
with NumPy alone and serves as the cheap baseline next to the torch models.

**Features** x_t ∈ R^D of step t, one block per family in ``families`` (F = ``feature_size``
each; ``stepcredit.features.text_features`` for the text families):

* ``"state"``: φ(s_t), hashed words, character trigrams and positioned characters of the state;
* ``"action"``: φ(a_t), the same of the action text;
* ``"pair"``: a signed one-hot bucket of the hash of the (state, action) pair: a hashed lookup
  table, which lets the model memorise the correctness of pairs it has seen (and nothing more);

plus a constant 1 (the bias b). D = F·|families| + 1.

**Objectives** on labels y_t (``label`` column, or any [S] array; hard 0/1 or soft in [0, 1])
with a step mask m_t ∈ {0, 1} and the L2 penalty λ (the bias unpenalised):

* ``"logistic"``: minimise Σ_t m_t [−y_t log p_t − (1 − y_t) log(1 − p_t)] + (λ/2)‖w‖²,
  p_t = σ(w·x_t + b): binary cross-entropy, which also fits soft (Monte-Carlo) labels. Solved by
  Newton's method (iteratively reweighted least squares): with g = Xᵀ m(p − y) + λw and
  H = Xᵀ diag(m p(1 − p)) X + λI, θ ← θ − H⁻¹g until max|Δθ| < ``tol`` or ``iterations``.
  Score: p_t ∈ (0, 1).
* ``"ridge"``: minimise Σ_t m_t (y_t − w·x_t − b)² + λ‖w‖² in closed form,
  θ = (Xᵀ M X + λĨ)⁻¹ Xᵀ M y (Ĩ: identity without the bias entry). Score: w·x_t + b
  (not clipped).

Both cost one D×D solve per step (Newton) or once (ridge): with the default F = 512 and three
families, D = 1537, a fraction of a second.

Save and load: :func:`stepcredit.prm.save_model` writes ``config.json`` (the kind and the
hyper-parameters) and ``model.safetensors`` (the weights ``theta``): no pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.data.hashing import hash_keys
from stepcredit.features import text_features

__all__ = ["FAMILIES", "FeaturePRM", "PRMError"]

FAMILIES = ("state", "action", "pair")


class PRMError(ValueError):
    """A bad model configuration, bad training labels, or a model file that does not fit."""


def _step_texts(ro: Rollouts, by: str) -> tuple[list[str], list[str]]:
    ro.require(("state", "action"), by)
    return ([str(s) for s in ro.key_values["state"].to_pylist()], [str(a) for a in ro.key_values["action"].to_pylist()])


@dataclass
class FeaturePRM:
    """Logistic / ridge regression on hashed step features (see the module docstring).

    Args:
        feature_size: F, buckets per feature family (>= 8).
        families: the feature families, a non-empty subset of ``("state", "action", "pair")``.
        objective: ``"logistic"`` (scores in (0, 1)) or ``"ridge"`` (raw linear scores).
        l2: λ >= 0 (the bias is not penalised); λ = 0 needs X of full column rank.
        iterations: at most this many Newton steps (logistic).
        tol: Newton stops when the largest parameter change is below this.
    """

    kind = "feature"

    feature_size: int = 512
    families: tuple[str, ...] = FAMILIES
    objective: Literal["logistic", "ridge"] = "logistic"
    l2: float = 1.0
    iterations: int = 50
    tol: float = 1e-8
    theta: np.ndarray | None = field(default=None, repr=False)
    """[D] the fitted weights, the bias last (None before :meth:`fit`)."""
    history: list[float] = field(default_factory=list, repr=False)
    """The training loss after each Newton step (logistic) or the final loss (ridge)."""

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        if self.feature_size < 8:
            raise PRMError(f"feature PRM: feature_size={self.feature_size} must be >= 8")
        bad = [f for f in self.families if f not in FAMILIES]
        if not self.families or bad or len(set(self.families)) != len(self.families):
            raise PRMError(f"feature PRM: families={list(self.families)} must be distinct names among {list(FAMILIES)}")
        if self.objective not in ("logistic", "ridge"):
            raise PRMError(f"feature PRM: objective={self.objective!r} must be 'logistic' or 'ridge'")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise PRMError(f"feature PRM: l2={self.l2} must be a finite number >= 0")
        if self.iterations < 1 or not self.tol > 0:
            raise PRMError(f"feature PRM: iterations={self.iterations} must be >= 1 and tol={self.tol} > 0")

    @property
    def dim(self) -> int:
        """D, the feature dimension including the bias."""
        return self.feature_size * len(self.families) + 1

    # ------------------------------------------------------------------ features
    def features(self, states: Sequence[str], actions: Sequence[str]) -> np.ndarray:
        """[S, D] features of the steps (state texts, action texts), the bias column last."""
        S, F = len(states), self.feature_size
        if len(actions) != S:
            raise PRMError(f"feature PRM: {S} states but {len(actions)} actions")
        blocks: list[np.ndarray] = []
        for fam in self.families:
            if fam == "state" or fam == "action":
                texts = states if fam == "state" else actions
                uniq, inv = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True) if S else (np.zeros(0, str), np.zeros(0, np.int64))
                blocks.append(text_features(uniq.tolist(), F)[inv] if S else np.zeros((0, F)))
            else:
                block = np.zeros((S, F))
                if S:
                    h = hash_keys([f"{s}\x1f{a}" for s, a in zip(states, actions)])
                    block[np.arange(S), (h % np.uint64(F)).astype(np.int64)] = np.where((h >> np.uint64(40)) & np.uint64(1), 1.0, -1.0)
                blocks.append(block)
        blocks.append(np.ones((S, 1)))
        return np.concatenate(blocks, axis=1)

    # ------------------------------------------------------------------ training
    def fit(self, ro: Rollouts, labels: np.ndarray | None = None, mask: np.ndarray | None = None) -> FeaturePRM:
        """Fit the weights to step labels.

        Args:
            ro: rollouts with ``state`` and ``action`` steps.
            labels: [S] targets (hard 0/1 or soft in [0, 1] for ``logistic``; any finite number
                for ``ridge``); default: the ``label`` column of ``ro``.
            mask: [S] bool, the steps to train on (default: all).

        Returns:
            self, fitted (``theta``, ``history``).
        """
        states, actions = _step_texts(ro, "the feature PRM")
        y = np.asarray(ro.column("label", by="the feature PRM's training") if labels is None else labels, dtype=np.float64)
        if y.shape != (ro.n_steps,):
            raise PRMError(f"feature PRM: labels have shape {y.shape}, expected ({ro.n_steps},) (one per step)")
        m = np.ones(ro.n_steps) if mask is None else np.asarray(mask, dtype=bool).astype(np.float64)
        if m.shape != (ro.n_steps,):
            raise PRMError(f"feature PRM: mask has shape {m.shape}, expected ({ro.n_steps},)")
        used = m > 0
        if not np.all(np.isfinite(y[used])):
            bad = int(np.flatnonzero(used & ~np.isfinite(y))[0])
            raise PRMError(f"feature PRM: label of step {bad} is not finite ({y[bad]})")
        if self.objective == "logistic" and np.any((y[used] < 0) | (y[used] > 1)):
            bad = int(np.flatnonzero(used & ((y < 0) | (y > 1)))[0])
            raise PRMError(f"feature PRM: label of step {bad} is {y[bad]}; the logistic objective needs labels in [0, 1]")
        if not used.any():
            raise PRMError("feature PRM: no step to train on (empty rollouts or an all-false mask)")
        X = self.features(states, actions)
        y = np.where(used, y, 0.0)
        reg = np.full(self.dim, self.l2)
        reg[-1] = 0.0
        self.history = []
        if self.objective == "ridge":
            A = X.T @ (X * m[:, None]) + np.diag(reg)
            self.theta = _solve(A, X.T @ (m * y))
            r = X @ self.theta - y
            self.history.append(float(np.sum(m * r * r) + np.sum(reg * self.theta**2)))
            return self
        theta = np.zeros(self.dim)
        for _ in range(self.iterations):
            z = X @ theta
            p = _sigmoid(z)
            g = X.T @ (m * (p - y)) + reg * theta
            H = X.T @ (X * (m * p * (1 - p))[:, None]) + np.diag(reg)
            step = _solve(H, g)
            theta = theta - step
            self.history.append(_logistic_loss(X @ theta, y, m) + 0.5 * float(np.sum(reg * theta**2)))
            if np.max(np.abs(step)) < self.tol:
                break
        self.theta = theta
        return self

    # ------------------------------------------------------------------ scoring
    def score_steps(self, ro: Rollouts) -> np.ndarray:
        """[S] the model's score of every step of ``ro`` (see the module docstring)."""
        if self.theta is None:
            raise PRMError("feature PRM: score_steps before fit (or load a trained model)")
        states, actions = _step_texts(ro, "the feature PRM")
        z = self.features(states, actions) @ self.theta
        return _sigmoid(z) if self.objective == "logistic" else z

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        """The JSON config (the hyper-parameters; the weights go to safetensors)."""
        return {"kind": self.kind, "feature_size": self.feature_size, "families": list(self.families),
                "objective": self.objective, "l2": self.l2, "iterations": self.iterations, "tol": self.tol}

    def tensors(self) -> dict[str, np.ndarray]:
        if self.theta is None:
            raise PRMError("feature PRM: nothing to save before fit")
        return {"theta": np.ascontiguousarray(self.theta)}

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str) -> FeaturePRM:
        keys = {"feature_size", "families", "objective", "l2", "iterations", "tol"}
        missing = sorted(keys - set(config))
        if missing:
            raise PRMError(f"{where}: config.json lacks {', '.join(missing)}")
        try:
            model = cls(**{k: config[k] for k in keys})
        except (TypeError, PRMError) as exc:
            raise PRMError(f"{where}: {exc}") from None
        theta = tensors.get("theta")
        if theta is None or theta.shape != (model.dim,):
            raise PRMError(f"{where}: weights 'theta' of shape {None if theta is None else theta.shape}, expected ({model.dim},)")
        model.theta = np.asarray(theta, dtype=np.float64).copy()
        return model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _logistic_loss(z: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
    # −y log σ(z) − (1−y) log σ(−z) = y·softplus(−z) + (1−y)·softplus(z)
    return float(np.sum(m * (y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z))))


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        raise PRMError("feature PRM: the normal equations are singular; use l2 > 0") from None
