"""Monte-Carlo step labels: the chance that a trajectory continued from a step ends correct.

Math-Shepherd's automatic process annotation labels step t of a solution by completing it N
times from that step with a policy (the "completer") and counting the completions that reach the
correct answer:

    soft label   y_t^SE = (1/N) Σ_{j=1..N} 1[completion j correct]
    hard label   y_t^HE = 1 if any completion is correct, else 0

(SE / HE, "soft" and "hard estimation"). Here the completions are episodes of a **rollout tree**
(the trainer's truncated step-level sampling, ``stepcredit.train.rollout.collect_tree``, or any
tree rollouts with ``node`` ids): the episodes of a group that pass through the node of step t
are N continuations of the shared prefix ending at step t, played by the same policy, so

    y_t = (number of successful episodes of the group through node(t)) / N(t),

N(t) the number of episodes of the group through node(t). A step whose node only its own episode
has (the tail of a branch, or rollouts without ``node``) gets N = 1 and its own episode's
success. :func:`tree_mc_labels` computes this for a whole batch with segment sums;
:func:`mc_label_rollouts` plays the tree with an environment and a policy and returns the
rollouts with the ``label`` step field.

Reference: Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations,
Peiyi Wang, Lei Li, Zhihong Shao, R.X. Xu, Damai Dai, Yifei Li, Deli Chen, Y. Wu, Zhifang Sui
(2024), arXiv:2312.08935 (hard and soft estimation of step quality from N completions).
"""

from __future__ import annotations

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
    code, _ = dense_codes(ro.episode_group[ro.step_episode] * np.int64(max(n_nodes, 1)) + ncode)
    # an episode passes a node once at most (its steps are a path from the root), so the steps
    # sharing a code are the episodes through that node
    count = np.bincount(code)
    wins = np.bincount(code, weights=step_ok)
    soft = soft_labels(wins[code], count[code])
    return MCLabels(soft, hard_labels(soft), count[code].astype(np.int64))


def mc_label_rollouts(
    env: str,
    policy: Any,
    task_seeds: list[int],
    *,
    continuations: int = 8,
    branch_every: int = 1,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    iteration: int = 0,
    threshold: float = 1.0,
) -> Rollouts:
    """Play a rollout tree per task and label every step with its Monte-Carlo estimate.

    Each task's group of N = ``continuations`` episodes is grown by
    ``stepcredit.train.rollout.collect_tree`` with k = 2 forks at every ``branch_every``-th
    step until each path owes one leaf (the first fork comes before the first step), so a first
    step is shared by N/2 continuations, a second by N/4, and so on.
    The rollouts returned carry the step field ``label`` (the soft label, SE) and, in each
    episode's ``meta["info"]``, ``label_hard`` (HE) and ``label_n`` (N(t)) per step.

    Args:
        env: an environment name (``stepcredit.envs``).
        policy: the completer: a policy with ``act`` (``TabularPolicy()`` is uniform).
        task_seeds: the tasks to label (one group each).
        continuations: N >= 2, a power of two for a balanced tree (otherwise the tree is as
            balanced as ``collect_tree`` makes it).
        branch_every: fork every this many steps.
        env_kwargs: the environment's parameters.
        seed: seeds the policy's draws.
        iteration: used in the episode ids.
        threshold: the outcome that counts as correct.

    Returns:
        The labelled rollouts.
    """
    from stepcredit.envs import make_env
    from stepcredit.train.rollout import collect_tree

    if continuations < 2:
        raise PRMError(f"mc_label_rollouts: continuations={continuations} must be >= 2")
    if not task_seeds:
        raise PRMError("mc_label_rollouts: no task to label")
    kw = dict(env_kwargs or {})
    envs = [make_env(env, **kw) for _ in range(len(task_seeds) * continuations)]
    batch = collect_tree(envs, policy, list(task_seeds), continuations, np.random.default_rng(seed),
                         iteration=iteration, branching=2, branch_every=branch_every)
    ro = batch.rollouts
    lab = tree_mc_labels(ro, threshold=threshold)
    return _with_labels(ro, lab)


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
