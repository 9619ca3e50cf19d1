"""The trainer: group rollouts -> credit from a pipeline -> clipped policy-gradient update.

One iteration, top to bottom (docs/train.md has the long version):

1. **Collect** (``rollout.collect``): draw ``tasks_per_iter`` task seeds, play ``group_size``
   episodes of each with the current policy, recording per step the state key, the action, the
   reward and the behaviour log-probability log π_old(a|s). With ``branching`` k >= 2
   (``rollout.collect_tree``) each task's G episodes grow as a rollout tree forking into k
   continuations, shared steps marked by ``node`` ids.
2. **Credit**: ``pipeline.run(rollouts, state)`` (transforms -> estimator -> filters) gives a
   step advantage A_t for every step and an episode weight w_i (0 = the filters dropped the
   episode: no gradient).
3. **Update**: ``ppo_epochs`` full-batch gradient-ascent steps on PPO's clipped surrogate

       L(θ) = (1/S) Σ_t w_{i(t)} min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) − β · (1/S) Σ_t KL(π_θ(·|s_t) ‖ π₀(·|s_t)),
       ρ_t = π_θ(a_t|s_t) / π_old(a_t|s_t),

   whose gradient is Σ_t c_t ∇ log π_θ(a_t|s_t) with c_t = w A_t ρ_t / S where the clip is
   inactive and 0 where it is active (:func:`clipped_surrogate_coef`); the policy applies it
   (``policy.ascend``). π₀ is the initial policy (β = ``kl_coef``, 0 by default).
   A token-level policy (``policy.token_level``: the ``lm`` policy) gets the token-level twin
   (:func:`ppo_update_tokens`): the advantages expanded to its tokens by
   ``credit.to_padded(response_mask, rows="steps")``, a ratio and a clip per token.
4. **Metrics** appended to ``metrics.jsonl``; every ``checkpoint_every`` iterations (and after
   the last) a checkpoint.

With ``online_prm="oprl"`` an implicit process reward model π_φ (``stepcredit.train.online_prm``,
a second policy of the same class, initialised like the policy) runs alongside: after step 1 it
scores the batch, r_t = β (log π_φ(a_t|s_t) − log π_old(a_t|s_t)), written as the step field
``process`` that step 2 reads (the ``oprl`` estimator); after step 3 it takes ``prm_epochs``
ascent steps on OPRL's trajectory DPO loss over the batch's (success, failure) pairs.

Determinism: all randomness comes from two generators seeded from ``seed`` (task draws and
action draws), so the same config gives the same metrics (apart from the wall-clock fields).
Checkpoint/resume: ``train`` on a directory holding a checkpoint continues from it; the
checkpoint holds the policy's parameters (the tabular logits, or the torch policies' weights
and Adam moments, all plain arrays), the online PRM's likewise, both generators' states, the
pipeline state and the counters, so a run killed at any point and restarted ends with the same
metrics as a run that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stepcredit._params import UsageError
from stepcredit.train.curves import episodes_to_target as _episodes_to_target
from stepcredit.data.io import atomic_path
from stepcredit.envs import make_env
from stepcredit.pipeline import Pipeline, PipelineState
from stepcredit.policies import TabularPolicy
from stepcredit.train.ppo import (  # noqa: F401  (re-exported)
    clipped_surrogate_coef,
    clipped_surrogate_token_coef,
    old_token_log_prob,
    ppo_update,
    ppo_update_tokens,
)
from stepcredit.train.online_prm import OnlinePRM
from stepcredit.train.rollout import CollectedBatch, collect, collect_tree

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "POLICIES",
    "WALL_CLOCK_FIELDS",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "clipped_surrogate_coef",
    "clipped_surrogate_token_coef",
    "episodes_to_target",
    "initial_policy",
    "iteration_metrics",
    "old_token_log_prob",
    "ppo_update",
    "ppo_update_tokens",
    "task_pool_seeds",
    "train",
]

#: the ``TrainConfig.policy`` choices
POLICIES = ("tabular", "mlp", "gru", "lm")
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
#: metrics fields that measure wall-clock time (the only ones that differ between equal runs)
WALL_CLOCK_FIELDS = ("wall_s", "elapsed_s")
_CHECKPOINT_VERSION = 1
_ZERO = 1e-9  # |A| at or below this counts as a zero advantage
#: config fields that do not change any iteration's result: a checkpoint resumes under new values
#: (a larger budget extends a run to exactly the run that had that budget from the start)
_FREE_FIELDS = ("budget", "checkpoint_every", "target")
#: the online PRM's fields and defaults: left out of ``to_dict`` at their defaults, so that the
#: configs and checkpoints of runs without it read as before these fields existed
_PRM_DEFAULTS = {"online_prm": "none", "prm_beta": 0.05, "prm_lr": None, "prm_epochs": 1, "prm_q": "mean"}


class TrainError(UsageError):
    """An invalid training configuration, or an output directory that does not fit it."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the output directory aside)."""

    env: str = "lock_chain"
    """Registered environment name (``stepcredit.envs.list_envs()``) or ``gym:ENV_ID``."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """The environment's keyword parameters (difficulty knobs), checked against its signature."""
    estimator: str = "grpo"
    """Credit estimator, used when ``pipeline`` is None (``stepcredit estimators`` lists them)."""
    estimator_params: Mapping[str, Any] = field(default_factory=dict)
    """The estimator's keyword parameters (paper defaults where absent)."""
    pipeline: Pipeline | None = None
    """A full credit pipeline (transforms -> estimator -> filters); overrides ``estimator``."""
    policy: Literal["tabular", "mlp", "gru", "lm"] = "tabular"
    """The policy: ``tabular`` (a softmax over each state's valid actions, one logit per pair),
    ``mlp`` (an MLP over hashed features of the state text scoring each valid action), ``gru``
    (the same with a GRU over the episode's states), both with the torch extra, or ``lm`` (a
    tiny random-initialised transformer LM generating the action's characters with constrained
    decoding, updated per token; the lm extra)."""
    hidden_size: int = 64
    """H, the hidden width of the ``mlp`` and ``gru`` policies and the ``lm`` model's width."""
    feature_size: int = 256
    """F, the hashed text-feature buckets of the ``mlp`` and ``gru`` policies."""
    adam_lr: float = 0.01
    """Adam's step size for the ``mlp``, ``gru`` and ``lm`` policies (the tabular policy uses ``lr``)."""
    group_size: int = 8
    """G, episodes per task instance (the group of the group baselines)."""
    tasks_per_iter: int = 8
    """Task instances (groups) per iteration; an iteration plays tasks_per_iter · G episodes."""
    task_pool: int = 1
    """Distinct task instances trained on, their seeds drawn once from ``seed``; each iteration
    draws its tasks from the pool (without replacement when the pool is large enough). 0 = a
    fresh instance for every group (generalisation; a tabular policy keyed on states that do
    not name the instance cannot learn that)."""
    budget: int = 2000
    """Episodes to train for; the run has ceil(budget / (tasks_per_iter · G)) iterations."""
    lr: float = 1.0
    """Step size of the tabular policy's gradient ascent on its logits."""
    ppo_epochs: int = 4
    """Full-batch update steps per iteration on the same rollouts."""
    clip: float = 0.2
    """PPO's clip ε of the ratio π/π_old."""
    kl_coef: float = 0.0
    """β of the KL penalty to the initial policy (0 = none)."""
    seed: int = 0
    """Seeds the task pool, the task draws and the action draws."""
    target: float = 0.8
    """Success rate for ``episodes_to_target`` (trailing mean over 3 iterations)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many iterations (and after the last one)."""
    branching: int = 0
    """k, truncated step-level sampling (``rollout.collect_tree``): each group's G episodes
    grow as a rollout tree whose paths fork into k continuations at the branch depths, shared
    prefix steps carrying one ``node`` id (for ``tree``, ``gigpo``, ``salt``). 0 = off: G
    independent episodes per task. Not with ``policy="gru"``."""
    branch_every: int = 1
    """b, with ``branching``: paths fork at steps 0, b, 2b, ... until they owe one leaf each."""
    online_prm: Literal["none", "oprl"] = "none"
    """``"oprl"``: train an implicit PRM online, alternately with the policy (OPRL), and write its
    step rewards r_t = β (log π_φ − log π_old) as the step field ``process`` before the credit
    (for the ``oprl`` estimator). ``"none"``: off."""
    prm_beta: float = 0.05
    """β of the online PRM's implicit rewards and of its trajectory DPO loss."""
    prm_lr: float | None = None
    """The online PRM's step size; None: ``lr / prm_beta²`` for the tabular policy (a gradient
    step of size ``lr`` on the implicit rewards r = β·logit differences, whose DPO gradient in
    the logits carries a factor β), ``adam_lr`` for the others (Adam is scale-free)."""
    prm_epochs: int = 1
    """The online PRM's ascent steps per iteration."""
    prm_q: Literal["sum", "mean"] = "mean"
    """The trajectory score Q(τ) of the PRM loss: the mean (official code; default: the PRM's
    step then does not grow with the episode length) or the sum (the paper's β log π_φ(τ)/π_old(τ))
    of the trajectory's implicit step rewards."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))
        object.__setattr__(self, "estimator_params", dict(self.estimator_params))
        checks = [
            ("group_size", self.group_size >= 1, ">= 1"),
            ("tasks_per_iter", self.tasks_per_iter >= 1, ">= 1"),
            ("task_pool", self.task_pool >= 0, ">= 0"),
            ("budget", self.budget >= 1, ">= 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "> 0"),
            ("ppo_epochs", self.ppo_epochs >= 1, ">= 1"),
            ("clip", math.isfinite(self.clip) and self.clip > 0, "> 0"),
            ("kl_coef", math.isfinite(self.kl_coef) and self.kl_coef >= 0, ">= 0"),
            ("target", 0 < self.target <= 1, "in (0, 1]"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("hidden_size", self.hidden_size >= 1, ">= 1"),
            ("feature_size", self.feature_size >= 8, ">= 8"),
            ("adam_lr", math.isfinite(self.adam_lr) and self.adam_lr > 0, "> 0"),
            ("branching", self.branching == 0 or self.branching >= 2, "0 (off) or >= 2"),
            ("branch_every", self.branch_every >= 1, ">= 1"),
            ("online_prm", self.online_prm in ("none", "oprl"), "'none' or 'oprl'"),
            ("prm_beta", math.isfinite(self.prm_beta) and self.prm_beta > 0, "> 0"),
            ("prm_lr", self.prm_lr is None or (math.isfinite(self.prm_lr) and self.prm_lr > 0), "None or > 0"),
            ("prm_epochs", self.prm_epochs >= 1, ">= 1"),
            ("prm_q", self.prm_q in ("sum", "mean"), "'sum' or 'mean'"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise TrainError(f"train config: {name}={getattr(self, name)!r} must be {rule}")
        if self.policy not in POLICIES:
            raise TrainError(f"train config: policy={self.policy!r} is unknown; valid policies: {', '.join(POLICIES)}")
        if self.pipeline is not None and self.estimator_params:
            raise TrainError("train config: give estimator_params or a pipeline, not both (put the parameters in the pipeline)")
        if self.branching and self.policy == "gru":
            raise TrainError("train config: branching needs a non-recurrent policy (tabular, mlp or lm): "
                             "a GRU's memory cannot be forked")

    @property
    def prm_step_size(self) -> float:
        """The online PRM's step size: ``prm_lr``, or its default (see ``prm_lr``)."""
        if self.prm_lr is not None:
            return self.prm_lr
        return self.lr / self.prm_beta**2 if self.policy == "tabular" else self.adam_lr

    @property
    def episodes_per_iter(self) -> int:
        """tasks_per_iter · G."""
        return self.tasks_per_iter * self.group_size

    @property
    def iterations(self) -> int:
        """ceil(budget / episodes_per_iter)."""
        return -(-self.budget // self.episodes_per_iter)

    def build_pipeline(self) -> Pipeline:
        """``pipeline``, or the estimator with its parameters as a one-stage pipeline."""
        return self.pipeline if self.pipeline is not None else Pipeline.build(self.estimator, params=self.estimator_params)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the pipeline as ``Pipeline.to_dict``).

        ``branching`` and ``branch_every`` are left out when branching is off, and the online
        PRM's fields at their defaults, so configs (and checkpoints) of runs without them read
        as before they existed.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not self.branching:
            del d["branching"], d["branch_every"]
        for name, default in _PRM_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        d["env_kwargs"] = dict(self.env_kwargs)
        d["estimator_params"] = dict(self.estimator_params)
        d["pipeline"] = None if self.pipeline is None else self.pipeline.to_dict()
        return json.loads(json.dumps(d, allow_nan=False))


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the run's configuration.
        out_dir: where metrics, config and checkpoint are.
        metrics: one dict per iteration done so far (the lines of ``metrics.jsonl``).
        policy: the trained policy (``TabularPolicy``, ``MLPPolicy``, ``GRUPolicy`` or ``LMPolicy``).
        completed: all ``config.iterations`` done (False when ``stop_after`` stopped it).
        resumed_from: iterations already done when this call started (0 = a fresh run).
    """

    config: TrainConfig
    out_dir: Path
    metrics: tuple[Mapping[str, Any], ...]
    policy: Any
    completed: bool
    resumed_from: int

    @property
    def episodes(self) -> int:
        """Episodes played so far."""
        return int(self.metrics[-1]["episodes"]) if self.metrics else 0

    @property
    def final_success(self) -> float:
        """Success rate of the last iteration (0 before any)."""
        return float(self.metrics[-1]["success_rate"]) if self.metrics else 0.0

    @property
    def episodes_to_target(self) -> float:
        """:func:`episodes_to_target` at ``config.target`` (``inf`` when not reached)."""
        return episodes_to_target(self.metrics, self.config.target)


def episodes_to_target(metrics: Sequence[Mapping[str, Any]], target: float, window: int = 3) -> float:
    """Episodes played when the success rate first reaches ``target``.

    The success rate is smoothed by a trailing mean over the last ``window`` iterations (fewer
    at the start); the result is the cumulative ``episodes`` of the first iteration whose
    smoothed rate is >= target, or ``math.inf`` when none is (the bench censors it at the
    budget). ``stepcredit.train.curves.episodes_to_target`` on the metrics' columns.

    Args:
        metrics: [K] iteration metrics (``episodes``, ``success_rate``), in order.
        target: the success rate, in (0, 1].
        window: iterations averaged, >= 1.
    """
    return _episodes_to_target([m["episodes"] for m in metrics], [m["success_rate"] for m in metrics], target, window)


def iteration_metrics(batch: CollectedBatch, advantage: np.ndarray, episode_weight: np.ndarray | None) -> dict[str, float]:
    """Statistics of one iteration's rollouts and credit.

    Args:
        batch: the collected rollouts (E episodes, S steps).
        advantage: [S'] step advantages of the credit (S' > S when a filter added episodes).
        episode_weight: [E'] weights of the credit's episodes, or None (all 1).

    Returns:
        success_rate, mean_return, mean_length (over the E collected episodes);
        adv_mean, adv_std, adv_zero_fraction (|A| <= 1e-9) over the S' credited steps;
        zero_variance_groups (share of groups whose G returns are all equal: no signal for a
        group baseline); credited_episodes (E', more than E when a filter such as ``replay``
        added episodes); dropped_fraction (share of the E' credited episodes of weight 0).
    """
    ro = batch.rollouts
    ret = batch.episode_return
    g = ro.episode_group
    lo = np.full(ro.n_groups, np.inf)
    hi = np.full(ro.n_groups, -np.inf)
    np.minimum.at(lo, g, ret)
    np.maximum.at(hi, g, ret)
    adv = np.asarray(advantage, dtype=np.float64)
    return {
        "success_rate": float(batch.success.mean()),
        "mean_return": float(ret.mean()),
        "mean_length": float(ro.step_counts.mean()),
        "adv_mean": float(adv.mean()),
        "adv_std": float(adv.std()),
        "adv_zero_fraction": float(np.mean(np.abs(adv) <= _ZERO)),
        "zero_variance_groups": float(np.mean(lo == hi)),
        "credited_episodes": ro.n_episodes if episode_weight is None else int(np.asarray(episode_weight).size),
        "dropped_fraction": 0.0 if episode_weight is None else float(np.mean(np.asarray(episode_weight) == 0)),
    }


# ---------------------------------------------------------------------- checkpoint files
def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _save_checkpoint(path: Path, policy: Any, meta: Mapping[str, Any], prm: OnlinePRM | None = None) -> None:
    arrays = {f"policy_{k}": v for k, v in policy.state_dict().items()}
    if prm is not None:
        arrays.update({f"prm_{k}": v for k, v in prm.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """(the policy's arrays, the meta data, the online PRM's arrays: empty without one)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(f"{path}: not a readable checkpoint ({exc}); delete it to start over") from None
    if meta.get("version") != _CHECKPOINT_VERSION:
        raise TrainError(f"{path}: checkpoint version {meta.get('version')!r}, expected {_CHECKPOINT_VERSION}")
    policy = {k[len("policy_"):]: v for k, v in arrays.items() if k.startswith("policy_")}
    return policy, meta, {k[len("prm_"):]: v for k, v in arrays.items() if k.startswith("prm_")}


def _read_metrics(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` iterations' metrics (lines after them were written after the checkpoint)."""
    out: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if len(out) == n:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if rec.get("iteration") != len(out):
                break
            out.append(rec)
    if len(out) != n:
        raise TrainError(f"{path}: holds {len(out)} complete iterations but the checkpoint is at {n}; delete the directory to start over")
    return out


def _write_lines(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in records), encoding="utf-8")


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ---------------------------------------------------------------------- seeds, task pool, policies
def _seed_sequences(config: TrainConfig) -> list[np.random.SeedSequence]:
    """(task draws, action draws, task pool, policy initialisation): the run's four streams."""
    return np.random.SeedSequence(config.seed).spawn(4)  # the first 3 as spawn(3) gave before


def task_pool_seeds(config: TrainConfig) -> np.ndarray:
    """[task_pool] the task seeds a run with ``config`` trains on (empty with ``task_pool=0``)."""
    return np.random.default_rng(_seed_sequences(config)[2]).integers(0, 2**31 - 1, size=config.task_pool)


def initial_policy(config: TrainConfig) -> Any:
    """The policy a run with ``config`` starts from (the same parameters as ``train``'s)."""
    return _new_policy(config, _seed_sequences(config)[3])


def _new_policy(config: TrainConfig, seed: np.random.SeedSequence) -> Any:
    """A fresh policy of ``config.policy`` (torch imported only for ``mlp`` / ``gru`` / ``lm``)."""
    if config.policy == "tabular":
        return TabularPolicy()
    if config.policy == "lm":
        try:
            from stepcredit.policies.lm_policy import LMPolicy
        except ImportError as exc:
            raise TrainError(f"train config: {exc}") from None
        try:
            return LMPolicy(hidden_size=config.hidden_size, seed=int(seed.generate_state(1)[0]))
        except ValueError as exc:
            raise TrainError(f"train config: {exc}") from None
    try:
        from stepcredit.policies.torch_policies import GRUPolicy, MLPPolicy
    except ImportError as exc:
        raise TrainError(f"train config: policy={config.policy!r} needs PyTorch ({exc})") from None
    cls = MLPPolicy if config.policy == "mlp" else GRUPolicy
    return cls(feature_size=config.feature_size, hidden_size=config.hidden_size, seed=int(seed.generate_state(1)[0]))


def _policy_steps(policy: Any, ro: Any) -> Any:
    """The stored steps of ``ro`` as ``policy`` indexes them (see :func:`ppo_update`)."""
    if isinstance(policy, TabularPolicy):
        return policy.entries(ro.key_values["state"].to_pylist(), ro.key_values["action"].to_pylist())
    return policy.steps(ro)


def _step_kl(policy: Any, steps: Any) -> np.ndarray:
    """[S] KL(π(·|s_t) ‖ π₀(·|s_t)) of each stored step's state."""
    if isinstance(policy, TabularPolicy):
        return policy.kl_to_initial()[0][policy.entry_state[steps]]
    return policy.kl_to_initial(steps)


# ---------------------------------------------------------------------- the loop
def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a policy with ``config``, writing metrics and checkpoints to ``out_dir``.

    When ``out_dir`` holds a checkpoint of the same config, the run resumes from it (a finished
    run returns at once); a checkpoint of another config is an error, except for ``budget``,
    ``checkpoint_every`` and ``target``, which change no iteration's result: a run resumed with
    a larger budget continues to exactly the run that had that budget from the start (one with
    a smaller budget than already done returns the iterations done).

    Args:
        config: the run's configuration.
        out_dir: output directory (created): ``config.json``, ``metrics.jsonl``, ``checkpoint.npz``.
        progress: called with each iteration's metrics after they are written (and after the
            checkpoint of that iteration, if any); an exception it raises stops the run.
        stop_after: stop after this many iterations of this call, with a checkpoint (None = run
            to the end).

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainError: a bad config, or a directory whose checkpoint or metrics do not fit it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = config.to_dict()
    pipeline = config.build_pipeline()
    envs = [make_env(config.env, **config.env_kwargs) for _ in range(config.episodes_per_iter)]
    task_ss, act_ss = _seed_sequences(config)[:2]
    task_rng, act_rng = np.random.default_rng(task_ss), np.random.default_rng(act_ss)
    pool = task_pool_seeds(config)
    policy = initial_policy(config)
    lr = config.lr if config.policy == "tabular" else config.adam_lr
    prm = None
    if config.online_prm == "oprl":  # OPRL initialises the PRM from the (initial) policy
        prm = OnlinePRM(initial_policy(config), beta=config.prm_beta, lr=config.prm_step_size,
                        epochs=config.prm_epochs, q=config.prm_q)
    pstate: PipelineState = pipeline.initial_state()
    done = episodes = env_steps = 0
    elapsed = 0.0
    metrics: list[dict[str, Any]] = []

    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS
    if ckpt_path.exists():
        arrays, meta, prm_arrays = _load_checkpoint(ckpt_path)
        diff = ", ".join(k for k in _diff_keys(meta["config"], cfg_dict) if k not in _FREE_FIELDS)
        if diff:
            raise TrainError(f"{out}: holds a checkpoint of another configuration (differs in: {diff}); use another directory")
        policy.load_state_dict(arrays)
        if prm is not None:
            if not prm_arrays:
                raise TrainError(f"{ckpt_path}: holds no online PRM state; delete the directory to start over")
            prm.load_state_dict(prm_arrays)
        task_rng.bit_generator.state = meta["rng"]["task"]
        act_rng.bit_generator.state = meta["rng"]["act"]
        pstate = PipelineState.from_json(meta["pipeline_state"], str(ckpt_path))
        done, episodes, env_steps, elapsed = meta["iterations"], meta["episodes"], meta["env_steps"], meta["elapsed_s"]
        metrics = _read_metrics(metrics_path, done)
    _write_lines(metrics_path, metrics)  # drop iterations written after the checkpoint
    with atomic_path(out / CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(cfg_dict, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    resumed_from = done

    n_tasks = config.tasks_per_iter
    with open(metrics_path, "a", encoding="utf-8") as mfile:
        while done < config.iterations and (stop_after is None or done - resumed_from < stop_after):
            t0 = time.perf_counter()
            # 1. collect
            if config.task_pool == 0:
                seeds = task_rng.integers(0, 2**31 - 1, size=n_tasks)
            else:
                seeds = task_rng.choice(pool, size=n_tasks, replace=config.task_pool < n_tasks)
            if config.branching:
                batch = collect_tree(
                    envs, policy, seeds.tolist(), config.group_size, act_rng, iteration=done,
                    branching=config.branching, branch_every=config.branch_every,
                )
            else:
                batch = collect(envs, policy, seeds.tolist(), config.group_size, act_rng, iteration=done)
            prm_rec: dict[str, Any] = {}
            if prm is not None:  # the implicit step rewards r_t of the PRM before its update
                prm_steps, prm_logp, r = prm.score(batch.rollouts, policy)
                batch = dataclasses.replace(batch, rollouts=batch.rollouts.replace_columns(process=r))
                prm_rec["prm_reward_abs"] = float(np.abs(r).mean())
            # 2. credit
            result = pipeline.run(batch.rollouts, pstate)
            pstate = result.state
            ro, credit = result.rollouts, result.credit
            # 3. update: PPO epochs on the (possibly filtered / extended) credited rollouts
            entries = _policy_steps(policy, ro)
            old_logp = ro.column("logp", by="the trainer's update")
            weight = np.ones(ro.n_steps) if credit.episode_weight is None else credit.episode_weight[ro.step_episode]
            if getattr(policy, "token_level", False):
                clipped_frac = ppo_update_tokens(
                    policy, entries, old_logp, credit.to_padded(entries.response_mask, rows="steps"),
                    weight[:, None] * entries.response_mask,
                    lr=lr, clip=config.clip, epochs=config.ppo_epochs, kl_coef=config.kl_coef,
                )
            else:
                clipped_frac = ppo_update(
                    policy, entries, old_logp, credit.step_advantage, weight,
                    lr=lr, clip=config.clip, epochs=config.ppo_epochs, kl_coef=config.kl_coef,
                )
            if prm is not None:  # 3b. the PRM's update on the same batch (OPRL's update=after)
                prm_rec = {**prm.update(batch.rollouts, prm_steps, prm_logp, batch.success), **prm_rec}
            # 4. metrics and checkpoint
            kl = _step_kl(policy, entries)
            episodes += batch.rollouts.n_episodes
            env_steps += batch.n_sampled_steps
            wall = time.perf_counter() - t0
            elapsed += wall
            rec = {
                "iteration": done,
                "episodes": episodes,
                "env_steps": env_steps,
                **iteration_metrics(batch, credit.step_advantage, credit.episode_weight),
                "clip_fraction": clipped_frac,
                "kl_to_init": float(kl.mean()),
                "n_states": policy.n_states,
                **prm_rec,
                "wall_s": wall,
                "elapsed_s": elapsed,
            }
            mfile.write(json.dumps(rec, allow_nan=False) + "\n")
            mfile.flush()
            metrics.append(rec)
            done += 1
            stopping = stop_after is not None and done - resumed_from == stop_after
            if done % config.checkpoint_every == 0 or done == config.iterations or stopping:
                _save_checkpoint(ckpt_path, policy, {
                    "version": _CHECKPOINT_VERSION,
                    "config": cfg_dict,
                    "iterations": done,
                    "episodes": episodes,
                    "env_steps": env_steps,
                    "elapsed_s": elapsed,
                    "rng": {"task": _rng_state(task_rng), "act": _rng_state(act_rng)},
                    "pipeline_state": pstate.to_json(),
                }, prm)
            if progress is not None:
                progress(rec)
    return TrainResult(config, out, tuple(metrics), policy, done >= config.iterations, resumed_from)
