"""``TabularPolicy``: a softmax over each state's admissible actions, one logit per pair.

Notation: the table holds P *entries*, one per (state, action) pair seen so far, and N states.
Entry p has a logit z_p and belongs to state σ(p). The policy in state s is the softmax over the
entries of s:

    π(a|s) = exp(z_{s,a}) / Σ_{b ∈ A(s)} exp(z_{s,b})

where A(s) is the set of actions registered for s (the texts ``env.valid_actions()`` returned
when s was met). Logits start at 0, so the initial policy is uniform over A(s); it is also the
reference policy π₀ of the KL term. The table grows as new states (and, for an environment whose
action lists change, new actions of a known state) appear; a new entry starts at logit 0.

States are the environment's canonical state keys (``info["state"]``, text), actions the action
texts. The policy assumes that ``valid_actions()`` is a function of the state key (true of every
environment that follows the protocol); where it is not, an action seen once in s stays in A(s).

Gradients are with respect to the logit vector z [P]. For one step (s, a):

    ∂ log π(a|s) / ∂z_p = 1[p = (s,a)] − π(p|s) 1[σ(p) = s]          (onehot(a) − π(·|s))

so for weights c [S] over a batch of steps, Σ_t c_t ∇ log π(a_t|s_t) is one ``bincount`` over the
chosen entries minus π times one ``bincount`` of the weights per state (no loop over steps).
The KL to the initial (uniform) policy of a state, KL_s = Σ_a π log π + log |A(s)|, has

    ∂ KL_s / ∂z_p = π(p|s) (log π(p|s) + log |A(s)| − KL_s)           for σ(p) = s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Action", "TabularPolicy"]


@dataclass(frozen=True)
class Action:
    """What :meth:`TabularPolicy.act` returns for B environments stepped together.

    Attributes:
        index: [B] int64 index of the chosen action in each environment's valid-action list.
        log_prob: [B] float64 log π(a|s) of the chosen action (the behaviour log-probability).
        entry: [B] int64 table entry of each chosen (state, action) pair.
        ref_log_prob: [B] float64 log π₀(a|s) = −log |valid actions| under the initial
            (uniform) policy, the reference of the KL term and of implicit process rewards.
    """

    index: np.ndarray
    log_prob: np.ndarray
    entry: np.ndarray
    ref_log_prob: np.ndarray


class TabularPolicy:
    """A softmax policy over hashed states with one logit per (state, action) pair.

    See the module docstring for the parameterisation and its gradients. All randomness comes
    from the ``rng`` passed to :meth:`act`; everything else is deterministic, including the
    order in which entries are created (the order states and actions are first met).
    """

    def __init__(self) -> None:
        self._logits = np.zeros(64, dtype=np.float64)
        self._entry_state = np.zeros(64, dtype=np.int64)
        self._n_entries = 0
        self._state_row: dict[str, int] = {}  # state key -> row
        self._row_actions: list[dict[str, int]] = []  # row -> {action text: entry}
        self._entry_action: list[str] = []  # entry -> action text
        self._cache: dict[str, tuple[list[str], np.ndarray]] = {}  # state -> (valid list, entries)

    # ------------------------------------------------------------------ size and parameters
    @property
    def n_states(self) -> int:
        """N, the number of states in the table."""
        return len(self._row_actions)

    @property
    def n_entries(self) -> int:
        """P, the number of (state, action) entries (= the number of parameters)."""
        return self._n_entries

    @property
    def logits(self) -> np.ndarray:
        """[P] the logits z (a read-only view; change them with :meth:`ascend` or :meth:`set_logits`)."""
        v = self._logits[: self._n_entries]
        v.flags.writeable = False
        return v

    @property
    def entry_state(self) -> np.ndarray:
        """[P] the state row σ(p) of each entry (read-only view)."""
        v = self._entry_state[: self._n_entries]
        v.flags.writeable = False
        return v

    def set_logits(self, logits: np.ndarray) -> None:
        """Replace the [P] logits (finite values)."""
        z = np.asarray(logits, dtype=np.float64)
        if z.shape != (self._n_entries,) or not np.all(np.isfinite(z)):
            raise ValueError(f"logits must be [P]=({self._n_entries},) finite values, got shape {z.shape}")
        self._logits[: self._n_entries] = z

    # ------------------------------------------------------------------ table growth
    def _new_entry(self, row: int, action: str) -> int:
        p = self._n_entries
        if p == self._logits.shape[0]:
            self._logits = np.concatenate([self._logits, np.zeros(p, dtype=np.float64)])
            self._entry_state = np.concatenate([self._entry_state, np.zeros(p, dtype=np.int64)])
        self._logits[p] = 0.0
        self._entry_state[p] = row
        self._row_actions[row][action] = p
        self._entry_action.append(action)
        self._n_entries = p + 1
        return p

    def _row(self, state: str) -> int:
        row = self._state_row.get(state)
        if row is None:
            row = len(self._row_actions)
            self._state_row[state] = row
            self._row_actions.append({})
        return row

    def _entries_for(self, state: str, actions: Sequence[str]) -> np.ndarray:
        """[len(actions)] entries of ``actions`` in ``state``, created where new."""
        hit = self._cache.get(state)
        if hit is not None and hit[0] == actions:
            return hit[1]
        if not actions:
            raise ValueError(f"state {state!r}: the environment listed no valid action")
        if len(set(actions)) != len(actions):
            raise ValueError(f"state {state!r}: the valid actions repeat an action: {list(actions)}")
        row = self._row(state)
        amap = self._row_actions[row]
        out = np.empty(len(actions), dtype=np.int64)
        for i, a in enumerate(actions):
            p = amap.get(a)
            out[i] = self._new_entry(row, a) if p is None else p
        self._cache[state] = (list(actions), out)
        return out

    def entries(self, states: Sequence[str], actions: Sequence[str]) -> np.ndarray:
        """[S] table entries of stored (state, action) pairs, created where new.

        Args:
            states: [S] state keys.
            actions: [S] action texts.

        Returns:
            [S] int64 entry ids (index into :attr:`logits`).
        """
        if len(states) != len(actions):
            raise ValueError(f"entries: {len(states)} states but {len(actions)} actions")
        out = np.empty(len(states), dtype=np.int64)
        for i, (s, a) in enumerate(zip(states, actions)):
            row = self._row(s)
            p = self._row_actions[row].get(a)
            out[i] = self._new_entry(row, a) if p is None else p
        return out

    # ------------------------------------------------------------------ probabilities
    def _log_norm(self) -> np.ndarray:
        """[N] log Σ_{b∈A(s)} exp z_{s,b} of every state (max-shifted)."""
        z, st = self.logits, self.entry_state
        m = np.full(self.n_states, -np.inf)
        np.maximum.at(m, st, z)
        total = np.bincount(st, weights=np.exp(z - m[st]), minlength=self.n_states)
        return m + np.log(total)

    def entry_log_prob(self) -> np.ndarray:
        """[P] log π(p|σ(p)) of every entry under the current logits."""
        return self.logits - self._log_norm()[self.entry_state]

    def log_prob(self, entries: np.ndarray) -> np.ndarray:
        """[S] log π(a_t|s_t) of stored steps given by their table entries (see :meth:`entries`)."""
        return self.entry_log_prob()[np.asarray(entries, dtype=np.int64)]

    def act(self, states: Sequence[str], valid_actions: Sequence[Sequence[str]], rng: np.random.Generator) -> Action:
        """Sample one action in each of B environments stepped together.

        The softmax of environment b runs over ``valid_actions[b]`` (its entries are created at
        logit 0 where new); one uniform number per environment is drawn from ``rng`` and
        inverted through the cumulative probabilities, so the draw is deterministic given the
        generator's state.

        Args:
            states: [B] state keys (``info["state"]``).
            valid_actions: [B] lists of admissible action texts (non-empty).
            rng: the generator the draws come from.

        Returns:
            :class:`Action` with the [B] chosen indices, their log-probabilities (current and
            initial policy) and entries.
        """
        B = len(states)
        if len(valid_actions) != B:
            raise ValueError(f"act: {B} states but {len(valid_actions)} valid-action lists")
        if B == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Action(empty, np.zeros(0), empty, np.zeros(0))
        rows = [self._entries_for(s, a) for s, a in zip(states, valid_actions)]
        counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=B)
        starts = np.zeros(B, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        flat = np.concatenate(rows)
        z = self._logits[flat]
        m = np.maximum.reduceat(z, starts)
        ez = np.exp(z - np.repeat(m, counts))
        total = np.add.reduceat(ez, starts)
        cum = np.cumsum(ez)
        before = np.concatenate([[0.0], cum[starts[1:] - 1]]) if B > 1 else np.zeros(1)
        within = cum - np.repeat(before, counts)  # cumulative mass within each environment's segment
        u = rng.random(B) * total
        below = within <= np.repeat(u, counts)
        index = np.minimum(np.add.reduceat(below.astype(np.int64), starts), counts - 1)
        chosen = starts + index
        log_prob = z[chosen] - m - np.log(total)
        return Action(index, log_prob, flat[chosen], -np.log(counts.astype(np.float64)))

    # ------------------------------------------------------------------ gradients and updates
    def grad_log_prob(self, entries: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """[P] Σ_t c_t ∇_z log π(a_t|s_t) for steps given by their entries.

        Args:
            entries: [S] table entries of the steps' (state, action) pairs.
            weights: [S] the weights c_t.

        Returns:
            [P] the gradient: bincount(entries, c) − π ⊙ (Σ of c per state)[σ].
        """
        e = np.asarray(entries, dtype=np.int64)
        c = np.asarray(weights, dtype=np.float64)
        if e.shape != c.shape:
            raise ValueError(f"grad_log_prob: entries {e.shape} and weights {c.shape} differ in shape")
        P, st = self.n_entries, self.entry_state
        per_state = np.bincount(st[e], weights=c, minlength=self.n_states)
        return np.bincount(e, weights=c, minlength=P) - np.exp(self.entry_log_prob()) * per_state[st]

    def kl_to_initial(self, state_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """KL(π(·|s) ‖ π₀(·|s)) of every state and its gradient, π₀ uniform over A(s).

        Args:
            state_weight: [N] weights w_s, or None (all 1).

        Returns:
            ([N] KL_s, [P] gradient of Σ_s w_s KL_s with respect to z).
        """
        st = self.entry_state
        logp = self.entry_log_prob()
        p = np.exp(logp)
        n_actions = np.bincount(st, minlength=self.n_states).astype(np.float64)
        log_n = np.log(np.maximum(n_actions, 1.0))
        kl = np.bincount(st, weights=p * logp, minlength=self.n_states) + log_n
        w = np.ones(self.n_states) if state_weight is None else np.asarray(state_weight, dtype=np.float64)
        grad = w[st] * p * (logp + log_n[st] - kl[st])
        return kl, grad

    def ascend(self, entries: np.ndarray, weights: np.ndarray, lr: float, kl_coef: float = 0.0) -> None:
        """One gradient-ascent step: z ← z + lr (Σ_t c_t ∇ log π(a_t|s_t) − β Σ_t ∇ KL_{s_t} / S).

        The KL term (β = ``kl_coef``) is the exact KL to the initial uniform policy of each
        step's state, averaged over the S steps (a state counts as often as it was visited).

        Args:
            entries: [S] table entries of the steps.
            weights: [S] the policy-gradient weights c_t (e.g. PPO's clipped-surrogate coefficients).
            lr: step size.
            kl_coef: β >= 0.
        """
        g = self.grad_log_prob(entries, weights)
        if kl_coef:
            e = np.asarray(entries, dtype=np.int64)
            visits = np.bincount(self.entry_state[e], minlength=self.n_states) / max(e.size, 1)
            g -= kl_coef * self.kl_to_initial(visits)[1]
        self._logits[: self._n_entries] += lr * g

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, np.ndarray]:
        """The table as plain arrays (safe for ``np.savez(..., allow_pickle=False)``).

        Returns:
            ``{"states": [N] str, "entry_state": [P] int64, "entry_action": [P] str,
            "logits": [P] float64}``; states in row order, entries in creation order.
        """
        states = sorted(self._state_row, key=self._state_row.__getitem__)
        return {
            "states": np.array(states, dtype=np.str_) if states else np.zeros(0, dtype="<U1"),
            "entry_state": self.entry_state.copy(),
            "entry_action": np.array(self._entry_action, dtype=np.str_) if self._entry_action else np.zeros(0, dtype="<U1"),
            "logits": self.logits.copy(),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the table by one from :meth:`state_dict` (the exact same policy)."""
        try:
            states = [str(s) for s in np.asarray(state["states"]).tolist()]
            entry_state = np.asarray(state["entry_state"], dtype=np.int64)
            entry_action = [str(a) for a in np.asarray(state["entry_action"]).tolist()]
            logits = np.asarray(state["logits"], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"policy state: missing array {exc}") from None
        P = logits.shape[0]
        if entry_state.shape != (P,) or len(entry_action) != P or len(set(states)) != len(states):
            raise ValueError("policy state: entry_state, entry_action and logits must have one value per entry, states be unique")
        if P and (entry_state.min() < 0 or entry_state.max() >= len(states)):
            raise ValueError("policy state: entry_state points outside the states")
        fresh = TabularPolicy()
        for s in states:
            fresh._row(s)
        for row, a in zip(entry_state.tolist(), entry_action):
            if a in fresh._row_actions[row]:
                raise ValueError(f"policy state: action {a!r} repeats in state {states[row]!r}")
            fresh._new_entry(row, a)
        fresh.set_logits(logits)
        self.__dict__.update(fresh.__dict__)
