"""stepcredit inside verl: registered advantage estimators and the batch adapter behind them.

verl picks its advantage estimator by name from a registry
(``verl.trainer.ppo.core_algos.register_adv_est`` / ``get_adv_estimator_fn``) and calls it
with keyword arguments (verl 0.9, ``verl/trainer/ppo/ray_trainer.py::compute_advantage``)::

    advantages, returns = fn(token_level_rewards=[B, T] float, response_mask=[B, T] 0/1,
                             config=<the algorithm config>, index=<[B] uid array>,
                             [reward_baselines=[B]])

:func:`register` adds one such function per stepcredit estimator under ``stepcredit_NAME``
(and one per named pipeline, plus ``stepcredit_pipeline`` that runs a TOML pipeline file), so
a verl run selects one with ``algorithm.adv_estimator=stepcredit_gigpo``. Each function reads
its settings from ``config["stepcredit"]`` (the ``algorithm.stepcredit`` table of the verl
config; :class:`Settings` lists the keys) and runs :func:`compute_advantages`.

The adapter (B batch rows, T padded response length):

* **single-turn** (no trajectory ids): one row per episode of one step; outcome R_i =
  Σ_t token_level_rewards[i, t] (verl writes the score on the last response token), group =
  ``index[i]`` (verl's ``uid``), ``tokens`` = Σ_t response_mask[i, t].
* **multi-turn, one row per step** (verl-agent): rows with the same trajectory id
  (``traj_uid``) form one episode, ordered by the per-row step index when given, else by their
  order in the batch (rows of one episode need not be contiguous: verl's batch balancing
  reorders rows); episodes are numbered by the first row of each. The episode's total reward is
  the score (row sum of ``token_level_rewards``) of its last step's row (verl-agent writes the
  episode reward on every step row). ``state`` = the anchor observation of each row
  (``anchor_obs``). With per-step environment rewards (``step_reward_key``) those become the
  ``reward`` step field and the outcome is the rest, total − Σ_t r_t, so outcome + Σ_t r_t is
  the episode's total for the estimators that use both (gigpo); without them, outcome = total.

The step advantages come back in verl's layout: A[i, t] = A(step of row i) · mask[i, t], in
the input's dtype and device; returns likewise from ``Credit.step_return`` where the estimator
defines one (gae: A + V; gigpo: the discounted step return), else the advantages (verl's
outcome estimators return ``(scores, scores)``). A credit filter's episode weight multiplies the
advantages (verl has no per-row loss weight, so a dropped episode gets advantage 0).

Other step fields (``process``, ``node``, ``value``, ...) come from ``non_tensor_batch`` keys
named in ``Settings.fields``. verl's stock ``compute_advantage`` passes registered estimators no
``non_tensor_batch``: multi-turn batches need a trainer that passes it, or
:func:`compute_advantage` on the ``DataProto``.

Registration must happen in verl's driver process (a Ray actor): ``VERL_USE_EXTERNAL_MODULES=
stepcredit.integrations.verl`` makes every process that imports verl import this module, which
then calls :func:`register`. verl is imported only by :func:`register` (and the functions it
registers receive verl's tensors); the rest needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from stepcredit.data import Credit, Rollouts
from stepcredit.data.rollouts import KEY_COLUMNS
from stepcredit.estimators import list_estimators
from stepcredit.integrations._tokens import as_numpy as _numpy
from stepcredit.integrations._tokens import ids_array as _ids
from stepcredit.integrations._tokens import weighted_step_advantage
from stepcredit.pipeline import Pipeline, PipelineError, PipelineResult, PipelineState

__all__ = [
    "CONFIG_KEY",
    "EXTERNAL_MODULES_VAR",
    "PREFIX",
    "BatchRollouts",
    "Settings",
    "VerlAdvantages",
    "VerlIntegrationError",
    "compute_advantage",
    "compute_advantages",
    "estimator_fn",
    "register",
    "registered_names",
    "rollouts_from_batch",
    "settings_from_config",
]

#: Default prefix of the registered names (``stepcredit_gigpo``).
PREFIX = "stepcredit_"
#: The key of stepcredit's table inside verl's algorithm config.
CONFIG_KEY = "stepcredit"
#: Registered name suffix of the estimator that runs the TOML file ``algorithm.stepcredit.pipeline``.
PIPELINE_FILE = "pipeline"


class VerlIntegrationError(ValueError):
    """A verl batch or config that stepcredit cannot use; the message says what to change."""


# ---------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """The ``algorithm.stepcredit`` table of a verl config (every key optional).

    Attributes:
        params: parameters of the estimator (``omega: 0.5``) or of a pipeline stage
            (``"gated.threshold": 1.0``), applied on top of the registered estimator/pipeline.
        pipeline: path of a TOML pipeline file; used by ``stepcredit_pipeline`` (and only there).
        traj_key: ``non_tensor_batch`` key of the per-row trajectory id; present = multi-turn.
        state_key: ``non_tensor_batch`` key of the per-row anchor observation (the ``state``
            step field); absent in the batch = no ``state`` field.
        step_key: ``non_tensor_batch`` key of the per-row step index within its trajectory,
            or None: rows of a trajectory are in step order in the batch.
        step_reward_key: ``non_tensor_batch`` key of per-step environment rewards (verl-agent:
            ``"rewards"``), or None: no ``reward`` step field.
        fields: more step fields, stepcredit field name -> ``non_tensor_batch`` key of its [B]
            per-row values (e.g. ``{process: prm_score}`` for PRM shaping, ``{node: node_id}``).
    """

    params: Mapping[str, Any] = None  # type: ignore[assignment]
    pipeline: str | None = None
    traj_key: str = "traj_uid"
    state_key: str = "anchor_obs"
    step_key: str | None = None
    step_reward_key: str | None = None
    fields: Mapping[str, str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params or {}))
        object.__setattr__(self, "fields", dict(self.fields or {}))


def settings_from_config(config: Any) -> Settings:
    """:class:`Settings` from verl's algorithm config (DictConfig, AlgoConfig, dict or None).

    Raises:
        VerlIntegrationError: an unknown key in ``algorithm.stepcredit`` (listing the valid ones)
            or ``params`` that is not a table.
    """
    table = None
    if config is not None:
        getter = getattr(config, "get", None)
        table = getter(CONFIG_KEY, None) if callable(getter) else getattr(config, CONFIG_KEY, None)
    if table is None:
        return Settings()
    table = _plain(table)
    if not isinstance(table, Mapping):
        raise VerlIntegrationError(f"algorithm.{CONFIG_KEY} must be a table, got {type(table).__name__}")
    valid = [f.name for f in fields(Settings)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise VerlIntegrationError(
            f"unknown key algorithm.{CONFIG_KEY}.{unknown[0]}; valid keys: {', '.join(valid)}"
        )
    for key in ("params", "fields"):
        if not isinstance(table.get(key) or {}, Mapping):
            raise VerlIntegrationError(f"algorithm.{CONFIG_KEY}.{key} must be a table")
    return Settings(**table)


def _plain(value: Any) -> Any:
    """An OmegaConf container as plain dicts/lists (anything else unchanged)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with verl
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


# ---------------------------------------------------------------------------------- batch -> rollouts
@dataclass(frozen=True, eq=False)
class BatchRollouts:
    """Rollouts built from a verl batch, with the map between batch rows and steps.

    Attributes:
        rollouts: the episodes (E) and steps (S = B, one step per batch row).
        step_row: [S] the batch row of each step (steps in rollouts order).
        row_step: [B] the step of each batch row (the inverse permutation).
        multi_turn: whether rows were grouped into episodes by trajectory id.
    """

    rollouts: Rollouts
    step_row: np.ndarray
    row_step: np.ndarray
    multi_turn: bool


def rollouts_from_batch(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    *,
    traj_uid: Any = None,
    state: Any = None,
    step: Any = None,
    step_reward: Any = None,
    fields: Mapping[str, Any] | None = None,
) -> BatchRollouts:
    """Convert a verl batch to :class:`Rollouts` (see the module docstring for the mapping).

    Args:
        token_level_rewards: [B, T] rewards per response token (tensor or array).
        response_mask: [B, T] 1 on the response tokens, 0 on padding/observation tokens.
        index: [B] group id of each row (verl's ``non_tensor_batch["uid"]``).
        traj_uid: [B] trajectory id of each row (multi-turn, one row per step), or None
            (single-turn: every row is an episode).
        state: [B] anchor observation of each row (strings or integers), or None.
        step: [B] integer step index of each row within its trajectory, or None (batch order).
        step_reward: [B] per-step environment reward of each row, or None.
        fields: more step fields, name -> [B] per-row values (``process``, ``node``, ``value``,
            ...; see :class:`~stepcredit.Rollouts`).

    Returns:
        :class:`BatchRollouts`.

    Raises:
        VerlIntegrationError: mismatched shapes, a missing group index, rows of one trajectory
            in different groups, or a step index repeated within a trajectory.
    """
    if index is None:
        raise VerlIntegrationError(
            "stepcredit estimators need the group index: verl passes non_tensor_batch['uid'] as "
            "index only when the batch has a 'uid' column (set by the trainer for grouped rollouts)"
        )
    tlr = _numpy(token_level_rewards, np.float64)
    mask = _numpy(response_mask)
    if tlr.ndim != 2 or mask.shape != tlr.shape:
        raise VerlIntegrationError(
            f"token_level_rewards {tlr.shape} and response_mask {mask.shape} must both be [B, T]"
        )
    B = tlr.shape[0]
    groups = _ids(np.asarray(index))
    extra = {k: (_numpy(v) if hasattr(v, "detach") else np.asarray(v)) for k, v in (fields or {}).items()}
    taken = {"state", "reward", "tokens"} & set(extra)
    if taken:
        raise VerlIntegrationError(
            f"fields may not set {sorted(taken)[0]!r}: state comes from state/state_key, reward from "
            "step_reward/step_reward_key, tokens from the response mask"
        )
    per_row = {"index": groups, "traj_uid": traj_uid, "state": state, "step": step,
               "step_reward": step_reward, **{f"fields[{k!r}]": v for k, v in extra.items()}}
    for name, arr in per_row.items():
        if arr is not None and len(arr) != B:
            raise VerlIntegrationError(f"{name} has {len(arr)} entries but the batch has {B} rows")
    score = tlr.sum(axis=1)  # [B] each row's score: verl puts it on the last response token
    tokens = (mask != 0).sum(axis=1).astype(np.int64)
    steps: dict[str, Any] = {"tokens": tokens}
    for name, values in extra.items():
        steps[name] = _ids(values) if name in KEY_COLUMNS else values
    if state is not None:
        steps["state"] = _ids(np.asarray(state))
    if step_reward is not None:
        steps["reward"] = _numpy(step_reward, np.float64)

    if traj_uid is None:
        if step_reward is not None:
            raise VerlIntegrationError("step_reward needs traj_uid (per-step rewards of multi-turn rows)")
        ro = Rollouts.from_arrays(outcome=score, group_id=groups, step_counts=np.ones(B, dtype=np.int64), **steps)
        rows = np.arange(B, dtype=np.int64)
        return BatchRollouts(ro, rows, rows, multi_turn=False)

    traj = _ids(np.asarray(traj_uid))
    uniq, first_row, code = np.unique(traj, return_index=True, return_inverse=True)
    by_first = np.argsort(first_row, kind="stable")  # episodes numbered by their first row
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    episode = rank[code.reshape(-1)]
    position = np.arange(B) if step is None else _numpy(step).astype(np.int64)
    step_row = np.lexsort((position, episode))  # [S] rows sorted by (episode, step)
    ep_sorted, pos_sorted = episode[step_row], position[step_row]
    same = ep_sorted[1:] == ep_sorted[:-1]
    if step is not None and np.any(same & (pos_sorted[1:] == pos_sorted[:-1])):
        s = int(np.flatnonzero(same & (pos_sorted[1:] == pos_sorted[:-1]))[0])
        raise VerlIntegrationError(
            f"trajectory {traj[step_row[s]]!r} has step index {int(pos_sorted[s])} twice "
            f"(rows {int(step_row[s])} and {int(step_row[s + 1])})"
        )
    counts = np.bincount(ep_sorted, minlength=len(uniq))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    g_sorted = groups[step_row]
    g_first = g_sorted[offsets[:-1]]
    bad = g_sorted != np.repeat(g_first, counts)
    if np.any(bad):
        s = int(np.flatnonzero(bad)[0])
        raise VerlIntegrationError(
            f"trajectory {traj[step_row[s]]!r} has rows in two groups ({g_first[ep_sorted[s]]!r} and "
            f"{g_sorted[s]!r}): all rows of a trajectory must share its uid"
        )
    total = score[step_row][offsets[1:] - 1]  # the score of each episode's last step row
    steps = {k: v[step_row] for k, v in steps.items()}
    outcome = total if step_reward is None else total - np.add.reduceat(steps["reward"], offsets[:-1])
    ro = Rollouts.from_arrays(
        outcome=outcome, group_id=g_first, episode_offsets=offsets,
        episode_id=traj[step_row][offsets[:-1]], **steps,
    )
    row_step = np.empty(B, dtype=np.int64)
    row_step[step_row] = np.arange(B)
    return BatchRollouts(ro, step_row.astype(np.int64), row_step, multi_turn=True)


# ---------------------------------------------------------------------------------- credit -> [B, T]
@dataclass(frozen=True, eq=False)
class VerlAdvantages:
    """What :func:`compute_advantages` returns.

    Attributes:
        advantages: [B, T] tensor, dtype/device of ``token_level_rewards``, 0 where the mask is 0.
        returns: [B, T] tensor likewise (see the module docstring).
        batch: the rollouts built from the batch and the row map.
        result: the pipeline's result (credit, diagnostics, state of stateful stages).
    """

    advantages: Any
    returns: Any
    batch: BatchRollouts
    result: PipelineResult


def _row_values(values: np.ndarray, batch: BatchRollouts) -> np.ndarray:
    """[S] step values -> [B] value of each batch row."""
    return values[batch.row_step]


def _expand(row_value: np.ndarray, response_mask: Any, like: Any) -> Any:
    """[B] values -> [B, T] ``value[i] * mask[i, t]`` as a tensor of ``like``'s dtype and device."""
    import torch

    v = torch.as_tensor(row_value, dtype=like.dtype, device=like.device)
    return torch.as_tensor(response_mask, device=like.device).to(like.dtype) * v[:, None]


def compute_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    *,
    pipeline: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    traj_uid: Any = None,
    state: Any = None,
    step: Any = None,
    step_reward: Any = None,
    fields: Mapping[str, Any] | None = None,
    pipeline_state: PipelineState | None = None,
) -> VerlAdvantages:
    """verl batch -> Rollouts -> pipeline -> ``[B, T]`` advantages and returns.

    Args:
        token_level_rewards, response_mask, index, traj_uid, state, step, step_reward, fields: as for
            :func:`rollouts_from_batch`; ``token_level_rewards`` must be a torch tensor (its
            dtype and device are those of the result).
        pipeline: a :class:`~stepcredit.Pipeline` or an estimator name.
        params: parameters applied on top (``"param"`` for the estimator, ``"stage.param"``).
        pipeline_state: state of the pipeline's stateful stages from the previous call.

    Returns:
        :class:`VerlAdvantages`.

    Raises:
        VerlIntegrationError: see :func:`rollouts_from_batch`, or a filter that adds episodes
            (their advantages have no batch row).
        EstimatorError, PipelineError, MissingColumnError: from the pipeline.
    """
    pipe = Pipeline.build(pipeline) if isinstance(pipeline, str) else pipeline
    if params:
        pipe = pipe.with_params(params)
    batch = rollouts_from_batch(
        token_level_rewards, response_mask, index,
        traj_uid=traj_uid, state=state, step=step, step_reward=step_reward, fields=fields,
    )
    result = pipe.run(batch.rollouts, pipeline_state)
    credit: Credit = result.credit
    if credit.n_steps != batch.rollouts.n_steps:
        raise VerlIntegrationError(
            f"the pipeline returned credit for {credit.n_steps} steps but the batch has "
            f"{batch.rollouts.n_steps} rows: filters that add episodes cannot be used inside verl"
        )
    adv = weighted_step_advantage(credit)
    ret = credit.step_return
    advantages = _expand(_row_values(adv, batch), response_mask, token_level_rewards)
    returns = advantages if ret is None else _expand(_row_values(ret, batch), response_mask, token_level_rewards)
    return VerlAdvantages(advantages, returns, batch, result)


# ---------------------------------------------------------------------------------- verl's registry
_PIPELINES: dict[str, Pipeline] = {}  # registered name -> pipeline of a named pipeline
_STATES: dict[str, PipelineState] = {}  # registered name -> state of its stateful stages (driver memory)
_FUNCTIONS: dict[str, Any] = {}  # registered name -> the function handed to verl (one per name)


def _pipeline_for(reg_name: str, estimator: str | None, settings: Settings) -> Pipeline:
    if estimator is not None:
        if settings.pipeline is not None:
            raise VerlIntegrationError(
                f"algorithm.{CONFIG_KEY}.pipeline is set, but adv_estimator={reg_name} names an "
                f"estimator: use adv_estimator={reg_name[: -len(estimator)]}{PIPELINE_FILE} to run the file"
            )
        return Pipeline.build(estimator)
    if reg_name in _PIPELINES:
        return _PIPELINES[reg_name]
    if settings.pipeline is None:
        raise VerlIntegrationError(
            f"adv_estimator={reg_name} runs the TOML pipeline file given as "
            f"algorithm.{CONFIG_KEY}.pipeline, which is not set"
        )
    return Pipeline.load(os.fspath(settings.pipeline))


def _row_inputs(nt: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The per-row inputs of :func:`compute_advantages` read from ``non_tensor_batch``.

    Multi-turn when ``settings.traj_key`` is present. ``state_key`` is used when present;
    ``step_key`` and ``step_reward_key`` (multi-turn only) and the keys of ``fields`` must be
    present when set.
    """
    def need(key: str, setting: str) -> Any:
        if key not in nt:
            raise VerlIntegrationError(
                f"algorithm.{CONFIG_KEY}.{setting} names {key!r}, but non_tensor_batch has no such key "
                f"(keys: {', '.join(sorted(map(str, nt))) or 'none'})"
            )
        return nt[key]

    traj = nt.get(settings.traj_key)
    multi = traj is not None
    return {
        "traj_uid": traj,
        "state": nt.get(settings.state_key),
        "step": need(settings.step_key, "step_key") if multi and settings.step_key else None,
        "step_reward": (need(settings.step_reward_key, "step_reward_key")
                        if multi and settings.step_reward_key else None),
        "fields": {f: need(k, f"fields.{f}") for f, k in settings.fields.items()} or None,
    }


def estimator_fn(reg_name: str, estimator: str | None = None) -> Any:
    """The function verl calls for ``reg_name`` (created once per name, so registering is
    idempotent).

    Args:
        reg_name: the registered name, e.g. ``"stepcredit_gigpo"``.
        estimator: the stepcredit estimator it runs, or None for a named pipeline registered
            with :func:`register` (or the pipeline file of the config).

    Returns:
        ``fn(token_level_rewards, response_mask, index=None, config=None,
        non_tensor_batch=None, **ignored) -> (advantages [B, T], returns [B, T])``; multi-turn
        when ``non_tensor_batch`` holds the trajectory ids (``Settings.traj_key``).
    """
    fn = _FUNCTIONS.get(reg_name)
    if fn is not None and fn.stepcredit_estimator == estimator:
        return fn

    def advantage(
        token_level_rewards: Any,
        response_mask: Any,
        index: Any = None,
        config: Any = None,
        non_tensor_batch: Mapping[str, Any] | None = None,
        **ignored: Any,  # verl passes reward_baselines (ReMax) and may add more
    ) -> tuple[Any, Any]:
        settings = settings_from_config(config)
        out = compute_advantages(
            token_level_rewards, response_mask, index,
            pipeline=_pipeline_for(reg_name, estimator, settings),
            params=settings.params,
            pipeline_state=_STATES.get(reg_name),
            **_row_inputs(non_tensor_batch or {}, settings),
        )
        if out.result.state.stages:
            _STATES[reg_name] = out.result.state
        return out.advantages, out.returns

    advantage.__name__ = advantage.__qualname__ = reg_name
    advantage.__doc__ = (
        f"verl advantage estimator running stepcredit's "
        f"{'estimator ' + repr(estimator) if estimator else 'pipeline'} "
        "(see stepcredit.integrations.verl)."
    )
    advantage.stepcredit_estimator = estimator  # type: ignore[attr-defined]
    _FUNCTIONS[reg_name] = advantage
    return advantage


def _core_algos() -> Any:
    try:
        from verl.trainer.ppo import core_algos
    except ImportError as exc:
        raise ImportError(
            f"stepcredit.integrations.verl.register needs verl ({exc}); see docs/integrations.md "
            "for the packages and versions"
        ) from exc
    return core_algos


def register(
    prefix: str = PREFIX,
    *,
    pipelines: Mapping[str, Pipeline | str | os.PathLike] | None = None,
) -> tuple[str, ...]:
    """Register every stepcredit estimator (and the given pipelines) in verl's registry.

    Registers ``PREFIX + name`` for each estimator of ``stepcredit estimators``, ``PREFIX +
    "pipeline"`` (runs the TOML file ``algorithm.stepcredit.pipeline``) and ``PREFIX + name``
    for each named pipeline. Calling it again is a no-op for names already registered by it,
    and replaces the pipeline of a named pipeline given again. Call it in the process that
    computes advantages (verl's driver: before ``run_ppo`` / the trainer's ``fit``).

    Args:
        prefix: prepended to every name.
        pipelines: name -> :class:`~stepcredit.Pipeline` or path of a TOML pipeline file.

    Returns:
        The registered names, sorted.

    Raises:
        ImportError: verl is not installed.
        VerlIntegrationError: a name is taken in verl's registry by a function that is not
            stepcredit's, or a pipeline name equals an estimator name.
    """
    core_algos = _core_algos()
    if not prefix:
        raise VerlIntegrationError("prefix must be non-empty (stepcredit names would shadow verl's own)")
    estimators = [s.name for s in list_estimators()] + [PIPELINE_FILE]
    entries: dict[str, str | None] = {prefix + e: (None if e == PIPELINE_FILE else e) for e in estimators}
    for name, pipe in (pipelines or {}).items():
        if name in estimators:
            raise VerlIntegrationError(
                f"pipeline name {name!r} is an estimator's name (or {PIPELINE_FILE!r}); choose another"
            )
        if not isinstance(pipe, Pipeline):
            try:
                pipe = Pipeline.load(pipe)
            except PipelineError as exc:
                raise VerlIntegrationError(f"pipeline {name!r}: {exc}") from None
        _PIPELINES[prefix + name] = pipe
        _STATES.pop(prefix + name, None)
        entries[prefix + name] = None
    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    for reg_name, estimator in entries.items():
        fn = estimator_fn(reg_name, estimator)
        current = registry.get(reg_name)
        if current is fn:
            continue
        if current is not None and not hasattr(current, "stepcredit_estimator"):
            raise VerlIntegrationError(
                f"verl already has an advantage estimator {reg_name!r} ({current!r}) that is not "
                "stepcredit's; pass another prefix to register()"
            )
        if current is not None:  # ours, from an earlier module instance (a reload)
            del registry[reg_name]
        core_algos.register_adv_est(reg_name)(fn)
    return tuple(sorted(entries))


def registered_names(prefix: str = PREFIX) -> tuple[str, ...]:
    """The stepcredit names currently in verl's registry (sorted)."""
    registry = _core_algos().ADV_ESTIMATOR_REGISTRY
    return tuple(sorted(n for n, f in registry.items() if n.startswith(prefix) and hasattr(f, "stepcredit_estimator")))


# ---------------------------------------------------------------------------------- DataProto
def compute_advantage(
    data: Any,
    pipeline: Pipeline | str,
    *,
    params: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    pipeline_state: PipelineState | None = None,
) -> tuple[Any, PipelineResult]:
    """Write stepcredit advantages into a verl ``DataProto`` (for trainers that dispatch the
    advantage computation themselves, such as verl-agent's, and for multi-turn batches, whose
    trajectory ids verl's own ``compute_advantage`` does not pass to registered estimators).

    Reads ``data.batch["token_level_rewards"]``, ``data.batch["response_mask"]`` and
    ``data.non_tensor_batch`` (``uid`` and the keys of ``settings``); sets
    ``data.batch["advantages"]`` and ``data.batch["returns"]``.

    Args:
        data: a ``verl.DataProto``.
        pipeline: a :class:`~stepcredit.Pipeline` or an estimator name.
        params: parameters applied on top (see :func:`compute_advantages`).
        settings: the non_tensor_batch keys (default :class:`Settings`; its ``params`` are
            applied before ``params``).
        pipeline_state: state of stateful stages from the previous call.

    Returns:
        ``(data, result)``: the same DataProto, and the pipeline result (its ``state`` goes to
        the next call).
    """
    settings = settings or Settings()
    nt = data.non_tensor_batch
    pipe = Pipeline.build(pipeline) if isinstance(pipeline, str) else pipeline
    out = compute_advantages(
        data.batch["token_level_rewards"], data.batch["response_mask"], nt.get("uid"),
        pipeline=pipe.with_params({**settings.params, **(params or {})}),
        pipeline_state=pipeline_state,
        **_row_inputs(nt, settings),
    )
    data.batch["advantages"] = out.advantages
    data.batch["returns"] = out.returns
    return data, out.result



# ---------------------------------------------------------------------------------- verl's plugin hook
#: verl imports the modules named in this variable (comma-separated) in every process that
#: imports verl, Ray workers included; naming this module there registers stepcredit's estimators.
EXTERNAL_MODULES_VAR = "VERL_USE_EXTERNAL_MODULES"

if __name__ in [m.strip() for m in os.environ.get(EXTERNAL_MODULES_VAR, "").split(",")]:
    register()
