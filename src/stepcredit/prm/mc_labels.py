"""Monte-Carlo step labels: the chance that a trajectory continued from a step ends correct.

Math-Shepherd's automatic process annotation labels step t of a solution by completing it N
times from that step with a policy (the "completer") and counting the completions that reach the
correct answer:

    soft label   y_t^SE = (1/N) Σ_{j=1..N} 1[completion j correct]
    hard label   y_t^HE = 1 if any completion is correct, else 0

(SE / HE, "soft" and "hard estimation"). Two ways to get the completions:

* :func:`mc_label_rollouts` does it as the paper does: it samples episodes (the "spines") with a
  policy and, after every step t of a spine but the last, plays N completions from the state the
  step reached, each in a copy of the spine's environment (replayed from the task seed, then
  ``copy.deepcopy``), all stepped together with one batched ``policy.act`` per time step. The
  last step's label is the spine's own success (N = 1).
* :func:`tree_mc_labels` reads labels off **rollout trees** already played (the trainer's
  truncated step-level sampling, ``stepcredit.train.rollout.collect_tree``, or any tree rollouts
  with ``node`` ids): the distinct episodes of a group that pass through the node of step t are
  continuations of the shared prefix ending at step t, so

      y_t = (successful distinct episodes of the group through node(t)) / N(t),

  N(t) the number of distinct episodes through node(t). ``collect_tree`` repeats a leaf whose
  episode ended before its quota was used (so every group has G episodes); the repeats are one
  continuation, not several, and are counted once (an episode is identified by the node of its
  last step). A step whose node only its own episode has (the tail of a branch, or rollouts
  without ``node``) gets N = 1 and its own episode's success.

Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations,
Peiyi Wang, Lei Li, Zhihong Shao, R.X. Xu, Damai Dai, Yifei Li, Deli Chen, Y. Wu, Zhifang Sui
(2024), arXiv:2312.08935 (hard and soft estimation of step quality from N completions).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.ops import dense_codes
from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.labels import hard_labels, soft_labels

__all__ = ["MCLabels", "mc_label_rollouts", "tree_mc_labels"]


@dataclass(frozen=True)
class MCLabels:
    """Monte-Carlo labels of every step.

    Attributes:
        soft: [S] float64 fraction of the continuations through the step that succeeded (SE).
        hard: [S] float64 1.0 if at least one did (HE), else 0.0.
        n: [S] int64 N(t), the continuations behind each label (>= 1).
    """

    soft: np.ndarray
    hard: np.ndarray
    n: np.ndarray


def tree_mc_labels(ro: Rollouts, success: np.ndarray | None = None, threshold: float = 1.0) -> MCLabels:
    """Soft and hard Monte-Carlo labels of the steps of tree rollouts (module docstring).

    Args:
        ro: rollouts; with a ``node`` step field, steps of one group sharing a node id are one
            shared prefix step; without it every step is its episode's own (N = 1).
        success: [E] bool, whether each episode ended correct; default ``outcome >= threshold``.
        threshold: the outcome that counts as correct when ``success`` is not given (the
            built-in environments give outcome 1 to a solved task).

    Returns:
        :class:`MCLabels`.
    """
    E, S = ro.n_episodes, ro.n_steps
    ok = ro.outcome >= threshold if success is None else np.asarray(success, dtype=bool)
    if ok.shape != (E,):
        raise PRMError(f"tree_mc_labels: success has shape {ok.shape}, expected ({E},) (one per episode)")
    step_ok = ok[ro.step_episode].astype(np.float64)
    if not ro.has("node"):
        return MCLabels(step_ok.copy(), step_ok.copy(), np.ones(S, dtype=np.int64))
    node = ro.column("node", by="tree_mc_labels")
    ncode, n_nodes = dense_codes(node)
    code, n_codes = dense_codes(ro.episode_group[ro.step_episode] * np.int64(max(n_nodes, 1)) + ncode)
    # repeated leaves (same last node) are one continuation: count each distinct leaf once
    last = code[ro.episode_offsets[1:] - 1]
    first_ep = np.full(n_codes, -1, dtype=np.int64)
    first_ep[last[::-1]] = np.arange(E)[::-1]  # the first episode ending at each leaf
    distinct = first_ep[last] == np.arange(E)
    keep = distinct[ro.step_episode]
    # a distinct episode passes a node once at most (its steps are a path from the root), so
    # the kept steps sharing a code are the distinct episodes through that node
    count = np.bincount(code[keep], minlength=n_codes)
    wins = np.bincount(code[keep], weights=step_ok[keep], minlength=n_codes)
    soft = soft_labels(wins[code], count[code])
    return MCLabels(soft, hard_labels(soft), count[code].astype(np.int64))


def mc_label_rollouts(
    env: str,
    policy: Any,
    task_seeds: list[int],
    *,
    continuations: int = 8,
    episodes_per_task: int = 1,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    iteration: int = 0,
) -> Rollouts:
    """Sample episodes and label every step by N completions from it (Math-Shepherd).

    Args:
        env: an environment name (``stepcredit.envs``).
        policy: the sampler and completer: a non-recurrent policy with ``act``
            (``TabularPolicy()`` is uniform).
        task_seeds: the tasks; each gets ``episodes_per_task`` spines (one group).
        continuations: N >= 1 completions per step.
        episodes_per_task: spines per task (>= 1).
        env_kwargs: the environment's parameters.
        seed: seeds the policy's draws (spines, then completions).
        iteration: used in the episode ids.

    Success is the environment's ``info["success"]`` at the end of an episode.

    Returns:
        The spines (``stepcredit.train.rollout.collect``'s fields) with the step field ``label``
        (the soft label, SE) and, in each episode's ``meta["info"]``, ``label_hard`` (HE) and
        ``label_n`` (N, or 1 on the last step) per step.
    """
    from stepcredit.envs import make_env
    from stepcredit.train.rollout import collect

    if continuations < 1 or episodes_per_task < 1:
        raise PRMError(f"mc_label_rollouts: continuations={continuations} and episodes_per_task={episodes_per_task} must be >= 1")
    if not task_seeds:
        raise PRMError("mc_label_rollouts: no task to label")
    if getattr(policy, "recurrent", False):
        raise PRMError("mc_label_rollouts: needs a non-recurrent policy (completions start from copied states)")
    kw = dict(env_kwargs or {})
    rng = np.random.default_rng(seed)
    G = episodes_per_task
    batch = collect([make_env(env, **kw) for _ in range(len(task_seeds) * G)], policy, list(task_seeds), G, rng,
                    iteration=iteration)
    ro = batch.rollouts
    off = ro.episode_offsets
    actions = [str(a) for a in ro.key_values["action"].to_pylist()]
    wins = np.zeros(ro.n_steps)
    n = np.ones(ro.n_steps, dtype=np.int64)
    wins[off[1:] - 1] = batch.success  # the last step: the spine's own success
    # copies of the environment after every non-last step, N each
    live: list[tuple[int, Any, str]] = []  # (step, environment, state)
    for e in range(ro.n_episodes):
        base = make_env(env, **kw)
        _, info = base.reset(seed=int(batch.task_seed[e]))
        for t in range(off[e], off[e + 1] - 1):
            _, _, _, _, info = base.step(actions[t])
            n[t] = continuations
            for _ in range(continuations):
                live.append((t, copy.deepcopy(base), str(info["state"])))
    while live:
        valid = [x[1].valid_actions() for x in live]
        acts = policy.act([x[2] for x in live], valid, rng)
        still = []
        for (t, e_, _), v, a in zip(live, valid, acts.index):
            _, _, terminated, truncated, info = e_.step(v[int(a)])
            if terminated or truncated:
                wins[t] += float(bool(info.get("success", False)))
            else:
                still.append((t, e_, str(info["state"])))
        live = still
    soft = soft_labels(wins, n)
    return _with_labels(ro, MCLabels(soft, hard_labels(soft), n))


def _with_labels(ro: Rollouts, lab: MCLabels) -> Rollouts:
    import dataclasses
    import json

    import pyarrow as pa

    metas = [None] * ro.n_episodes if ro.meta is None else ro.meta.to_pylist()
    off = ro.episode_offsets
    texts = []
    for e, text in enumerate(metas):
        meta = json.loads(text) if text else {}
        info = dict(meta.get("info") or {})
        info["label_hard"] = lab.hard[off[e]:off[e + 1]].tolist()
        info["label_n"] = lab.n[off[e]:off[e + 1]].tolist()
        meta["info"] = info
        texts.append(json.dumps(meta, allow_nan=False))
    return dataclasses.replace(ro.replace_columns(label=lab.soft), meta=pa.array(texts, pa.string()))
