"""Benchmark statistics: hand-worked values and the bootstrap interval's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.bench.stats import auc, bootstrap_ci, episodes_to_target, final_success, summarize


def test_episodes_to_target_uses_the_trailing_mean():
    eps = [16, 32, 48, 64, 80]
    succ = [0.0, 0.9, 0.5, 0.9, 1.0]
    # window 1: the first iteration at >= 0.8 is the second (32 episodes)
    assert episodes_to_target(eps, succ, 0.8, window=1) == 32
    # window 3 means: 0, .45, .4667, .7667, .8 (2.4/3, a hair below 0.8 in float) -> 0.79 is
    # reached at the fifth iteration (80 episodes)
    assert episodes_to_target(eps, succ, 0.79, window=3) == 80
    assert episodes_to_target(eps, succ, 0.95, window=3) == math.inf
    assert episodes_to_target([], [], 0.5) == math.inf


def test_final_success_and_auc():
    assert final_success([0.0, 0.5, 1.0, 1.0], window=2) == 1.0
    # widths 10, 10, 20 over 40 episodes: (0*10 + 0.5*10 + 1*20) / 40 = 0.625
    assert auc([10, 20, 40], [0.0, 0.5, 1.0]) == pytest.approx(0.625)
    assert auc([], []) == 0.0


def test_summary_censors_unreached_runs_at_the_budget():
    s = summarize([100.0, math.inf, 300.0], budget=1000)
    assert s.mean == pytest.approx((100 + 1000 + 300) / 3) and s.reached == 2 and s.censored
    assert s.format(integer=True).startswith("≥467 [") and s.format().endswith("(2/3 reached)")
    with pytest.raises(ValueError, match="budget"):
        summarize([math.inf])
    one = summarize([5.0])
    assert (one.ci_low, one.ci_high) == (5.0, 5.0) and not one.censored


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=20))
def test_bootstrap_interval_brackets_the_mean_and_is_reproducible(values):
    lo, hi = bootstrap_ci(values)
    m = float(np.mean(values))
    assert min(values) - 1e-9 <= lo <= m + 1e-6 * max(1, abs(m)) and m - 1e-6 * max(1, abs(m)) <= hi <= max(values) + 1e-9
    assert bootstrap_ci(values) == (lo, hi)


def test_bootstrap_interval_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    small = rng.normal(size=5)
    big = rng.normal(size=500)
    w_small = np.subtract(*bootstrap_ci(small)[::-1])
    w_big = np.subtract(*bootstrap_ci(big)[::-1])
    assert w_big < w_small


def test_a_trailing_mean_equal_to_the_target_reaches_it():
    # found by the trainer's author: (0.5 + 0.9) - 0.5 is not 0.9 in float, a direct mean is
    assert episodes_to_target([10, 20], [0.5, 0.9], 0.9, window=1) == 20
    assert episodes_to_target([10, 20, 30], [0.3, 0.9, 0.9], 0.9, window=2) == 30
