"""Credit pipelines: reward transforms -> one estimator -> credit filters.

    pipe = sc.Pipeline.build("gigpo", transforms=["prm_delta", ("gated", {"threshold": 1.0})],
                             filters=["prof"], params={"omega": 0.5})
    result = pipe.run(ro)                 # PipelineResult: rollouts, credit, state, diagnostics
    pipe.save("pipe.toml"); sc.Pipeline.load("pipe.toml")

Every stage is a registered pure function (``stepcredit transforms``, ``stepcredit
estimators``, ``stepcredit filters`` list them). :meth:`Pipeline.check` walks the chain
against the input's fields before any work: a stage that needs a field no earlier stage or the
input provides is an error naming the stage and the field, and so is a transform that writes
step rewards which the estimator would ignore (outcome estimators read only the outcome).

Stateful stages (LASER-D's adaptive targets, a constrained composite's multipliers, replay's
memory) keep their state in a :class:`PipelineState` that :meth:`Pipeline.run` takes and
returns; the CLI stores it with ``--state FILE``.

A pipeline file is TOML::

    refit = true              # re-run the estimator on the episodes the filters keep

    [estimator]
    name = "gigpo"
    omega = 0.5

    [[transforms]]            # applied in order
    name = "prm_delta"

    [[transforms]]
    name = "gated"
    threshold = 1.0

    [[filters]]
    name = "prof"
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stepcredit._params import UsageError, split_assignment
from stepcredit.data import Credit, MissingColumnError, Rollouts
from stepcredit.data.io import atomic_path
from stepcredit.estimators import EstimatorError, estimate, get_estimator
from stepcredit.filters import FilterError, apply_filter, get_filter
from stepcredit.shaping import ShapingError, apply_transform, get_transform

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Pipeline", "PipelineError", "PipelineResult", "PipelineState", "Stage"]

Kind = Literal["transform", "estimator", "filter"]
_ERRORS: dict[str, type[UsageError]] = {"transform": ShapingError, "estimator": EstimatorError, "filter": FilterError}
STATE_VERSION = 1


class PipelineError(UsageError):
    """An invalid pipeline: bad file, unknown stage, ambiguous parameter, or a chain whose
    stages do not fit together."""


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: a registered name and its (bound, checked) parameters."""

    kind: Kind
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self):
        return {"transform": get_transform, "estimator": get_estimator, "filter": get_filter}[self.kind](self.name)

    @property
    def stateful(self) -> bool:
        return self.kind != "estimator" and self.spec.stateful

    def label(self, position: int | None = None) -> str:
        at = "" if position is None else f" (#{position + 1})"
        return f"{self.kind} '{self.name}'{at}"


@dataclass(frozen=True)
class PipelineState:
    """States of a pipeline's stateful stages, in pipeline order (JSON-serialisable).

    Attributes:
        stages: ``[{"kind": ..., "name": ..., "state": dict | None}, ...]``, one entry per
            stateful stage.
    """

    stages: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "stages": list(self.stages)}, allow_nan=False, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "<state>") -> PipelineState:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PipelineError(f"{source}: not a pipeline state file (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(data.get("stages"), list):
            raise PipelineError(f"{source}: not a pipeline state file (expected version {STATE_VERSION} and a 'stages' list)")
        for i, st in enumerate(data["stages"]):
            if not (isinstance(st, dict) and isinstance(st.get("name"), str) and st.get("kind") in ("transform", "filter")
                    and (st.get("state") is None or isinstance(st.get("state"), dict))):
                raise PipelineError(f"{source}: stages[{i}] must be an object with kind, name and state")
        return cls(tuple(data["stages"]))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a failure leaves the previous file in place)."""
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PipelineState:
        return cls.from_json(_read_text(path, "state file"), str(path))


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """What :meth:`Pipeline.run` returns.

    Attributes:
        rollouts: the rollouts the credit belongs to (transformed; with episodes a filter added).
        credit: the final credit (``episode_weight`` set when filters ran).
        state: the updated states of the stateful stages (pass it to the next ``run``).
        diagnostics: per stage label, that stage's scalar diagnostics.
    """

    rollouts: Rollouts
    credit: Credit
    state: PipelineState
    diagnostics: Mapping[str, Mapping[str, Any]]


def _stage_from(kind: Kind, item: str | tuple[str, Mapping[str, Any]] | Stage) -> Stage:
    if isinstance(item, Stage):
        if item.kind != kind:
            raise PipelineError(f"{item.label()} given where a {kind} was expected")
        return Stage(kind, item.name, item.spec.bind(item.params))
    if isinstance(item, str):
        name, params = item, {}
    else:
        name, params = item
    st = Stage(kind, name)
    return Stage(kind, name, st.spec.bind(dict(params)))


@dataclass(frozen=True)
class Pipeline:
    """Reward transforms -> an estimator -> credit filters (see the module docstring).

    Build with :meth:`build`, :meth:`load` or :meth:`from_dict`; every parameter is checked
    when the pipeline is built. Immutable: :meth:`with_params` returns a new pipeline.

    Attributes:
        estimator: the estimator stage.
        transforms: reward transforms, applied in order before the estimator.
        filters: credit filters, applied in order after it.
        refit: when a filter drops or adds episodes, re-run the estimator on the episodes that
            remain (group statistics from the trained episodes); False keeps the estimator's
            advantages and only sets the weights.
    """

    estimator: Stage
    transforms: tuple[Stage, ...] = ()
    filters: tuple[Stage, ...] = ()
    refit: bool = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        estimator: str,
        *,
        transforms: Iterable[str | tuple[str, Mapping[str, Any]] | Stage] = (),
        filters: Iterable[str | tuple[str, Mapping[str, Any]] | Stage] = (),
        params: Mapping[str, Any] | None = None,
        refit: bool = True,
    ) -> Pipeline:
        """A checked pipeline.

        Args:
            estimator: registered estimator name.
            transforms: names, ``(name, params)`` pairs or stages, in order.
            filters: likewise.
            params: more parameters addressed ``"stage.param"`` (``"param"`` alone: the
                estimator's), e.g. ``{"gated.threshold": 1.0, "omega": 0.5}``.
            refit: see the class docstring.
        """
        pipe = cls(
            estimator=_stage_from("estimator", (estimator, {})),
            transforms=tuple(_stage_from("transform", t) for t in transforms),
            filters=tuple(_stage_from("filter", f) for f in filters),
            refit=bool(refit),
        )
        return pipe.with_params(params or {})

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (*self.transforms, self.estimator, *self.filters)

    def _find(self, name: str) -> tuple[str, int]:
        hits = [(kind, i) for kind, seq in (("transforms", self.transforms), ("filters", self.filters))
                for i, st in enumerate(seq) if st.name == name]
        if self.estimator.name == name:
            hits.append(("estimator", 0))
        if not hits:
            names = ", ".join(st.name for st in self.stages)
            raise PipelineError(f"parameter for '{name}', which is not a stage of this pipeline (stages: {names})")
        if len(hits) > 1:
            raise PipelineError(
                f"'{name}' is used {len(hits)} times in this pipeline, so '{name}.PARAM' is ambiguous; "
                "give each stage its parameters in a pipeline file instead"
            )
        return hits[0]

    def with_params(self, params: Mapping[str, Any]) -> Pipeline:
        """A new pipeline with parameters replaced, addressed ``"stage.param"`` or ``"param"``
        (the estimator's). Values are checked (strings are not parsed: see :meth:`with_assignments`)."""
        pipe = self
        for key, value in params.items():
            pipe = pipe._set(key, value, parse=False)
        return pipe

    def with_assignments(self, assignments: Sequence[str]) -> Pipeline:
        """A new pipeline with command-line ``stage.param=value`` (or ``param=value``)
        assignments applied, each value parsed to the parameter's type."""
        pipe = self
        for a in assignments:
            key, text = split_assignment(a, PipelineError)
            pipe = pipe._set(key, text, parse=True)
        return pipe

    def _set(self, key: str, value: Any, parse: bool) -> Pipeline:
        if "." in key:
            name, pname = key.split(".", 1)
            where, i = self._find(name)
        else:
            where, i, pname = "estimator", 0, key
        stage = self.estimator if where == "estimator" else getattr(self, where)[i]
        spec = stage.spec
        if pname not in spec.params:
            spec.bind({pname: None})  # raises the listing error
        p = spec.params[pname]
        err = _ERRORS[stage.kind]
        who = f"{stage.kind} '{stage.name}'"
        v = p.parse(value, who, err) if parse else p.check(value, who, err)
        new = dataclasses.replace(stage, params={**stage.params, pname: v})
        if where == "estimator":
            return dataclasses.replace(self, estimator=new)
        seq = list(getattr(self, where))
        seq[i] = new
        return dataclasses.replace(self, **{where: tuple(seq)})

    # ------------------------------------------------------------------ checking
    def check(self, ro: Rollouts) -> None:
        """Check, before any work, that every stage finds the fields it needs.

        Raises:
            MissingColumnError: a stage needs a field that neither the input nor an earlier
                transform provides (the message names the stage).
            PipelineError: a transform writes step rewards (and not the outcome) that no later
                stage reads, before an estimator that uses the outcome only.
        """
        have = set(ro.step_fields) | {"outcome", "reward"} | set(ro.episode_fields)
        present = tuple(sorted(have - {"outcome"}))
        pending: list[Stage] = []  # transforms whose step rewards no later stage has read yet
        for i, st in enumerate(self.transforms):
            spec = st.spec
            needs = spec.requires_for(st.params)
            for f in needs:
                if f not in have:
                    raise MissingColumnError(f, st.label(i), present)
            if "reward" in needs:
                pending.clear()
            writes = spec.writes_for(st.params)
            have |= set(writes)
            if "reward" in writes and "outcome" not in writes:  # shaping that reaches only the step rewards
                pending.append(st)
        est = self.estimator.spec
        for f in est.requires:
            if f not in have:
                raise MissingColumnError(f, self.estimator.label(), present)
        if pending and not est.uses_step_reward(self.estimator.params):
            names = ", ".join(f"'{s.name}'" for s in pending)
            raise PipelineError(
                f"transform {names} shapes the step rewards, but estimator '{est.name}' (with these "
                f"parameters) reads only the outcome, so the shaping would change nothing. Fix: use an "
                f"estimator that reads step rewards (gae, gigpo, potential), or move the shaped rewards "
                f"into the outcome (the transform's target=outcome, where it has one)"
            )
        for i, st in enumerate(self.filters):
            for f in st.spec.requires_for(st.params):
                if f not in have:
                    raise MissingColumnError(f, st.label(i), present)

    # ------------------------------------------------------------------ running
    def initial_state(self) -> PipelineState:
        return PipelineState(tuple(
            {"kind": st.kind, "name": st.name, "state": None} for st in self.stages if st.stateful
        ))

    def _states(self, state: PipelineState | None) -> list[dict | None]:
        want = [(st.kind, st.name) for st in self.stages if st.stateful]
        if state is None:
            return [None] * len(want)
        got = [(s["kind"], s["name"]) for s in state.stages]
        if got != want:
            raise PipelineError(
                f"the state was written by another pipeline: it holds {got or 'no stages'}, "
                f"this pipeline's stateful stages are {want or 'none'}"
            )
        return [s.get("state") for s in state.stages]

    def run(self, ro: Rollouts, state: PipelineState | None = None) -> PipelineResult:
        """Transforms, estimator, filters on ``ro``; see :class:`PipelineResult`."""
        self.check(ro)
        states = self._states(state)
        k = 0
        new_states: list[dict] = []
        diagnostics: dict[str, Mapping[str, Any]] = {}
        for i, st in enumerate(self.transforms):
            s_in = states[k] if st.stateful else None
            shaped = apply_transform(ro, st.name, state=s_in, **st.params)
            if st.stateful:
                new_states.append({"kind": st.kind, "name": st.name, "state": shaped.state})
                k += 1
            ro = shaped.rollouts
            diagnostics[st.label(i)] = dict(shaped.diagnostics)
        credit = estimate(ro, self.estimator.name, **self.estimator.params)
        diagnostics[self.estimator.label()] = dict(credit.diagnostics)
        weight: np.ndarray | None = None
        for i, st in enumerate(self.filters):
            s_in = states[k] if st.stateful else None
            out = apply_filter(ro, credit, st.name, state=s_in, **st.params)
            if st.stateful:
                new_states.append({"kind": st.kind, "name": st.name, "state": out.state})
                k += 1
            diagnostics[st.label(i)] = dict(out.diagnostics)
            prev = np.ones(ro.n_episodes) if weight is None else weight
            changed = out.rollouts is not None
            if changed:
                added = out.rollouts.n_episodes - ro.n_episodes
                prev = np.concatenate([prev, np.ones(added)])
                ro = out.rollouts
            weight = prev * np.asarray(out.weight, dtype=np.float64)
            if self.refit and (changed or np.any((weight == 0) & (prev != 0))):
                credit = _refit(ro, weight, self.estimator)
            elif changed:
                raise PipelineError(
                    f"{st.label(i)} added episodes, which need the estimator re-run: keep refit = true"
                )
            else:
                credit = dataclasses.replace(credit, episode_weight=weight)
        if weight is not None and credit.episode_weight is None:
            credit = dataclasses.replace(credit, episode_weight=weight)
        return PipelineResult(ro, credit, PipelineState(tuple(new_states)), diagnostics)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Plain data (the TOML layout): refit, estimator, transforms, filters."""
        def table(st: Stage) -> dict[str, Any]:
            return {"name": st.name, **dict(st.params)}
        return {
            "refit": self.refit,
            "estimator": table(self.estimator),
            "transforms": [table(t) for t in self.transforms],
            "filters": [table(f) for f in self.filters],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<pipeline>") -> Pipeline:
        """A checked pipeline from :meth:`to_dict`'s layout; errors name ``source`` and the table."""
        if not isinstance(data, Mapping):
            raise PipelineError(f"{source}: a pipeline must be a table")
        unknown = set(data) - {"refit", "estimator", "transforms", "filters"}
        if unknown:
            raise PipelineError(
                f"{source}: unknown key '{sorted(unknown)[0]}'; a pipeline has refit, [estimator], "
                "[[transforms]] and [[filters]]"
            )
        refit = data.get("refit", True)
        if not isinstance(refit, bool):
            raise PipelineError(f"{source}: refit = {refit!r} must be true or false")

        def stage(kind: Kind, table: Any, where: str) -> Stage:
            if not isinstance(table, Mapping) or not isinstance(table.get("name"), str):
                raise PipelineError(f"{source}: {where} must be a table with a string 'name'")
            params = {k: v for k, v in table.items() if k != "name"}
            try:
                return _stage_from(kind, (table["name"], params))
            except UsageError as exc:
                raise PipelineError(f"{source}: {where}: {exc}") from None

        if "estimator" not in data:
            raise PipelineError(f"{source}: no [estimator] table; add one, e.g. [estimator] name = \"grpo\"")
        lists = {}
        for key in ("transforms", "filters"):
            items = data.get(key, [])
            if not isinstance(items, list):
                raise PipelineError(f"{source}: '{key}' must be an array of tables ([[{key}]])")
            lists[key] = tuple(stage(key[:-1], t, f"[[{key}]] #{i + 1}") for i, t in enumerate(items))
        return cls(stage("estimator", data["estimator"], "[estimator]"), lists["transforms"], lists["filters"], refit)

    def to_toml(self) -> str:
        """The pipeline as TOML text (read back by :meth:`from_toml`)."""
        d = self.to_dict()
        lines = ["# stepcredit pipeline: transforms -> estimator -> filters", f"refit = {_toml_value(d['refit'])}", ""]

        def table(header: str, t: Mapping[str, Any]) -> None:
            lines.append(header)
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in t.items())
            lines.append("")

        table("[estimator]", d["estimator"])
        for t in d["transforms"]:
            table("[[transforms]]", t)
        for f in d["filters"]:
            table("[[filters]]", f)
        return "\n".join(lines)

    @classmethod
    def from_toml(cls, text: str, source: str = "<pipeline>") -> Pipeline:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{source}: not valid TOML ({exc})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike) -> None:
        """Write the pipeline as TOML, atomically."""
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Pipeline:
        """Read a TOML pipeline file (errors name the file and the table)."""
        return cls.from_toml(_read_text(path, "pipeline file"), str(path))

    def describe(self) -> str:
        """One line: ``t1(p=1) -> t2 -> estimator(p=2) -> f1``."""
        def one(st: Stage) -> str:
            ps = ", ".join(f"{k}={v!r}" for k, v in st.params.items())
            return f"{st.name}({ps})"
        return " -> ".join(one(st) for st in self.stages)


def _read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file, or a PipelineError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: the {what} is not UTF-8 text") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise PipelineError(f"parameter value {v!r} cannot be saved: only finite numbers")
        r = repr(v)
        return r if any(c in r for c in ".eE") else r + ".0"
    if isinstance(v, str):
        # a JSON string is a TOML basic string, except that TOML also wants DEL escaped
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise PipelineError(f"parameter value {v!r} of type {type(v).__name__} cannot be saved")


def _refit(ro: Rollouts, weight: np.ndarray, estimator: Stage) -> Credit:
    """The estimator re-run on the episodes with weight > 0, scattered back to all of ``ro``
    (dropped episodes: advantage, return and reward 0), with ``episode_weight`` = weight."""
    keep = np.flatnonzero(weight > 0)
    E, S = ro.n_episodes, ro.n_steps
    zero = np.zeros(S)
    if keep.size == 0:
        return Credit(step_advantage=zero, episode_advantage=np.zeros(E), episode_offsets=ro.episode_offsets,
                      estimator=estimator.name, params=dict(estimator.params),
                      diagnostics={"kept_episodes": 0}, episode_weight=weight)
    sub = estimate(ro.take(keep), estimator.name, **estimator.params)
    counts = ro.step_counts[keep]
    steps = np.repeat(ro.episode_offsets[:-1][keep], counts) + (
        np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    )

    def scatter(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        out = np.zeros(S)
        out[steps] = a
        return out

    ep_adv = np.zeros(E)
    ep_adv[keep] = sub.episode_advantage
    return Credit(
        step_advantage=scatter(sub.step_advantage),
        episode_advantage=ep_adv,
        episode_offsets=ro.episode_offsets,
        step_return=scatter(sub.step_return),
        step_reward=scatter(sub.step_reward),
        estimator=sub.estimator,
        params=sub.params,
        diagnostics={**sub.diagnostics, "kept_episodes": int(keep.size)},
        episode_weight=weight,
    )
