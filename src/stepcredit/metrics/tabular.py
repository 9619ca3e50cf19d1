"""Finite MDPs for comparing reward functions: transition tensors, reward tables, builders.

Notation (shared by ``stepcredit.metrics``): nS states, nA actions; a transition is (s, a, s');
T[s, a, s'] = P(s' | s, a) is the [nS, nA, nS] transition tensor; a reward function is a table
R[s, a, s'] of the same shape (float64); γ is the discount. Potential shaping with a potential
Φ [nS] is R'(s, a, s') = R(s, a, s') + γΦ(s') − Φ(s) (Ng, Harada & Russell 1999).

Terminal states are **absorbing**: every action loops back with probability 1 (the rewards a
builder records there are 0). This is the infinite-horizon view EPIC and STARC are defined in;
episodic shaping with Φ(terminal) = 0 is the special case of infinite-horizon shaping with that
potential, so a reward shaped the episodic way is still at distance 0.

Builders:

* :func:`mdp_from_gym`: a gymnasium toy-text environment (FrozenLake, CliffWalking, Taxi, ...)
  from its ``env.unwrapped.P`` table (gymnasium is imported only here: the ``envs`` extra).
* :func:`mdp_from_env`: a registered ``stepcredit`` text environment (``lock_chain``, ...) by
  exhaustive search: every state reachable from ``reset(seed)`` is reached by replaying its
  shortest action path, then every action is tried from it. Exact for deterministic
  environments whose ``info["state"]`` key is Markov (the environment protocol asks both).

Logged transitions of rollouts (:func:`rollout_transitions`) are the sample-based counterpart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepcredit._params import UsageError
from stepcredit.data import Rollouts

__all__ = [
    "MetricsError",
    "TabularMDP",
    "Transitions",
    "mdp_from_env",
    "mdp_from_gym",
    "potential_shaping",
    "rollout_transitions",
    "tabulate_reward",
]

#: T's rows must sum to 1 within this tolerance.
ROW_TOL = 1e-9


class MetricsError(UsageError):
    """A bad argument to a reward-distance function or builder (the CLI exits with status 2)."""


def _readonly(x: Any, dtype=np.float64) -> np.ndarray:
    a = np.array(x, dtype=dtype, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP's transition structure and the reward tables recorded with it.

    Attributes:
        transitions: T [nS, nA, nS], every row T[s, a, :] a probability distribution.
        gamma: γ in [0, 1].
        state_labels: [nS] the states as the environment names them (gymnasium's integer
            observation, or a text environment's ``info["state"]`` key); reward callables
            R(s, a, s') receive these.
        action_labels: [nA] the actions (gymnasium's integer action, or the action text).
        terminal: [nS] bool, the absorbing terminal states.
        rewards: name -> R [nS, nA, nS] recorded by the builder: ``"reward"`` (the
            environment's reward; 0 on transitions the dynamics never produce and on the
            absorbing loops), ``"process"`` (a text environment's ``info["process"]``, when
            every step gives one).
        name: where the MDP came from (``"gym:FrozenLake-v1"``, ``"lock_chain"``).
    """

    transitions: np.ndarray
    gamma: float
    state_labels: tuple = ()
    action_labels: tuple = ()
    terminal: np.ndarray | None = None
    rewards: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        T = _readonly(self.transitions)
        if T.ndim != 3 or T.shape[0] != T.shape[2] or T.shape[0] < 1 or T.shape[1] < 1:
            raise MetricsError(f"TabularMDP: transitions must have shape [nS, nA, nS], got {T.shape}")
        if not np.all(np.isfinite(T)) or np.any(T < 0):
            raise MetricsError("TabularMDP: transitions must be finite and >= 0")
        bad = np.flatnonzero(np.abs(T.sum(axis=2) - 1.0).ravel() > ROW_TOL)
        if bad.size:
            s, a = divmod(int(bad[0]), T.shape[1])
            raise MetricsError(f"TabularMDP: transitions[{s}, {a}, :] sums to {T[s, a].sum()!r}, not 1")
        set_(self, "transitions", T)
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise MetricsError(f"TabularMDP: gamma={self.gamma!r} must lie in [0, 1]")
        set_(self, "gamma", float(self.gamma))
        nS, nA = T.shape[0], T.shape[1]
        set_(self, "state_labels", tuple(self.state_labels) or tuple(range(nS)))
        set_(self, "action_labels", tuple(self.action_labels) or tuple(range(nA)))
        if len(self.state_labels) != nS or len(self.action_labels) != nA:
            raise MetricsError(f"TabularMDP: {len(self.state_labels)} state labels and "
                               f"{len(self.action_labels)} action labels for nS={nS}, nA={nA}")
        term = np.zeros(nS, bool) if self.terminal is None else np.array(self.terminal, dtype=bool)
        if term.shape != (nS,):
            raise MetricsError(f"TabularMDP: terminal must have shape [{nS}]")
        loops = T[term][:, :, term.nonzero()[0]] if term.any() else None
        if loops is not None and not np.allclose(np.einsum("iai->ia", loops), 1.0, atol=ROW_TOL):
            raise MetricsError("TabularMDP: terminal states must be absorbing (T[s, a, s] = 1)")
        term.flags.writeable = False
        set_(self, "terminal", term)
        rewards = {}
        for k, R in self.rewards.items():
            R = _readonly(R)
            if R.shape != T.shape or not np.all(np.isfinite(R)):
                raise MetricsError(f"TabularMDP: reward table {k!r} must be finite with shape {T.shape}")
            rewards[k] = R
        set_(self, "rewards", rewards)

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def reward(self, name: str) -> np.ndarray:
        """The recorded reward table ``name`` ([nS, nA, nS])."""
        try:
            return self.rewards[name]
        except KeyError:
            have = ", ".join(self.rewards) or "none"
            raise MetricsError(f"{self.name or 'TabularMDP'}: no reward table {name!r} (recorded: {have})") from None


def potential_shaping(reward: np.ndarray, potential: np.ndarray, gamma: float) -> np.ndarray:
    """R'(s, a, s') = R(s, a, s') + γΦ(s') − Φ(s).

    Args:
        reward: R [nS, nA, nS].
        potential: Φ [nS].
        gamma: γ.

    Returns:
        R' [nS, nA, nS].

    Reference: Policy invariance under reward transformations: Theory and application to
    reward shaping (Ng, Harada, Russell, 1999, ICML).
    """
    R = np.asarray(reward, dtype=np.float64)
    phi = np.asarray(potential, dtype=np.float64)
    if R.ndim != 3 or phi.shape != (R.shape[0],):
        raise MetricsError(f"potential_shaping: reward {R.shape} and potential {phi.shape} must be [nS, nA, nS] and [nS]")
    return R + gamma * phi[None, None, :] - phi[:, None, None]


def tabulate_reward(mdp: TabularMDP, fn: Callable[[Any, Any, Any], Any], name: str = "reward function") -> np.ndarray:
    """R[s, a, s'] = fn(state_labels[s], action_labels[a], state_labels[s']) on every triple.

    The function is called nS·nA·nS times (a Python loop: user code is scalar), on every
    triple, possible or not, because EPIC compares rewards on all of them.

    Raises:
        MetricsError: fn raised, or returned something that is not a finite real number;
            the message names ``name`` and the triple.
    """
    S, A = mdp.state_labels, mdp.action_labels
    out = np.empty((len(S), len(A), len(S)))
    for i, s in enumerate(S):
        for j, a in enumerate(A):
            for k, s2 in enumerate(S):
                out[i, j, k] = _number(fn, (s, a, s2), name)
    return out


def _number(fn: Callable[..., Any], args: tuple, name: str) -> float:
    try:
        v = fn(*args)
    except Exception as exc:
        raise MetricsError(f"{name} raised {type(exc).__name__}: {exc} at (s, a, s') = {args!r}") from exc
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise MetricsError(f"{name} returned {v!r} at (s, a, s') = {args!r}, not a number") from None
    if isinstance(v, (str, bytes)) or not np.isfinite(x):
        raise MetricsError(f"{name} returned {v!r} at (s, a, s') = {args!r}, not a finite number")
    return x


# --------------------------------------------------------------------------- builders
def _absorbing(T: np.ndarray, R: Mapping[str, np.ndarray], terminal: np.ndarray) -> None:
    idx = np.flatnonzero(terminal)
    T[idx] = 0.0
    T[idx, :, idx] = 1.0
    for table in R.values():
        table[idx] = 0.0


def mdp_from_gym(env_id: str, *, gamma: float = 0.99, **kwargs: Any) -> TabularMDP:
    """The tabular MDP of a gymnasium environment with a ``P`` table (the toy-text ones).

    ``P[s][a]`` lists (probability, next state, reward, terminated) entries: T[s, a, s'] sums
    the probabilities of the entries reaching s', R[s, a, s'] is their probability-weighted
    mean reward (recorded as ``rewards["reward"]``). A state that any entry enters with
    terminated=True is terminal and made absorbing (CliffWalking's and Taxi's tables keep
    moving from them). Termination is thus taken to be a property of the next state, as in
    the toy-text environments (Taxi's table also has non-terminal moves into its delivered
    states, from states no episode reaches; in the absorbing model they just end there).

    Args:
        env_id: a gymnasium id, e.g. ``"FrozenLake-v1"``, ``"CliffWalking-v1"``, ``"Taxi-v4"``.
        gamma: γ of the MDP.
        **kwargs: passed to ``gymnasium.make`` (``is_slippery=False``, ``map_name="8x8"``).

    Raises:
        ImportError: gymnasium is not installed (``pip install 'stepcredit[envs]'``).
        MetricsError: the environment cannot be made, or has no ``P`` table or non-discrete
            spaces.
    """
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is installed in the test environment
        raise ImportError("mdp_from_gym needs gymnasium: pip install 'stepcredit[envs]'") from None
    who = f"gym:{env_id}"
    try:
        env = gymnasium.make(env_id, **kwargs)
    except Exception as exc:
        raise MetricsError(f"{who}: gymnasium.make failed: {type(exc).__name__}: {exc}") from None
    try:
        P = getattr(env.unwrapped, "P", None)
        obs, act = env.observation_space, env.action_space
        if P is None or not hasattr(obs, "n") or not hasattr(act, "n"):
            raise MetricsError(f"{who}: needs discrete spaces and a transition table env.unwrapped.P "
                               "(gymnasium's toy-text environments have one)")
        nS, nA = int(obs.n), int(act.n)
        T = np.zeros((nS, nA, nS))
        Rsum = np.zeros((nS, nA, nS))
        ends = np.zeros(nS, bool)
        for s in range(nS):
            for a in range(nA):
                for p, s2, r, done in P[s][a]:
                    T[s, a, int(s2)] += p
                    Rsum[s, a, int(s2)] += p * r
                    ends[int(s2)] |= bool(done)
    finally:
        env.close()
    R = np.divide(Rsum, T, out=np.zeros_like(Rsum), where=T > 0)
    rewards = {"reward": R}
    _absorbing(T, rewards, ends)
    return TabularMDP(T, gamma, tuple(range(nS)), tuple(range(nA)), ends, rewards, who)


def mdp_from_env(name: str, *, seed: int = 0, gamma: float = 0.99, max_states: int = 2000, **kwargs: Any) -> TabularMDP:
    """The tabular MDP of a registered text environment's task ``seed``, by exhaustive search.

    Breadth-first from ``reset(seed=seed)``: each newly seen ``info["state"]`` is reached
    again by resetting and replaying its shortest action path, then every action is taken
    from it once. The actions are the union of ``valid_actions()`` over the states seen (an
    action that is invalid in a state is the environment's no-op there). The environment's
    reward and, when every step has one, ``info["process"]`` are recorded as reward tables.
    States entered with ``terminated`` become absorbing.

    Exact when the environment is deterministic after ``reset`` and ``info["state"]`` is
    Markov (what the environment protocol asks); a history-dependent environment would be
    recorded along the first path found. Cost: about nS·nA·(depth + 1) environment steps.

    Args:
        name: a registered environment (``"lock_chain"``; see ``stepcredit.envs.list_envs``).
        seed: the task seed (``lock_chain``: the combination).
        gamma: γ of the MDP.
        max_states: refuse environments with more reachable states than this.
        **kwargs: environment parameters (``length=4, n_actions=3``). ``max_steps`` defaults
            to ``max_states + 1`` so that no replay is cut by the step limit.

    Raises:
        MetricsError: more than ``max_states`` states, a step cut by the step limit, or a
            state entered both with and without termination. EnvError (a UsageError) for an
            unknown environment or parameter.
    """
    from stepcredit.envs import get_env, make_env  # the environments sit beside metrics

    spec = get_env(name)
    if "max_steps" in spec.params:
        kwargs.setdefault("max_steps", max_states + 1)
    env = make_env(name, **kwargs)
    who = f"environment '{name}' (seed {seed})"
    _, info = env.reset(seed=seed)
    states: dict[str, int] = {info["state"]: 0}
    paths: list[tuple[str, ...]] = [()]
    actions: list[str] = []
    seen_actions: set[str] = set()
    edges: dict[tuple[int, str], tuple[int, float, float | None]] = {}
    ended: set[int] = set()
    going: set[int] = {0}

    def add_actions(acts) -> None:
        for a in acts:
            if a not in seen_actions:
                seen_actions.add(a)
                actions.append(a)

    add_actions(env.valid_actions())
    changed = True
    while changed:  # repeat while new states or actions appear
        changed = False
        i = 0
        while i < len(paths):
            if i in ended:
                i += 1
                continue
            for a in list(actions):
                if (i, a) in edges:
                    continue
                env.reset(seed=seed)
                for b in paths[i]:
                    env.step(b)
                add_actions(env.valid_actions())
                _, r, term, trunc, info = env.step(a)
                if trunc and not term:
                    raise MetricsError(f"{who}: a replay of {len(paths[i]) + 1} steps was cut by the step limit; "
                                       "raise max_steps")
                s2 = info["state"]
                if s2 not in states:
                    if len(states) >= max_states:
                        raise MetricsError(f"{who}: more than max_states={max_states} reachable states")
                    states[s2] = len(paths)
                    paths.append(paths[i] + (a,))
                    changed = True
                j = states[s2]
                (ended if term else going).add(j)
                p = info.get("process")
                edges[(i, a)] = (j, float(r), None if p is None else float(p))
            i += 1
        if any((i, a) not in edges for i in range(len(paths)) if i not in ended for a in actions):
            changed = True
    both = ended & going
    if both:
        s = next(k for k, v in states.items() if v in both)
        raise MetricsError(f"{who}: state {s!r} is entered both with terminated=True and False")
    nS, nA = len(paths), len(actions)
    col = {a: k for k, a in enumerate(actions)}
    T = np.zeros((nS, nA, nS))
    R = np.zeros((nS, nA, nS))
    proc = np.zeros((nS, nA, nS))
    has_process = all(p is not None for _, _, p in edges.values())
    for (i, a), (j, r, p) in edges.items():
        T[i, col[a], j] = 1.0
        R[i, col[a], j] = r
        proc[i, col[a], j] = p if has_process else 0.0
    terminal = np.zeros(nS, bool)
    terminal[sorted(ended)] = True
    rewards = {"reward": R, "process": proc} if has_process else {"reward": R}
    _absorbing(T, rewards, terminal)
    labels = tuple(sorted(states, key=states.get))
    return TabularMDP(T, gamma, labels, tuple(actions), terminal, rewards, name)


# --------------------------------------------------------------------------- logged transitions
@dataclass(frozen=True, eq=False)
class Transitions:
    """The transitions (s, a, s') of rollouts, as integer codes.

    Step t of an episode is the transition (state_t, action_t, state_{t+1}); the last step of
    an episode has no next state in the data (rollouts record the state an action was taken
    in, not the final observation) and is a **terminal** transition, ``next_state = -1``. The
    rollout format does not say whether an episode terminated or was cut at a step limit:
    both count as terminal.

    Attributes:
        state: [N] int64 codes into ``state_labels``.
        action: [N] int64 codes into ``action_labels``.
        next_state: [N] int64 codes, −1 for a terminal transition.
        state_labels: [nS] object array of the original state keys (strings or integers).
        action_labels: [nA] object array of the original action keys.
    """

    state: np.ndarray
    action: np.ndarray
    next_state: np.ndarray
    state_labels: np.ndarray
    action_labels: np.ndarray

    @property
    def terminal(self) -> np.ndarray:
        """[N] bool, the transitions without a next state."""
        return self.next_state < 0


def rollout_transitions(ro: Rollouts, by: str = "reward distances") -> Transitions:
    """The transitions of rollouts with ``state`` and ``action`` step fields (one per step).

    Equal keys (equal uint64 hashes of the ``state`` / ``action`` values) are the same state /
    action, in any episode.

    Raises:
        MissingColumnError: naming ``by``, when ``state`` or ``action`` is absent.
    """
    ro.require(("state", "action"), by)
    s_codes, s_first = _codes(ro.keys["state"])
    a_codes, a_first = _codes(ro.keys["action"])
    last = ro.episode_offsets[1:] - 1
    nxt = np.empty(ro.n_steps, np.int64)
    nxt[:-1] = s_codes[1:]
    nxt[last] = -1
    return Transitions(
        s_codes, a_codes, nxt,
        np.array(ro.key_values["state"].take(s_first).to_pylist(), dtype=object),
        np.array(ro.key_values["action"].take(a_first).to_pylist(), dtype=object),
    )


def _codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    return inv.astype(np.int64).ravel(), first
