"""Comparisons shared by the per-estimator test files (vectorised result against loop oracle)."""

from __future__ import annotations

import numpy as np

import stepcredit as sc

__all__ = ["ATOL", "RTOL", "assert_grid_covers", "close", "close_within"]

RTOL, ATOL = 1e-9, 1e-12


def close(a, b, what: str) -> None:
    """Elementwise at rtol=1e-9, atol=1e-12."""
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=RTOL, atol=ATOL, err_msg=what)


def close_within(actual, desired, bound, what: str) -> None:
    """|actual − desired| <= rtol·|desired| + atol + bound, elementwise. ``bound`` is the
    oracle's rounding bound: e.g. totals and returns near 1e6 carry ~1e-10 of rounding whatever
    the summation order, which a centred value of 1e-3 cannot shed (see reference.anchor)."""
    actual, desired, bound = (np.asarray(x, dtype=float) for x in (actual, desired, bound))
    ok = np.abs(actual - desired) <= RTOL * np.abs(desired) + ATOL + bound
    assert ok.all(), f"{what}: {actual[~ok]} vs {desired[~ok]} (bound {bound[~ok]})"


def assert_grid_covers(name: str, grid: list[dict]) -> None:
    """Every Literal choice (and both values of every bool) of estimator ``name`` appears in
    ``grid`` (a list of parameter dicts; an absent parameter stands for its default)."""
    for p in sc.get_estimator(name).params.values():
        if p.choices or p.type is bool:
            choices = set(p.choices or (False, True))
            assert {g.get(p.name, p.default) for g in grid} == choices, f"{name}.{p.name}"
