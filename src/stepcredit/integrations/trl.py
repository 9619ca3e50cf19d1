"""stepcredit inside TRL: GRPO training with step-level credit as per-token advantages.

TRL's ``GRPOTrainer`` (trl 1.16) scores a generation batch in
``_generate_and_score_completions``: it generates B completions (each prompt G =
``num_generations`` times, consecutively), calls the reward functions
(``_calculate_rewards``, gathered over every process), turns the rewards into one advantage per
completion, keeps this process's slice of rows and hands ``inputs["advantages"]`` to the loss.
The loss (``_compute_loss``) takes advantages of shape [B] or [B, T] ("to support subclasses
that provide advantages with shape (B, T)"), and multiplies them into its per-token terms.

:class:`StepCreditGRPOTrainer` is that subclass: after TRL has scored the batch, it replaces
the advantages by stepcredit's, [B_p, T] per token. Notation (B completions of the generation
batch over all processes, B_p of this process, T the padded completion length, S steps, G
generations per prompt):

* **episode** i = completion i: everything generated after the prompt, a multi-turn
  conversation included (TRL appends tool results, or a ``rollout_func`` environment's
  observations, to the completion and masks them out with ``tool_mask`` / ``env_mask``).
  m[i, t] = completion_mask · tool_mask is the loss mask (the trained tokens).
* **group** = the prompt: row i of the gathered batch belongs to group ⌊i / G⌋, the G samples
  of one prompt, exactly the groups of TRL's own ``rewards.view(-1, G)``.
* **outcome** R_i = Σ_k w_k r_k(i), the reward functions' values weighted by
  ``reward_weights`` (TRL's ``sum_then_normalize`` sum, before any normalisation). Each
  reward function's values are also the episode reward component ``rewards.NAME`` (NAME = its
  name in TRL's logs, non-identifier characters replaced by ``_``), for composite transforms,
  when it scored every completion. Completions no reward function could score (all returned
  None) are left out of the rollouts and get advantage 0, as in TRL.
* **steps**: a function ``steps(Completion) -> [Step, ...]`` splits each completion into token
  spans [start, end) with optional per-step ``state``, ``reward`` and other step fields. The
  default, :func:`steps_by_turn`, makes one step per contiguous run of trained tokens: one step
  for a single-turn completion, one per assistant turn of a tool-calling one. The spans must be
  in order, must not overlap and must cover every trained token; masked tokens (tool results)
  may lie inside or outside them. Step field ``tokens`` = the trained tokens of the span.
  A step ``reward`` is in addition to the outcome (the return of episode i is R_i + Σ_t r_t,
  what gigpo and the discounting estimators use).

Back to TRL: A[i, t] = A(s) · w(i) · m[i, t] for the step s whose span holds token t (0 outside
every span), with w(i) the credit filters' episode weight (TRL has no per-completion loss
weight: a dropped episode gets advantage 0). The pipeline runs on the gathered batch in every
process (as TRL computes its advantages), and each process keeps its rows
[p · B_p, (p + 1) · B_p), TRL's ``process_slice``. Every process calls ``steps`` on its own
completions; the spans are gathered with ``accelerate.utils.gather_object``.

Everything but the trainer (:func:`check_steps`, :func:`compute_advantages`, ...) needs NumPy
only; :class:`StepCreditGRPOTrainer` is defined when it is first imported, which imports TRL.

Tested with trl 1.16.0 (transformers 5.24, accelerate 1.15); see docs/integrations.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepcredit.data import MissingColumnError, Rollouts
from stepcredit.data.schema import KEY_COLUMNS
from stepcredit.estimators import list_estimators
from stepcredit.integrations._tokens import as_numpy, ids_array, weighted_step_advantage
from stepcredit.pipeline import Pipeline, PipelineResult, PipelineState

__all__ = [
    "Completion",
    "CompletionSteps",
    "Step",
    "StepCreditGRPOTrainer",
    "TRLAdvantages",
    "TRLIntegrationError",
    "check_steps",
    "component_name",
    "compute_advantages",
    "one_step",
    "resolve_pipeline",
    "steps_by_turn",
]

#: The TRL version this module was written against and tested with.
TESTED_TRL = "1.16.0"


class TRLIntegrationError(ValueError):
    """A TRL batch, step split or setting that stepcredit cannot use; the message says what to change."""


# ---------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Step:
    """One step of a completion: its tokens and its step fields.

    Attributes:
        start: first completion token of the step (0-based, counted from the first token
            after the prompt).
        end: one past its last token (start <= end <= the completion's length).
        state: the observation the step acted in (string or integer; equal states in a group
            are gigpo's anchor states), or None.
        reward: the step's immediate reward (in addition to the outcome), or None.
        fields: more step fields by name (``process``, ``value``, ``node``, ``action``, ...;
            see :class:`~stepcredit.Rollouts`). ``tokens`` is set from the loss mask.
    """

    start: int
    end: int
    state: str | int | None = None
    reward: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Completion:
    """One completion as the ``steps`` function sees it.

    Attributes:
        index: its row in the gathered generation batch (group = index // num_generations).
        prompt: the prompt (text, or a list of chat messages).
        completion: the decoded completion (text, or the list of messages of a multi-turn one).
        completion_ids: [L] the completion's token ids (no padding).
        loss_mask: [L] 1 on trained tokens, 0 on tool/environment tokens (and on every token of
            a truncated completion under ``mask_truncated_completions``).
        reward: the outcome R_i (NaN when no reward function scored it).
        inputs: the dataset row, with the extra fields a ``rollout_func`` returned for it.
    """

    index: int
    prompt: Any
    completion: Any
    completion_ids: np.ndarray
    loss_mask: np.ndarray
    reward: float
    inputs: Mapping[str, Any]


StepsFn = Callable[[Completion], Sequence["Step | Mapping[str, Any]"]]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[R] starts and [R] ends of the runs of nonzero values of a 1-D mask."""
    edge = np.diff(np.concatenate(([0], (mask != 0).astype(np.int8), [0])))
    return np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)


def steps_by_turn(completion: Completion) -> list[Step]:
    """One step per contiguous run of trained tokens (the default ``steps``).

    A single-turn completion is one step; a tool-calling one has one step per assistant turn
    (the tool results between turns are masked out, so they end a run). A completion without
    trained tokens (truncated and masked) is one step of no trained tokens.

    Returns:
        The steps, without state or reward.
    """
    starts, ends = _runs(np.asarray(completion.loss_mask))
    if starts.size == 0:
        return [Step(0, len(completion.completion_ids))]
    return [Step(int(s), int(e)) for s, e in zip(starts, ends)]


def one_step(completion: Completion) -> list[Step]:
    """The whole completion as one step, masked tokens included."""
    return [Step(0, len(completion.completion_ids))]


@dataclass(frozen=True, eq=False)
class CompletionSteps:
    """The checked steps of one completion, as flat arrays (what processes exchange).

    Attributes:
        start, end: [n] token spans.
        tokens: [n] trained tokens of each span.
        state: [n] states, or None when no step has one.
        reward: [n] float step rewards, or None.
        fields: name -> [n] values of more step fields.
    """

    start: np.ndarray
    end: np.ndarray
    tokens: np.ndarray
    state: list | None
    reward: np.ndarray | None
    fields: Mapping[str, list]


_RESERVED = ("tokens", "state", "reward")


def check_steps(completion: Completion, steps: Sequence[Step | Mapping[str, Any]]) -> CompletionSteps:
    """Check the steps of one completion against its tokens and loss mask.

    Args:
        completion: the completion.
        steps: what the ``steps`` function returned: :class:`Step` objects or mappings with
            the same keys (``{"start": 0, "end": 5, "state": "s0"}``).

    Returns:
        :class:`CompletionSteps`.

    Raises:
        TRLIntegrationError: no steps, a span outside the completion, spans out of order or
            overlapping, a trained token in no span, a reserved field name, or a state or
            reward given for some steps of the completion and not others.
    """
    where = f"completion {completion.index}"
    if isinstance(steps, (Step, Mapping)) or not isinstance(steps, Sequence) or len(steps) == 0:
        raise TRLIntegrationError(
            f"{where}: the steps function must return a non-empty list of Step (or mappings with "
            f"start, end, ...), got {type(steps).__name__}"
        )
    parsed: list[Step] = []
    for j, st in enumerate(steps):
        if isinstance(st, Mapping):
            try:
                st = Step(**st)
            except TypeError as exc:
                raise TRLIntegrationError(
                    f"{where}, step {j}: {exc}; a step has start, end, state, reward and fields"
                ) from None
        if not isinstance(st, Step):
            raise TRLIntegrationError(f"{where}, step {j}: expected a Step or a mapping, got {type(st).__name__}")
        parsed.append(st)
    L = len(completion.completion_ids)
    try:
        start = np.array([s.start for s in parsed], dtype=np.int64)
        end = np.array([s.end for s in parsed], dtype=np.int64)
    except (TypeError, ValueError):
        raise TRLIntegrationError(f"{where}: step start and end must be integers") from None
    bad = np.flatnonzero((start < 0) | (end < start) | (end > L))
    if bad.size:
        j = int(bad[0])
        raise TRLIntegrationError(
            f"{where}, step {j}: span [{start[j]}, {end[j]}) is not inside the completion's {L} tokens "
            "(need 0 <= start <= end <= length)"
        )
    overlap = np.flatnonzero(start[1:] < end[:-1])
    if overlap.size:
        j = int(overlap[0]) + 1
        raise TRLIntegrationError(
            f"{where}, step {j}: span [{start[j]}, {end[j]}) starts before step {j - 1} ends ({end[j - 1]}): "
            "steps must be in order and must not overlap"
        )
    mask = np.asarray(completion.loss_mask) != 0
    if mask.shape != (L,):
        raise TRLIntegrationError(f"{where}: loss_mask has shape {mask.shape} but the completion has {L} tokens")
    edges = np.zeros(L + 1, dtype=np.int64)
    np.add.at(edges, start, 1)
    np.add.at(edges, end, -1)
    covered = np.cumsum(edges[:L]) > 0
    missed = np.flatnonzero(mask & ~covered)
    if missed.size:
        t = int(missed[0])
        spans = ", ".join(f"[{a}, {b})" for a, b in zip(start.tolist(), end.tolist()))
        raise TRLIntegrationError(
            f"{where}: token {t} is trained (loss mask 1) but in no step span (spans: {spans}; "
            f"{int(mask.sum())} trained tokens): every trained token must belong to a step "
            "(tool/environment tokens, masked 0, may be left out)"
        )
    trained = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    tokens = trained[end] - trained[start]

    def column(name: str, values: list) -> list | None:
        given = [v is not None for v in values]
        if not any(given):
            return None
        if not all(given):
            j = given.index(False)
            raise TRLIntegrationError(
                f"{where}, step {j}: no {name}, but other steps of this completion have one: give a "
                f"{name} for every step or for none"
            )
        return values

    state = column("state", [s.state for s in parsed])
    reward = column("reward", [s.reward for s in parsed])
    names = sorted({k for s in parsed for k in s.fields})
    taken = sorted(set(names) & set(_RESERVED))
    if taken:
        raise TRLIntegrationError(
            f"{where}: Step.fields may not set {taken[0]!r}: state and reward are Step attributes and "
            "tokens comes from the loss mask"
        )
    fields = {n: column(f"field {n!r}", [s.fields.get(n) for s in parsed]) for n in names}
    return CompletionSteps(
        start=start, end=end, tokens=tokens, state=state,
        reward=None if reward is None else np.asarray(reward, dtype=np.float64), fields=fields,
    )


# ---------------------------------------------------------------------------------- pipeline
def resolve_pipeline(pipeline: Pipeline | str | os.PathLike, params: Mapping[str, Any] | None = None) -> Pipeline:
    """A :class:`~stepcredit.Pipeline` from a pipeline, an estimator name or a TOML file.

    Args:
        pipeline: a Pipeline, a registered estimator name (``"gigpo"``), or the path of a
            pipeline file (``Pipeline.save`` / ``stepcredit advantages --save-pipeline``).
        params: parameters applied on top (``"param"`` for the estimator, ``"stage.param"``).

    Returns:
        The pipeline.

    Raises:
        TRLIntegrationError: neither an estimator name nor an existing file.
        PipelineError: the file or a parameter is invalid (the message names it).
    """
    if isinstance(pipeline, Pipeline):
        pipe = pipeline
    elif isinstance(pipeline, (str, os.PathLike)):
        text = os.fspath(pipeline)
        names = sorted(s.name for s in list_estimators())
        if isinstance(pipeline, str) and text in names:
            pipe = Pipeline.build(text)
        elif os.path.isfile(text) or text.endswith(".toml"):
            pipe = Pipeline.load(text)
        else:
            raise TRLIntegrationError(
                f"unknown pipeline {text!r}: it is neither a stepcredit estimator ({', '.join(names)}) nor a "
                "pipeline file; pass an estimator name, a Pipeline (Pipeline.build(...)) or the path of a "
                "TOML file written by Pipeline.save"
            )
    else:
        raise TRLIntegrationError(
            f"pipeline must be a Pipeline, an estimator name or a TOML file path, got {type(pipeline).__name__}"
        )
    return pipe.with_params(params) if params else pipe


# ---------------------------------------------------------------------------------- batch -> advantages
@dataclass(frozen=True, eq=False)
class TRLAdvantages:
    """What :func:`compute_advantages` returns.

    Attributes:
        advantages: [B_p, T] float64 token advantages of the local rows, 0 where the loss mask
            is 0 and outside every step.
        episode_advantage: [B] the credit's episode advantage of every completion times its
            episode weight (0 for unscorable completions), for logs.
        rollouts: the rollouts the pipeline ran on (scorable completions in row order), or
            None when no completion was scorable.
        step_row: [S] the batch row of each step of ``rollouts``.
        result: the pipeline's result (credit, diagnostics, state), or None.
    """

    advantages: np.ndarray
    episode_advantage: np.ndarray
    rollouts: Rollouts | None
    step_row: np.ndarray
    result: PipelineResult | None


def _column(values: list, name: str) -> np.ndarray:
    """[S] step values of one field as an array Rollouts takes (ids for key columns)."""
    if name in KEY_COLUMNS:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return ids_array(arr)
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TRLIntegrationError(f"step field {name!r} must be numbers") from None


def component_name(name: str) -> str:
    """A reward function's name as an episode reward component (``[A-Za-z_][A-Za-z0-9_]*``)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if re.match(r"[A-Za-z_]", out) else "_" + out


def compute_advantages(
    rewards: Any,
    group: Any,
    steps: Sequence[CompletionSteps],
    loss_mask: Any,
    *,
    pipeline: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    pipeline_state: PipelineState | None = None,
    components: Mapping[str, Any] | None = None,
    local: slice | None = None,
) -> TRLAdvantages:
    """Completions -> Rollouts -> pipeline -> [B_p, T] token advantages (module docstring).

    Args:
        rewards: [B] outcome of every completion of the gathered batch (NaN: unscorable, left
            out and given advantage 0).
        group: [B] group id of every completion.
        steps: [B] the checked steps of every completion (:func:`check_steps`).
        loss_mask: [B_p, T] loss mask of the local rows (tensor or array).
        pipeline: a Pipeline, an estimator name or a TOML file (see :func:`resolve_pipeline`).
        params: parameters applied on top.
        pipeline_state: state of the stateful stages from the previous call.
        components: episode reward components, name -> [B] values (NaN where absent); a
            component that is NaN for a scorable completion is left out.
        local: the rows of the gathered batch that ``loss_mask`` holds (default: all).

    Returns:
        :class:`TRLAdvantages`.

    Raises:
        TRLIntegrationError: mismatched lengths, a span beyond T, a step field given for some
            completions only, a stage that needs a step field the steps do not give, or a
            filter that adds episodes.
        EstimatorError, PipelineError: from the pipeline.
    """
    pipe = resolve_pipeline(pipeline, params)
    rewards = np.asarray(rewards, dtype=np.float64)
    group = np.asarray(group)
    B = rewards.shape[0]
    if rewards.ndim != 1 or group.shape != (B,) or len(steps) != B:
        raise TRLIntegrationError(
            f"rewards {rewards.shape}, group {group.shape} and steps ({len(steps)}) must all have one "
            "entry per completion"
        )
    local = slice(0, B) if local is None else local
    lo, hi = local.indices(B)[:2]
    mask = as_numpy(loss_mask)
    if mask.ndim != 2 or mask.shape[0] != hi - lo:
        raise TRLIntegrationError(f"loss_mask {mask.shape} must be [B_p, T] with B_p = {hi - lo} local rows")
    T = mask.shape[1]
    counts = np.array([len(c.start) for c in steps], dtype=np.int64)
    step_row = np.repeat(np.arange(B), counts)
    start = np.concatenate([c.start for c in steps]).astype(np.int64)
    end = np.concatenate([c.end for c in steps]).astype(np.int64)
    scorable = ~np.isnan(rewards)
    advantages = np.zeros((hi - lo, T), dtype=np.float64)
    episode_adv = np.zeros(B, dtype=np.float64)
    if not scorable.any():
        return TRLAdvantages(advantages, episode_adv, None, step_row[:0], None)

    kept = scorable[step_row]  # [S_all] steps of scorable completions
    rows = np.flatnonzero(scorable)
    cols: dict[str, Any] = {"tokens": np.concatenate([c.tokens for c in steps])[kept]}
    for name in ("state", "reward", *sorted({n for c in steps for n in c.fields})):
        per = [c.state if name == "state" else c.reward if name == "reward" else c.fields.get(name) for c in steps]
        given = np.array([p is not None for p in per])
        if not given[scorable].any():
            continue
        missing = np.flatnonzero(scorable & ~given)
        if missing.size:
            i = int(missing[0])
            raise TRLIntegrationError(
                f"completion {i} has no step {name}, but others have: the steps function must give "
                f"{name} for every completion or for none"
            )
        values = [v for i in rows for v in per[i]]
        cols[name] = np.asarray(values, dtype=np.float64) if name == "reward" else _column(values, name)
    episode_columns = {}
    for name, vals in (components or {}).items():
        v = np.asarray(vals, dtype=np.float64)[scorable]
        if np.all(np.isfinite(v)):
            episode_columns[component_name(name)] = v
    ro = Rollouts.from_arrays(
        outcome=rewards[scorable], group_id=ids_array(group[scorable]), step_counts=counts[scorable],
        episode_id=rows.astype(str), episode_columns=episode_columns or None, **cols,
    )
    try:
        result = pipe.run(ro, pipeline_state)
    except MissingColumnError as exc:
        raise TRLIntegrationError(
            f"{exc}. Inside TRL the step fields come from the steps function: return "
            "Step(start, end, state=..., reward=..., fields={...}) for every step (see stepcredit.integrations.trl)"
        ) from exc
    credit = result.credit
    if credit.n_steps != ro.n_steps:
        raise TRLIntegrationError(
            f"the pipeline returned credit for {credit.n_steps} steps but the batch has {ro.n_steps}: "
            "filters that add episodes cannot be used inside TRL (the new episodes have no completion)"
        )
    values = weighted_step_advantage(credit)  # [S] of the scorable completions
    weight = np.ones(ro.n_episodes) if credit.episode_weight is None else credit.episode_weight
    episode_adv[scorable] = credit.episode_advantage * weight

    # expand the steps of the local rows to their tokens: t in [start_s, end_s) gets A(s)
    step_no = np.cumsum(kept) - 1  # index among the kept steps
    sel = kept & (step_row >= lo) & (step_row < hi)
    if np.any(end[sel] > T):
        s = int(np.flatnonzero(sel & (end > T))[0])
        raise TRLIntegrationError(
            f"completion {int(step_row[s])}: step span [{start[s]}, {end[s]}) reaches beyond the {T} "
            "columns of the loss mask"
        )
    length = (end - start)[sel]
    first = np.cumsum(length) - length
    token_row = np.repeat(step_row[sel] - lo, length)
    token_col = np.repeat(start[sel] - first, length) + np.arange(int(length.sum()))
    advantages[token_row, token_col] = np.repeat(values[step_no[sel]], length)
    advantages *= mask != 0
    return TRLAdvantages(advantages, episode_adv, ro, step_row[kept], result)


# ---------------------------------------------------------------------------------- the trainer
def _trainer_class() -> type:
    """Define :class:`StepCreditGRPOTrainer` (imports TRL)."""
    try:
        import torch
        from accelerate.utils import gather_object
        from trl import GRPOTrainer
    except ImportError as exc:
        raise ImportError(
            f"stepcredit.integrations.trl.StepCreditGRPOTrainer needs TRL ({exc}): install the trl extra, "
            f"pip install -c constraints.txt -e '.[trl]' (tested with trl {TESTED_TRL}; see docs/integrations.md)"
        ) from exc

    class StepCreditGRPOTrainer(GRPOTrainer):
        """TRL's ``GRPOTrainer`` with stepcredit's per-token advantages (module docstring).

        Everything TRL does (generation, tools, ``rollout_func``, reward functions, the loss,
        logging, several processes) is unchanged, except the advantages that reach the loss:
        [B_p, T] from the pipeline instead of TRL's [B_p] group-normalised rewards. TRL's
        ``scale_rewards`` and ``multi_objective_aggregation`` then play no part (set the
        estimator's parameters instead: ``grpo`` with ``epsilon=1e-4`` and ``scale`` = TRL's
        ``scale_rewards`` is TRL's own advantage).

        Args:
            *args, **kwargs: ``GRPOTrainer``'s (model, reward_funcs, args, train_dataset,
                processing_class, tools, rollout_func, environment_factory, ...).
            pipeline: a :class:`~stepcredit.Pipeline`, an estimator name or a TOML pipeline
                file (default ``"grpo"``).
            params: pipeline parameters applied on top (``{"omega": 0.5}``, ``{"gated.threshold": 1}``).
            steps: ``steps(Completion) -> [Step, ...]``; default :func:`steps_by_turn`.

        Attributes:
            stepcredit_pipeline: the resolved pipeline.
            stepcredit_state: the state of its stateful stages (advanced by training batches
                only, not by evaluation).
            stepcredit_last: the :class:`TRLAdvantages` of the last scored batch.

        Raises:
            TRLIntegrationError, PipelineError: an unknown pipeline or a bad parameter
                (before TRL builds anything), and at training time bad steps (see
                :func:`check_steps`).
        """

        def __init__(
            self,
            *args: Any,
            pipeline: Pipeline | str | os.PathLike = "grpo",
            params: Mapping[str, Any] | None = None,
            steps: StepsFn | None = None,
            **kwargs: Any,
        ) -> None:
            self.stepcredit_pipeline = resolve_pipeline(pipeline, params)
            if steps is not None and not callable(steps):
                raise TRLIntegrationError(
                    f"steps must be a function Completion -> list of Step, got {type(steps).__name__}"
                )
            self.stepcredit_steps = steps or steps_by_turn
            self.stepcredit_state: PipelineState | None = None
            self.stepcredit_last: TRLAdvantages | None = None
            self._stepcredit_scored: tuple | None = None
            super().__init__(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            # TRL gathers the rewards of every process here; keep them with this process's completions
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._stepcredit_scored = (inputs, prompts, completions, completion_ids_list, rewards_per_func)
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            self._stepcredit_scored = None
            output = super()._generate_and_score_completions(inputs)
            if self._stepcredit_scored is None:
                raise RuntimeError(
                    "GRPOTrainer scored a batch without calling _calculate_rewards: this TRL version is not "
                    f"supported by stepcredit.integrations.trl (tested with trl {TESTED_TRL})"
                )
            scored, self._stepcredit_scored = self._stepcredit_scored, None
            return self._stepcredit_advantages(output, *scored)

        def _stepcredit_advantages(self, output, inputs, prompts, completions, completion_ids_list, per_func):
            """Replace ``output["advantages"]`` ([B_p]) by stepcredit's [B_p, T] for the batch TRL
            just scored (``per_func``: [B, n_funcs] rewards of every process; the rest: this
            process's B_p completions)."""
            mode = "train" if self.model.training else "eval"
            G = self.num_generations if mode == "train" else self.num_generations_eval
            mask_t = output["completion_mask"]
            if "tool_mask" in output:
                mask_t = mask_t * output["tool_mask"]
            mask = as_numpy(mask_t)
            per_func = as_numpy(per_func, np.float64)  # [B, F], every process
            unscorable = np.isnan(per_func).all(axis=1)
            rewards = np.nansum(per_func * as_numpy(self.reward_weights, np.float64)[None, :], axis=1)
            rewards[unscorable] = np.nan
            B, B_p = rewards.shape[0], len(prompts)
            if B % G:
                raise TRLIntegrationError(f"the gathered batch has {B} completions, not a multiple of {G} generations")
            lo = self.accelerator.process_index * B_p
            local_steps = []
            for i, ids in enumerate(completion_ids_list):  # the user's steps function, once per completion
                c = Completion(
                    index=lo + i, prompt=prompts[i], completion=completions[i],
                    completion_ids=np.asarray(ids, dtype=np.int64), loss_mask=mask[i, : len(ids)],
                    reward=float(rewards[lo + i]), inputs=inputs[i],
                )
                local_steps.append(check_steps(c, self.stepcredit_steps(c)))
            all_steps = gather_object(local_steps) if self.accelerator.num_processes > 1 else local_steps
            names = [component_name(n) for n in self.reward_func_names]
            if len(set(names)) < len(names):  # two reward functions of one name: number them
                names = [f"{n}_{k}" for k, n in enumerate(names)]
            out = compute_advantages(
                rewards, np.arange(B) // G, all_steps, mask,
                pipeline=self.stepcredit_pipeline, pipeline_state=self.stepcredit_state,
                components=dict(zip(names, per_func.T)), local=slice(lo, lo + B_p),
            )
            if mode == "train" and out.result is not None:
                self.stepcredit_state = out.result.state
            self.stepcredit_last = out
            output["advantages"] = torch.as_tensor(out.advantages, dtype=torch.float32, device=mask_t.device)
            # the completions table shows TRL's per-completion advantages: show stepcredit's instead
            logged = self._logs["advantages"]
            kept = list(logged)[: max(len(logged) - B, 0)]
            logged.clear()
            logged.extend(kept + out.episode_advantage.tolist())
            if out.rollouts is not None:
                self._metrics[mode]["stepcredit/steps_per_completion"].append(out.rollouts.n_steps / out.rollouts.n_episodes)
                self._metrics[mode]["stepcredit/step_advantage_std"].append(float(np.std(out.result.credit.step_advantage)))
            return output

    StepCreditGRPOTrainer.__module__ = __name__
    StepCreditGRPOTrainer.__qualname__ = "StepCreditGRPOTrainer"
    return StepCreditGRPOTrainer


def __getattr__(name: str) -> Any:
    # the trainer subclasses TRL's GRPOTrainer, so it is defined on first use (TRL imported then)
    if name == "StepCreditGRPOTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
