"""Typed keyword parameters read from a function's signature: what every registry shares.

Estimators (``stepcredit.estimators``), reward transforms (``stepcredit.shaping``) and credit
filters (``stepcredit.filters``) are registered pure functions whose parameters, types and
defaults are read from their signature (one source of truth). A ``Literal[...]`` annotation
lists the allowed values; the help text of a parameter is its line in the docstring's ``Args``
section. This module sits below all three registries (it imports nothing from them).
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Param",
    "UsageError",
    "bind_params",
    "param_help",
    "parse_assignment",
    "parse_bool",
    "signature_params",
    "split_assignment",
]


class UsageError(ValueError):
    """A bad name or parameter given by the user: the command line exits with status 2."""


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a registered function."""

    name: str
    default: Any
    type: type
    choices: tuple[Any, ...] | None = None
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return f"{self.name} in {{{', '.join(map(repr, self.choices))}}} (default {self.default!r})"
        return f"{self.name}: {self.type.__name__} (default {self.default!r})"

    def _bad(self, value: Any, who: str, error: type[UsageError]) -> UsageError:
        return error(f"{who}: parameter {self.name}={value!r} is invalid; expected {self.describe()}")

    def check(self, value: Any, who: str, error: type[UsageError] = UsageError) -> Any:
        """Validate (and convert int -> float) a value; raise ``error`` naming ``who`` otherwise.

        ``who`` names the owner in messages, e.g. ``"estimator 'grpo'"``.
        """
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
                raise self._bad(value, who, error)
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise self._bad(value, who, error)
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._bad(value, who, error)
            return value
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise self._bad(value, who, error)
            return float(value)
        if not isinstance(value, self.type):
            raise self._bad(value, who, error)
        return value

    def parse(self, text: str, who: str, error: type[UsageError] = UsageError) -> Any:
        """Convert a command-line string to this parameter's type, then check it."""
        value: Any = text
        try:
            if self.choices is not None:
                kinds = {type(c) for c in self.choices}
                if kinds == {bool}:
                    value = parse_bool(text)
                elif kinds <= {int}:
                    value = int(text)
                elif kinds <= {float, int}:
                    value = float(text)
            elif self.type is bool:
                value = parse_bool(text)
            elif self.type is int:
                value = int(text)
            elif self.type is float:
                value = float(text)
        except ValueError:
            raise self._bad(text, who, error) from None
        return self.check(value, who, error)


def parse_bool(text: str) -> bool:
    """``true/1/yes/on`` or ``false/0/no/off`` (any case); ValueError otherwise."""
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def split_assignment(assignment: str, error: type[UsageError] = UsageError) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")`` (both stripped); an error without ``=``."""
    if "=" not in assignment:
        raise error(f"parameter '{assignment}' must be written key=value")
    key, text = assignment.split("=", 1)
    return key.strip(), text.strip()


def bind_params(
    params: Mapping[str, Param], given: Mapping[str, Any], owner: str, error: type[UsageError]
) -> dict[str, Any]:
    """Every parameter of ``owner`` (e.g. ``"transform 'gated'"``), defaults filled in and each
    given value checked; an unknown name lists the valid ones."""
    unknown = [k for k in given if k not in params]
    if unknown:
        valid = ", ".join(p.describe() for p in params.values()) or "none"
        raise error(f"{owner} has no parameter '{unknown[0]}'; its parameters: {valid}")
    return {name: p.check(given[name], owner, error) if name in given else p.default for name, p in params.items()}


def parse_assignment(
    params: Mapping[str, Param], assignment: str, owner: str, error: type[UsageError]
) -> tuple[str, Any]:
    """A command-line ``key=value`` for ``owner`` parsed to the parameter's type."""
    key, text = split_assignment(assignment, error)
    if key not in params:
        bind_params(params, {key: None}, owner, error)  # raises the listing error
    return key, params[key].parse(text, owner, error)


def param_help(doc: str) -> dict[str, str]:
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


def signature_params(
    fn: Callable[..., Any],
    who: str,
    error: type[UsageError],
    positional: int = 1,
    skip: tuple[str, ...] = (),
) -> dict[str, Param]:
    """The keyword-only parameters of ``fn`` as :class:`Param` objects, defaults checked.

    Args:
        fn: the function to register.
        who: its name in messages, e.g. ``"transform 'gated'"``.
        error: the error class to raise.
        positional: how many leading positional parameters it takes (the data: Rollouts, and
            for a filter the Credit too); every other parameter must be keyword-only with a
            default of type float, int, bool, str or a ``Literal`` of them.
        skip: keyword parameters that are not user parameters (e.g. ``state``).
    """
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params_in = list(sig.parameters.values())
    lead = params_in[:positional]
    if len(lead) < positional or any(
        p.kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in lead
    ):
        raise error(f"{who}: the first {positional} parameter(s) must be positional (the data)")
    helps = param_help(fn.__doc__ or "")
    params: dict[str, Param] = {}
    for p in params_in[positional:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise error(f"{who}: parameter '{p.name}' must be keyword-only (no *args/**kwargs)")
        if p.name in skip:
            continue
        if p.default is inspect.Parameter.empty:
            raise error(f"{who}: parameter '{p.name}' needs a default")
        hint = hints.get(p.name, type(p.default))
        choices = None
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            ptype = type(choices[0])
        elif hint in (float, int, bool, str):
            ptype = hint
        else:
            raise error(f"{who}: parameter '{p.name}' must be float, int, bool, str or a Literal")
        params[p.name] = Param(p.name, p.default, ptype, choices, helps.get(p.name, ""))
        params[p.name].check(p.default, who, error)
    return params
