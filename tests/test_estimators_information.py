"""IGPO: vectorised == loop oracle, hand-worked cases from the definitions, reductions."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import ATOL, RTOL, assert_grid_covers, close_within
from reference import information as ref_info
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = [
    {},
    {"norm": "separate"},
    {"gain": "log_prob", "norm": "separate"},
    {"gain": "log_prob", "zero_gain": "drop", "gamma": 0.9},
    {"zero_gain": "drop", "norm": "separate", "gamma": 0.5},
    {"zero_gain": "drop", "singleton": "raw"},
    {"singleton": "raw", "norm": "separate", "epsilon": 0.0},
    {"gamma": 0.0, "epsilon": 1e-4},
]
FLOOR = 1e-8  # the code's variance floor inside the square root


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "igpo", **params)
    want = ref_info.igpo(records, **params)
    close_within(
        got.step_advantage,
        want.step_advantage,
        want.diagnostics["step_tolerance"],
        "step_advantage",
    )
    close_within(
        got.episode_advantage,
        want.episode_advantage,
        want.diagnostics["episode_tolerance"],
        "episode_advantage",
    )
    log_ulps = 1e-13 if params.get("gain") == "log_prob" else 0.0  # a few ulps of |log p| <= 7
    close_within(got.step_return, want.step_return, log_ulps, "step_return")
    close_within(got.step_reward, want.step_reward, log_ulps, "step_reward")
    for key in ("gain_steps", "zero_gain_steps", "singleton_sets", "singleton_groups"):
        assert got.diagnostics[key] == want.diagnostics[key], key


def test_grid_covers_every_choice():
    assert_grid_covers("igpo", GRID)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=rollout_records(extra=True, max_steps=6))
def test_vectorised_equals_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def ep(eid, outcome, ps, group="g"):
    return {
        "episode_id": eid,
        "group_id": group,
        "outcome": outcome,
        "steps": [{"p_answer": p} for p in ps],
    }


def test_hand_worked_joint():
    # Group: τ1 with p = [0.2, 0.6, 0.6], R = 1; τ2 with one step, R = 0.
    #   rewards: τ1 = [0.6 − 0.2 = 0.4, 0.6 − 0.6 = 0, R = 1], τ2 = [R = 0]
    #   joint set {0.4, 0, 1, 0}: μ = 0.35, Var_pop = (0.05² + 0.35² + 0.65² + 0.35²)/4 = 0.1675
    #   σ = sqrt(0.1675 + 1e-8); r̃ = (r − 0.35)/(σ + 1e-6)
    #   γ = 1: A = [r̃0 + r̃1 + r̃2, r̃1 + r̃2, r̃2] for τ1 and [r̃ of 0] for τ2
    ro = sc.Rollouts.from_records([ep("t1", 1.0, [0.2, 0.6, 0.6]), ep("t2", 0.0, [0.3])])
    c = sc.estimate(ro, "igpo")
    f = math.sqrt(0.1675 + FLOOR) + 1e-6
    n = [(0.6 - 0.2 - 0.35) / f, -0.35 / f, 0.65 / f, -0.35 / f]
    np.testing.assert_allclose(c.step_advantage, [n[0] + n[1] + n[2], n[1] + n[2], n[2], n[3]], rtol=1e-12)
    np.testing.assert_allclose(c.step_reward, [0.6 - 0.2, 0.0, 1.0, 0.0], rtol=1e-15)
    np.testing.assert_allclose(c.step_return, [1.4, 1.0, 1.0, 0.0], rtol=1e-15)  # 0.6 − p_t + R
    assert c.episode_advantage.tolist() == [c.step_advantage[0], c.step_advantage[3]]
    assert c.diagnostics == {
        "gain_steps": 2,
        "zero_gain_steps": 1,
        "singleton_sets": 0,
        "singleton_groups": 0,
    }


def test_hand_worked_drop_merges_the_zero_gain_into_the_next_step():
    # The same group, zero_gain = drop, γ = 0.5: the gain 0 of τ1 step 1 is no reward.
    #   set {0.4, 1, 0}: μ = 7/15, Var_pop = ((−1/15)² + (8/15)² + (7/15)²)/3 = 114/675
    #   r̃ = (r − 7/15)/(σ + ε); step 1 is merged into step 2: A_2 = r̃(1), A_1 = A_2,
    #   A_0 = r̃(0.4) + 0.5·A_1 (one discount from step 0 to the next reward step)
    ro = sc.Rollouts.from_records([ep("t1", 1.0, [0.2, 0.6, 0.6]), ep("t2", 0.0, [0.3])])
    c = sc.estimate(ro, "igpo", zero_gain="drop", gamma=0.5)
    f = math.sqrt(114 / 675 + FLOOR) + 1e-6
    a2 = (1 - 7 / 15) / f
    np.testing.assert_allclose(
        c.step_advantage,
        [(0.4 - 7 / 15) / f + 0.5 * a2, a2, a2, -7 / 15 / f],
        rtol=1e-12,
    )
    np.testing.assert_allclose(c.step_return, [0.4 + 0.5 * 1.0, 1.0, 1.0, 0.0], rtol=1e-15)
    # keep: the zero gain is a reward of 0 (in the statistics) and costs a discount
    k = sc.estimate(ro, "igpo", gamma=0.5)
    f = math.sqrt(0.1675 + FLOOR) + 1e-6
    n = [0.05 / f, -0.35 / f, 0.65 / f]
    np.testing.assert_allclose(
        k.step_advantage[:3],
        [n[0] + 0.5 * (n[1] + 0.5 * n[2]), n[1] + 0.5 * n[2], n[2]],
        rtol=1e-12,
    )


def test_hand_worked_separate_log_prob():
    # τ1: p = [0.25, 0.5], R = 1; τ2: p = [0.5, 0.5], R = 0. log gains: log 2 and 0.
    #   gain set {log 2, 0}: μ = log2/2, Var_pop = (log2/2)², σ = sqrt((log2/2)² + 1e-8)
    #   outcome set {1, 0}: μ = 0.5, σ = sqrt(0.25 + 1e-8)
    ro = sc.Rollouts.from_records([ep("t1", 1.0, [0.25, 0.5]), ep("t2", 0.0, [0.5, 0.5])])
    c = sc.estimate(ro, "igpo", gain="log_prob", norm="separate")
    h = math.log(2) / 2
    fg = math.sqrt(h * h + FLOOR) + 1e-6
    fo = math.sqrt(0.25 + FLOOR) + 1e-6
    g1, g2, o1, o2 = h / fg, -h / fg, 0.5 / fo, -0.5 / fo
    np.testing.assert_allclose(c.step_advantage, [g1 + o1, o1, g2 + o2, o2], rtol=1e-12)
    np.testing.assert_allclose(c.step_reward, [math.log(2), 1.0, 0.0, 0.0], rtol=1e-15)


def test_singletons():
    # a group of one one-step episode: its reward set has one member: μ = that reward, σ = 1
    # -> 0 ("zero", the code); "raw": mean 0, σ = 1 -> R/(1 + ε)
    ro = sc.Rollouts.from_records(
        [ep("a", 3.0, [0.5], group="solo"), ep("b", 1.0, [0.5]), ep("c", 0.0, [0.5])]
    )
    z = sc.estimate(ro, "igpo")
    r = sc.estimate(ro, "igpo", singleton="raw")
    assert z.step_advantage[0] == 0.0
    assert r.step_advantage[0] == 3.0 / (1 + 1e-6)
    assert z.step_advantage[1] == r.step_advantage[1] != 0  # a set of two: no singleton
    assert z.diagnostics["singleton_sets"] == 1 and z.diagnostics["singleton_groups"] == 1
    # separate: a group whose only gain is one step -> that gain's set is a singleton
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.1, 0.9]), ep("b", 0.0, [0.5])])
    s = sc.estimate(ro, "igpo", norm="separate")
    o = 0.5 / (math.sqrt(0.25 + FLOOR) + 1e-6)
    np.testing.assert_allclose(s.step_advantage, [0.0 + o, o, -o], rtol=1e-12)


def test_all_equal_gains_normalise_to_zero():
    # every gain 0.25 and every outcome 1: all-equal sets, σ = sqrt(0 + 1e-8), r̃ = 0
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.25, 0.5, 0.75]), ep("b", 1.0, [0.0, 0.25])])
    for norm in ("joint", "separate"):
        c = sc.estimate(ro, "igpo", norm=norm)
        if norm == "separate":
            assert np.all(c.step_advantage == 0.0)
        else:  # joint mixes 0.25 and 1: not all equal
            assert np.any(c.step_advantage != 0.0)


# ---------------------------------------------------------------------- properties and reductions
def grpo_pop(outcomes: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(R − mean)/(sqrt(Var_pop + 1e-8) + ε) over one group's outcomes (one member: 0)."""
    if outcomes.size == 1:
        return np.zeros(1)
    xs = [Fraction(float(x)) for x in outcomes]  # exact: outcomes may be 1e6 + 1e-7 apart
    mu = sum(xs, Fraction(0)) / len(xs)
    c = [x - mu for x in xs]
    var = sum((v * v for v in c), Fraction(0)) / len(xs)
    return np.array([float(v) for v in c]) / (math.sqrt(float(var + Fraction(FLOOR))) + eps)


def constant_p(records):
    for k, rec in enumerate(records):
        for s in rec["steps"]:
            s["p_answer"] = 0.5 + 0.01 * (k % 7)
    return records


@SETTINGS
@given(
    records=rollout_records(extra=True, max_steps=5, huge=False),
    gamma=st.sampled_from([1.0, 0.9, 0.0]),
)
def test_no_gain_separate_reduces_to_a_population_std_grpo(records, gamma):
    # p constant within every episode: every gain is 0. separate: the gain set is all-equal
    # (r̃ = 0), the outcome set is GRPO with the population std. drop: the gain steps merge into
    # the last step, which broadcasts A_{T−1} to the whole episode for any γ; keep: A_t =
    # γ^{T−1−t} A_{T−1}.
    ro = sc.Rollouts.from_records(constant_p(records))
    drop = sc.estimate(ro, "igpo", norm="separate", zero_gain="drop", gamma=gamma)
    keep = sc.estimate(ro, "igpo", norm="separate", gamma=gamma)
    expected = np.empty(ro.n_episodes)
    for g in range(ro.n_groups):
        members = np.flatnonzero(ro.episode_group == g)
        expected[members] = grpo_pop(ro.outcome[members])
    np.testing.assert_allclose(drop.step_advantage, np.repeat(expected, ro.step_counts), rtol=RTOL, atol=ATOL)
    powers = gamma ** (np.repeat(ro.step_counts, ro.step_counts) - 1 - ro.step_index).astype(float)
    np.testing.assert_allclose(
        keep.step_advantage,
        powers * np.repeat(expected, ro.step_counts),
        rtol=RTOL,
        atol=ATOL,
    )
    assert drop.diagnostics["zero_gain_steps"] == ro.n_steps - ro.n_episodes


@pytest.mark.parametrize("norm", ["joint", "separate"])
@SETTINGS
@given(records=rollout_records(extra=True, max_steps=5))
def test_normalised_rewards_have_mean_zero_in_every_set(norm, records):
    # γ = 1: r̃_t = A_t − A_{t+1}; every normalisation set of >= 2 rewards sums to 0
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "igpo", norm=norm)
    a = c.step_advantage
    last = ro.episode_offsets[1:] - 1
    normed = a.copy()
    normed[:-1] -= a[1:]
    normed[last] = a[last]
    is_last = np.zeros(ro.n_steps, dtype=int)
    is_last[last] = 1
    sets = ro.episode_group[ro.step_episode] * (2 if norm == "separate" else 1) + (
        is_last if norm == "separate" else 0
    )
    sums = np.bincount(sets, weights=normed)
    counts = np.bincount(sets)
    scale = np.bincount(sets, weights=np.abs(a)) + 1.0
    assert np.all(np.abs(sums[counts >= 2]) <= 1e-9 * scale[counts >= 2])
    assert np.all(normed[np.isin(sets, np.flatnonzero(counts == 1))] == 0.0)  # singleton="zero"


@SETTINGS
@given(
    ks=st.lists(st.lists(st.integers(0, 48), min_size=1, max_size=5), min_size=1, max_size=8),
    outcomes=st.data(),
)
def test_prob_gain_depends_on_differences_only(ks, outcomes):
    # p = k/64 + 0.25 and p = k/64 are exact floats with exactly the same differences
    recs = [
        ep(
            f"e{i}",
            outcomes.draw(st.sampled_from([0.0, 1.0, 0.5])),
            [k / 64 for k in row],
            group=f"g{i % 3}",
        )
        for i, row in enumerate(ks)
    ]
    shifted = [{**r, "steps": [{"p_answer": s["p_answer"] + 0.25} for s in r["steps"]]} for r in recs]
    for params in ({}, {"norm": "separate", "zero_gain": "drop", "gamma": 0.7}):
        a = sc.estimate(sc.Rollouts.from_records(recs), "igpo", **params)
        b = sc.estimate(sc.Rollouts.from_records(shifted), "igpo", **params)
        assert np.array_equal(a.step_advantage, b.step_advantage)
        assert np.array_equal(a.step_reward, b.step_reward)


@pytest.mark.parametrize("gain", ["prob", "log_prob"])
@SETTINGS
@given(records=rollout_records(extra=True, max_steps=6))
def test_return_telescopes(gain, records):
    # γ = 1: Σ_{k>=t} r_k = f(p_{T−1}) − f(p_t) + R
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "igpo", gain=gain)
    p = ro.column("p_answer")
    f = np.log(p) if gain == "log_prob" else p
    last = ro.episode_offsets[1:] - 1
    expected = f[last][ro.step_episode] - f + ro.outcome[ro.step_episode]
    scale = np.abs(ro.outcome[ro.step_episode]) + 10.0
    np.testing.assert_allclose(c.step_return, expected, rtol=0, atol=1e-12 * scale.max())


def test_needs_p_answer_and_refuses_bad_parameters():
    ro = sc.Rollouts.from_records(
        [
            {
                "episode_id": "a",
                "group_id": "g",
                "outcome": 1.0,
                "steps": [{"value": 1.0}],
            }
        ]
    )
    with pytest.raises(sc.MissingColumnError, match="p_answer"):
        sc.estimate(ro, "igpo")
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5, 0.0, 0.5]), ep("b", 0.0, [0.0])])
    with pytest.raises(sc.EstimatorError, match=r"p_answer.*> 0.*episode 'a' step 1"):
        sc.estimate(ro, "igpo", gain="log_prob")
    # p = 0 in a one-step episode never enters a log; prob gains accept it
    ok = sc.Rollouts.from_records([ep("a", 1.0, [0.5, 0.25]), ep("b", 0.0, [0.0])])
    assert np.all(np.isfinite(sc.estimate(ok, "igpo", gain="log_prob").step_advantage))
    assert np.all(np.isfinite(sc.estimate(ro, "igpo").step_advantage))
    with pytest.raises(sc.EstimatorError, match="gamma"):
        sc.estimate(ro, "igpo", gamma=1.5)
    with pytest.raises(sc.EstimatorError, match="epsilon"):
        sc.estimate(ro, "igpo", epsilon=-1e-6)
    with pytest.raises(sc.EstimatorError, match="'joint', 'separate'"):
        sc.estimate(ro, "igpo", norm="both")
    with pytest.raises(sc.EstimatorError, match="'keep', 'drop'"):
        sc.estimate(ro, "igpo", zero_gain="skip")
