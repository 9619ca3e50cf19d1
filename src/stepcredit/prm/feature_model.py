"""The feature PRM: logistic or ridge regression on hashed features of each step's (state, action).

A process reward model maps each step of a rollout to a score (:meth:`FeaturePRM.score_steps`:
``[S]`` float64). This one is linear in fixed, sparse hashed features, so it trains in seconds on
a CPU (NumPy and SciPy) and serves as the cheap baseline next to the torch models.

**Features** x_t ∈ R^D of step t (a sparse row), one block per family in ``families``:

* ``"state"``: φ(s_t) ∈ R^F, hashed words, character trigrams and positioned characters of the
  state (``stepcredit.features.text_features``; F = ``feature_size``);
* ``"action"``: φ(a_t) ∈ R^F, the same of the action text;
* ``"pair"``: a signed one-hot bucket among P = ``pair_size`` of the hash of the (state, action)
  pair: a hashed lookup table, which lets the model memorise the correctness of pairs it has
  seen (and nothing more); P is large (65,536 by default) so that distinct pairs rarely collide;
* ``"local"``: the same for the pair (last line of the state, action): the local decision
  without the rest of the context (for arith_chain, "Step t/K: the value so far is a; add n
  gives ?" and the stated number), which recurs across tasks where the full state does not;

plus a constant 1 (the bias b, last). D = F·|text families| + P·|pair families| + 1.

**Objectives** on labels y_t (``label`` column, or any [S] array; hard 0/1 or soft in [0, 1])
with a step mask m_t ∈ {0, 1} and the L2 penalty λ > 0 (the bias unpenalised):

* ``"logistic"``: minimise Σ_t m_t [−y_t log p_t − (1 − y_t) log(1 − p_t)] + (λ/2)‖w‖²,
  p_t = σ(w·x_t + b): binary cross-entropy, which also fits soft (Monte-Carlo) labels.
  Score: p_t ∈ (0, 1).
* ``"ridge"``: minimise Σ_t m_t (y_t − w·x_t − b)² + λ‖w‖². Score: w·x_t + b (not clipped).

Both are strictly convex in w; they are minimised with L-BFGS (``scipy.optimize``, the exact
gradient Xᵀ m(p − y) + λw, resp. 2Xᵀ m(Xθ − y) + 2λw, on the sparse X) until the largest
gradient entry is below ``tol`` or after ``iterations`` iterations.

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

FAMILIES = ("state", "action", "pair", "local")


class PRMError(ValueError):
    """A bad model configuration, bad training labels, or a model file that does not fit."""


def checked_labels(who: str, labels, mask, n: int, unit: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """Training labels and mask of a PRM fit, checked.

    Args:
        who: the model or function, for messages.
        labels: [n] labels (one per ``unit``).
        mask: [n] bool, what to train on, or None (all).
        n: the number of steps (or episodes).
        unit: ``"step"`` or ``"episode"``, for messages.

    Returns:
        (y [n] float64, used [n] bool).

    Raises:
        PRMError: a shape other than [n], or a label that is not finite where ``used``.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,):
        raise PRMError(f"{who}: labels have shape {y.shape}, expected ({n},) (one per {unit})")
    used = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if used.shape != (n,):
        raise PRMError(f"{who}: mask has shape {used.shape}, expected ({n},) (one per {unit})")
    bad = np.flatnonzero(used & ~np.isfinite(y))
    if bad.size:
        raise PRMError(f"{who}: label of {unit} {int(bad[0])} is not finite ({y[bad[0]]})")
    return y, used


def _step_texts(ro: Rollouts, by: str) -> tuple[list[str], list[str]]:
    ro.require(("state", "action"), by)
    return ([str(s) for s in ro.key_values["state"].to_pylist()], [str(a) for a in ro.key_values["action"].to_pylist()])


def _scipy() -> tuple[Any, Any]:
    try:
        from scipy import optimize, sparse
    except ImportError:
        raise PRMError("the feature PRM needs SciPy: pip install 'stepcredit[prm]'") from None
    return optimize, sparse


@dataclass
class FeaturePRM:
    """Logistic / ridge regression on sparse hashed step features (see the module docstring).

    Args:
        feature_size: F, buckets of each text family (>= 8).
        pair_size: P, buckets of the pair family (>= 8).
        families: the feature families, a non-empty subset of ``("state", "action", "pair", "local")``.
        objective: ``"logistic"`` (scores in (0, 1)) or ``"ridge"`` (raw linear scores).
        l2: λ > 0 (the bias is not penalised). The default 0.1 lets the lookup families
            memorise pairs seen once or twice (with λ = 1 their weights stay too small to
            overrule the text families: measured on arith_chain in docs/prm.md).
        iterations: at most this many L-BFGS iterations.
        tol: stop when the largest gradient entry is below this.
    """

    kind = "feature"

    feature_size: int = 1024
    pair_size: int = 65536
    families: tuple[str, ...] = FAMILIES
    objective: Literal["logistic", "ridge"] = "logistic"
    l2: float = 0.1
    iterations: int = 1000
    tol: float = 1e-6
    theta: np.ndarray | None = field(default=None, repr=False)
    """[D] the fitted weights, the bias last (None before :meth:`fit`)."""
    history: list[float] = field(default_factory=list, repr=False)
    """The training objective after each L-BFGS iteration."""

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        if self.feature_size < 8 or self.pair_size < 8:
            raise PRMError(f"feature PRM: feature_size={self.feature_size} and pair_size={self.pair_size} must be >= 8")
        bad = [f for f in self.families if f not in FAMILIES]
        if not self.families or bad or len(set(self.families)) != len(self.families):
            raise PRMError(f"feature PRM: families={list(self.families)} must be distinct names among {list(FAMILIES)}")
        if self.objective not in ("logistic", "ridge"):
            raise PRMError(f"feature PRM: objective={self.objective!r} must be 'logistic' or 'ridge'")
        if not (self.l2 > 0 and math.isfinite(self.l2)):
            raise PRMError(f"feature PRM: l2={self.l2} must be a finite number > 0")
        if self.iterations < 1 or not self.tol > 0:
            raise PRMError(f"feature PRM: iterations={self.iterations} must be >= 1 and tol={self.tol} > 0")

    @property
    def dim(self) -> int:
        """D, the feature dimension including the bias."""
        return sum(self.pair_size if f in ("pair", "local") else self.feature_size for f in self.families) + 1

    # ------------------------------------------------------------------ features
    def features(self, states: Sequence[str], actions: Sequence[str]) -> Any:
        """[S, D] sparse (CSR) features of the steps (state texts, action texts), the bias column last."""
        _, sparse = _scipy()
        S = len(states)
        if len(actions) != S:
            raise PRMError(f"feature PRM: {S} states but {len(actions)} actions")
        blocks: list[Any] = []
        for fam in self.families:
            if fam in ("pair", "local"):
                P = self.pair_size
                if S:
                    ctx = states if fam == "pair" else [_last_line(s) for s in states]
                    h = hash_keys([f"{fam}\x1f{s}\x1f{a}" for s, a in zip(ctx, actions)])
                    col = (h % np.uint64(P)).astype(np.int64)
                    val = np.where((h >> np.uint64(40)) & np.uint64(1), 1.0, -1.0)
                    blocks.append(sparse.csr_matrix((val, (np.arange(S), col)), shape=(S, P)))
                else:
                    blocks.append(sparse.csr_matrix((0, P)))
                continue
            texts = [str(t) for t in (states if fam == "state" else actions)]
            uniq = list(dict.fromkeys(texts))
            row = {t: i for i, t in enumerate(uniq)}
            inv = np.fromiter((row[t] for t in texts), dtype=np.int64, count=S)
            dense = text_features(uniq, self.feature_size) if uniq else np.zeros((0, self.feature_size))
            blocks.append(sparse.csr_matrix(dense)[inv])
        blocks.append(sparse.csr_matrix(np.ones((S, 1))))
        return sparse.hstack(blocks, format="csr")

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
        optimize, _ = _scipy()
        states, actions = _step_texts(ro, "the feature PRM")
        y, used = checked_labels(
            "feature PRM", ro.column("label", by="the feature PRM's training") if labels is None else labels,
            mask, ro.n_steps,
        )
        if self.objective == "logistic" and np.any((y[used] < 0) | (y[used] > 1)):
            bad = int(np.flatnonzero(used & ((y < 0) | (y > 1)))[0])
            raise PRMError(f"feature PRM: label of step {bad} is {y[bad]}; the logistic objective needs labels in [0, 1]")
        if not used.any():
            raise PRMError("feature PRM: no step to train on (empty rollouts or an all-false mask)")
        X = self.features([s for s, u in zip(states, used) if u], [a for a, u in zip(actions, used) if u])
        y = y[used]
        XT = X.T.tocsr()
        reg = np.full(self.dim, self.l2)
        reg[-1] = 0.0
        logistic = self.objective == "logistic"

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = X @ theta
            if logistic:
                f = _logistic_loss(z, y) + 0.5 * float(np.sum(reg * theta * theta))
                return f, XT @ (_sigmoid(z) - y) + reg * theta
            r = z - y
            return float(r @ r + np.sum(reg * theta * theta)), 2.0 * (XT @ r) + 2.0 * reg * theta

        history: list[float] = []
        res = optimize.minimize(fun, np.zeros(self.dim), jac=True, method="L-BFGS-B",
                                callback=lambda intermediate_result: history.append(float(intermediate_result.fun)),
                                options={"maxiter": self.iterations, "gtol": self.tol, "ftol": 0.0, "maxcor": 20})
        self.theta = np.asarray(res.x, dtype=np.float64)
        self.history = history or [float(res.fun)]
        return self

    # ------------------------------------------------------------------ scoring
    def score_steps(self, ro: Rollouts) -> np.ndarray:
        """[S] the model's score of every step of ``ro`` (see the module docstring)."""
        if self.theta is None:
            raise PRMError("feature PRM: score_steps before fit (or load a trained model)")
        states, actions = _step_texts(ro, "the feature PRM")
        z = np.asarray(self.features(states, actions) @ self.theta, dtype=np.float64)
        return _sigmoid(z) if self.objective == "logistic" else z

    # ------------------------------------------------------------------ saving
    def config(self) -> dict[str, Any]:
        """The JSON config (the hyper-parameters; the weights go to safetensors)."""
        return {"kind": self.kind, "feature_size": self.feature_size, "pair_size": self.pair_size,
                "families": list(self.families), "objective": self.objective, "l2": self.l2,
                "iterations": self.iterations, "tol": self.tol}

    def tensors(self) -> dict[str, np.ndarray]:
        if self.theta is None:
            raise PRMError("feature PRM: nothing to save before fit")
        return {"theta": np.ascontiguousarray(self.theta)}

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], where: str) -> FeaturePRM:
        keys = {"feature_size", "pair_size", "families", "objective", "l2", "iterations", "tol"}
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


def _last_line(text: str) -> str:
    lines = str(text).rstrip().split("\n")
    return lines[-1]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _logistic_loss(z: np.ndarray, y: np.ndarray) -> float:
    # −y log σ(z) − (1−y) log σ(−z) = y·softplus(−z) + (1−y)·softplus(z)
    return float(np.sum(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)))
