"""Neural policies over text states (torch): ``MLPPolicy`` and the recurrent ``GRUPolicy``.

Needs the ``torch`` extra (``pip install 'stepcredit[torch]'``); nothing else in stepcredit
imports this module unless a torch policy is asked for.

Notation: s a state text (the environment's canonical key ``info["state"]``), a an action text,
A(s) the admissible actions of s, F the feature size, H the hidden size.

**Features** (:func:`text_features`, NumPy, no vocabulary): a text is turned into tokens of three
families, each hashed (64-bit FNV-1a + splitmix64, ``stepcredit.data.hashing``: the same in every
process) into one of F buckets with a ±1 sign taken from another bit of the hash:

* words: the lower-cased whitespace-separated words (``"press"``, ``"3"``, ``"1/4"``);
* character trigrams of each line, with ``^``/``$`` marking the line's ends;
* positioned characters: (row, column, character) for every character of a line of at most
  40 characters, so a drawn grid (keydoor, sokoban) becomes a one-hot picture of its cells.

Each family's bucket vector is divided by its L2 norm, and the sum of the families by √(number
of non-empty families), so every text has a feature vector φ of norm about 1. A text's vector
is computed once and cached.

**Scoring** (handles state-dependent action lists and actions never seen before): a state tower
gives a context h ∈ R^H, an action embedding g(a) = W ψ(a) ∈ R^H is linear in the action text's
features ψ(a) = φ(a), and

    logit(s, a) = h · g(a),          π(a|s) = softmax over A(s) of the logits.

``MLPPolicy``: h = tanh(L₂ tanh(L₁ φ(s))). ``GRUPolicy``: h_t = tanh(L₂ GRU(φ(s_0), …, φ(s_t))_t),
a GRU over the episode's state history, its memory reset at each episode start (for partially
observed tasks, where the state text alone does not determine the best action).
W starts at 0, so the initial policy π₀ is uniform over A(s), like the tabular policy's: the
behaviour ``ref_logp`` the collector records (−log |A(s)|) is π₀'s, and the KL to π₀ is
KL_s = Σ_a π log π + log |A(s)|. The other weights start uniform in ±1/√fan_in, drawn from a
NumPy generator seeded by ``seed`` (no global random state).

**Admissible actions of stored steps**: the update recomputes π(·|s_t) of stored steps, so the
policy remembers A(s) for every state it met (``act`` registers the valid list; as in the
tabular policy, an action seen once in s stays in A(s)). This table is part of the state dict.

**Update** (:meth:`ascend`): for per-step weights c_t (the trainer's clipped-surrogate
coefficients) one Adam step (β₁ 0.9, β₂ 0.999, ε 1e-8) on the objective
Σ_t c_t log π(a_t|s_t) − β (1/S) Σ_t KL_{s_t}: the gradient is Σ_t c_t ∇ log π − β ∇ KL, the same
direction as ``TabularPolicy.ascend`` takes. Weights all 0 and β = 0 skip the step (Adam's
momentum would otherwise still move the parameters). Everything runs in float64.

**Determinism**: actions are drawn with the caller's NumPy generator by inverse CDF (one uniform
number per environment, as ``TabularPolicy.act``); parameters and Adam's moments are plain arrays
in :meth:`state_dict` (no pickle: ``np.savez(..., allow_pickle=False)`` stores them), so a
checkpointed run resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.features import text_features
from stepcredit.policies._actions import AdmissibleActions

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("stepcredit.policies.torch_policies needs PyTorch: pip install 'stepcredit[torch]'") from exc

__all__ = ["GRUPolicy", "MLPPolicy", "StepBatch", "TorchAction", "adam_ascent", "text_features"]

_DTYPE = torch.float64
_BETAS, _EPS = (0.9, 0.999), 1e-8
_NEG = -1e30  # logit of padding slots (exp underflows to exactly 0)


def adam_ascent(
    params: Mapping[str, torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    m: Mapping[str, torch.Tensor],
    v: Mapping[str, torch.Tensor],
    t: int,
    lr: float,
) -> None:
    """One Adam step **up** the gradient, in place (β₁ 0.9, β₂ 0.999, ε 1e-8).

    θ ← θ + lr · m̂ / (√v̂ + ε), m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ), with the moments m, v
    updated from the gradient g first (a parameter without gradient gets g = 0).

    Args:
        params: name -> parameter; grads: their gradients in the order of ``params`` (None = 0);
        m, v: name -> first and second moments (updated in place); t: the step number (>= 1);
        lr: the step size.

    Reference: Adam: A Method for Stochastic Optimization (Kingma, Ba, 2014, arXiv:1412.6980).
    """
    b1, b2 = _BETAS
    with torch.no_grad():
        for (name, p), g in zip(params.items(), grads):
            if g is None:
                g = torch.zeros_like(p)
            mn, vn = m[name], v[name]
            mn.mul_(b1).add_(g, alpha=1 - b1)
            vn.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (vn / (1 - b2 ** t)).sqrt_().add_(_EPS)
            p.addcdiv_(mn, denom, value=lr / (1 - b1 ** t))  # ascent


class _Features:
    """A growing cache text -> row of a feature matrix."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._row: dict[str, int] = {}
        self._mat = np.zeros((0, size), dtype=np.float64)
        self._tensor: torch.Tensor | None = None

    def rows(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._row]
        if new:
            for t in new:
                self._row[t] = len(self._row)
            self._mat = np.concatenate([self._mat, text_features(new, self.size)])
            self._tensor = None
        return np.fromiter((self._row[t] for t in texts), dtype=np.int64, count=len(texts))

    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = torch.from_numpy(self._mat)
        return self._tensor


@dataclass(frozen=True)
class TorchAction:
    """What :meth:`MLPPolicy.act` returns for B environments stepped together.

    Attributes:
        index: [B] int64 index of the chosen action in each environment's valid-action list.
        log_prob: [B] float64 log π(a|s) of the chosen action.
        ref_log_prob: [B] float64 log π₀(a|s) = −log |valid actions| (π₀ uniform).
    """

    index: np.ndarray
    log_prob: np.ndarray
    ref_log_prob: np.ndarray


@dataclass(eq=False)
class StepBatch:
    """Stored steps prepared for repeated log-probability evaluations (:meth:`MLPPolicy.steps`).

    Rows are the contexts whose action distributions are evaluated: the distinct states for
    ``MLPPolicy``, the steps themselves for ``GRUPolicy`` (each has its own history).

    Attributes:
        n_steps: S.
        row_input: what the state tower reads (feature rows [R] for the MLP; for the GRU the
            [E, T] padded feature rows of each episode's states, −1 = padding).
        row_actions: [R, Amax] int64 action-feature rows of each row's A(s) (padding: 0).
        row_mask: [R, Amax] bool, True on real actions.
        step_row: [S] int64 row of each step; step_pos: [S] int64 position of its action in the row.
    """

    n_steps: int
    row_input: torch.Tensor
    row_actions: torch.Tensor
    row_mask: torch.Tensor
    step_row: torch.Tensor
    step_pos: torch.Tensor
    step_gather: torch.Tensor | None = None  # GRU: [S] flat index into the [E·T] outputs
    cache: Any = field(default=None, repr=False)  # (version, step log-probs, step KL) with graph


class MLPPolicy(AdmissibleActions):
    """Softmax over admissible actions with logits h(s)·W ψ(a), h an MLP of hashed state features.

    See the module docstring for features, scoring, initialisation and the update.

    Args:
        feature_size: F, hashed feature buckets (>= 8).
        hidden_size: H (>= 1).
        seed: seeds the initial weights.
    """

    recurrent = False
    kind = "mlp"

    def __init__(self, feature_size: int = 256, hidden_size: int = 64, seed: int = 0) -> None:
        if feature_size < 8 or hidden_size < 1:
            raise ValueError(f"{type(self).__name__}: feature_size={feature_size} must be >= 8 and hidden_size={hidden_size} >= 1")
        self.feature_size, self.hidden_size, self.seed = int(feature_size), int(hidden_size), int(seed)
        self._feat = _Features(self.feature_size)  # state texts
        self._afeat = _Features(self.feature_size)  # action texts
        self._init_actions()  # state -> A(s), in order of first appearance
        self._build()
        rng = np.random.default_rng(self.seed)
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                if name == "action.weight":
                    p.zero_()
                else:
                    fan_in = p.shape[-1] if p.dim() > 1 else self.hidden_size
                    k = 1.0 / math.sqrt(fan_in)
                    p.copy_(torch.from_numpy(rng.uniform(-k, k, size=tuple(p.shape))))
        self._params = dict(self.net.named_parameters())
        self._m = {k: torch.zeros_like(p) for k, p in self._params.items()}
        self._v = {k: torch.zeros_like(p) for k, p in self._params.items()}
        self._t = 0
        self._version = 0

    # ------------------------------------------------------------------ the network
    def _build(self) -> None:
        F, H = self.feature_size, self.hidden_size
        self.net = nn.ModuleDict({
            "l1": nn.Linear(F, H),
            "l2": nn.Linear(H, H),
            "action": nn.Linear(F, H, bias=False),
        }).to(_DTYPE)

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """[R, F] -> [R, H]."""
        return torch.tanh(self.net["l2"](torch.tanh(self.net["l1"](x))))

    # ------------------------------------------------------------------ scoring (A(s): _actions.AdmissibleActions)
    def _logp_rows(self, h: torch.Tensor, actions: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-softmax over each row's actions: ([R, Amax] log π, [R, Amax] mask, ids, counts)."""
        R = len(actions)
        counts = np.fromiter((len(a) for a in actions), dtype=np.int64, count=R)
        amax = int(counts.max()) if R else 1
        flat = [a for row in actions for a in row]
        arow = self._afeat.rows(flat)
        ids = np.zeros((R, amax), dtype=np.int64)
        mask = np.arange(amax)[None, :] < counts[:, None]
        ids[mask] = arow
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        return self._scores(h, ids_t, mask_t), mask_t, ids_t, torch.from_numpy(counts)

    def _scores(self, h: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[R, H] contexts, [R, Amax] action rows -> [R, Amax] log π (padding: −1e30)."""
        g = self.net["action"](self._afeat.tensor())  # [NA, H] every action text met (few)
        logits = torch.einsum("rh,rah->ra", h, g[ids])
        logits = torch.where(mask, logits, torch.full_like(logits, _NEG))
        return torch.log_softmax(logits, dim=1)

    # ------------------------------------------------------------------ acting
    def _act_context(self, x: torch.Tensor, episodes: np.ndarray | None) -> torch.Tensor:
        return self._context(x)

    def act(self, states: Sequence[str], valid_actions: Sequence[Sequence[str]], rng: np.random.Generator,
            episodes: Sequence[int] | None = None) -> TorchAction:
        """Sample one action in each of B environments stepped together.

        Args:
            states: [B] state texts (``info["state"]``).
            valid_actions: [B] lists of admissible action texts (non-empty).
            rng: the generator of the draws (one uniform number per environment).
            episodes: [B] episode slots (``GRUPolicy`` only: whose memory to read and advance).

        Returns:
            :class:`TorchAction` with the chosen indices and their log-probabilities.
        """
        B = len(states)
        if len(valid_actions) != B:
            raise ValueError(f"act: {B} states but {len(valid_actions)} valid-action lists")
        if B == 0:
            return TorchAction(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        lists = [list(a) for a in valid_actions]
        for s, a in zip(states, lists):
            self._register(s, a)
        rows = self._feat.rows(list(states))
        with torch.no_grad():
            h = self._act_context(self._feat.tensor()[torch.from_numpy(rows)], None if episodes is None else np.asarray(episodes))
            logp, mask, _, counts_t = self._logp_rows(h, lists)
        logp_np = logp.numpy()
        counts = counts_t.numpy()
        p = np.where(mask.numpy(), np.exp(logp_np), 0.0)
        cum = np.cumsum(p, axis=1)
        u = rng.random(B) * cum[:, -1]
        index = np.minimum((cum <= u[:, None]).sum(axis=1), counts - 1)
        return TorchAction(index.astype(np.int64), logp_np[np.arange(B), index].copy(), -np.log(counts.astype(np.float64)))

    # ------------------------------------------------------------------ stored steps
    def steps(self, ro: Rollouts) -> StepBatch:
        """Prepare the stored steps of ``ro`` (state and action texts) for :meth:`log_prob`.

        Args:
            ro: rollouts whose ``state`` key holds the state texts the actions were taken in.

        Returns:
            :class:`StepBatch`; (state, action) pairs not met before are added to A(s).
        """
        states = [str(s) for s in ro.key_values["state"].to_pylist()]
        actions = [str(a) for a in ro.key_values["action"].to_pylist()]
        for s, a in zip(states, actions):
            self._register(s, [a])
        uniq = list(dict.fromkeys(states))
        row_of = {s: i for i, s in enumerate(uniq)}
        return self._batch(ro, states, actions, uniq, row_of)

    def _row_tables(self, row_states: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        lists = [self._valid[s] for s in row_states]
        counts = np.fromiter((len(a) for a in lists), dtype=np.int64, count=len(lists))
        amax = int(counts.max()) if lists else 1
        ids = np.zeros((len(lists), amax), dtype=np.int64)
        mask = np.arange(amax)[None, :] < counts[:, None]
        ids[mask] = self._afeat.rows([a for row in lists for a in row])
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def _step_pos(self, states: Sequence[str], actions: Sequence[str]) -> np.ndarray:
        pos_of: dict[str, dict[str, int]] = {}
        out = np.empty(len(states), dtype=np.int64)
        for i, (s, a) in enumerate(zip(states, actions)):
            d = pos_of.get(s)
            if d is None:
                d = pos_of[s] = {x: j for j, x in enumerate(self._valid[s])}
            out[i] = d[a]
        return out

    def _batch(self, ro: Rollouts, states, actions, uniq, row_of) -> StepBatch:
        ids, mask = self._row_tables(uniq)
        return StepBatch(
            n_steps=len(states),
            row_input=torch.from_numpy(self._feat.rows(uniq)),
            row_actions=ids,
            row_mask=mask,
            step_row=torch.from_numpy(np.fromiter((row_of[s] for s in states), dtype=np.int64, count=len(states))),
            step_pos=torch.from_numpy(self._step_pos(states, actions)),
        )

    def _batch_context(self, batch: StepBatch) -> torch.Tensor:
        return self._context(self._feat.tensor()[batch.row_input])

    def _forward(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """([S] log π(a_t|s_t), [S] KL(π(·|s_t) ‖ π₀(·|s_t)))."""
        logp = self._scores(self._batch_context(batch), batch.row_actions, batch.row_mask)
        p = torch.exp(logp)
        n = batch.row_mask.sum(dim=1).to(_DTYPE)
        kl_row = torch.where(batch.row_mask, p * logp, torch.zeros_like(p)).sum(dim=1) + torch.log(n)
        return logp[batch.step_row, batch.step_pos], kl_row[batch.step_row]

    def _cached(self, batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.cache is None or batch.cache[0] != self._version:
            with torch.enable_grad():
                batch.cache = (self._version, *self._forward(batch))
        return batch.cache[1], batch.cache[2]

    def log_prob(self, batch: StepBatch) -> np.ndarray:
        """[S] log π(a_t|s_t) of the prepared steps under the current parameters."""
        return self._cached(batch)[0].detach().numpy().copy()

    def kl_to_initial(self, batch: StepBatch) -> np.ndarray:
        """[S] KL(π(·|s_t) ‖ π₀(·|s_t)) of each prepared step's state (π₀ uniform over A(s_t))."""
        return self._cached(batch)[1].detach().numpy().copy()

    def ascend(self, batch: StepBatch, weights: np.ndarray, lr: float, kl_coef: float = 0.0) -> None:
        """One Adam step up Σ_t c_t log π(a_t|s_t) − β (1/S) Σ_t KL_{s_t}.

        Args:
            batch: the prepared steps (:meth:`steps`).
            weights: [S] the weights c_t (e.g. PPO's clipped-surrogate coefficients).
            lr: Adam's step size.
            kl_coef: β >= 0.
        """
        c = np.asarray(weights, dtype=np.float64)
        if c.shape != (batch.n_steps,):
            raise ValueError(f"ascend: weights {c.shape} for {batch.n_steps} steps")
        if not kl_coef and not np.any(c):
            return  # no signal: leave the parameters (and Adam's moments) as they are
        logp, kl = self._cached(batch)
        objective = (torch.from_numpy(c) * logp).sum()
        if kl_coef:
            objective = objective - kl_coef * kl.mean()
        grads = torch.autograd.grad(objective, list(self._params.values()), allow_unused=True)
        batch.cache = None
        self._t += 1
        adam_ascent(self._params, grads, self._m, self._v, self._t, lr)
        self._version += 1

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters, Adam's moments and the admissible-action table as plain arrays.

        Returns:
            ``{"config": [3] int64 (F, H, seed), "adam_t": [] int64, "param.NAME", "adam_m.NAME",
            "adam_v.NAME": float64 arrays, "valid_states": [N] str, "valid_offsets": [N+1] int64,
            "valid_actions": [P] str}``: safe for ``np.savez(..., allow_pickle=False)``.
        """
        out: dict[str, np.ndarray] = {
            "kind": np.array(self.kind),
            "config": np.array([self.feature_size, self.hidden_size, self.seed], dtype=np.int64),
            "adam_t": np.array(self._t, dtype=np.int64),
            **self._actions_state(),
        }
        for name, p in self._params.items():
            out[f"param.{name}"] = p.detach().numpy().copy()
            out[f"adam_m.{name}"] = self._m[name].numpy().copy()
            out[f"adam_v.{name}"] = self._v[name].numpy().copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a policy saved by :meth:`state_dict` of the same kind and sizes (exactly)."""
        try:
            kind = str(np.asarray(state["kind"]))
            cfg = np.asarray(state["config"]).tolist()
            if kind != self.kind or cfg[:2] != [self.feature_size, self.hidden_size]:
                raise ValueError(f"policy state: a {kind} policy with F, H = {cfg[:2]}, expected {self.kind} with "
                                 f"{[self.feature_size, self.hidden_size]}")
            table = self._read_actions(state)
            params = {k: np.asarray(state[f"param.{k}"], dtype=np.float64) for k in self._params}
            ms = {k: np.asarray(state[f"adam_m.{k}"], dtype=np.float64) for k in self._params}
            vs = {k: np.asarray(state[f"adam_v.{k}"], dtype=np.float64) for k in self._params}
            t = int(np.asarray(state["adam_t"]))
        except KeyError as exc:
            raise ValueError(f"policy state: missing array {exc}") from None
        for k, p in self._params.items():
            if params[k].shape != tuple(p.shape):
                raise ValueError(f"policy state: {k} has shape {params[k].shape}, expected {tuple(p.shape)}")
        self._set_actions(table)
        self.seed = int(cfg[2])
        with torch.no_grad():
            for k, p in self._params.items():
                p.copy_(torch.from_numpy(params[k]))
                self._m[k].copy_(torch.from_numpy(ms[k]))
                self._v[k].copy_(torch.from_numpy(vs[k]))
        self._t = t
        self._version += 1


class GRUPolicy(MLPPolicy):
    """Like :class:`MLPPolicy`, with h_t = tanh(L₂ GRU(φ(s_0..s_t))_t) over the episode's state history.

    The collector calls :meth:`start_episodes` before an iteration's episodes and passes each
    live environment's episode slot to :meth:`act`, so each episode has its own memory, reset
    at its start. Stored steps are re-run as whole episodes (padded to the longest) in the update.
    """

    recurrent = True
    kind = "gru"

    def __init__(self, feature_size: int = 256, hidden_size: int = 64, seed: int = 0) -> None:
        super().__init__(feature_size, hidden_size, seed)
        self._memory = torch.zeros(0, self.hidden_size, dtype=_DTYPE)

    def _build(self) -> None:
        F, H = self.feature_size, self.hidden_size
        self.net = nn.ModuleDict({
            "gru": nn.GRU(F, H, batch_first=True),
            "l2": nn.Linear(H, H),
            "action": nn.Linear(F, H, bias=False),
        }).to(_DTYPE)

    def start_episodes(self, n: int) -> None:
        """Reset the memory of ``n`` episode slots (every episode starts with h = 0)."""
        self._memory = torch.zeros(n, self.hidden_size, dtype=_DTYPE)

    def _act_context(self, x: torch.Tensor, episodes: np.ndarray | None) -> torch.Tensor:
        if episodes is None:
            raise ValueError("GRUPolicy.act needs the episode slot of every environment (episodes=...)")
        idx = torch.from_numpy(episodes.astype(np.int64))
        out, h = self.net["gru"](x[:, None, :], self._memory[idx][None])
        self._memory[idx] = h[0]
        return torch.tanh(self.net["l2"](out[:, 0, :]))

    def steps(self, ro: Rollouts) -> StepBatch:
        """Prepare the stored steps of ``ro`` (whole episodes, in order) for :meth:`log_prob`."""
        states = [str(s) for s in ro.key_values["state"].to_pylist()]
        actions = [str(a) for a in ro.key_values["action"].to_pylist()]
        for s, a in zip(states, actions):
            self._register(s, [a])
        ids, mask = self._row_tables(states)  # one row per step
        off = np.asarray(ro.episode_offsets, dtype=np.int64)
        counts = np.diff(off)
        E, T = counts.size, int(counts.max()) if counts.size else 1
        t_in_ep = np.arange(len(states)) - np.repeat(off[:-1], counts)
        ep = np.repeat(np.arange(E), counts)
        flat = ep * T + t_in_ep
        seq = np.full(E * T, -1, dtype=np.int64)
        seq[flat] = self._feat.rows(states)
        return StepBatch(
            n_steps=len(states),
            row_input=torch.from_numpy(seq.reshape(E, T)),
            row_actions=ids,
            row_mask=mask,
            step_row=torch.arange(len(states)),
            step_pos=torch.from_numpy(self._step_pos(states, actions)),
            step_gather=torch.from_numpy(flat),
        )

    def _batch_context(self, batch: StepBatch) -> torch.Tensor:
        seq = batch.row_input
        x = self._feat.tensor()[seq.clamp(min=0)] * (seq >= 0).unsqueeze(-1).to(_DTYPE)  # [E, T, F]; padding comes after
        out, _ = self.net["gru"](x)
        out = out.reshape(-1, self.hidden_size)[batch.step_gather]
        return torch.tanh(self.net["l2"](out))
