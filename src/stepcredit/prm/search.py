"""Test-time search guided by a process reward model: best-of-N and step-level beam search.

A **scorer** is anything with ``score_steps(rollouts) -> [S]`` (a trained
:class:`~stepcredit.prm.feature_model.FeaturePRM`, a torch PRM, ...); a **path score** folds the
step scores s_1..s_t of a (partial) trajectory into one number (``aggregate``):

* ``"min"``:  min_i s_i (a trajectory is as good as its worst step; Math-Shepherd's choice);
* ``"prod"``: Σ_i log max(s_i, 1e-12), the log-probability that every step is correct when
  the s_i are independent step-correctness probabilities;
* ``"last"``: s_t (the last step's score, an outcome-model reading);
* ``"mean"``: (1/t) Σ_i s_i.

**Best-of-N** (:func:`best_of_n_search`): sample N complete episodes per task with the policy,
score them, answer with the episode of the highest path score. Compared with the unguided
baseline (one episode picked at random: its success rate is the mean success of the N) and the
oracle (success if any of the N succeeded, pass@N). Ties in the path score are broken uniformly
at random *in expectation*: the reported success is the mean success of the tied best episodes.

**Step-level beam search** (:func:`beam_search`), as Process Reward Agents rank and prune
candidate steps with a PRM: each task keeps B partial trajectories (beams); at every step each
live beam proposes K candidate actions from the policy (K draws, duplicates merged), every
candidate is played in a copy of the beam's environment (``copy.deepcopy``: the environments
are plain Python objects) and scored by the PRM, and the B candidates with the best path scores
become the next beams; finished candidates are kept aside. The answer is the finished
trajectory with the best path score (ties: the first found). All tasks' beams are stepped
together, one batched ``policy.act`` and one batched ``score_steps`` per depth.

**Compute** is counted as generated steps: the actions the policy proposed (N · episode length
for best-of-N; Σ over depths of live beams · K for beam search), which is what costs LLM
forward passes, and the environment steps played.

References: Math-Shepherd (Wang et al. 2024, arXiv:2312.08935) for PRM-guided best-of-N
verification with the minimum step score; Process Reward Agents, step-level ranking and pruning
of candidates with a PRM during generation (as described in the issue; the paper's exact
procedure was not verified here: this is the standard PRM-guided beam search).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stepcredit.data import Rollouts
from stepcredit.prm.feature_model import PRMError

__all__ = ["AGGREGATES", "SearchResult", "aggregate_scores", "beam_search", "best_of_n_search"]

AGGREGATES = ("min", "prod", "last", "mean")
Aggregate = Literal["min", "prod", "last", "mean"]
_LOG_FLOOR = 1e-12


def aggregate_scores(scores: np.ndarray, episode_offsets: np.ndarray, how: Aggregate = "min") -> np.ndarray:
    """[E] path scores of episodes from their [S] step scores (see the module docstring).

    Args:
        scores: [S] step scores.
        episode_offsets: [E+1] CSR offsets (every episode has >= 1 step).
        how: ``"min"``, ``"prod"``, ``"last"`` or ``"mean"``.
    """
    s = np.asarray(scores, dtype=np.float64)
    off = np.asarray(episode_offsets, dtype=np.int64)
    if how not in AGGREGATES:
        raise PRMError(f"aggregate={how!r} must be one of {', '.join(AGGREGATES)}")
    if off.size < 2:
        return np.zeros(0)
    if np.any(np.diff(off) < 1):
        raise PRMError("aggregate_scores: every episode needs at least one step")
    if how == "min":
        return np.minimum.reduceat(s, off[:-1])
    if how == "last":
        return s[off[1:] - 1]
    if how == "mean":
        return np.add.reduceat(s, off[:-1]) / np.diff(off)
    return np.add.reduceat(np.log(np.maximum(s, _LOG_FLOOR)), off[:-1])


@dataclass(frozen=True)
class SearchResult:
    """What a search did, per task and in total.

    Attributes:
        success: [n] float64 success of the answer of each task (best-of-N: the mean over tied
            best episodes, so a fraction where the PRM ties).
        generated_steps: actions the policy proposed (all tasks).
        env_steps: environment steps played (all tasks).
        baseline_success: [n] best-of-N only: the unguided rate (mean success of the N).
        oracle_success: [n] best-of-N only: 1 if any of the N succeeded (pass@N).
        rollouts: best-of-N: the sampled episodes (with a ``process`` column = the PRM's scores).
    """

    success: np.ndarray
    generated_steps: int
    env_steps: int
    baseline_success: np.ndarray | None = None
    oracle_success: np.ndarray | None = None
    rollouts: Rollouts | None = field(default=None, repr=False)

    def summary(self) -> dict[str, float]:
        """Mean success rates and compute per task."""
        n = max(self.success.size, 1)
        out = {"success": float(self.success.mean()) if self.success.size else float("nan"),
               "generated_steps_per_task": self.generated_steps / n, "env_steps_per_task": self.env_steps / n}
        if self.baseline_success is not None:
            out["unguided_success"] = float(self.baseline_success.mean())
        if self.oracle_success is not None:
            out["pass_at_n"] = float(self.oracle_success.mean())
        return out


def _check_scores(scores: Any, n: int, who: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise PRMError(f"{who}: the scorer returned shape {s.shape} for {n} steps")
    if not np.all(np.isfinite(s)):
        raise PRMError(f"{who}: the scorer returned a non-finite score")
    return s


def best_of_n_search(
    env: str,
    policy: Any,
    scorer: Any,
    task_seeds: Sequence[int],
    n: int,
    *,
    aggregate: Aggregate = "min",
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> SearchResult:
    """Best-of-N with a PRM: N episodes per task, answer with the best path score.

    Args:
        env: environment name; policy: a policy with ``act``; scorer: a PRM (``score_steps``).
        task_seeds: the tasks; n: N >= 1 episodes per task.
        aggregate: the path score (module docstring); env_kwargs: the environment's parameters.
        seed: seeds the policy's draws.

    Returns:
        :class:`SearchResult` with the unguided and pass@N rates beside the guided one.
    """
    from stepcredit.envs import make_env
    from stepcredit.train.rollout import collect

    if n < 1 or not task_seeds:
        raise PRMError(f"best_of_n_search: need n >= 1 (got {n}) and at least one task")
    kw = dict(env_kwargs or {})
    envs = [make_env(env, **kw) for _ in range(len(task_seeds) * n)]
    batch = collect(envs, policy, list(task_seeds), n, np.random.default_rng(seed))
    ro = batch.rollouts
    scores = _check_scores(scorer.score_steps(ro), ro.n_steps, "best_of_n_search")
    path = aggregate_scores(scores, ro.episode_offsets, aggregate).reshape(len(task_seeds), n)
    ok = batch.success.astype(np.float64).reshape(len(task_seeds), n)
    best = path == path.max(axis=1, keepdims=True)
    success = (ok * best).sum(axis=1) / best.sum(axis=1)
    return SearchResult(success, ro.n_steps, ro.n_steps, ok.mean(axis=1), ok.max(axis=1),
                        ro.replace_columns(process=scores))


@dataclass
class _Beam:
    task: int
    env: Any
    state: str
    scores: list[float]
    actions: list[str]


def _path_score(scores: list[float], how: str) -> float:
    return float(aggregate_scores(np.asarray(scores), np.array([0, len(scores)]), how)[0])  # type: ignore[arg-type]


def beam_search(
    env: str,
    policy: Any,
    scorer: Any,
    task_seeds: Sequence[int],
    *,
    beam_width: int = 4,
    candidates: int = 4,
    aggregate: Aggregate = "min",
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> SearchResult:
    """PRM-guided step-level beam search (module docstring).

    Args:
        env: environment name; policy: a (non-recurrent) policy with ``act``; scorer: a PRM.
        task_seeds: the tasks, searched together.
        beam_width: B >= 1 partial trajectories kept per task.
        candidates: K >= 1 actions proposed per live beam and step (duplicates merged).
        aggregate: the path score; env_kwargs: the environment's parameters.
        seed: seeds the policy's draws.

    Returns:
        :class:`SearchResult` (success 1/0 per task; a task with no finished trajectory fails).
    """
    from stepcredit.envs import make_env

    if beam_width < 1 or candidates < 1 or not task_seeds:
        raise PRMError(f"beam_search: need beam_width >= 1 (got {beam_width}), candidates >= 1 (got {candidates}) and a task")
    if aggregate not in AGGREGATES:
        raise PRMError(f"aggregate={aggregate!r} must be one of {', '.join(AGGREGATES)}")
    if getattr(policy, "recurrent", False):
        raise PRMError("beam_search: needs a non-recurrent policy (a recurrent policy's memory cannot be copied per beam)")
    rng = np.random.default_rng(seed)
    kw = dict(env_kwargs or {})
    n_tasks = len(task_seeds)
    beams: list[_Beam] = []
    for k, ts in enumerate(task_seeds):
        e = make_env(env, **kw)
        _, info = e.reset(seed=int(ts))
        beams.append(_Beam(k, e, str(info["state"]), [], []))
    best: list[tuple[float, bool] | None] = [None] * n_tasks
    generated = env_steps = 0
    while beams:
        # 1. K proposals per live beam, one batched act; duplicates merged per beam
        valid = [b.env.valid_actions() for b in beams]
        rep = np.repeat(np.arange(len(beams)), candidates)
        acts = policy.act([beams[i].state for i in rep], [valid[i] for i in rep], rng)
        generated += rep.size
        props: list[tuple[int, str]] = list(dict.fromkeys((int(i), valid[i][int(a)]) for i, a in zip(rep, acts.index)))
        # 2. play each proposal in a copy of its beam's environment
        played = []
        for i, action in props:
            b = beams[i]
            e = copy.deepcopy(b.env)
            _, _, terminated, truncated, info = e.step(action)
            env_steps += 1
            played.append((b, action, e, info, bool(terminated or truncated)))
        # 3. score the proposed steps with the PRM, one batch
        ro = Rollouts.from_records([
            {"episode_id": f"c{j}", "group_id": f"t{int(task_seeds[b.task])}", "outcome": 0.0,
             "steps": [{"state": b.state, "action": action}]}
            for j, (b, action, _, _, _) in enumerate(played)
        ])
        s = _check_scores(scorer.score_steps(ro), len(played), "beam_search")
        # 4. keep the best B live candidates of each task; finished ones compete for the answer
        by_task: dict[int, list[tuple[float, int, _Beam]]] = {}
        for j, (b, action, e, info, done) in enumerate(played):
            scores = b.scores + [float(s[j])]
            ps = _path_score(scores, aggregate)
            if done:
                cur = best[b.task]
                if cur is None or ps > cur[0]:
                    best[b.task] = (ps, bool(info.get("success", False)))
            else:
                by_task.setdefault(b.task, []).append((ps, j, _Beam(b.task, e, str(info["state"]), scores, b.actions + [action])))
        beams = []
        for task in sorted(by_task):
            ranked = sorted(by_task[task], key=lambda c: (-c[0], c[1]))
            beams.extend(c[2] for c in ranked[:beam_width])
    success = np.array([0.0 if r is None else float(r[1]) for r in best])
    return SearchResult(success, generated, env_steps)
