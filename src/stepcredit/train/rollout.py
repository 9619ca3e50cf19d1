"""Group rollouts: n task instances × G episodes each, stepped together, as one ``Rollouts``.

Two collectors: :func:`collect` (G independent episodes per task, described below) and
:func:`collect_tree` (truncated step-level sampling: the G episodes grown as a rollout tree
whose shared prefix steps carry one ``node`` id; same record fields and ids otherwise).

Every episode of the batch has its own environment object. Episode j of task k is reset with
the task's seed (so the G episodes of a group play the same instance), then a Python loop runs
over time steps: at each step the policy picks one action for every live episode at once
(``policy.act``), each live environment takes its action, and episodes that end
(``terminated`` or ``truncated``) leave the live set. The loop is over time only; the per-
environment ``step`` calls are the environments' own Python.

What is recorded, per step t of episode i (episode-major order in the result):

* ``state``: the canonical key (``info["state"]``) of the state in which the action was taken,
  i.e. from the previous step's (or the reset's) info;
* ``action``: the action text;
* ``reward``: the environment's reward of the step, **except on the last step, where it is 0**:
  the last step's reward is the episode's ``outcome``. So outcome + Σ step rewards = the
  episode's return, and estimators that add the outcome to the last step's reward (GiGPO, GAE)
  count it once. For the sparse-reward environments (every built-in one by default) outcome is
  the terminal reward (1 = solved) and every step reward is 0;
* ``logp``: log π(a|s) under the behaviour policy (the policy that sampled the action), and
  ``ref_logp``: log π₀(a|s) under the initial policy (uniform over the valid actions for the
  tabular, MLP and GRU policies; the frozen initial model for ``LMPolicy``);
* ``tokens``: the action's token count, when the policy's ``act`` result has a ``tokens``
  attribute (``LMPolicy``; an environment's ``info["tokens"]`` then goes to ``meta["info"]``);
* ``grounding``: 1 when the action was valid (``info.get("valid", True)``), else 0 (an
  ``info["grounding"]`` given by the environment wins);
* the environment's ``info`` extras whose key is a step field of the data model (``process``,
  ``value``, ``p_answer``, ``importance``, ``tokens``, ``node``, ``reference``): a column when
  every step of the batch has it. Other extras with JSON-scalar values (and such step fields
  given on some steps only) go to the episode's ``meta["info"]``: key -> per-step list (None
  where absent).

Other extras are dropped.

Ids: ``group_id`` names the task instance, the same in every iteration: ``"t{task_seed}"``,
and ``"t{task_seed}#{m}"`` for the m-th repeat of a seed drawn more than once in the batch, so
that every group has exactly G episodes (a pool of one task gives n groups of G episodes of that
task, not one group of n·G) and stateful filters that remember groups across batches
(``replay``) find the same task again. ``episode_id = "i{iteration}/{group_id}/e{j}"`` is
unique across iterations, so replayed episodes keep distinct ids. ``meta`` holds
``task_seed``, ``iteration`` and ``success`` (``info["success"]`` of the last step, False
where absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.envs.base import TextEnv

__all__ = ["CollectedBatch", "collect", "collect_tree"]

# step fields an environment may give in ``info`` (the collector owns state, action, reward,
# logp, ref_logp; grounding comes from "valid" unless given)
_INFO_FIELDS = ("process", "value", "p_answer", "importance", "tokens", "node", "reference", "grounding")
_OWN_KEYS = frozenset({"state", "valid", "success"})


class _Acts(Protocol):
    index: np.ndarray
    log_prob: np.ndarray
    ref_log_prob: np.ndarray


class ActingPolicy(Protocol):
    """What :func:`collect` needs of a policy.

    A policy whose ``recurrent`` attribute is True (``GRUPolicy``) must also have
    ``start_episodes(n)``, called once before the episodes start, and accept
    ``act(..., episodes=[B] episode slots)``; other policies are called without ``episodes``.
    A policy with a ``begin_collection()`` method (``LMPolicy``: it forgets its per-state
    caches) has it called once at the start of every collection. An ``act`` result with a
    ``tokens`` attribute ([B] token counts) gives the ``tokens`` step column.
    """

    def act(self, states: Sequence[str], valid_actions: Sequence[Sequence[str]], rng: np.random.Generator) -> _Acts: ...


@dataclass(frozen=True, eq=False)
class CollectedBatch:
    """One batch of group rollouts and what the update and the metrics need besides.

    Attributes:
        rollouts: the episodes (see the module docstring for the fields).
        action_index: [S] index of each step's action in the valid-action list it was chosen from.
        success: [E] bool, ``info["success"]`` of each episode's last step.
        episode_return: [E] the sum of the environment's rewards (= outcome + Σ step rewards).
        task_seed: [E] int64 task seed of each episode.
        sampled_steps: the distinct steps the policy sampled (:func:`collect_tree`: a shared
            prefix step once); None = every stored step (:func:`collect`).
    """

    rollouts: Rollouts
    action_index: np.ndarray
    success: np.ndarray
    episode_return: np.ndarray
    task_seed: np.ndarray
    sampled_steps: int | None = None

    @property
    def n_steps(self) -> int:
        """S, the stored steps (a shared prefix step once per episode through it)."""
        return self.rollouts.n_steps

    @property
    def n_sampled_steps(self) -> int:
        """The environment steps the policy sampled (shared prefix steps once)."""
        return self.rollouts.n_steps if self.sampled_steps is None else int(self.sampled_steps)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _begin(policy: Any) -> None:
    """Tell a policy that keeps per-collection caches (``begin_collection``) that a collection starts."""
    begin = getattr(policy, "begin_collection", None)
    if begin is not None:
        begin()


def _batch(
    order: np.ndarray,
    offsets: np.ndarray,
    ep_group: np.ndarray,
    group_seeds: Sequence[int],
    success: np.ndarray,
    iteration: int,
    G: int,
    sampled: dict[str, Any],
    extras: dict[str, dict[int, Any]],
    node: bool = False,
) -> CollectedBatch:
    """The batch of both collectors, from the sampled steps and the episodes' step lists.

    Args:
        order: [S] the sampled step (its position in the ``sampled`` lists) stored at each step
            of the episodes, episode after episode, in time order (a shared step may repeat).
        offsets: [E+1] episode offsets into ``order``.
        ep_group: [E] group index of each episode (G episodes per group, groups in order).
        group_seeds: [n] the task seed of each group.
        success: [E] bool success of each episode.
        iteration, G: for the ids.
        sampled: per sampled step: ``state``, ``action``, ``reward``, ``index``, ``logp``,
            ``ref_logp``, ``grounding`` and optionally ``tokens`` (the policy's token counts)
            (lists or arrays of the same length).
        extras: info key -> {sampled step: value}.
        node: also store ``node`` = the sampled step (the shared steps of a rollout tree).
    """
    E = offsets.shape[0] - 1
    reward = np.asarray(sampled["reward"], dtype=np.float64)[order]
    last = offsets[1:] - 1
    outcome = reward[last].copy()
    episode_return = np.add.reduceat(reward, offsets[:-1])
    reward[last] = 0.0
    steps: dict[str, Any] = {
        "state": np.asarray(sampled["state"], dtype=object)[order].tolist(),
        "action": np.asarray(sampled["action"], dtype=object)[order].tolist(),
        "reward": reward,
        "logp": np.asarray(sampled["logp"], dtype=np.float64)[order],
        "ref_logp": np.asarray(sampled["ref_logp"], dtype=np.float64)[order],
        "grounding": np.asarray(sampled["grounding"], dtype=np.float64)[order],
    }
    if node:
        steps["node"] = order.tolist()
    if "tokens" in sampled:
        steps["tokens"] = np.asarray(sampled["tokens"], dtype=np.int64)[order]
    n_sampled = len(sampled["state"])
    meta_info: dict[str, list[Any]] = {}
    for key, vals in extras.items():
        if key in _INFO_FIELDS and key not in steps and len(vals) == n_sampled:
            steps[key] = [vals[int(q)] for q in order]
        elif all(_is_scalar(v) for v in vals.values()):
            meta_info[key] = [vals.get(int(q)) for q in order]
    seen: dict[int, int] = {}
    names = []
    for s in group_seeds:
        m = seen.get(s, 0)
        seen[s] = m + 1
        names.append(f"t{s}" if m == 0 else f"t{s}#{m}")
    gid = [names[g] for g in ep_group]
    eid = [f"i{iteration}/{names[g]}/e{j % G}" for j, g in enumerate(ep_group)]
    ep_seed = np.asarray([group_seeds[g] for g in ep_group], dtype=np.int64)
    meta = []
    for e in range(E):
        m: dict[str, Any] = {"task_seed": int(ep_seed[e]), "iteration": int(iteration), "success": bool(success[e])}
        if meta_info:
            m["info"] = {key: v[offsets[e]:offsets[e + 1]] for key, v in meta_info.items()}
        meta.append(m)
    ro = Rollouts.from_arrays(
        outcome=outcome, group_id=gid, episode_id=eid, episode_offsets=offsets, meta=meta, **steps
    )
    return CollectedBatch(
        rollouts=ro,
        action_index=np.asarray(sampled["index"], dtype=np.int64)[order],
        success=np.asarray(success, dtype=bool),
        episode_return=episode_return,
        task_seed=ep_seed,
        sampled_steps=n_sampled if node else None,
    )


def collect(
    envs: Sequence[TextEnv],
    policy: ActingPolicy,
    task_seeds: Sequence[int],
    group_size: int,
    rng: np.random.Generator,
    iteration: int = 0,
) -> CollectedBatch:
    """Play ``group_size`` episodes of each task seed, all episodes stepped together.

    Args:
        envs: at least len(task_seeds) · G environments (episode j uses ``envs[j]``; episodes
            k·G .. k·G+G−1 play task ``task_seeds[k]``).
        policy: an object with ``act(states, valid_actions, rng)`` (e.g. ``TabularPolicy``); a
            recurrent one (``policy.recurrent`` True) gets ``start_episodes(E)`` first and the
            live episodes' indices as ``act(..., episodes=...)``, so it keeps one memory per episode.
        task_seeds: [n] task seeds (the seed given to ``reset``).
        group_size: G >= 1.
        rng: the generator of the policy's draws (advanced by one draw per live episode and step).
        iteration: the training iteration, used in the ids.

    Returns:
        :class:`CollectedBatch`; its rollouts' episodes are in the order described above.

    Raises:
        ValueError: too few environments, G < 1, no task, or an environment that breaks the
            protocol (no ``info["state"]``, an empty valid-action list).
    """
    n, G = len(task_seeds), int(group_size)
    if G < 1 or n < 1:
        raise ValueError(f"collect: need at least one task and group_size >= 1 (got {n} tasks, G={G})")
    E = n * G
    if len(envs) < E:
        raise ValueError(f"collect: {E} episodes need {E} environments, got {len(envs)}")
    seeds = np.repeat(np.asarray(task_seeds, dtype=np.int64), G)
    state: list[str] = []
    for e in range(E):
        _, info = envs[e].reset(seed=int(seeds[e]))
        if "state" not in info:
            raise ValueError(f"collect: environment {type(envs[e]).__name__}.reset returned no info['state']")
        state.append(str(info["state"]))

    # per-step lists in time-major order; sorted to episode-major at the end
    s_ep: list[int] = []
    s_state: list[str] = []
    s_action: list[str] = []
    s_reward: list[float] = []
    s_index: list[np.ndarray] = []
    s_logp: list[np.ndarray] = []
    s_ref: list[np.ndarray] = []
    s_ground: list[float] = []
    s_tokens: list[np.ndarray] = []
    extras: dict[str, dict[int, Any]] = {}  # key -> {step position: value}
    success = np.zeros(E, dtype=bool)
    live = list(range(E))
    _begin(policy)
    recurrent = bool(getattr(policy, "recurrent", False))
    if recurrent:
        policy.start_episodes(E)  # type: ignore[attr-defined]
    while live:
        valid = [envs[e].valid_actions() for e in live]
        if recurrent:
            acts = policy.act([state[e] for e in live], valid, rng, episodes=live)  # type: ignore[call-arg]
        else:
            acts = policy.act([state[e] for e in live], valid, rng)
        s_index.append(np.asarray(acts.index, dtype=np.int64))
        s_logp.append(np.asarray(acts.log_prob, dtype=np.float64))
        s_ref.append(np.asarray(acts.ref_log_prob, dtype=np.float64))
        if hasattr(acts, "tokens"):
            s_tokens.append(np.asarray(acts.tokens, dtype=np.int64))
        still: list[int] = []
        for k, e in enumerate(live):
            text = valid[k][int(acts.index[k])]
            _, reward, terminated, truncated, info = envs[e].step(text)
            pos = len(s_ep)
            s_ep.append(e)
            s_state.append(state[e])
            s_action.append(text)
            s_reward.append(float(reward))
            s_ground.append(float(info.get("grounding", bool(info.get("valid", True)))))
            for key, v in info.items():
                if key not in _OWN_KEYS and key != "grounding":
                    extras.setdefault(key, {})[pos] = v
            if "state" not in info:
                raise ValueError(f"collect: environment {type(envs[e]).__name__}.step returned no info['state']")
            state[e] = str(info["state"])
            if terminated or truncated:
                success[e] = bool(info.get("success", False))
            else:
                still.append(e)
        live = still

    ep = np.asarray(s_ep, dtype=np.int64)
    order = np.argsort(ep, kind="stable")  # time order is kept within an episode
    counts = np.bincount(ep, minlength=E)
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    sampled = {
        "state": s_state, "action": s_action, "reward": s_reward, "index": np.concatenate(s_index),
        "logp": np.concatenate(s_logp), "ref_logp": np.concatenate(s_ref), "grounding": s_ground,
    }
    if s_tokens:
        sampled["tokens"] = np.concatenate(s_tokens)
    ep_group = np.repeat(np.arange(n), G)
    return _batch(order, offsets, ep_group, np.asarray(task_seeds, dtype=np.int64).tolist(), success,
                  iteration, G, sampled, extras)


@dataclass
class _Path:
    """One live path of a rollout tree: its steps so far and the leaves it still owes."""

    group: int
    key: tuple[int, ...]  # child indices from the root: the leaves' order in the group
    steps: list[int]  # positions (in the step lists) of the path's steps, root first
    quota: int  # leaves this path must end as
    env: int  # index of its environment
    state: str


def collect_tree(
    envs: Sequence[TextEnv],
    policy: ActingPolicy,
    task_seeds: Sequence[int],
    group_size: int,
    rng: np.random.Generator,
    iteration: int = 0,
    *,
    branching: int = 2,
    branch_every: int = 1,
) -> CollectedBatch:
    """Truncated step-level sampling: each task's G episodes grown as one rollout tree.

    Each group starts as one path owing G leaves (its *quota*) from the reset state. At the
    branch depths t = 0, b, 2b, ... (b = ``branch_every``) a path of quota q > 1 forks into
    c = min(k, q) children (k = ``branching``) with quotas as equal as possible (the first
    q mod c get one more); every child samples its own action of step t from the shared state
    (SLATE: k continuations that share the prefix and differ from the next step on). A path of
    quota 1 runs on alone to the end of its episode. When a path ends (terminated or
    truncated) with quota q > 1 (an episode that ended before its branches were used), it
    counts as q identical episodes, so every group has exactly G leaves. Each leaf is an
    episode; its record holds the full step list, the shared prefix steps repeated (same
    state, action, reward, logp and ``node``).

    A child continues in a fresh environment: reset with the task seed and replay of the
    prefix's actions (environments are deterministic given the actions after reset, see
    ``stepcredit.envs.base``); the first child keeps the parent's. Replayed steps are not
    counted as sampled steps.

    Records are as in :func:`collect` (same fields and ids) plus the step field ``node``: an
    int, unique in the batch per tree step, equal in every episode through that step, so that
    ``tree`` (and ``gigpo``, ``salt``) see the shared structure. Episodes are in group order,
    the leaves of a group in depth-first order of the tree. ``CollectedBatch.n_steps`` counts
    the stored steps (shared steps once per episode), ``sampled_steps`` the distinct ones.

    Args:
        envs: at least len(task_seeds) · G environments (live paths never exceed G per group).
        policy: as for :func:`collect`, not recurrent (a GRU's memory cannot be forked).
        task_seeds: [n] task seeds.
        group_size: G >= 1, leaves per group.
        rng: the generator of the policy's draws (one draw per live path and step).
        iteration: the training iteration, used in the ids.
        branching: k >= 2, children per fork.
        branch_every: b >= 1, steps between branch depths.

    Returns:
        :class:`CollectedBatch` (with ``sampled_steps`` set).

    Raises:
        ValueError: bad arguments, too few environments, a recurrent policy, or an
            environment that breaks the protocol.
    """
    n, G = len(task_seeds), int(group_size)
    k, b = int(branching), int(branch_every)
    if G < 1 or n < 1:
        raise ValueError(f"collect_tree: need at least one task and group_size >= 1 (got {n} tasks, G={G})")
    if k < 2 or b < 1:
        raise ValueError(f"collect_tree: need branching >= 2 and branch_every >= 1 (got {k}, {b})")
    if len(envs) < n * G:
        raise ValueError(f"collect_tree: {n * G} episodes need {n * G} environments, got {len(envs)}")
    if bool(getattr(policy, "recurrent", False)):
        raise ValueError("collect_tree: a recurrent policy cannot be used with branching (its memory cannot be forked)")
    seeds = [int(s) for s in np.asarray(task_seeds, dtype=np.int64).tolist()]
    _begin(policy)
    free = list(range(n * G - 1, -1, -1))  # a stack of free environments (pop gives the lowest)
    live: list[_Path] = []
    for g in range(n):
        e = free.pop()
        _, info = envs[e].reset(seed=seeds[g])
        if "state" not in info:
            raise ValueError(f"collect_tree: environment {type(envs[e]).__name__}.reset returned no info['state']")
        live.append(_Path(g, (), [], G, e, str(info["state"])))

    s_state: list[str] = []
    s_action: list[str] = []
    s_reward: list[float] = []
    s_index: list[int] = []
    s_logp: list[float] = []
    s_ref: list[float] = []
    s_ground: list[float] = []
    s_tokens: list[int] = []
    extras: dict[str, dict[int, Any]] = {}
    leaves: list[tuple[_Path, bool]] = []  # (path, success)
    t = 0
    while live:
        if t % b == 0:  # branch depth: fork every path that still owes two or more leaves
            forked: list[_Path] = []
            for p in live:
                if p.quota < 2:
                    forked.append(p)
                    continue
                c = min(k, p.quota)
                base, extra = divmod(p.quota, c)
                for j in range(c):
                    q = base + (1 if j < extra else 0)
                    if j == 0:
                        env = p.env
                    else:
                        env = free.pop()
                        envs[env].reset(seed=seeds[p.group])
                        for pos in p.steps:
                            envs[env].step(s_action[pos])
                    forked.append(_Path(p.group, p.key + (j,), list(p.steps), q, env, p.state))
            live = forked
        valid = [envs[p.env].valid_actions() for p in live]
        acts = policy.act([p.state for p in live], valid, rng)
        idx = np.asarray(acts.index, dtype=np.int64)
        logp = np.asarray(acts.log_prob, dtype=np.float64)
        ref = np.asarray(acts.ref_log_prob, dtype=np.float64)
        if hasattr(acts, "tokens"):
            s_tokens.extend(np.asarray(acts.tokens, dtype=np.int64).tolist())
        still: list[_Path] = []
        for i, p in enumerate(live):
            text = valid[i][int(idx[i])]
            _, reward, terminated, truncated, info = envs[p.env].step(text)
            pos = len(s_state)
            s_state.append(p.state)
            s_action.append(text)
            s_reward.append(float(reward))
            s_index.append(int(idx[i]))
            s_logp.append(float(logp[i]))
            s_ref.append(float(ref[i]))
            s_ground.append(float(info.get("grounding", bool(info.get("valid", True)))))
            for key, v in info.items():
                if key not in _OWN_KEYS and key != "grounding" and key != "node":
                    extras.setdefault(key, {})[pos] = v
            if "state" not in info:
                raise ValueError(f"collect_tree: environment {type(envs[p.env]).__name__}.step returned no info['state']")
            p.state = str(info["state"])
            p.steps.append(pos)
            if terminated or truncated:
                leaves.append((p, bool(info.get("success", False))))
                free.append(p.env)
            else:
                still.append(p)
        live = still
        t += 1

    # episodes: leaves in (group, depth-first) order, a leaf of quota q repeated q times
    leaves.sort(key=lambda ls: (ls[0].group, ls[0].key))
    ep_pos: list[list[int]] = []
    ep_group: list[int] = []
    ep_success: list[bool] = []
    for p, ok in leaves:
        for _ in range(p.quota):
            ep_pos.append(p.steps)
            ep_group.append(p.group)
            ep_success.append(ok)
    E = len(ep_pos)
    counts = np.asarray([len(s) for s in ep_pos], dtype=np.int64)
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    order = np.asarray([q for s in ep_pos for q in s], dtype=np.int64)
    sampled = {
        "state": s_state, "action": s_action, "reward": s_reward, "index": s_index,
        "logp": s_logp, "ref_logp": s_ref, "grounding": s_ground,
    }
    if s_tokens:
        sampled["tokens"] = s_tokens
    return _batch(order, offsets, np.asarray(ep_group, dtype=np.int64), seeds, np.asarray(ep_success, dtype=bool),
                  iteration, G, sampled, extras, node=True)
