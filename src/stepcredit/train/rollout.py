"""Group rollouts: n task instances × G episodes each, stepped together, as one ``Rollouts``.

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
  ``ref_logp``: log π₀(a|s) under the initial policy (uniform over the valid actions);
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

__all__ = ["CollectedBatch", "collect"]

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
    """

    rollouts: Rollouts
    action_index: np.ndarray
    success: np.ndarray
    episode_return: np.ndarray
    task_seed: np.ndarray

    @property
    def n_steps(self) -> int:
        """S, the environment steps taken."""
        return self.rollouts.n_steps


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


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
    extras: dict[str, dict[int, Any]] = {}  # key -> {step position: value}
    success = np.zeros(E, dtype=bool)
    live = list(range(E))
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
    reward = np.asarray(s_reward, dtype=np.float64)[order]
    last = offsets[1:] - 1
    outcome = reward[last].copy()
    episode_return = np.add.reduceat(reward, offsets[:-1])
    reward[last] = 0.0
    steps: dict[str, Any] = {
        "state": np.asarray(s_state, dtype=object)[order].tolist(),
        "action": np.asarray(s_action, dtype=object)[order].tolist(),
        "reward": reward,
        "logp": np.concatenate(s_logp)[order],
        "ref_logp": np.concatenate(s_ref)[order],
        "grounding": np.asarray(s_ground, dtype=np.float64)[order],
    }
    S = ep.size
    meta_info: dict[str, list[Any]] = {}
    for key, vals in extras.items():
        if key in _INFO_FIELDS and len(vals) == S:
            steps[key] = [vals[int(p)] for p in order]
        elif all(_is_scalar(v) for v in vals.values()):
            meta_info[key] = [vals.get(int(p)) for p in order]
    seen: dict[int, int] = {}
    names = []
    for s in np.asarray(task_seeds, dtype=np.int64).tolist():
        m = seen.get(s, 0)
        seen[s] = m + 1
        names.append(f"t{s}" if m == 0 else f"t{s}#{m}")
    gid = [g for g in names for _ in range(G)]
    eid = [f"i{iteration}/{g}/e{j}" for g, j in zip(gid, np.tile(np.arange(G), n).tolist())]
    meta = []
    for e in range(E):
        m: dict[str, Any] = {"task_seed": int(seeds[e]), "iteration": int(iteration), "success": bool(success[e])}
        if meta_info:
            m["info"] = {k: v[offsets[e]:offsets[e + 1]] for k, v in meta_info.items()}
        meta.append(m)
    ro = Rollouts.from_arrays(
        outcome=outcome, group_id=gid, episode_id=eid, episode_offsets=offsets, meta=meta, **steps
    )
    return CollectedBatch(
        rollouts=ro,
        action_index=np.concatenate(s_index)[order],
        success=success,
        episode_return=episode_return,
        task_seed=seeds,
    )
