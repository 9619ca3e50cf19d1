"""redistribute: vectorised == loop oracle, hand-worked cases, exact sums and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from checks import assert_grid_covers, close, close_within
from reference import redistribution as ref_redistribution
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = [
    {},
    {"weights": "importance", "base": "drgrpo", "singleton": "zero"},
    {"weights": "process", "base": "rloo"},
    {"weights": "importance", "epsilon": 1e-4},
]
EXTRA = rollout_records(extra=True, max_steps=8)
BASES = ("grpo", "drgrpo", "rloo")


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "redistribute", **params)
    want = ref_redistribution.redistribute(records, **params)
    close(got.step_advantage, want.step_advantage, "step_advantage")
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    close_within(got.step_reward, want.step_reward, want.diagnostics["step_reward_tolerance"], "step_reward")
    close_within(got.step_return, want.step_return, want.diagnostics["step_return_tolerance"], "step_return")
    for key in ("fallback_episodes", "zero_weight_steps"):
        assert got.diagnostics[key] == want.diagnostics[key], key


def episode_sums_are_exact(ro, credit):
    for e in range(ro.n_episodes):
        r = credit.step_reward[ro.episode_offsets[e] : ro.episode_offsets[e + 1]]
        ret = credit.step_return[ro.episode_offsets[e] : ro.episode_offsets[e + 1]]
        R = ro.outcome[e]
        assert math.fsum(r) == R and float(np.sum(r)) == R and sum(r.tolist()) == R, e
        assert ret[0] == R
        np.testing.assert_array_equal(ret, np.cumsum(r[::-1])[::-1])  # the cumulative sums are exact too


def ep(eid, outcome, xs, group="g", field="importance"):
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": [{field: x} for x in xs]}


def test_grid_covers_every_choice():
    assert_grid_covers("redistribute", GRID)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=EXTRA)
def test_vectorised_equals_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def test_hand_worked_importance():
    # drgrpo base, outcomes [2, 0]: mean 1, A = [1, −1].
    # τ1: importance [1, 3] -> w = [1/4, 3/4]; r = 2·w = [0.5, 1.5]; returns [2, 1.5];
    #     A_t = T·w·A = 2·[1/4, 3/4]·1 = [0.5, 1.5]  (sum 2 = T·A)
    # τ2: importance [0, 0, 0] sums to 0 -> uniform w = 1/3; r = 0; A_t = 3·(1/3)·(−1) = −1
    recs = [ep("t1", 2.0, [1.0, 3.0]), ep("t2", 0.0, [0.0, 0.0, 0.0])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "redistribute", weights="importance", base="drgrpo")
    assert c.step_advantage.tolist() == [0.5, 1.5, -1.0, -1.0, -1.0]
    assert c.step_reward.tolist() == [0.5, 1.5, 0.0, 0.0, 0.0]
    assert c.step_return.tolist() == [2.0, 1.5, 0.0, 0.0, 0.0]
    assert c.episode_advantage.tolist() == [1.0, -1.0]
    assert c.diagnostics["fallback_episodes"] == 1 and c.diagnostics["zero_weight_steps"] == 0


def test_hand_worked_process_with_a_zero_weight_step():
    # grpo base, outcomes [1, 0]: A = ±(1/2)/(sqrt(1/2) + 1e-6) = ±a.
    # τ1: process [0.5, 0, 0.5] -> w = [1/2, 0, 1/2]; r = [0.5, 0, 0.5]; returns [1, 0.5, 0.5];
    #     A_t = 3·w·a = [1.5a, 0, 1.5a]
    # τ2: process [0.2] -> w = [1]; r = [0]; A_t = 1·1·(−a) = −a
    recs = [ep("t1", 1.0, [0.5, 0.0, 0.5], field="process"), ep("t2", 0.0, [0.2], field="process")]
    c = sc.estimate(sc.Rollouts.from_records(recs), "redistribute", weights="process")
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(c.step_advantage, [1.5 * a, 0.0, 1.5 * a, -a], rtol=1e-15)
    assert c.step_advantage[1] == 0.0
    assert c.step_reward.tolist() == [0.5, 0.0, 0.5, 0.0]
    assert c.step_return.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert c.diagnostics["zero_weight_steps"] == 1


def test_hand_worked_thirds_sum_exactly():
    # R = 1 over three equal weights: the float 1/3 thrice sums to 1.0000000000000002 or
    # 0.9999999999999999 depending on the order; the rounded shares C = [u·⌊(1/3)/u⌋,
    # u·⌊(2/3)/u⌋, 1] (u = ulp(1) = 2^-52) give r_t within 2^-52 of 1/3 and a sum of exactly 1
    recs = [ep("t1", 1.0, [1.0, 1.0, 1.0])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "redistribute")
    r = c.step_reward
    assert math.fsum(r) == 1.0 and r[0] + r[1] + r[2] == 1.0 and r[2] + r[1] + r[0] == 1.0
    np.testing.assert_allclose(r, [1 / 3] * 3, rtol=0, atol=2.0**-51)


# ---------------------------------------------------------------------- invariants
@FEW
@given(records=EXTRA)
def test_uniform_and_constant_weights_are_the_base_exactly(records):
    ro = sc.Rollouts.from_records(records)
    constant = ro.replace_columns(importance=np.repeat(np.arange(1.0, ro.n_episodes + 1) * 0.37, ro.step_counts))
    for base in BASES:
        want = sc.estimate(ro, base)
        for data, weights in ((ro, "uniform"), (constant, "importance")):
            c = sc.estimate(data, "redistribute", base=base, weights=weights)
            np.testing.assert_array_equal(c.step_advantage, want.step_advantage)
            np.testing.assert_array_equal(c.episode_advantage, want.episode_advantage)


@SETTINGS
@given(records=EXTRA, weights=st.sampled_from(["uniform", "importance", "process"]))
def test_rewards_sum_to_the_outcome_exactly(records, weights):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "redistribute", weights=weights)
    episode_sums_are_exact(ro, c)
    # and the step advantages sum to T_i · A_i
    sums = np.add.reduceat(c.step_advantage, ro.episode_offsets[:-1])
    close(sums, ro.step_counts * c.episode_advantage, "Σ_t A_t = T_i A_i")


@FEW
@given(
    outcome=st.one_of(st.floats(-1e150, 1e150), st.floats(-1e-300, 1e-300), st.sampled_from([0.0, -0.0, 5e-324, 1.0, 2.0**52])),
    xs=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 1e300), st.floats(0.0, 1e-300)), min_size=1, max_size=40),
)
def test_exact_sums_at_extreme_scales(outcome, xs):
    ro = sc.Rollouts.from_records([ep("a", outcome, xs)])
    # |R| <= 1e150: the base's diagnostics square R (ops.group_std), which overflows beyond 1e154
    c = sc.estimate(ro, "redistribute", weights="importance", base="drgrpo")
    episode_sums_are_exact(ro, c)
    assert np.all(np.isfinite(c.step_reward)) and np.all(c.step_reward * np.copysign(1.0, outcome) >= 0)
    assert np.all(c.step_reward[np.asarray(xs) == 0] == 0) or max(xs) == 0


@FEW
@given(records=EXTRA, c=st.one_of(st.sampled_from([2.0, 0.5, 2.0**-40, 2.0**30]), st.floats(1e-3, 1e3)))
def test_weights_are_scale_free(records, c):
    ro = sc.Rollouts.from_records(records)
    scaled = ro.replace_columns(importance=ro.column("importance") * c)
    a = sc.estimate(ro, "redistribute", weights="importance")
    b = sc.estimate(scaled, "redistribute", weights="importance")
    x = ro.column("importance")
    assume(np.all(x[x > 0] > 1e-300))  # c·x neither underflows nor loses bits to subnormals
    if math.frexp(c)[0] == 0.5:  # a power of two: bit for bit
        for field in ("step_advantage", "step_reward", "step_return"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    else:
        close(a.step_advantage, b.step_advantage, "step_advantage")
        bound = 2 * (4 * ro.step_counts[ro.step_episode] + 8) * np.spacing(np.abs(ro.outcome))[ro.step_episode]
        close_within(a.step_reward, b.step_reward, bound, "step_reward")


@SETTINGS
@given(records=EXTRA, params=st.sampled_from(GRID))
def test_zero_weight_steps_get_zero(records, params):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "redistribute", **params)
    weights = params.get("weights", "uniform")
    if weights == "uniform":
        return
    x = ro.column(weights)
    episode_total = np.add.reduceat(x, ro.episode_offsets[:-1])[ro.step_episode]
    zero = (x == 0) & (episode_total > 0)
    assert np.all(c.step_advantage[zero] == 0) and np.all(c.step_reward[zero] == 0)
    assert c.diagnostics["zero_weight_steps"] == int(zero.sum())


# ---------------------------------------------------------------------- errors
def test_negative_weight_names_the_field_and_step():
    recs = [ep("first", 1.0, [0.5, 1.0]), ep("second", 0.0, [1.0, -0.25, 2.0])]
    with pytest.raises(sc.RolloutsError, match=r"episode 1, step 1: field 'steps\[\]\.importance': is -0\.25 in episode 'second'") as err:
        sc.estimate(sc.Rollouts.from_records(recs), "redistribute", weights="importance")
    assert err.value.source == "<rollouts>" and err.value.field == "steps[].importance"
    # uniform weights never read the field
    assert sc.estimate(sc.Rollouts.from_records(recs), "redistribute").step_reward.shape == (5,)


def test_missing_column():
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5], field="process")])
    with pytest.raises(sc.MissingColumnError, match="weights='importance'.*'importance'"):
        sc.estimate(ro, "redistribute", weights="importance")
    assert sc.estimate(ro, "redistribute", weights="process").step_reward.tolist() == [1.0]


def test_bad_parameters():
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5])])
    with pytest.raises(sc.EstimatorError, match="epsilon"):
        sc.estimate(ro, "redistribute", epsilon=0.0)
    with pytest.raises(sc.EstimatorError, match="'uniform', 'importance', 'process'"):
        sc.estimate(ro, "redistribute", weights="value")
    with pytest.raises(sc.EstimatorError, match="base"):
        sc.estimate(ro, "redistribute", base="gae")
