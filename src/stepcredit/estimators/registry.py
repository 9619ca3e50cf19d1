"""The estimator registry: names -> pure functions ``(Rollouts, **params) -> Credit``.

Parameters, their types and defaults are read from the function's signature (one source of
truth); a ``Literal[...]`` annotation lists the allowed values. The registry refuses duplicate
names and functions with ``*args``/``**kwargs`` or parameters without defaults, and validates
every call: unknown names and bad parameters are errors that list the valid choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stepcredit._params import Param, UsageError, bind_params, parse_assignment, signature_params
from stepcredit.data import Credit, Rollouts

__all__ = [
    "EstimatorError",
    "EstimatorSpec",
    "check_positive",
    "check_unit_interval",
    "Param",
    "estimate",
    "get_estimator",
    "list_estimators",
    "parse_param",
    "register",
]

Family = Literal["outcome", "value", "anchor", "tree", "progress", "implicit"]


class EstimatorError(UsageError):
    """An unknown estimator name or an invalid parameter."""


def check_positive(estimator: str, **params: float) -> None:
    """Raise EstimatorError unless every given parameter is > 0 (stabilisers such as ε)."""
    for name, v in params.items():
        if not v > 0:
            raise EstimatorError(f"estimator '{estimator}': {name}={v} must be > 0 (an all-equal group would give 0/0)")


def check_unit_interval(estimator: str, **params: float) -> None:
    """Raise EstimatorError unless every given parameter lies in [0, 1] (γ, λ)."""
    bad = {k: v for k, v in params.items() if not 0.0 <= v <= 1.0}
    if bad:
        given = " and ".join(f"{k}={v}" for k, v in bad.items())
        raise EstimatorError(f"estimator '{estimator}': {given} must lie in [0, 1]")


@dataclass(frozen=True)
class EstimatorSpec:
    """What the registry knows of an estimator."""

    name: str
    family: str
    requires: tuple[str, ...]
    params: Mapping[str, Param]
    paper: str
    summary: str
    fn: Callable[..., Credit]
    reads_reward: bool | Callable[[Mapping[str, Any]], bool] = False

    def uses_step_reward(self, params: Mapping[str, Any]) -> bool:
        """Whether, with these (bound) parameters, the estimator reads the step ``reward``
        column (otherwise it uses the outcome only, and a transform that shapes step rewards
        would change nothing)."""
        return self.reads_reward(params) if callable(self.reads_reward) else bool(self.reads_reward)

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Full parameter dict (defaults filled in), every value checked."""
        return bind_params(self.params, params, f"estimator '{self.name}'", EstimatorError)


_REGISTRY: dict[str, EstimatorSpec] = {}


def register(
    *,
    family: Family,
    paper: str,
    requires: tuple[str, ...] = (),
    name: str | None = None,
    reads_reward: bool | Callable[[Mapping[str, Any]], bool] = False,
) -> Callable[[Callable[..., Credit]], Callable[..., Credit]]:
    """Register an estimator function under ``name`` (default: the function's name).

    Args:
        family: the method family ("outcome", "value", "anchor", "tree", "progress", ...).
        paper: the citation, ``Title (Authors, Year, arXiv:XXXX.XXXXX)``.
        requires: step fields the estimator always needs (beyond outcome and group).
        name: registry name.
        reads_reward: whether it reads the step ``reward`` column (or a function of the bound
            parameters saying so); pipelines refuse step-reward transforms before an estimator
            that would ignore them.
    """

    def deco(fn: Callable[..., Credit]) -> Callable[..., Credit]:
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise EstimatorError(f"estimator '{reg_name}' is already registered")
        params = signature_params(fn, f"estimator '{reg_name}'", EstimatorError)
        doc = (fn.__doc__ or "").strip()
        _REGISTRY[reg_name] = EstimatorSpec(
            name=reg_name,
            family=family,
            requires=tuple(requires),
            params=params,
            paper=paper,
            summary=doc.splitlines()[0] if doc else "",
            fn=fn,
            reads_reward=reads_reward,
        )
        return fn

    return deco


def get_estimator(name: str) -> EstimatorSpec:
    """The registered estimator ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EstimatorError(
            f"unknown estimator '{name}'; valid estimators: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_estimators() -> list[EstimatorSpec]:
    """Every registered estimator, sorted by family then name."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.family, s.name))


def parse_param(name: str, assignment: str) -> tuple[str, Any]:
    """Parse a command-line ``key=value`` for estimator ``name`` into a typed pair."""
    return parse_assignment(get_estimator(name).params, assignment, f"estimator '{name}'", EstimatorError)


def estimate(ro: Rollouts, name: str, /, **params: Any) -> Credit:
    """Run the registered estimator ``name`` on ``ro`` with keyword ``params``.

    Raises:
        EstimatorError: unknown estimator or invalid parameter (listing the valid choices).
        MissingColumnError: the rollouts lack a step field the estimator needs.
    """
    spec = get_estimator(name)
    full = spec.bind(params)
    ro.require(spec.requires, by=f"estimator '{name}'")
    credit = spec.fn(ro, **full)
    return dataclasses.replace(credit, estimator=name, params=full)
