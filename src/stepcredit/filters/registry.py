"""The credit-filter registry: names -> pure functions ``(Rollouts, Credit, **params) -> Filtered``.

A *credit filter* decides, after an estimator has run, which episodes get a gradient: it
returns a loss weight per episode (0 = dropped). Filters that change the batch itself return
new rollouts as well (``replay`` adds remembered episodes to collapsed groups). When a filter
drops or adds episodes, the pipeline re-runs the estimator on the episodes that remain
(``refit``, the default), so that group statistics come from the episodes that are trained on,
as in the papers (PROF trains plain GRPO on the kept rollouts); dropped episodes then get
advantage 0 and weight 0.

Stateful filters take a keyword-only ``state`` argument and return the updated state, as
stateful transforms do (see ``stepcredit.shaping.registry``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepcredit._params import Param, UsageError, bind_params, parse_assignment, signature_params
from stepcredit.data import Credit, Rollouts

__all__ = [
    "FilterError",
    "FilterSpec",
    "Filtered",
    "apply_filter",
    "get_filter",
    "list_filters",
    "parse_filter_param",
    "register_filter",
]


class FilterError(UsageError):
    """An unknown filter name, an invalid parameter, or an invalid state."""


@dataclass(frozen=True, eq=False)
class Filtered:
    """The result of a credit filter.

    Attributes:
        weight: [E'] loss weight of every episode of ``rollouts`` (or of the input rollouts
            when ``rollouts`` is None): 1 kept, 0 dropped (values in between down-weight).
        rollouts: new rollouts when the filter changed the batch (the input's episodes first,
            in order, then any added ones), else None.
        diagnostics: scalar statistics (e.g. ``dropped_fraction``).
        state: the updated state of a stateful filter (a JSON-serialisable dict), else None.
    """

    weight: np.ndarray
    rollouts: Rollouts | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None


@dataclass(frozen=True)
class FilterSpec:
    """What the registry knows of a filter (``requires``: step fields it reads)."""

    name: str
    params: Mapping[str, Param]
    paper: str
    summary: str
    fn: Callable[..., Filtered]
    stateful: bool
    requires: tuple[str, ...]

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Full parameter dict (defaults filled in), every value checked."""
        return bind_params(self.params, params, f"filter '{self.name}'", FilterError)

    def requires_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        return self.requires


_REGISTRY: dict[str, FilterSpec] = {}


def register_filter(
    *, paper: str, requires: tuple[str, ...] = (), name: str | None = None
) -> Callable[[Callable[..., Filtered]], Callable[..., Filtered]]:
    """Register a credit filter under ``name`` (default: the function's name).

    Args:
        paper: the citation, ``Title (Authors, Year, arXiv:XXXX.XXXXX)``.
        requires: step fields the filter reads (beyond outcome and group).
        name: registry name.
    """

    def deco(fn: Callable[..., Filtered]) -> Callable[..., Filtered]:
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise FilterError(f"filter '{reg_name}' is already registered")
        stateful = "state" in inspect.signature(fn).parameters
        params = signature_params(fn, f"filter '{reg_name}'", FilterError, positional=2, skip=("state",))
        doc = (fn.__doc__ or "").strip()
        _REGISTRY[reg_name] = FilterSpec(
            name=reg_name,
            params=params,
            paper=paper,
            summary=doc.splitlines()[0] if doc else "",
            fn=fn,
            stateful=stateful,
            requires=tuple(requires),
        )
        return fn

    return deco


def get_filter(name: str) -> FilterSpec:
    """The registered filter ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FilterError(f"unknown filter '{name}'; valid filters: {', '.join(sorted(_REGISTRY))}") from None


def list_filters() -> list[FilterSpec]:
    """Every registered filter, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def parse_filter_param(name: str, assignment: str) -> tuple[str, Any]:
    """Parse a command-line ``key=value`` for filter ``name`` into a typed pair."""
    return parse_assignment(get_filter(name).params, assignment, f"filter '{name}'", FilterError)


def apply_filter(
    ro: Rollouts, credit: Credit, name: str, /, state: dict[str, Any] | None = None, **params: Any
) -> Filtered:
    """Run the registered filter ``name`` on ``(ro, credit)`` with keyword ``params``.

    Raises:
        FilterError: unknown filter, invalid parameter, or a state given to a stateless one.
        MissingColumnError: the rollouts lack a step field the filter needs.
    """
    spec = get_filter(name)
    full = spec.bind(params)
    ro.require(spec.requires, by=f"filter '{name}'")
    if spec.stateful:
        out = spec.fn(ro, credit, state=state, **full)
    elif state is not None:
        raise FilterError(f"filter '{name}' keeps no state, but a state was given")
    else:
        out = spec.fn(ro, credit, **full)
    if not isinstance(out, Filtered):
        raise TypeError(f"filter '{name}' returned {type(out).__name__}, not Filtered")
    n = (out.rollouts or ro).n_episodes
    w = np.asarray(out.weight, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise RuntimeError(f"filter '{name}' returned a weight that is not [E]=({n},) finite values >= 0")
    return out
