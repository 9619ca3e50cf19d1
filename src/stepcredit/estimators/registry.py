"""The estimator registry: names -> pure functions ``(Rollouts, **params) -> Credit``.

Parameters, their types and defaults are read from the function's signature (one source of
truth); a ``Literal[...]`` annotation lists the allowed values. The registry refuses duplicate
names and functions with ``*args``/``**kwargs`` or parameters without defaults, and validates
every call: unknown names and bad parameters are errors that list the valid choices.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

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


class EstimatorError(ValueError):
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
class Param:
    """One keyword parameter of an estimator."""

    name: str
    default: Any
    type: type
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return f"{self.name} in {{{', '.join(map(repr, self.choices))}}} (default {self.default!r})"
        return f"{self.name}: {self.type.__name__} (default {self.default!r})"

    def check(self, value: Any, estimator: str) -> Any:
        """Validate (and convert int -> float) a value; raise EstimatorError otherwise."""
        bad = EstimatorError(
            f"estimator '{estimator}': parameter {self.name}={value!r} is invalid; "
            f"expected {self.describe()}"
        )
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
                raise bad
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            return value
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            return float(value)
        if not isinstance(value, self.type):
            raise bad
        return value

    def parse(self, text: str, estimator: str) -> Any:
        """Convert a command-line string to this parameter's type, then check it."""
        value: Any = text
        try:
            if self.choices is not None:
                kinds = {type(c) for c in self.choices}
                if kinds == {bool}:
                    value = _parse_bool(text)
                elif kinds <= {int}:
                    value = int(text)
                elif kinds <= {float, int}:
                    value = float(text)
            elif self.type is bool:
                value = _parse_bool(text)
            elif self.type is int:
                value = int(text)
            elif self.type is float:
                value = float(text)
        except ValueError:
            raise EstimatorError(
                f"estimator '{estimator}': parameter {self.name}={text!r} is invalid; "
                f"expected {self.describe()}"
            ) from None
        return self.check(value, estimator)


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


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

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Full parameter dict (defaults filled in), every value checked."""
        unknown = [k for k in params if k not in self.params]
        if unknown:
            valid = ", ".join(p.describe() for p in self.params.values()) or "none"
            raise EstimatorError(
                f"estimator '{self.name}' has no parameter '{unknown[0]}'; its parameters: {valid}"
            )
        return {
            name: p.check(params[name], self.name) if name in params else p.default
            for name, p in self.params.items()
        }


_REGISTRY: dict[str, EstimatorSpec] = {}


def _param_help(doc: str) -> dict[str, str]:
    """``name: text`` lines of a Google-style Args section."""
    out: dict[str, str] = {}
    m = re.search(r"\n\s*Args:\n(.*?)(\n\s*\n\s*\S+:\n|\Z)", doc or "", re.S)
    if not m:
        return out
    current = None
    for line in m.group(1).splitlines():
        hit = re.match(r"\s{4,8}(\w+)(?: \([^)]*\))?: (.*)", line)
        if hit:
            current = hit.group(1)
            out[current] = hit.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def register(
    *,
    family: Family,
    paper: str,
    requires: tuple[str, ...] = (),
    name: str | None = None,
) -> Callable[[Callable[..., Credit]], Callable[..., Credit]]:
    """Register an estimator function under ``name`` (default: the function's name).

    Args:
        family: the method family ("outcome", "value", "anchor", "tree", "progress", ...).
        paper: the citation, ``Title (Authors, Year, arXiv:XXXX.XXXXX)``.
        requires: step fields the estimator always needs (beyond outcome and group).
        name: registry name.
    """

    def deco(fn: Callable[..., Credit]) -> Callable[..., Credit]:
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise EstimatorError(f"estimator '{reg_name}' is already registered")
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params_in = list(sig.parameters.values())
        if not params_in or params_in[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise EstimatorError(f"estimator '{reg_name}': the first parameter must be the Rollouts")
        helps = _param_help(fn.__doc__ or "")
        params: dict[str, Param] = {}
        for p in params_in[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise EstimatorError(
                    f"estimator '{reg_name}': parameter '{p.name}' must be keyword-only (no *args/**kwargs)"
                )
            if p.default is inspect.Parameter.empty:
                raise EstimatorError(f"estimator '{reg_name}': parameter '{p.name}' needs a default")
            hint = hints.get(p.name, type(p.default))
            choices = None
            if typing.get_origin(hint) is Literal:
                choices = typing.get_args(hint)
                ptype = type(choices[0])
            elif hint in (float, int, bool, str):
                ptype = hint
            else:
                raise EstimatorError(
                    f"estimator '{reg_name}': parameter '{p.name}' must be float, int, bool, str or a Literal"
                )
            params[p.name] = Param(p.name, p.default, ptype, choices, helps.get(p.name, ""))
            params[p.name].check(p.default, reg_name)
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[reg_name] = EstimatorSpec(
            name=reg_name,
            family=family,
            requires=tuple(requires),
            params=params,
            paper=paper,
            summary=doc.splitlines()[0] if doc else "",
            fn=fn,
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
    spec = get_estimator(name)
    if "=" not in assignment:
        raise EstimatorError(f"parameter '{assignment}' must be written key=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    if key not in spec.params:
        spec.bind({key: None})  # raises the listing error
    return key, spec.params[key].parse(text.strip(), name)


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
