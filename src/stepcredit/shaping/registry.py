"""The reward-transform registry: names -> pure functions ``(Rollouts, **params) -> Shaped``.

A *reward transform* rewrites rewards before an estimator sees them: the episode ``outcome``,
the step ``reward`` column, or a step column such as ``process`` that a later transform or
estimator reads. It never adds or removes episodes or steps. Transforms are registered like
estimators (parameters, types and defaults from the signature; ``Literal`` lists choices) and
declare which fields they need and which they write, so that a pipeline can check a whole
chain against the input's fields before doing any work.

A *stateful* transform (one that adapts over training, e.g. LASER-D's length targets or the
Lagrange multipliers of a constrained composite) takes a keyword-only ``state`` argument
(``None`` on the first batch) and returns the updated state in ``Shaped.state``; the caller
(trainer, pipeline, CLI ``--state FILE``) passes it back in on the next batch. States are
JSON-serialisable dicts, never hidden globals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stepcredit._params import Param, UsageError, bind_params, parse_assignment, signature_params
from stepcredit.data import Rollouts

__all__ = [
    "ShapingError",
    "Shaped",
    "TransformSpec",
    "apply_transform",
    "get_transform",
    "list_transforms",
    "parse_transform_param",
    "register_transform",
]

#: Fields a transform may write: the episode outcome or a numeric step column.
Fields = tuple[str, ...]
FieldsFn = Callable[[Mapping[str, Any]], Fields]


class ShapingError(UsageError):
    """An unknown transform name, an invalid parameter, or an invalid state."""


@dataclass(frozen=True, eq=False)
class Shaped:
    """The result of a reward transform.

    Attributes:
        rollouts: the transformed rollouts (same episodes and steps, in the same order).
        diagnostics: scalar statistics of what the transform did (e.g. ``gated_fraction``).
        state: the updated state of a stateful transform (a JSON-serialisable dict), else None.
    """

    rollouts: Rollouts
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class TransformSpec:
    """What the registry knows of a transform.

    ``requires`` / ``writes`` are the fields for the default parameters (shown by ``stepcredit
    transforms``); :meth:`requires_for` / :meth:`writes_for` give them for bound parameters.
    Field names: ``"outcome"``, a step column (``"reward"``, ``"process"``, ``"tokens"``, ...),
    or ``"rewards.NAME"`` for an episode reward component.
    """

    name: str
    params: Mapping[str, Param]
    paper: str
    summary: str
    fn: Callable[..., Shaped]
    stateful: bool
    requires_fn: FieldsFn
    writes_fn: FieldsFn

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    @property
    def requires(self) -> Fields:
        return self.requires_fn(self.defaults)

    @property
    def writes(self) -> Fields:
        return self.writes_fn(self.defaults)

    def requires_for(self, params: Mapping[str, Any]) -> Fields:
        return tuple(self.requires_fn(params))

    def writes_for(self, params: Mapping[str, Any]) -> Fields:
        return tuple(self.writes_fn(params))

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Full parameter dict (defaults filled in), every value checked."""
        return bind_params(self.params, params, f"transform '{self.name}'", ShapingError)


_REGISTRY: dict[str, TransformSpec] = {}


def _as_fn(value: Fields | FieldsFn) -> FieldsFn:
    if callable(value):
        return value
    fixed = tuple(value)
    return lambda params: fixed


def register_transform(
    *,
    paper: str,
    requires: Fields | FieldsFn = (),
    writes: Fields | FieldsFn = ("reward",),
    name: str | None = None,
) -> Callable[[Callable[..., Shaped]], Callable[..., Shaped]]:
    """Register a reward transform under ``name`` (default: the function's name).

    Args:
        paper: the citation, ``Title (Authors, Year, arXiv:XXXX.XXXXX)``.
        requires: fields the transform reads (beyond outcome and group), or a function of the
            bound parameters returning them.
        writes: fields it writes (``"outcome"``, a step column, ...), or a function of the
            bound parameters.
        name: registry name.
    """

    def deco(fn: Callable[..., Shaped]) -> Callable[..., Shaped]:
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise ShapingError(f"transform '{reg_name}' is already registered")
        stateful = "state" in inspect.signature(fn).parameters
        params = signature_params(fn, f"transform '{reg_name}'", ShapingError, skip=("state",))
        doc = (fn.__doc__ or "").strip()
        _REGISTRY[reg_name] = TransformSpec(
            name=reg_name,
            params=params,
            paper=paper,
            summary=doc.splitlines()[0] if doc else "",
            fn=fn,
            stateful=stateful,
            requires_fn=_as_fn(requires),
            writes_fn=_as_fn(writes),
        )
        return fn

    return deco


def get_transform(name: str) -> TransformSpec:
    """The registered transform ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ShapingError(f"unknown transform '{name}'; valid transforms: {', '.join(sorted(_REGISTRY))}") from None


def list_transforms() -> list[TransformSpec]:
    """Every registered transform, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def parse_transform_param(name: str, assignment: str) -> tuple[str, Any]:
    """Parse a command-line ``key=value`` for transform ``name`` into a typed pair."""
    return parse_assignment(get_transform(name).params, assignment, f"transform '{name}'", ShapingError)


def apply_transform(ro: Rollouts, name: str, /, state: dict[str, Any] | None = None, **params: Any) -> Shaped:
    """Run the registered transform ``name`` on ``ro`` with keyword ``params``.

    ``state`` is passed to stateful transforms (None on the first batch) and must be None for
    the others.

    Raises:
        ShapingError: unknown transform, invalid parameter, or a state given to a stateless one.
        MissingColumnError: the rollouts lack a field the transform needs.
    """
    spec = get_transform(name)
    full = spec.bind(params)
    by = f"transform '{name}'"
    ro.require([f for f in spec.requires_for(full) if f != "outcome"], by=by)
    if spec.stateful:
        shaped = spec.fn(ro, state=state, **full)
    elif state is not None:
        raise ShapingError(f"transform '{name}' keeps no state, but a state was given")
    else:
        shaped = spec.fn(ro, **full)
    if not isinstance(shaped, Shaped):
        raise TypeError(f"transform '{name}' returned {type(shaped).__name__}, not Shaped")
    if not (
        shaped.rollouts.n_episodes == ro.n_episodes
        and shaped.rollouts.n_steps == ro.n_steps
    ):
        raise RuntimeError(f"transform '{name}' changed the number of episodes or steps")
    return shaped
