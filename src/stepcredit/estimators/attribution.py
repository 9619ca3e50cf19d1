"""Progress attribution (SPA-RL): split each outcome into per-step contributions that sum to it.

Notation: episode i has steps t = 0..T_i−1 and outcome R_i; a *progress model* gives each step
a contribution c_t^i, fitted so that Σ_t c_t^i ≈ R_i over the episodes it has seen. g_t^i is the
step's grounding signal (the ``grounding`` field: 1 if the action executed, else 0), β its
weight, and r_t^i = c_t^i + β g_t^i the step reward. A *feature* of a step is the 64-bit hash
of its state (``features="state"``) or of its (state, action) pair; with ``scope="group"``
the hash also includes the group id, so that features never match across groups.

Any object with ``fit(ro) -> self`` and ``contributions(ro) -> [S]`` is a :class:`ProgressModel`
(the hook for a learned model: ``attribution_torch.TorchProgressMLP``); :func:`spa_credit` turns
a fitted model's contributions into a Credit, and the registered estimator :func:`spa` does it
with a :class:`LeastSquaresProgress` fitted afresh on the batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data import Credit, Rollouts, hash_keys
from stepcredit.data.hashing import splitmix64
from stepcredit.estimators.outcome import rloo
from stepcredit.estimators.registry import (
    EstimatorError,
    check_positive,
    check_unit_interval,
    register,
)
from stepcredit.ops import group_centered, group_centered_sum, group_scale, reverse_discounted_cumsum

__all__ = ["LeastSquaresProgress", "ProgressModel", "feature_keys", "mix_keys", "spa", "spa_credit"]

SPA_PAPER = (
    "SPA-RL: Reinforcing LLM Agents via Stepwise Progress Attribution "
    "(Wang, Leong, Wang, Wang, Li, 2025, arXiv:2505.20732)"
)

Features = Literal["state", "state_action"]
Scope = Literal["global", "group"]
_MIX = np.uint64(0xD6E8FEB86659FD93)  # odd: multiplication by it is a bijection of uint64


@runtime_checkable
class ProgressModel(Protocol):
    """A progress estimator: per-step contributions whose episode sums approximate the outcome."""

    def fit(self, ro: Rollouts) -> ProgressModel:
        """Fit (or update) the model on the episodes of ``ro``; returns the model."""
        ...

    def contributions(self, ro: Rollouts) -> np.ndarray:
        """[S] contribution c_t of every step of ``ro`` (float64)."""
        ...


def mix_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Combine two uint64 key arrays into one: splitmix64(a·K ⊕ b) with K odd (order matters)."""
    with np.errstate(over="ignore"):
        return splitmix64(np.multiply(a, _MIX, dtype=np.uint64) ^ b)


def feature_keys(ro: Rollouts, features: Features = "state", scope: Scope = "global") -> np.ndarray:
    """[S] uint64 feature hash of every step (see the module docstring).

    Raises:
        MissingColumnError: ``state`` (or ``action`` for ``"state_action"``) is absent.
    """
    by = f"the SPA progress model (features='{features}')"
    keys = ro.column("state", by=by)
    if features == "state_action":
        keys = mix_keys(keys, ro.column("action", by=by))
    if scope == "group":
        group_hash = hash_keys(ro.group_names)[ro.episode_group]
        keys = mix_keys(np.repeat(group_hash, ro.step_counts), keys)
    return keys


@dataclass(frozen=True)
class _Batch:
    """One batch in canonical order (episodes sorted by episode_id): what replay keeps."""

    keys: np.ndarray  # [S] uint64 feature hashes
    offsets: np.ndarray  # [E+1]
    outcome: np.ndarray  # [E]
    block: np.ndarray  # [E] uint64 hash of the group id


def _canonical(ro: Rollouts) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Episodes sorted by episode_id (unique): (episode order or None if already sorted, offsets
    in that order, step permutation or None). Fitting in this order makes the float sums of the
    solver independent of the order the episodes came in (bit-identical under permutation)."""
    E = ro.n_episodes
    order = pc.sort_indices(ro.episode_id).to_numpy().astype(np.int64)
    if E == 0 or np.all(order[1:] > order[:-1]):
        return None, ro.episode_offsets, None
    counts = ro.step_counts[order]
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    steps = np.arange(ro.n_steps, dtype=np.int64)
    steps += np.repeat(ro.episode_offsets[:-1][order] - offsets[:-1], counts)
    return order, offsets, steps


class LeastSquaresProgress:
    """Ridge least-squares progress model over hashed step features.

    Contributions are one weight per feature, c_t = θ[f_t] (0 for a feature never fitted), with

        θ = argmin_θ Σ_i (Σ_t θ[f_t^i] − R_i)² + λ ‖θ‖²,   i.e.  (XᵀX + λI) θ = XᵀR,

    X [E, F] counting how often episode i visits feature f. The sum runs over the episodes of the
    batch given to :meth:`fit` and of the last ``replay`` batches fitted before it. X is never
    formed. Features visited by one episode only (most states, when states carry history) are
    eliminated in closed form; the features shared by several episodes are solved by conjugate
    gradient (not preconditioned: see ``_cg``), started at θ = 0, stopped when the relative
    residual of that reduced system is <= ``tol`` or after ``iterations`` steps (each O(nonzeros
    of the shared features)). Since λ_min(XᵀX + λI) >= λ, the returned θ is within
    ‖XᵀR − (XᵀX + λI)θ‖₂ / λ of the exact solution. With ``scope="group"`` the system is
    block-diagonal by group and every block is solved on its own (own step sizes and stopping
    test), so a group's contributions depend on its own episodes only, bit for bit; with
    ``scope="global"`` the same is done when no feature is visited in two groups. Episodes are
    processed in ``episode_id`` order, so the result does not depend on the input order either.

    Args:
        features: ``"state"`` or ``"state_action"`` (needs the ``action`` field).
        scope: ``"global"`` (default; one model shared by every task, like the paper's LLM
            progress estimator) or ``"group"`` (a separate model per group id).
        ridge: λ > 0 (default 1e-3; smaller fits the outcomes more exactly, converges slower).
        replay: how many past batches to keep and fit together with the current one (0: the
            current batch only). Memory holds their feature hashes, offsets and outcomes.
        iterations: the most CG iterations (>= 1).
        tol: relative residual at which CG stops (>= 0; 0 runs every iteration).

    Attributes:
        keys_: [F] uint64 feature hashes fitted (ascending).
        theta_: [F] their contributions θ.
        diagnostics: after a fit: ``features``, ``shared_features`` (the ones CG solves),
            ``cg_iterations`` (the most any block needed), ``cg_residual`` (the largest final
            relative residual ‖XᵀR − (XᵀX + λI)θ‖ / ‖XᵀR‖ of a block, recomputed from θ),
            ``replayed_batches``.
    """

    def __init__(
        self,
        *,
        features: Features = "state",
        scope: Scope = "global",
        ridge: float = 1e-3,
        replay: int = 0,
        iterations: int = 200,
        tol: float = 1e-8,
    ) -> None:
        if features not in ("state", "state_action"):
            raise EstimatorError(f"features={features!r} must be 'state' or 'state_action'")
        if scope not in ("global", "group"):
            raise EstimatorError(f"scope={scope!r} must be 'global' or 'group'")
        _check_solver("LeastSquaresProgress", ridge, iterations, tol)
        if isinstance(replay, bool) or not isinstance(replay, int) or replay < 0:
            raise EstimatorError(f"LeastSquaresProgress: replay={replay!r} must be an int >= 0")
        self.features, self.scope, self.ridge = features, scope, float(ridge)
        self.replay, self.iterations, self.tol = replay, iterations, float(tol)
        self._memory: deque[_Batch] = deque(maxlen=replay)
        self.keys_ = np.zeros(0, dtype=np.uint64)
        self.theta_ = np.zeros(0)
        self.diagnostics: dict[str, int | float] = {}

    @property
    def replayed(self) -> int:
        """Number of past batches kept for the next fit (at most ``replay``)."""
        return len(self._memory)

    def fit(self, ro: Rollouts) -> LeastSquaresProgress:
        """Fit θ on ``ro`` plus the replayed batches, then remember ``ro`` for later fits."""
        self._fit(ro)
        return self

    def contributions(self, ro: Rollouts) -> np.ndarray:
        """[S] θ[f_t] for every step of ``ro``; 0 for features the model has not seen."""
        keys = feature_keys(ro, self.features, self.scope)
        if keys.size == 0 or self.keys_.size == 0:
            return np.zeros(keys.shape[0])
        idx = pc.index_in(pa.array(keys), value_set=pa.array(self.keys_))
        seen = idx.is_valid().to_numpy(zero_copy_only=False)
        out = np.zeros(keys.shape[0])
        out[seen] = self.theta_[idx.drop_null().to_numpy().astype(np.int64)]
        return out

    def _fit(self, ro: Rollouts) -> np.ndarray:
        """Fit and return the contributions of ``ro``'s own steps (no lookup needed)."""
        keys = feature_keys(ro, self.features, self.scope)
        order, offsets, steps = _canonical(ro)
        block = hash_keys(ro.group_names)[ro.episode_group]
        if order is not None:
            batch = _Batch(keys[steps], offsets, ro.outcome[order], block[order])
        else:
            batch = _Batch(keys, offsets, ro.outcome, block)
        batches = [*self._memory, batch]
        replayed = len(self._memory)
        uniq, fid, theta, diag = _fit_batches(batches, self.ridge, self.iterations, self.tol, self.scope == "group")
        self.keys_, self.theta_ = uniq, theta
        self.diagnostics = {**diag, "replayed_batches": replayed}
        if self.replay:
            self._memory.append(batch)
        own = theta[fid[fid.shape[0] - ro.n_steps :]]  # the current batch comes last
        if steps is None:
            return own
        out = np.empty_like(own)
        out[steps] = own
        return out


def _check_solver(name: str, ridge: float, iterations: int, tol: float) -> None:
    check_positive(name, ridge=ridge)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise EstimatorError(f"estimator '{name}': iterations={iterations!r} must be an int >= 1")
    if not tol >= 0:
        raise EstimatorError(f"estimator '{name}': tol={tol!r} must be >= 0")


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N] intp, distinct values [F] ascending): codes[i] = rank of values[i] among the
    distinct values. Sorting (SIMD argsort) is ~3x faster than a hash table here, and numbering
    by value makes the codes independent of the order of the input."""
    n = values.shape[0]
    order = np.argsort(values)
    sv = values[order]
    new = np.empty(n, dtype=bool)
    new[:1] = True
    np.not_equal(sv[1:], sv[:-1], out=new[1:])
    codes = np.empty(n, dtype=np.intp)
    codes[order] = np.cumsum(new) - 1
    return codes, sv[new]


def _fit_batches(
    batches: list[_Batch], ridge: float, iterations: int, tol: float, blockwise: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Solve the ridge normal equations over the episodes of ``batches``.

    Features seen in one episode only (*private*; most states of an LLM agent's episodes) are
    eliminated exactly: for fixed shared weights, episode i's private weights minimise
    (e_i − Σ_f n_if θ_f)² + λ Σ_f θ_f² with e_i = R_i − (X_s θ_s)_i, so θ_f = n_if e_i / (λ + w_i),
    w_i = Σ_{f private to i} n_if², leaving the weighted ridge problem over the shared features
        (X_sᵀ Ω X_s + λI) θ_s = X_sᵀ Ω R,   Ω = diag(λ / (λ + w_i)),
    which CG solves (its residual is the full system's residual on the shared coordinates; the
    private coordinates are solved exactly).

    Returns (feature hashes [F], feature id of every step [S_all], θ [F], diagnostics).
    """
    if len(batches) == 1:
        b0 = batches[0]
        keys, offsets, outcome, block = b0.keys, b0.offsets, b0.outcome, b0.block
    else:
        keys = np.concatenate([b.keys for b in batches])
        shift = np.cumsum([0] + [int(b.offsets[-1]) for b in batches[:-1]])
        offsets = np.concatenate([[0]] + [b.offsets[1:] + s for b, s in zip(batches, shift)])
        outcome = np.concatenate([b.outcome for b in batches])
        block = np.concatenate([b.block for b in batches])
    E, S = outcome.shape[0], keys.shape[0]
    if S == 0:
        empty = {"features": 0, "shared_features": 0, "cg_iterations": 0, "cg_residual": 0.0}
        return np.zeros(0, np.uint64), np.zeros(0, np.intp), np.zeros(0), empty
    fid, uniq = _codes(keys)
    F = uniq.shape[0]
    counts = np.diff(offsets)
    # the block (group) of every episode and of every feature. The normal equations are block-
    # diagonal by group when no feature is visited in two groups (always with scope="group");
    # solving the blocks separately then gives the same θ, and CG converges per block instead of
    # over the union of all the blocks' spectra (measured: 24 instead of > 200 iterations)
    bcode, _ = _codes(block)
    B = int(bcode.max()) + 1
    fb = np.zeros(F, dtype=np.intp)
    step_block = np.repeat(bcode, counts)
    fb[fid] = step_block
    if not blockwise and not np.array_equal(fb[fid], step_block):
        B, bcode, fb = 1, np.zeros(E, dtype=np.intp), np.zeros(F, dtype=np.intp)
    else:
        blockwise = True  # also with B = 1: the same arithmetic as within a larger batch
    del step_block
    # solve for R·2^-k_b with max |R| in [1/2, 1) in each block: exact scaling (θ is linear in
    # R), and squared norms of tiny outcomes (1e-250) no longer underflow to 0
    peak = np.zeros(B)
    np.maximum.at(peak, bcode, np.abs(outcome))
    exponent = np.frexp(peak)[1]
    outcome = np.ldexp(outcome, -exponent[bcode])

    # the nonzeros of X: (episode, feature, visits), sorted by episode then feature
    pair = np.repeat(np.arange(E, dtype=np.int64), counts)
    pair *= F
    pair += fid
    pair.sort()
    first = np.flatnonzero(np.concatenate(([True], pair[1:] != pair[:-1])))
    visits = np.diff(np.append(first, S)).astype(np.float64)
    pair_ep = pair[first] // F
    pair_f = pair[first] - pair_ep * F
    del pair
    private = np.bincount(pair_f, minlength=F)[pair_f] == 1  # [P] the feature has one episode
    pv = visits[private]
    w = np.bincount(pair_ep[private], weights=pv * pv, minlength=E)
    omega = ridge / (ridge + w)

    # reduced system over the shared features (dense ids 0..Fs-1, in the order of their hashes)
    is_shared = np.zeros(F, dtype=bool)
    is_shared[pair_f[~private]] = True
    sid = np.cumsum(is_shared) - 1
    ep_s, f_s, n_s = pair_ep[~private], sid[pair_f[~private]], visits[~private]
    Fs = int(is_shared.sum())
    fblock = fb[is_shared] if blockwise else None
    theta_s, done = _cg(ep_s, f_s, n_s, omega, outcome, Fs, ridge, iterations, tol, fblock, B)

    # private weights in closed form
    e = outcome - np.bincount(ep_s, weights=n_s * theta_s[f_s], minlength=E)
    theta = np.zeros(F)
    theta[is_shared] = theta_s
    pe = pair_ep[private]
    theta[pair_f[private]] = pv * e[pe] / (ridge + w[pe])

    # final relative residual of the full normal equations, recomputed from θ (per block)
    u = outcome - np.add.reduceat(theta[fid], offsets[:-1])
    res = np.bincount(fid, weights=np.repeat(u, counts), minlength=F)
    res -= ridge * theta
    rhs = np.bincount(fid, weights=np.repeat(outcome, counts), minlength=F)
    rr = np.bincount(fb, weights=res * res, minlength=B)
    bb = np.bincount(fb, weights=rhs * rhs, minlength=B)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(bb > 0, np.sqrt(rr / bb), 0.0)
    diagnostics = {
        "features": int(F),
        "shared_features": Fs,
        "cg_iterations": int(done.max()),
        "cg_residual": float(rel.max()),
    }
    return uniq, fid, np.ldexp(theta, exponent[fb]), diagnostics


def _cg(
    ep: np.ndarray,
    f: np.ndarray,
    n: np.ndarray,
    omega: np.ndarray,
    outcome: np.ndarray,
    F: int,
    ridge: float,
    iterations: int,
    tol: float,
    fblock: np.ndarray | None,
    B: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conjugate gradient for (Xᵀ Ω X + λI) θ = Xᵀ Ω R, X given by its nonzeros
    (episode ``ep``, feature ``f``, value ``n``). With ``fblock`` [F] the features are split
    into B independent blocks, each with its own step sizes and stopping test ‖r_b‖ <= tol ‖b_b‖
    (a block's iterates depend on its own entries only); otherwise one block.

    Not preconditioned, on purpose: the matrix is λI plus a matrix of rank <= the episodes of
    the block, and b lies in the range of Xᵀ, so plain CG converges in about rank + 1
    iterations (exactly, in exact arithmetic); a Jacobi preconditioner spreads the λ part of
    the spectrum and took 90 iterations instead of 11 on the 1M-step benchmark input (groups
    of 8 episodes over ~190 shared states), and no fewer with a global state pool (13).

    Returns (θ [F], iterations done per block [B]).
    """
    E = outcome.shape[0]
    if fblock is not None:

        def bdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return np.bincount(fblock, weights=x * y, minlength=B)

        def spread(v: np.ndarray) -> np.ndarray:
            return v[fblock]
    else:

        def bdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return np.array([np.add.reduce(x * y)])  # no BLAS: no thread start-up per call

        def spread(v: np.ndarray) -> np.ndarray:
            return v  # one block: broadcasts as a scalar

    def A(p: np.ndarray) -> np.ndarray:
        u = np.bincount(ep, weights=n * p[f], minlength=E)
        u *= omega
        q = np.bincount(f, weights=n * u[ep], minlength=F)
        q += ridge * p
        return q

    b = np.bincount(f, weights=n * (omega * outcome)[ep], minlength=F)
    bb = bdot(b, b)
    theta = np.zeros(F)
    r = b.copy()
    p = r.copy()
    rr = bb.copy()
    active = rr > (tol * tol) * bb  # r = b at the start; an all-zero b needs no iteration
    done = np.zeros(B, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(iterations):
            if not active.any():
                break
            q = A(p)
            alpha = np.where(active, rr / bdot(p, q), 0.0)
            theta += spread(alpha) * p
            r -= spread(alpha) * q
            done += active
            rr_new = bdot(r, r)
            still = active & (rr_new > (tol * tol) * bb)
            beta = np.where(still, rr_new / rr, 0.0)
            p *= spread(beta)
            p += r
            rr, active = rr_new, still
    return theta, done


# ---------------------------------------------------------------------- credit from contributions
def _credit(
    ro: Rollouts,
    c: np.ndarray,
    grounding: np.ndarray | None,
    beta: float,
    gamma: float,
    norm: str,
    epsilon: float,
    diagnostics: dict,
    grounding_used: bool,
) -> Credit:
    r = c + beta * grounding if grounding is not None else c.copy()
    off = ro.episode_offsets
    ret = reverse_discounted_cumsum(r, off, gamma)
    if norm == "group":
        codes = np.repeat(ro.episode_group, ro.step_counts)
        if grounding is not None:
            # r − mean r from the differences of c and of g, not of the rounded r: c + 0.5 keeps
            # only ulp(0.5) = 1.1e-16 of c's differences, and with c 1e-7 apart (the "code"
            # variant's leave-one-out outcomes of near-equal outcomes) the division by the std
            # (~1e-7 + ε) would turn that rounding into 1e-10 of the advantage
            cen = group_centered_sum(c, grounding, beta, codes, ro.n_groups, "raw")
        else:
            cen = group_centered(r, codes, ro.n_groups, "raw")
        cen /= group_scale(cen, codes, ro.n_groups, epsilon)[codes]
        adv = reverse_discounted_cumsum(cen, off, gamma)
    else:
        adv = ret
    # fraction of the outcome variance explained by Σ_t c_t (0 when all outcomes are equal)
    R = ro.outcome
    fit_r2 = 0.0
    if R.size:
        sse = float(np.sum((np.add.reduceat(c, off[:-1]) - R) ** 2))
        d = R - R[0]
        d -= d.mean()
        sst = float(np.dot(d, d))
        fit_r2 = 1.0 - sse / sst if sst > 0 else 0.0
    return Credit(
        step_advantage=adv,
        episode_advantage=adv[off[:-1]],
        episode_offsets=off,
        step_return=ret,
        step_reward=r,
        diagnostics={**diagnostics, "fit_r2": fit_r2, "grounding_used": grounding_used},
    )


def spa_credit(
    ro: Rollouts,
    model: ProgressModel,
    *,
    beta: float = 0.5,
    gamma: float = 1.0,
    norm: Literal["group", "none"] = "group",
    epsilon: float = 1e-6,
) -> Credit:
    """SPA credit from an already fitted progress model (the hook for learned models).

    r_t = c_t + β g_t with c_t = ``model.contributions(ro)`` and g_t the ``grounding`` field
    (0 when absent); then the advantage of :func:`spa` (``norm``, γ). The model is not refitted.

    Args:
        ro: rollouts (the model decides which step fields it reads).
        model: any object with ``contributions(ro) -> [S]`` (see :class:`ProgressModel`).
        beta: weight β of the grounding signal.
        gamma: discount γ in [0, 1] of the reward-to-go.
        norm: ``"group"`` or ``"none"``, as in :func:`spa`.
        epsilon: ε added to the group std (> 0).

    Returns:
        Credit as :func:`spa`; diagnostics: the model's own scalar ``diagnostics`` (if it has
        any), ``fit_r2`` and ``grounding_used``.

    Raises:
        ValueError: the model returned something other than S finite numbers.
    """
    check_unit_interval("spa_credit", gamma=gamma)
    check_positive("spa_credit", epsilon=epsilon)
    c = np.array(model.contributions(ro), dtype=np.float64, copy=True).reshape(-1)
    if c.shape != (ro.n_steps,) or not np.all(np.isfinite(c)):
        raise ValueError(f"progress model returned {c.shape[0]} contributions (finite: "
                         f"{bool(np.all(np.isfinite(c)))}); expected {ro.n_steps} finite values")
    diag = {
        k: v for k, v in dict(getattr(model, "diagnostics", {}) or {}).items()
        if isinstance(v, (bool, int, float))
    }
    g = ro.columns.get("grounding")
    return _credit(ro, c, g, beta, gamma, norm, epsilon, diag, g is not None)


@register(family="progress", paper=SPA_PAPER, requires=("state",))
def spa(
    ro: Rollouts,
    *,
    features: Literal["state", "state_action"] = "state",
    scope: Literal["global", "group"] = "global",
    ridge: float = 1e-3,
    iterations: int = 200,
    tol: float = 1e-8,
    beta: float = 0.5,
    gamma: float = 1.0,
    norm: Literal["group", "none"] = "group",
    epsilon: float = 1e-6,
    variant: Literal["paper", "code"] = "paper",
) -> Credit:
    """SPA: stepwise progress attribution, contributions fitted to sum to the outcome.

    Progress model (``variant="paper"``): a ridge least-squares fit over hashed step features
    (see :class:`LeastSquaresProgress`), on this batch only:
        c_t = θ[f_t],  θ = argmin Σ_i (Σ_t θ[f_t^i] − R_i)² + λ‖θ‖²,
    the paper's objective (Σ_t ĉ_t − R)² with a table of per-feature weights in place of its
    LLM. Step reward r_t = c_t + β g_t (g_t the ``grounding`` field, 0 when absent).
    Advantage (critic-free; the paper trains PPO with a critic on r_t):
        ``norm="group"``: ñ_t = (r_t − mean_g r) / (std_g r + ε) over all steps of the group,
        A_t = Σ_{k≥t} γ^{k−t} ñ_k; a group with a single step has mean 0 and std 1 (ñ = r/(1+ε));
        all-equal steps give 0. ``norm="none"``: A_t = Σ_{k≥t} γ^{k−t} r_k.
    std is unbiased (ddof = 1). r_t − mean_g r is computed from the differences of c and of g
    within the group (``ops.group_centered_sum``), i.e. from the exact c_t + β g_t, not from the
    rounded ``step_reward``: with c 1e-7 apart next to β g = 0.5 the rounded sum keeps only
    ulp(0.5) of c's differences, 1e-9 of the spread, which the division by the std would carry
    into A. ``variant="code"`` (the released WebShop RL data script): every
    step of episode i gets c_t = R_i − mean_{j≠i in g} R_j (R_i alone in its group), the last
    step's g is 1, the rest as above.

    Args:
        ro: rollouts; needs ``state`` (and ``action`` for ``features="state_action"``);
            ``grounding`` is used when present.
        features: ``"state"`` hashes or ``"state_action"`` hashes as the model's features.
        scope: ``"global"``: one model for the whole batch (the paper's estimator is shared by
            all tasks); ``"group"``: one per group (then each group's credit is its own).
        ridge: λ > 0 of the fit (small: Σ_t c_t ≈ R_i wherever the features can express it).
        iterations: most conjugate-gradient iterations (>= 1).
        tol: relative residual of the shared-feature system at which CG stops (>= 0).
        beta: weight β of the grounding signal (the released script adds 0.5).
        gamma: discount γ in [0, 1] of the reward-to-go.
        norm: ``"group"`` (normalise the step rewards over the group's steps) or ``"none"``.
        epsilon: ε added to the group std (> 0).
        variant: ``"paper"`` (fitted contributions) or ``"code"`` (leave-one-out outcome on
            every step, as the released RL script).

    Returns:
        Credit with step_advantage [S] = A_t, episode_advantage [E] = A at the episode's first
        step, step_reward [S] = r_t, step_return [S] = Σ_{k≥t} γ^{k−t} r_k; diagnostics:
        ``features`` (distinct features fitted), ``shared_features`` (those in several
        episodes, solved by CG), ``cg_iterations``, ``cg_residual`` (final relative residual of
        the normal equations), ``fit_r2`` (1 − Σ_i (Σ_t c_t − R_i)² / Σ_i (R_i − mean R)², 0
        when all outcomes are equal; not meaningful for ``variant="code"``, whose c do not sum
        to R), ``grounding_used`` (the field was present). All 0 for the solver with "code".

    Reference: SPA-RL: Reinforcing LLM Agents via Stepwise Progress Attribution (Wang et al.,
    2025, arXiv:2505.20732). Verified: the abstract (a progress estimator whose stepwise
    contributions accumulate to match task completion, combined with a grounding signal as the
    step reward for PPO) and the loss (Σ_t ĉ_t − R)² in the official training script; not
    verified: the paper's method section, in particular how it weights the grounding signal.
    Differs from official code: WangHanLinHenry/SPA-RL-Agent@323964f6:prm/rl_data_org.py
    replaces the predicted contributions by R_i − leave-one-out mean on every turn and adds
    0.5 grounding (last turn always), offered as ``variant="code"``; its progress model is an
    LLM with a linear head on the last token of each turn (prm/train_our_progress_model.py),
    here a ridge fit on state hashes (or any model through :func:`spa_credit`); its PPO with a
    critic is replaced by the group normalisation; its length filter (< 35 turns) is not applied.
    """
    _check_solver("spa", ridge, iterations, tol)
    check_unit_interval("spa", gamma=gamma)
    check_positive("spa", epsilon=epsilon)
    g = ro.columns.get("grounding")
    if variant == "code":
        feature_keys(ro, features, scope)  # the same column requirements as the paper variant
        c = np.repeat(rloo(ro, singleton="raw").episode_advantage, ro.step_counts)
        g = np.zeros(ro.n_steps) if g is None else np.array(g, copy=True)
        g[ro.episode_offsets[1:] - 1] = 1.0  # the released script always grounds the last turn
        diag = {"features": 0, "shared_features": 0, "cg_iterations": 0, "cg_residual": 0.0}
        return _credit(ro, c, g, beta, gamma, norm, epsilon, diag, ro.has("grounding"))
    model = LeastSquaresProgress(features=features, scope=scope, ridge=ridge, iterations=iterations, tol=tol)
    c = model._fit(ro)
    diag = {k: v for k, v in model.diagnostics.items() if k != "replayed_batches"}
    return _credit(ro, c, g, beta, gamma, norm, epsilon, diag, g is not None)
