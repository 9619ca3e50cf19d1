"""EPIC and STARC reward distances: loop oracles, hand-worked cases, the invariances that define
them (potential shaping, rescaling, S'-redistribution), pseudometric properties, degenerate
rewards, the sample estimators, the tabular builders and the ``stepcredit distance`` command."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import stepcredit as sc
from stepcredit.data import RolloutsError
from stepcredit.envs import EnvError, make_env
from stepcredit.metrics import (
    MetricsError,
    TabularMDP,
    epic_canonical,
    epic_canonical_sampled,
    epic_distance,
    epic_distance_sampled,
    mdp_from_env,
    mdp_from_gym,
    minimal_canonical,
    pearson_distance,
    potential_shaping,
    rollout_transitions,
    starc_distance,
    starc_distance_transitions,
    tabulate_reward,
    value_adjusted_levelling,
)
from stepcredit.metrics.cli import add_distance_parser, run_distance

from reference import distances as ref
from strategies import rollout_records

SETTINGS = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------- strategies
@dataclass
class Case:
    """A random small MDP and rewards on it."""

    T: np.ndarray  # [nS, nA, nS]
    gamma: float
    Ra: np.ndarray
    Rb: np.ndarray
    Rc: np.ndarray
    phi: np.ndarray  # [nS] a potential
    rng: np.random.Generator

    @property
    def shape(self):
        return self.T.shape


def _reward(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    if kind == "ints":  # ties
        return rng.integers(-2, 3, size=shape).astype(float)
    if kind == "offset":  # a large common offset on top of unit noise
        return 100.0 + rng.normal(size=shape)
    if kind == "sparse":  # mostly 0, as outcome rewards are
        return np.where(rng.random(shape) < 0.2, rng.normal(size=shape), 0.0)
    return rng.normal(size=shape) * rng.choice([1e-3, 1.0, 1e3])


@st.composite
def cases(draw, max_states: int = 5, max_actions: int = 3, gammas=(0.0, 0.5, 0.9), gamma_max: float = 0.9) -> Case:
    nS = draw(st.integers(1, max_states))
    nA = draw(st.integers(1, max_actions))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "ints", "offset", "sparse"]))
    dynamics = draw(st.sampled_from(["dense", "sparse", "deterministic"]))
    gamma = draw(st.one_of(st.sampled_from(gammas), st.floats(0.0, gamma_max)))
    rng = np.random.default_rng(seed)
    if dynamics == "deterministic":
        T = np.eye(nS)[rng.integers(0, nS, size=(nS, nA))]
    else:
        T = rng.random((nS, nA, nS)) ** 2
        if dynamics == "sparse":
            T = T * (rng.random(T.shape) < 0.5)
            T[T.sum(axis=2) == 0, 0] = 1.0
        T = T / T.sum(axis=2, keepdims=True)
    shape = (nS, nA, nS)
    return Case(T, gamma, _reward(rng, shape, kind), _reward(rng, shape, kind), _reward(rng, shape, "normal"),
                rng.normal(size=nS) * rng.choice([1.0, 10.0]), rng)


def _scale(*Rs) -> float:
    return max(float(np.abs(R).max()) for R in Rs)


def _epic_ok(c: Case, *Rs) -> bool:
    return not any(math.isnan(epic_distance(R, R, gamma=c.gamma)) for R in Rs)


def _starc_ok(c: Case, canon: str, *Rs, **kw) -> bool:
    """No degenerate reward (canonical norm clearly above the zero tolerance)."""
    for R in Rs:
        f = value_adjusted_levelling if canon == "value" else minimal_canonical
        q = f(R, c.T, gamma=c.gamma)[:, :, 0]
        if np.sqrt(np.mean(q * q)) <= 1e-6 * _scale(R):
            return False
    return True


# --------------------------------------------------------------------------- EPIC, hand-worked
def test_epic_hand_worked():
    # 2 states, 1 action, γ = 0, uniform D_S, D_A, D: C(R)(s, ·, s') = R(s, ·, s') − m(s), m(s) = mean_x R(s, ·, x).
    # R_A = [s' = 1]: m = 0.5 everywhere, C_A = (−.5, .5, −.5, .5) over (s, s') = 00, 01, 10, 11.
    # R_B = [s = 0, s' = 1]: m(0) = .5, m(1) = 0, C_B = (−.5, .5, 0, 0).
    # Means 0; var_A = .25, var_B = .125, cov = (.25 + .25)/4 = .125, ρ = .125/√(.25·.125) = 1/√2,
    # D = √((1 − 1/√2)/2) = sin(π/8) ≈ 0.38268.
    Ra = np.zeros((2, 1, 2))
    Ra[:, 0, 1] = 1.0
    Rb = np.zeros((2, 1, 2))
    Rb[0, 0, 1] = 1.0
    np.testing.assert_allclose(epic_canonical(Ra, gamma=0.0).ravel(), [-0.5, 0.5, -0.5, 0.5], atol=1e-15)
    np.testing.assert_allclose(epic_canonical(Rb, gamma=0.0).ravel(), [-0.5, 0.5, 0.0, 0.0], atol=1e-15)
    assert epic_distance(Ra, Rb, gamma=0.0) == pytest.approx(math.sin(math.pi / 8), rel=1e-14)
    # with γ = 0.5: Φ_A = .5 everywhere, C_A = R_A + .25 − .5 − .25 = R_A − .5 (unchanged)
    np.testing.assert_allclose(epic_canonical(Ra, gamma=0.5).ravel(), [-0.5, 0.5, -0.5, 0.5], atol=1e-15)


def test_pearson_distance_hand_worked():
    # x = (1, 2, 3), y = (1, 2, 4): centred (−1, 0, 1), (−4/3, −1/3, 5/3); cov = 3/3 = 1,
    # var_x = 2/3, var_y = (16 + 1 + 25)/27 = 14/9, ρ = 1/√(2/3 · 14/9) = 0.98198
    rho = 1 / math.sqrt(2 / 3 * 14 / 9)
    assert pearson_distance([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt((1 - rho) / 2), rel=1e-12)
    # weights (1, 1, 0) drop the last point: two points are perfectly correlated
    assert pearson_distance([1, 2, 3], [1, 2, -9], weights=[1, 1, 0]) == pytest.approx(0.0, abs=1e-15)
    assert pearson_distance([1, 2], [2, 1]) == pytest.approx(1.0, rel=1e-15)
    assert math.isnan(pearson_distance([1, 1, 1], [1, 2, 3]))


# --------------------------------------------------------------------------- EPIC, oracle and properties
@SETTINGS
@given(c=cases(), which=st.sampled_from(["default", "dists", "coverage"]))
def test_epic_equals_the_loop_oracle(c, which):
    nS, nA, _ = c.shape
    ds = da = cov = None
    if which == "dists":
        ds, da = c.rng.random(nS) + 0.01, c.rng.random(nA) + 0.01
    elif which == "coverage":
        cov = c.T * c.rng.random((nS, nA))[:, :, None]
        assume(cov.sum() > 0)
    got = epic_canonical(c.Ra, gamma=c.gamma, state_dist=ds, action_dist=da)
    want = np.array(ref.epic_canonical(c.Ra.tolist(), c.gamma, ds, da))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * _scale(c.Ra))
    d = epic_distance(c.Ra, c.Rb, gamma=c.gamma, state_dist=ds, action_dist=da, coverage=cov)
    d2 = ref.pearson_distance_squared(
        np.ravel(ref.epic_canonical(c.Ra.tolist(), c.gamma, ds, da)).tolist(),
        np.ravel(ref.epic_canonical(c.Rb.tolist(), c.gamma, ds, da)).tolist(),
        None if cov is None else cov.ravel().tolist(),
    )
    if math.isnan(d):  # degenerate: the oracle's variance is 0 or rounding-level
        return
    assert 0.0 <= d <= 1.0
    assert d * d == pytest.approx(d2, rel=1e-9, abs=1e-12)


@SETTINGS
@given(c=cases(gammas=(0.0, 0.5, 0.99, 1.0), gamma_max=1.0), scale=st.floats(1e-3, 1e3), shift=st.floats(-50, 50))
def test_epic_is_zero_for_shaped_rescaled_and_shifted_rewards(c, scale, shift):
    assume(_epic_ok(c, c.Ra))
    shaped = potential_shaping(c.Ra, c.phi, c.gamma)
    other = scale * shaped + shift
    # rounding: ~1e-16 of the largest raw value, relative to the reward's own size (a 1e-3
    # reward under a shift of 50 keeps only ~11 digits of itself, whatever the algorithm)
    tol = 1e-9 + 1e-14 * _scale(other) / (scale * _scale(c.Ra))
    assert epic_distance(c.Ra, shaped, gamma=c.gamma) == pytest.approx(0.0, abs=1e-9 + 1e-14 * _scale(shaped) / _scale(c.Ra))
    assert epic_distance(c.Ra, other, gamma=c.gamma) == pytest.approx(0.0, abs=tol)
    assert epic_distance(c.Ra, -c.Ra, gamma=c.gamma) == pytest.approx(1.0, abs=1e-12)
    assert epic_distance(c.Ra, -scale * shaped, gamma=c.gamma) == pytest.approx(1.0, abs=1e-9)


@SETTINGS
@given(c=cases(gammas=(0.0, 0.9, 1.0), gamma_max=1.0))
def test_epic_is_a_bounded_symmetric_pseudometric(c):
    assume(_epic_ok(c, c.Ra, c.Rb, c.Rc))
    ab = epic_distance(c.Ra, c.Rb, gamma=c.gamma)
    ba = epic_distance(c.Rb, c.Ra, gamma=c.gamma)
    bc = epic_distance(c.Rb, c.Rc, gamma=c.gamma)
    ac = epic_distance(c.Ra, c.Rc, gamma=c.gamma)
    assert ab == pytest.approx(ba, abs=1e-15)
    for d in (ab, bc, ac):
        assert 0.0 <= d <= 1.0
    assert ac <= ab + bc + 1e-12
    assert epic_distance(c.Ra, c.Ra, gamma=c.gamma) == 0.0


def test_epic_of_a_constant_or_pure_shaping_reward_is_nan():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(3, 2, 3))
    const = np.full((3, 2, 3), 2.5)
    assert math.isnan(epic_distance(R, const, gamma=0.9))
    assert math.isnan(epic_distance(const, const, gamma=0.9))
    # potential shaping plus a constant is constant after canonicalisation: no direction either
    pure = potential_shaping(np.full((3, 2, 3), -1.0), np.array([3.0, -7.0, 40.0]), 0.9)
    assert math.isnan(epic_distance(pure, R, gamma=0.9))
    np.testing.assert_allclose(epic_canonical(pure, gamma=0.9), 0.1 - 1.0 - 0.9 * (-1.0), atol=1e-13)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(3)
    T = rng.random((3, 2, 3))
    T /= T.sum(axis=2, keepdims=True)
    arrays = [T, rng.normal(size=(3, 2, 3)), rng.normal(size=(3, 2, 3)), rng.random((3, 2)) + 0.1]
    copies = [x.copy() for x in arrays]
    for x in arrays:
        x.flags.writeable = False  # any in-place write would raise
    T, Ra, Rb, d = arrays
    epic_distance(Ra, Rb, gamma=0.9, coverage=T)
    for canon in ("value", "minimal"):
        starc_distance(Ra, Rb, T, gamma=0.9, canonicalisation=canon, sa_weights=d)
    potential_shaping(Ra, np.arange(3.0), 0.9)
    s = np.array([0, 1, 2, 0])
    s.flags.writeable = False
    starc_distance_transitions(s, s, s - 1, s * 1.0, s * 2.0, gamma=0.9)
    for x, c in zip(arrays, copies):
        np.testing.assert_array_equal(x, c)


def test_epic_refuses_bad_arguments():
    R = np.zeros((2, 1, 2))
    with pytest.raises(MetricsError, match="epic_distance: reward_a"):
        epic_distance(np.zeros((2, 2)), R, gamma=0.5)
    with pytest.raises(MetricsError, match=r"gamma=1.5"):
        epic_distance(R, R, gamma=1.5)
    with pytest.raises(MetricsError, match="state_dist"):
        epic_canonical(R, gamma=0.5, state_dist=[1.0, -1.0])
    with pytest.raises(MetricsError, match="coverage"):
        epic_distance(R, R, gamma=0.5, coverage=np.ones(3))


# --------------------------------------------------------------------------- EPIC, sample-based
def _fn(table: np.ndarray):
    return lambda s, a, s2: table[np.asarray(s, dtype=int), np.asarray(a, dtype=int), np.asarray(s2, dtype=int)]


def _mesh(nS: int, nA: int):
    s, a, x = np.meshgrid(np.arange(nS), np.arange(nA), np.arange(nS), indexing="ij")
    return s.ravel(), a.ravel(), x.ravel()


@SETTINGS
@given(c=cases(gammas=(0.0, 0.9, 1.0), gamma_max=1.0), n=st.integers(1, 30), m=st.integers(1, 12))
def test_epic_sampled_equals_the_loop_oracle(c, n, m):
    nS, nA, _ = c.shape
    s, a, s2 = c.rng.integers(0, nS, n), c.rng.integers(0, nA, n), c.rng.integers(0, nS, n)
    ma, mx = c.rng.integers(0, nA, m), c.rng.integers(0, nS, m)
    mw = c.rng.random(m) + 0.1
    got = epic_canonical_sampled(_fn(c.Ra), s, a, s2, ma, mx, gamma=c.gamma, mean_weights=mw)
    scalar = lambda s_, a_, x_: float(c.Ra[s_, a_, x_])  # noqa: E731
    want = ref.epic_canonical_sampled(scalar, list(zip(s, a, s2)), list(zip(ma, mx)), c.gamma, mw.tolist())
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * _scale(c.Ra))
    d = epic_distance_sampled(_fn(c.Ra), _fn(c.Rb), s, a, s2, ma, mx, gamma=c.gamma, mean_weights=mw)
    if not math.isnan(d):
        wb = ref.epic_canonical_sampled(lambda s_, a_, x_: float(c.Rb[s_, a_, x_]), list(zip(s, a, s2)),
                                        list(zip(ma, mx)), c.gamma, mw.tolist())
        assert d * d == pytest.approx(ref.pearson_distance_squared(want, wb), rel=1e-9, abs=1e-12)


@SETTINGS
@given(c=cases(gammas=(0.0, 0.9, 1.0), gamma_max=1.0))
def test_epic_sampled_on_the_weighted_mesh_is_the_exact_distance(c):
    # batch = every (s, a, s') weighted by the coverage, mean pairs = every (a, x) weighted by
    # D_A(a)·D_S(x): the estimator's sums are then the exact expectations
    nS, nA, _ = c.shape
    ds, da = c.rng.random(nS) + 0.05, c.rng.random(nA) + 0.05
    cov = c.rng.random((nS, nA, nS))
    s, a, s2 = _mesh(nS, nA)
    ma, mx = np.repeat(np.arange(nA), nS), np.tile(np.arange(nS), nA)
    mw = da[ma] * ds[mx]
    got = epic_canonical_sampled(_fn(c.Ra), s, a, s2, ma, mx, gamma=c.gamma, mean_weights=mw)
    exact = epic_canonical(c.Ra, gamma=c.gamma, state_dist=ds, action_dist=da)
    np.testing.assert_allclose(got, exact.ravel(), rtol=1e-9, atol=1e-12 * _scale(c.Ra))
    d = epic_distance_sampled(_fn(c.Ra), _fn(c.Rb), s, a, s2, ma, mx, gamma=c.gamma, weights=cov.ravel(), mean_weights=mw)
    e = epic_distance(c.Ra, c.Rb, gamma=c.gamma, state_dist=ds, action_dist=da, coverage=cov)
    assert (math.isnan(d) and math.isnan(e)) or d == pytest.approx(e, rel=1e-9, abs=1e-12)


@SETTINGS
@given(c=cases(gammas=(0.0, 0.9, 1.0), gamma_max=1.0), n=st.integers(2, 40), m=st.integers(1, 12))
def test_epic_sampled_cancels_shaping_exactly_for_any_sample(c, n, m):
    nS, nA, _ = c.shape
    s, a, s2 = c.rng.integers(0, nS, n), c.rng.integers(0, nA, n), c.rng.integers(0, nS, n)
    ma, mx = c.rng.integers(0, nA, m), c.rng.integers(0, nS, m)
    shaped = 2.5 * potential_shaping(c.Ra, c.phi, c.gamma)
    ca = epic_canonical_sampled(_fn(c.Ra), s, a, s2, ma, mx, gamma=c.gamma)
    cs = epic_canonical_sampled(_fn(shaped), s, a, s2, ma, mx, gamma=c.gamma)
    np.testing.assert_allclose(cs, 2.5 * ca, rtol=1e-9, atol=1e-9 * _scale(c.Ra, shaped))
    d = epic_distance_sampled(_fn(c.Ra), _fn(shaped), s, a, s2, ma, mx, gamma=c.gamma)
    assert math.isnan(d) or d == pytest.approx(0.0, abs=1e-7)


def test_epic_sampled_converges_to_the_exact_distance():
    # Batch and (action, state) pairs drawn from uniform D, D_A, D_S. The estimate's error is a
    # Pearson-correlation sampling error, O(1/√N) (about (1 − ρ²)/√N = 0.004 for N = 40,000 here),
    # plus the canonicalisation's m(·) error, O(σ_R/√M) per state (0.005 for M = 40,000): 0.02 is
    # over 3 standard errors of each. With N = M = 400 the error is ~10x larger, so the test
    # also checks the estimate gets better with more samples.
    rng = np.random.default_rng(12345)
    nS, nA, g = 6, 3, 0.9
    Ra, Rb = rng.normal(size=(nS, nA, nS)), rng.normal(size=(nS, nA, nS))
    Rb = 0.6 * Ra + 0.8 * Rb  # correlated, so D is neither 0 nor 1
    exact = epic_distance(Ra, Rb, gamma=g)
    assert 0.2 < exact < 0.6
    errs = {}
    for N in (400, 40_000):
        e = []
        for k in range(5):
            r = np.random.default_rng(k)
            s, a, s2 = r.integers(0, nS, N), r.integers(0, nA, N), r.integers(0, nS, N)
            ma, mx = r.integers(0, nA, N), r.integers(0, nS, N)
            e.append(abs(epic_distance_sampled(_fn(Ra), _fn(Rb), s, a, s2, ma, mx, gamma=g) - exact))
        errs[N] = max(e)
    assert errs[40_000] < 0.02
    assert errs[40_000] < errs[400]


def test_epic_sampled_takes_any_state_objects():
    # strings and None (the end of an episode) as states: deduplicated by value
    calls = []

    def R(s, a, s2):
        calls.append(len(s))
        return np.array([(0.0 if y is None else float(len(y))) + (a_ == "x") for y, a_ in zip(s2, a)])

    s = np.array(["ab", "c", "ab"], dtype=object)
    a = np.array(["x", "y", "x"], dtype=object)
    s2 = np.array(["c", None, "c"], dtype=object)
    got = epic_canonical_sampled(R, s, a, s2, np.array(["x", "y"], dtype=object), np.array(["c", "ab"], dtype=object), gamma=0.5)
    want = ref.epic_canonical_sampled(lambda x, y, z: float(R([x], [y], [z])[0]), list(zip(s, a, s2)),
                                      [("x", "c"), ("y", "ab")], 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert calls[1] == 3 * 2  # distinct states {ab, c, None} x 2 pairs, one call


def test_epic_sampled_reports_bad_reward_functions():
    s = np.arange(3)
    with pytest.raises(MetricsError, match="returned shape"):
        epic_canonical_sampled(lambda s, a, x: np.zeros(2), s, s, s, s, s, gamma=0.5)
    with pytest.raises(MetricsError, match="returned nan"):
        epic_canonical_sampled(lambda s, a, x: np.full(len(s), np.nan), s, s, s, s, s, gamma=0.5)
    with pytest.raises(MetricsError, match="raised ZeroDivisionError"):
        epic_canonical_sampled(lambda s, a, x: 1 / 0, s, s, s, s, s, gamma=0.5)
    with pytest.raises(MetricsError, match="equal lengths"):
        epic_canonical_sampled(_fn(np.zeros((3, 3, 3))), s, s[:2], s, s, s, gamma=0.5)


# --------------------------------------------------------------------------- STARC, hand-worked
def _two_state_mdp():
    T = np.zeros((2, 2, 2))
    T[:, 0, 0] = T[:, 1, 1] = 1.0  # action a moves to state a
    return T


def test_starc_hand_worked():
    # T(s, a) = a, γ = 0.5, uniform π.
    # R_A = [s' = 1]: V(s) = ½(0 + γV(0)) + ½(1 + γV(1)) is the same v for both s: v = ½ + γv, v = 1;
    #   c_A(s, a) = [a = 1] + γ·1 − 1 = [a = 1] − ½ = (−½, ½, −½, ½) over (s, a) = 00, 01, 10, 11.
    # R_B = [s = 1]: u = mean V, V(0) = γu, V(1) = 1 + γu, u = ½ + γu = 1: V = (½, 3/2);
    #   c_B(s, a) = [s = 1] + γV(a) − V(s) = (−¼, ¼, −¼, ¼) = ½ c_A: distance 0 (R_A = 2R_B + shaping by Φ = 2[s = 1]).
    # R_C = [s = 0, a = 1]: V(0) = ½ + ¼V(0) + ¼V(1), V(1) = ¼V(0) + ¼V(1): V = (¾, ¼);
    #   c_C = (0 + ⅜ − ¾, 1 + ⅛ − ¾, 0 + ⅜ − ¼, 0 + ⅛ − ¼) = (−3, 3, 1, −1)/8.
    #   s_A = (−1, 1, −1, 1) (uniform-weight L2 norm ½), s_C = (−3, 3, 1, −1)/√5; ‖s_A − s_C‖² is
    #   the mean of the squares = 2 − 2/√5, so d = ½√(2 − 2/√5) = √((1 − 1/√5)/2) ≈ 0.52573.
    T, g = _two_state_mdp(), 0.5
    Ra = np.zeros((2, 2, 2))
    Ra[:, :, 1] = 1.0
    Rb = np.zeros((2, 2, 2))
    Rb[1] = 1.0
    Rc = np.zeros((2, 2, 2))
    Rc[0, 1] = 1.0
    np.testing.assert_allclose(value_adjusted_levelling(Ra, T, gamma=g)[:, :, 0].ravel(), [-0.5, 0.5, -0.5, 0.5], atol=1e-15)
    np.testing.assert_allclose(value_adjusted_levelling(Rb, T, gamma=g)[:, :, 0].ravel(), [-0.25, 0.25, -0.25, 0.25], atol=1e-15)
    np.testing.assert_allclose(value_adjusted_levelling(Rc, T, gamma=g)[:, :, 0].ravel(), np.array([-3, 3, 1, -1]) / 8, atol=1e-15)
    assert starc_distance(Ra, Rb, T, gamma=g) == pytest.approx(0.0, abs=1e-15)
    assert starc_distance(Ra, Rc, T, gamma=g) == pytest.approx(math.sqrt((1 - 1 / math.sqrt(5)) / 2), rel=1e-13)
    assert starc_distance(Ra, Rb, T, gamma=g, canonicalisation="minimal") == pytest.approx(0.0, abs=1e-14)


def test_starc_transitions_hand_worked():
    # From state 0: L then (state 1) R, or R at once; γ = 1, each transition seen once, terminal Φ = 0.
    # Rows (0,L), (1,R), (0,R); shaping directions b_0 = (−1, 0, −1), b_1 = (1, −1, 0); the normal
    # n = (1, 1, −1) spans what is left, so c(r) = (r·n/3) n with r·n = return(L, R) − return(R):
    # only the difference of the two paths' returns survives shaping.
    tr = dict(state=np.array([0, 1, 0]), action=np.array([0, 1, 1]), next_state=np.array([1, -1, -1]))
    outcome = np.array([0.0, 1.0, 0.0])  # LR succeeds: return difference +1
    process = np.array([1.0, 0.0, 0.0])  # rewards the first step of LR: +1
    wrong = np.array([0.0, 0.0, 1.0])  # prefers R: −1
    tie = np.array([1.0, 0.0, 1.0])  # no preference: c = 0, degenerate
    d = lambda x, y: starc_distance_transitions(reward_a=x, reward_b=y, gamma=1.0, **tr)  # noqa: E731
    assert d(outcome, process) == pytest.approx(0.0, abs=1e-14)
    assert d(outcome, wrong) == pytest.approx(1.0, abs=1e-14)
    assert d(outcome, tie) == pytest.approx(0.5, abs=1e-14)
    assert d(tie, 3 * tie) == 0.0


# --------------------------------------------------------------------------- STARC, oracle and properties
@SETTINGS
@given(c=cases(), canon=st.sampled_from(["value", "minimal"]), p=st.sampled_from([1, 2, math.inf]),
       weights=st.sampled_from(["uniform", "random", "zeros"]), policy=st.booleans())
def test_starc_equals_the_loop_oracle(c, canon, p, weights, policy):
    nS, nA, _ = c.shape
    assume(not (canon == "minimal" and p != 2))
    d = None
    if weights != "uniform":
        d = c.rng.random((nS, nA)) * (c.rng.random((nS, nA)) < 0.7 if weights == "zeros" else 1.0)
        assume(d.sum() > 0.1)
    pi = None
    if policy and canon == "value":
        pi = c.rng.random((nS, nA)) + 0.01
        pi /= pi.sum(axis=1, keepdims=True)
    tol = 1e-9 * _scale(c.Ra) / max(1e-3, 1 - c.gamma)
    if canon == "value":
        got = value_adjusted_levelling(c.Ra, c.T, gamma=c.gamma, policy=pi)
        want = np.array(ref.value_adjusted_levelling(c.Ra.tolist(), c.T.tolist(), c.gamma, None if pi is None else pi.tolist()))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=tol)
    else:
        got = minimal_canonical(c.Ra, c.T, gamma=c.gamma, sa_weights=d)[:, :, 0]
        want = np.array(ref.minimal_canonical(c.Ra.tolist(), c.T.tolist(), c.gamma, None if d is None else d.tolist()))
        on = np.ones((nS, nA), bool) if d is None else d > 0
        np.testing.assert_allclose(got[on], want[on], rtol=1e-9, atol=tol)
    assume(_starc_ok(c, canon, c.Ra, c.Rb))
    dist = starc_distance(c.Ra, c.Rb, c.T, gamma=c.gamma, canonicalisation=canon, policy=pi, p=p, sa_weights=d)
    want_d = ref.starc_distance(c.Ra.tolist(), c.Rb.tolist(), c.T.tolist(), c.gamma, canon,
                                None if pi is None else pi.tolist(), p, None if d is None else d.tolist())
    assert 0.0 <= dist <= 1.0
    assert dist == pytest.approx(want_d, rel=1e-8, abs=1e-9)


@SETTINGS
@given(c=cases(gammas=(0.0, 0.5, 0.9, 0.99), gamma_max=0.99), canon=st.sampled_from(["value", "minimal"]),
       scale=st.floats(1e-3, 1e3))
def test_starc_is_zero_for_shaped_redistributed_and_rescaled_rewards(c, canon, scale):
    assume(_starc_ok(c, canon, c.Ra))
    nS, nA, _ = c.shape
    shaped = potential_shaping(c.Ra, c.phi, c.gamma)
    # S'-redistribution: noise with zero mean under T(s, a, ·), and anything on impossible s'
    noise = c.rng.normal(size=c.shape)
    noise -= np.einsum("sax,sax->sa", c.T, noise)[:, :, None]
    noise += np.where(c.T == 0, c.rng.normal(size=c.shape) * 5, 0.0)
    for other in (shaped, c.Ra + noise, scale * (shaped + noise)):
        assert starc_distance(c.Ra, other, c.T, gamma=c.gamma, canonicalisation=canon) == pytest.approx(0.0, abs=1e-8)
    assert starc_distance(c.Ra, -scale * shaped, c.T, gamma=c.gamma, canonicalisation=canon) == pytest.approx(1.0, abs=1e-8)


@SETTINGS
@given(c=cases(), canon=st.sampled_from(["value", "minimal"]), p=st.sampled_from([1, 2, math.inf]))
def test_starc_is_a_bounded_symmetric_pseudometric(c, canon, p):
    assume(not (canon == "minimal" and p != 2))
    kw = dict(gamma=c.gamma, canonicalisation=canon, p=p)
    ab = starc_distance(c.Ra, c.Rb, c.T, **kw)
    bc = starc_distance(c.Rb, c.Rc, c.T, **kw)
    ac = starc_distance(c.Ra, c.Rc, c.T, **kw)
    assert ab == pytest.approx(starc_distance(c.Rb, c.Ra, c.T, **kw), abs=1e-15)
    for d in (ab, bc, ac):
        assert 0.0 <= d <= 1.0
    assert ac <= ab + bc + 1e-12
    assert starc_distance(c.Ra, c.Ra, c.T, **kw) == 0.0


@SETTINGS
@given(c=cases())
def test_minimal_is_the_least_norm_member_of_the_class(c):
    # c_value(R) is in R's class, so its minimal canonicalisation is the same reward, and
    # the minimal one is never larger in the d-weighted L2 norm
    cv = value_adjusted_levelling(c.Ra, c.T, gamma=c.gamma)
    cm = minimal_canonical(c.Ra, c.T, gamma=c.gamma)
    tol = 1e-9 * _scale(c.Ra) / max(1e-3, 1 - c.gamma)
    np.testing.assert_allclose(minimal_canonical(cv, c.T, gamma=c.gamma), cm, rtol=1e-9, atol=tol)
    assert np.mean(cm[:, :, 0] ** 2) <= np.mean(cv[:, :, 0] ** 2) + tol


def test_starc_degenerate_rewards_are_the_zero_reward():
    rng = np.random.default_rng(1)
    T = rng.random((3, 2, 3))
    T /= T.sum(axis=2, keepdims=True)
    R = rng.normal(size=(3, 2, 3))
    const = np.full((3, 2, 3), 4.0)  # a constant is shaping with Φ = 4/(γ − 1) when γ < 1
    pure = potential_shaping(np.zeros((3, 2, 3)), np.array([1.0, -2.0, 30.0]), 0.9)
    for canon in ("value", "minimal"):
        kw = dict(gamma=0.9, canonicalisation=canon)
        assert starc_distance(R, const, T, **kw) == pytest.approx(0.5, abs=1e-12)
        assert starc_distance(R, pure, T, **kw) == pytest.approx(0.5, abs=1e-12)
        assert starc_distance(const, pure, T, **kw) == 0.0
        assert starc_distance(np.zeros((3, 2, 3)), const, T, **kw) == 0.0


def test_starc_refuses_bad_arguments():
    T, R = _two_state_mdp(), np.zeros((2, 2, 2))
    with pytest.raises(MetricsError, match=r"gamma=1.0 must lie in \[0, 1\)"):
        starc_distance(R, R, T, gamma=1.0)
    assert starc_distance(R, R, T, gamma=1.0, canonicalisation="minimal") == 0.0
    with pytest.raises(MetricsError, match="p=2 only"):
        starc_distance(R, R, T, gamma=0.5, canonicalisation="minimal", p=1)
    with pytest.raises(MetricsError, match="must be 1, 2 or inf"):
        starc_distance(R, R, T, gamma=0.5, p=3)
    with pytest.raises(MetricsError, match="canonicalisation='epic'"):
        starc_distance(R, R, T, gamma=0.5, canonicalisation="epic")
    with pytest.raises(MetricsError, match="probability distribution"):
        starc_distance(R, R, T * 2, gamma=0.5)
    with pytest.raises(MetricsError, match="policy"):
        value_adjusted_levelling(R, T, gamma=0.5, policy=np.ones((2, 2)))


# --------------------------------------------------------------------------- STARC from logged transitions
def _logged(draw_rng: np.random.Generator, n: int, nS: int, nA: int, p_end: float):
    s = draw_rng.integers(0, nS, n)
    a = draw_rng.integers(0, nA, n)
    s2 = np.where(draw_rng.random(n) < p_end, -1, draw_rng.integers(0, nS, n))
    return s, a, s2


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), nS=st.integers(1, 5), nA=st.integers(1, 3),
       p_end=st.sampled_from([0.0, 0.2, 0.6]), gamma=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
       kind=st.sampled_from(["normal", "ints", "offset", "sparse"]))
def test_starc_transitions_equals_the_loop_oracle(seed, n, nS, nA, p_end, gamma, kind):
    rng = np.random.default_rng(seed)
    s, a, s2 = _logged(rng, n, nS, nA, p_end)
    ra, rb = _reward(rng, n, kind), _reward(rng, n, kind)
    got = starc_distance_transitions(s, a, s2, ra, rb, gamma=gamma)
    rows = [(int(x), int(y), None if z < 0 else int(z), float(u), float(v)) for x, y, z, u, v in zip(s, a, s2, ra, rb)]
    want = ref.starc_distance_transitions(rows, gamma)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(want, rel=1e-8, abs=1e-8)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), nS=st.integers(1, 5), nA=st.integers(1, 3),
       gamma=st.sampled_from([0.0, 0.5, 0.9]))
def test_starc_transitions_is_the_minimal_starc_of_the_empirical_mdp(seed, n, nS, nA, gamma):
    rng = np.random.default_rng(seed)
    s, a, s2 = _logged(rng, n, nS, nA, 0.0)
    ra, rb = rng.normal(size=n), rng.normal(size=n)
    counts = np.zeros((nS, nA, nS))
    np.add.at(counts, (s, a, s2), 1.0)
    Ra, Rb = np.zeros_like(counts), np.zeros_like(counts)
    np.add.at(Ra, (s, a, s2), ra)
    np.add.at(Rb, (s, a, s2), rb)
    seen = counts > 0
    Ra[seen] /= counts[seen]
    Rb[seen] /= counts[seen]
    n_sa = counts.sum(axis=2)
    T = np.where(n_sa[:, :, None] > 0, counts / np.maximum(n_sa, 1)[:, :, None], np.eye(nS)[:, None, :])
    want = starc_distance(Ra, Rb, T, gamma=gamma, canonicalisation="minimal", sa_weights=n_sa)
    assert starc_distance_transitions(s, a, s2, ra, rb, gamma=gamma) == pytest.approx(want, rel=1e-9, abs=1e-10)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), gamma=st.sampled_from([0.5, 0.9, 1.0]))
def test_starc_transitions_ignores_episodic_shaping_and_scale(seed, n, gamma):
    rng = np.random.default_rng(seed)
    s, a, s2 = _logged(rng, n, 4, 2, 0.3)
    ra = rng.normal(size=n)
    phi = rng.normal(size=4) * 5
    phi_next = np.where(s2 >= 0, phi[np.maximum(s2, 0)], 0.0)  # Φ(end) = 0
    shaped = 3.0 * (ra + gamma * phi_next - phi[s])
    assert starc_distance_transitions(s, a, s2, ra, shaped, gamma=gamma) == pytest.approx(0.0, abs=1e-8)
    assert starc_distance_transitions(s, a, s2, shaped, ra, gamma=gamma) == pytest.approx(0.0, abs=1e-8)
    d = starc_distance_transitions(s, a, s2, ra, -shaped, gamma=gamma)
    assert d == pytest.approx(1.0, abs=1e-8) or d == 0.0  # 0: both degenerate on this data


def test_starc_transitions_on_trees_of_distinct_states_compare_sibling_returns():
    # Chains of distinct states with their own starts (Φ(end) = 0): Φ can absorb every
    # reward along each chain, so every reward is equivalent to 0 and the distance is 0.
    s, a, s2 = np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0]), np.array([1, -1, 3, -1])
    rng = np.random.default_rng(0)
    assert starc_distance_transitions(s, a, s2, rng.normal(size=4), rng.normal(size=4), gamma=0.9) == 0.0
    # A shared start (one prompt per group): state 0 branches into 0→1→2→end and 0→3→end. What
    # shaping cannot change is the difference of the two branches' discounted returns
    # G = r_0 + γ r_1 + γ² r_2 and G' = r_3 + γ r_4; the canonical rewards are multiples of one
    # direction, so the distance is 0 when both rewards prefer the same branch and 1 otherwise.
    s, a, s2 = np.array([0, 1, 2, 0, 3]), np.array([0, 0, 0, 1, 0]), np.array([1, 2, -1, 3, -1])
    g = 0.9
    prefers_long = np.array([0.0, 0.0, 1.0, 0.5, 0.0])  # G = 0.81 > G' = 0.5
    prefers_long_too = np.array([0.3, 0.0, 0.0, 0.0, 0.0])  # 0.3 > 0
    prefers_short = np.array([0.0, 0.0, 0.5, 0.0, 1.0])  # 0.405 < 0.9
    assert starc_distance_transitions(s, a, s2, prefers_long, prefers_long_too, gamma=g) == pytest.approx(0.0, abs=1e-12)
    assert starc_distance_transitions(s, a, s2, prefers_long, prefers_short, gamma=g) == pytest.approx(1.0, abs=1e-12)


def test_starc_transitions_refuses_bad_arguments():
    z = np.zeros(3, dtype=int)
    with pytest.raises(MetricsError, match="integer codes"):
        starc_distance_transitions(z - 1, z, z, z * 1.0, z * 1.0, gamma=0.5)
    with pytest.raises(MetricsError, match=r"\[N\] arrays"):
        starc_distance_transitions(z, z[:2], z, z * 1.0, z * 1.0, gamma=0.5)
    with pytest.raises(MetricsError, match="finite"):
        starc_distance_transitions(z, z, z, np.array([0, np.nan, 0]), z * 1.0, gamma=0.5)


# --------------------------------------------------------------------------- transitions of rollouts
def test_rollout_transitions_hand_worked():
    ro = sc.Rollouts.from_records([
        {"episode_id": "e0", "group_id": "g", "outcome": 1.0,
         "steps": [{"state": "x", "action": "L"}, {"state": "y", "action": "R"}]},
        {"episode_id": "e1", "group_id": "g", "outcome": 0.0, "steps": [{"state": "x", "action": "R"}]},
    ])
    tr = rollout_transitions(ro)
    labels = tr.state_labels
    assert [labels[i] for i in tr.state] == ["x", "y", "x"]
    assert [tr.action_labels[i] for i in tr.action] == ["L", "R", "R"]
    assert [None if i < 0 else labels[i] for i in tr.next_state] == ["y", None, None]
    assert tr.terminal.tolist() == [False, True, True]


@settings(max_examples=40, deadline=None)
@given(records=rollout_records(state=True, action=True, extra=True, max_groups=3))
def test_rollout_transitions_and_starc_equal_the_oracle_on_rollouts(records):
    ro = sc.Rollouts.from_records(records)
    tr = rollout_transitions(ro)
    rows = []
    for rec in records:
        steps = rec["steps"]
        for t, st_ in enumerate(steps):
            nxt = steps[t + 1]["state"] if t + 1 < len(steps) else None
            rows.append((st_["state"], st_["action"], nxt, st_.get("reward", 0.0), st_["process"]))
    assert [(tr.state_labels[s], tr.action_labels[a], None if n < 0 else tr.state_labels[n])
            for s, a, n in zip(tr.state, tr.action, tr.next_state)] == [r[:3] for r in rows]
    got = starc_distance_transitions(tr.state, tr.action, tr.next_state, ro.reward, ro.column("process"), gamma=0.9)
    assert got == pytest.approx(ref.starc_distance_transitions(rows, 0.9), rel=1e-8, abs=1e-8)


# --------------------------------------------------------------------------- builders
def test_frozenlake_table():
    mdp = mdp_from_gym("FrozenLake-v1", gamma=0.9, is_slippery=False)
    assert (mdp.n_states, mdp.n_actions, mdp.name) == (16, 4, "gym:FrozenLake-v1")
    assert mdp.terminal.nonzero()[0].tolist() == [5, 7, 11, 12, 15]  # holes and the goal
    R = mdp.reward("reward")
    assert mdp.transitions[14, 2, 15] == 1.0 and R[14, 2, 15] == 1.0  # right from 14 reaches the goal
    assert R.sum() == 1.0  # only 14 -> 15 pays: 11, the goal's other neighbour, is a hole (absorbing)
    assert mdp.transitions[0, 0, 0] == 1.0  # left from the corner stays
    assert np.all(mdp.transitions[5, :, 5] == 1.0) and np.all(R[15] == 0.0)  # absorbing, no reward
    slip = mdp_from_gym("FrozenLake-v1", is_slippery=True)
    # left from 0 slips to left (stay), down (4) or up (stay), 1/3 each
    np.testing.assert_allclose(slip.transitions[0, 0, [0, 4]], [2 / 3, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(slip.transitions.sum(axis=2), 1.0, rtol=1e-12)


def test_cliffwalking_and_taxi_tables():
    cliff = mdp_from_gym("CliffWalking-v1")
    assert cliff.n_states == 48 and cliff.terminal.nonzero()[0].tolist() == [47]
    assert set(np.unique(cliff.reward("reward")).tolist()) == {-100.0, -1.0, 0.0}
    taxi = mdp_from_gym("Taxi-v4", gamma=0.95)
    assert (taxi.n_states, taxi.n_actions) == (500, 6) and taxi.terminal.sum() == 4
    assert set(np.unique(taxi.reward("reward")).tolist()) == {-10.0, -1.0, 0.0, 20.0}


def test_gym_builder_errors():
    with pytest.raises(MetricsError, match="gym:NoSuchEnv-v0: gymnasium.make failed"):
        mdp_from_gym("NoSuchEnv-v0")
    with pytest.raises(MetricsError, match="env.unwrapped.P"):
        mdp_from_gym("CartPole-v1")


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_lock_chain_table_follows_the_documented_dynamics(seed):
    N, K = 4, 3
    mdp = mdp_from_env("lock_chain", seed=seed, length=N, n_actions=K, gamma=0.9)
    assert mdp.state_labels == tuple(f"lock position {i}/{N}" for i in range(N + 1))
    assert mdp.action_labels == tuple(f"press {d}" for d in range(K))
    T, R, P = mdp.transitions, mdp.reward("reward"), mdp.reward("process")
    combo = []
    for i in range(N):  # exactly one digit advances; the others send the agent back to 0
        right = [d for d in range(K) if T[i, d, i + 1] == 1.0]
        assert len(right) == 1
        combo.append(right[0])
        for d in range(K):
            if d != right[0]:
                assert T[i, d, 0] == 1.0 and P[i, d, 0] == 0.0
        assert P[i, right[0], i + 1] == 1.0
        assert R[i, right[0], i + 1] == (1.0 if i == N - 1 else 0.0)
    assert mdp.terminal.tolist() == [False] * N + [True] and np.all(T[N, :, N] == 1.0)
    assert R.sum() == 1.0
    env = make_env("lock_chain", length=N, n_actions=K)
    env.reset(seed=seed)
    for d in combo:  # the combination read off the table opens the real lock
        _, r, term, _, _ = env.step(f"press {d}")
    assert term and r == 1.0


def test_lock_chain_process_reward_is_far_from_the_outcome():
    # the oracle process score pays every right press; with the loop back to position 0 a
    # policy can collect it forever and never open the lock, so under γ = 0.99 it points
    # almost opposite to the outcome reward (STARC near 1); EPIC sees less of that
    mdp = mdp_from_env("lock_chain", seed=2, gamma=0.99)
    R, P = mdp.reward("reward"), mdp.reward("process")
    assert starc_distance(R, P, mdp.transitions, gamma=0.99) > 0.95
    assert 0.3 < epic_distance(R, P, gamma=0.99) < 0.8


def test_tabulate_reward_and_table_validation():
    mdp = mdp_from_gym("FrozenLake-v1", is_slippery=False)
    R = tabulate_reward(mdp, lambda s, a, s2: 1.0 if s2 == 15 and s != 15 else 0.0)
    assert starc_distance(R, mdp.reward("reward"), mdp.transitions, gamma=0.99) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(MetricsError, match=r"my R raised KeyError: 'x' at \(s, a, s'\) = \(0, 0, 0\)"):
        tabulate_reward(mdp, lambda s, a, s2: {}["x"], name="my R")
    with pytest.raises(MetricsError, match="returned 'a'"):
        tabulate_reward(mdp, lambda s, a, s2: "a")
    with pytest.raises(MetricsError, match="no reward table 'process'"):
        mdp.reward("process")
    with pytest.raises(MetricsError, match=r"transitions\[0, 1, :\] sums to"):
        TabularMDP(np.array([[[1.0], [0.5]]]), 0.5)
    with pytest.raises(MetricsError, match="absorbing"):
        TabularMDP(np.array([[[0.0, 1.0]], [[1.0, 0.0]]]), 0.5, terminal=[True, False])


# --------------------------------------------------------------------------- the command
REWARDS_MODULE = '''
def goal(s, a, s2):
    return 1.0 if s2 == 15 and s != 15 else 0.0

def phi(s):
    return 0.0 if s is None else -abs(3 - s // 4) - abs(3 - s % 4)

def goal_shaped(s, a, s2):
    return 2.0 * goal(s, a, s2) + 0.9 * phi(s2) - phi(s)

def position(s):
    return 0.0 if s is None else float(s.split()[2].split("/")[0])

def progress(s, a, s2):
    return 0.0 if s2 is None else position(s2)

def progress_shaped(s, a, s2):
    pot = lambda x: 0.0 if x is None else position(x) ** 2
    return 3.0 * progress(s, a, s2) + 0.9 * pot(s2) - pot(s)

def broken(s, a, s2):
    if s2 is None:
        raise RuntimeError("no next state")
    return 0.0
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "dist_rewards.py").write_text(REWARDS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("dist_rewards", None)
    return "dist_rewards"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stepcredit")
    add_distance_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["distance", *argv])
    assert args.func is run_distance  # what stepcredit.cli.main will call
    return run_distance(args)


def test_cli_env_exact_distances(reward_module, capsys, tmp_path):
    out = tmp_path / "d.json"
    argv = ["--env", "gym:FrozenLake-v1", "--env-kwargs", "is_slippery=false", "--a", "reward",
            "--b", f"{reward_module}:goal_shaped", "--gamma", "0.9", "--json", "-o", str(out)]
    assert _run(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads(out.read_text())
    assert (res["states"], res["actions"], res["terminal_states"]) == (16, 4, 5)
    assert res["starc"]["distance"] == pytest.approx(0.0, abs=1e-12)
    # EPIC compares every (s, a, s'), possible or not: goal() also pays for impossible jumps into
    # the goal, which the environment's table does not, so EPIC does not see them as equal;
    # its canonicalisation averages over impossible transitions too, so restricting the
    # coverage to possible ones still leaves a distance
    assert res["epic"]["distance"] > 0.1
    env_vs_goal = ["--env", "gym:FrozenLake-v1", "--env-kwargs", "is_slippery=false", "--gamma", "0.9",
                   "--coverage", "transitions", "--json", "--a", "reward"]
    assert _run(env_vs_goal + ["--b", f"{reward_module}:goal"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0.001 < res["epic"]["distance"] < 0.1
    assert res["starc"]["distance"] == pytest.approx(0.0, abs=1e-12)
    assert _run(env_vs_goal[:-2] + ["--a", f"{reward_module}:goal", "--b", f"{reward_module}:goal_shaped"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["epic"]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert res["starc"]["distance"] == pytest.approx(0.0, abs=1e-12)


def test_cli_env_table_and_options(capsys):
    assert _run(["--env", "lock_chain", "--env-kwargs", "length=3", "--seed", "4", "--a", "reward", "--b", "process",
                 "--canonicalisation", "minimal"]) == 0
    text = capsys.readouterr().out
    assert "EPIC" in text and "STARC" in text and "lock_chain" in text
    assert _run(["--env", "lock_chain", "--a", "reward", "--b", "reward", "--gamma", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["starc"]["distance"] is None and "gamma=1" in res["starc"]["note"]
    assert _run(["--env", "lock_chain", "--a", "reward", "--b", "reward", "--norm", "inf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["starc"]["distance"] == 0.0


def _write_rollouts(path):
    rng = np.random.default_rng(0)
    recs = []
    for k in range(24):
        env = make_env("lock_chain", length=3, n_actions=2)
        _, info = env.reset(seed=k % 2)
        steps, done = [], False
        while not done:
            state = info["state"]
            action = env.valid_actions()[rng.integers(2)]
            _, r, term, trunc, info = env.step(action)
            steps.append({"state": state, "action": action, "reward": r, "process": info["process"]})
            done = term or trunc
        recs.append({"episode_id": f"e{k}", "group_id": f"g{k % 2}", "outcome": float(info["success"]), "steps": steps})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return sc.Rollouts.from_records(recs)


def test_cli_rollouts_fields_and_functions(reward_module, capsys, tmp_path):
    path = tmp_path / "ro.jsonl"
    ro = _write_rollouts(path)
    assert _run([str(path), "--a", "reward", "--b", "process", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    tr = rollout_transitions(ro)
    want = starc_distance_transitions(tr.state, tr.action, tr.next_state, ro.reward, ro.column("process"), gamma=0.99)
    assert res["starc"]["distance"] == pytest.approx(want, rel=1e-12)
    assert res["epic"]["distance"] is None and "module:function" in res["epic"]["note"]
    assert res["transitions"] == ro.n_steps and res["terminal_transitions"] == ro.n_episodes
    # functions: both estimates are 0 for a shaped and rescaled reward (Φ(None) = 0)
    assert _run([str(path), "--a", f"{reward_module}:progress", "--b", f"{reward_module}:progress_shaped",
                 "--gamma", "0.9", "--samples", "64", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["epic"]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert res["starc"]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert _run([str(path), "--a", f"{reward_module}:progress", "--b", "reward"]) == 0
    assert "STARC" in capsys.readouterr().out


def test_cli_errors_name_the_file_record_and_field(reward_module, tmp_path):
    path = tmp_path / "ro.jsonl"
    _write_rollouts(path)
    with pytest.raises(RolloutsError, match=r"ro.jsonl: field 'steps\[\].value': --a names this step field"):
        _run([str(path), "--a", "value", "--b", "reward"])
    with pytest.raises(RolloutsError, match=r"ro.jsonl: episode 'e0', step \d+: field '--b': the reward function "
                       r"dist_rewards:broken failed: RuntimeError: no next state"):
        _run([str(path), "--a", "reward", "--b", f"{reward_module}:broken"])
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"episode_id": "e", "group_id": "g", "outcome": 1, "steps": [{"reward": 1}]}) + "\n")
    with pytest.raises(RolloutsError, match=r"bare.jsonl: field 'steps\[\].state'"):
        _run([str(bare), "--a", "reward", "--b", "reward"])
    with pytest.raises(MetricsError, match="either a rollouts file"):
        _run(["--a", "reward", "--b", "reward"])
    with pytest.raises(MetricsError, match="cannot import module 'nope'"):
        _run(["--env", "lock_chain", "--a", "nope:f", "--b", "reward"])
    with pytest.raises(MetricsError, match="has no attribute 'missing'"):
        _run(["--env", "lock_chain", "--a", f"{reward_module}:missing", "--b", "reward"])
    with pytest.raises(MetricsError, match="records the rewards reward, process"):
        _run(["--env", "lock_chain", "--a", "value", "--b", "reward"])
    with pytest.raises(MetricsError, match="episode reward component"):
        _run([str(path), "--a", "rewards.x", "--b", "reward"])
    with pytest.raises(MetricsError, match="key field"):
        _run([str(path), "--a", "state", "--b", "reward"])
    with pytest.raises(MetricsError, match=r"name the output \*.json"):
        _run([str(path), "--a", "reward", "--b", "reward", "-o", str(tmp_path / "x.csv")])
    with pytest.raises(MetricsError, match="belongs to the text adapter"):
        _run(["--env", "gym:FrozenLake-v1", "--env-kwargs", "max_steps=5", "--a", "reward", "--b", "reward"])
    with pytest.raises(MetricsError, match="norm 2 only"):
        _run(["--env", "lock_chain", "--a", "reward", "--b", "reward", "--canonicalisation", "minimal", "--norm", "1"])
    with pytest.raises(EnvError, match="unknown environment"):
        _run(["--env", "no_such_env", "--a", "reward", "--b", "reward"])

