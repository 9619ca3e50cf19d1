"""oprl: vectorised == loop oracle, hand-worked cases, singletons and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from checks import assert_grid_covers, close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import oprl as ref_oprl
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.estimators.oprl import oprl_step_advantage

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = [
    {},
    {"baseline": "first_steps"},
    {"singleton": "zero", "w": 2.5},
    {"baseline": "first_steps", "singleton": "zero", "w": -0.5},
    {"w": 0.0},
]
EXTRA = rollout_records(extra=True, max_steps=8)


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "oprl", **params)
    want = ref_oprl.oprl(records, **params)
    close(got.step_advantage, want.step_advantage, "step_advantage")
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    np.testing.assert_array_equal(got.step_reward, want.step_reward)


def ep(eid, outcome, rs, group="g"):
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": [{"process": r} for r in rs]}


def test_grid_covers_every_choice():
    assert_grid_covers("oprl", GRID)


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
RECS = [ep("a", 1.0, [0.1, 0.3]), ep("b", 0.0, [-0.2]), ep("c", 1.0, [0.5], group="h")]


def test_hand_worked_group_steps():
    # group g: K = 2, R = [1, 0] -> A^E = 2·(1 − 0.5) = [1, −1]
    # b_g = mean of every step's r = (0.1 + 0.3 − 0.2)/3 = 0.2/3
    # A^S = 2·(r − b) = [0.2 − 0.4/3, 0.6 − 0.4/3, −0.4 − 0.4/3] = [0.2/3, 1.4/3, −1.6/3]
    # A = A^E + A^S = [1 + 0.2/3, 1 + 1.4/3, −1 − 1.6/3]
    # group h: singleton -> A^E = R = 1 ("raw"), A^S = 0 -> A = 1
    c = sc.estimate(sc.Rollouts.from_records(RECS), "oprl")
    np.testing.assert_allclose(c.step_advantage, [1 + 0.2 / 3, 1 + 1.4 / 3, -1 - 1.6 / 3, 1.0], rtol=1e-15)
    assert c.episode_advantage.tolist() == [1.0, -1.0, 1.0]
    assert c.step_reward.tolist() == [0.1, 0.3, -0.2, 0.5]
    assert c.diagnostics["singleton_groups"] == 1
    np.testing.assert_allclose(c.diagnostics["mean_abs_process"], 1.1 / 4, rtol=1e-15)


def test_hand_worked_first_steps_and_weight():
    # first steps of g: 0.1 (a) and −0.2 (b): b_g = −0.05; A^S = 2·(r + 0.05) = [0.3, 0.7, −0.3]
    # w = 0.5: A = A^E + 0.5·A^S = [1.15, 1.35, −1.15]; singleton h: A^E = 0 with singleton="zero"
    c = sc.estimate(sc.Rollouts.from_records(RECS), "oprl", baseline="first_steps", w=0.5, singleton="zero")
    np.testing.assert_allclose(c.step_advantage, [1.15, 1.35, -1.15, 0.0], rtol=1e-14)
    assert c.episode_advantage.tolist() == [1.0, -1.0, 0.0]


def test_singleton_groups_follow_rloo_and_get_no_step_term():
    recs = [ep("a", 1.0, [0.7, -3.0], group="x"), ep("b", 0.0, [2.0], group="y")]
    ro = sc.Rollouts.from_records(recs)
    for singleton in ("raw", "zero"):
        for baseline in ("group_steps", "first_steps"):
            c = sc.estimate(ro, "oprl", singleton=singleton, baseline=baseline, w=3.0)
            want = sc.estimate(ro, "rloo", singleton=singleton)
            np.testing.assert_array_equal(c.step_advantage, want.step_advantage)
            np.testing.assert_array_equal(c.episode_advantage, want.episode_advantage)
            assert np.all(np.isfinite(c.step_advantage))
    assert oprl_step_advantage(ro, ro.column("process")).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------- invariants
@FEW
@given(records=EXTRA, singleton=st.sampled_from(["raw", "zero"]), baseline=st.sampled_from(["group_steps", "first_steps"]))
def test_w_zero_and_constant_rewards_reduce_to_rloo(records, singleton, baseline):
    ro = sc.Rollouts.from_records(records)
    want = sc.estimate(ro, "rloo", singleton=singleton)
    got = sc.estimate(ro, "oprl", w=0.0, singleton=singleton, baseline=baseline)
    np.testing.assert_array_equal(got.step_advantage, want.step_advantage)
    # a reward that is constant within each group has A^S = 0 exactly (r − r_ref = 0)
    const = ro.replace_columns(process=(0.1 + ro.episode_group * 0.37)[ro.step_episode])
    got = sc.estimate(const, "oprl", w=5.0, singleton=singleton, baseline=baseline)
    np.testing.assert_array_equal(got.step_advantage, want.step_advantage)


@FEW
@given(records=EXTRA, shift=st.sampled_from([1.0, -0.75, 3.0]))
def test_step_term_centred_and_shift_invariant(records, shift):
    ro = sc.Rollouts.from_records(records)
    r = ro.column("process")
    codes, K = ro.episode_group, np.bincount(ro.episode_group)
    multi = K[codes] > 1
    step_multi = multi[ro.step_episode]
    a = oprl_step_advantage(ro, r, "group_steps")
    # Σ of A^S over a group's steps is 0 (the baseline is their mean)
    sums = np.bincount(codes[ro.step_episode], weights=a, minlength=K.size)
    np.testing.assert_allclose(sums, 0.0, atol=1e-12 * (1 + ro.n_steps))
    # first steps: Σ of A^S over the group's first steps is 0
    f = oprl_step_advantage(ro, r, "first_steps")[ro.episode_offsets[:-1]]
    np.testing.assert_allclose(np.bincount(codes, weights=f, minlength=K.size), 0.0, atol=1e-12 * (1 + ro.n_episodes))
    # adding a constant to every reward changes nothing
    for baseline in ("group_steps", "first_steps"):
        x = oprl_step_advantage(ro, r, baseline)
        y = oprl_step_advantage(ro, r + shift, baseline)
        np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12 * (1 + abs(shift)) * 8)
        assert np.all(x[~step_multi] == 0)


def test_permuting_the_steps_of_a_group_changes_only_the_first_steps_baseline():
    # same rewards in another order within episode a: group_steps sees the same mean, first_steps does not
    recs2 = [ep("a", 1.0, [0.3, 0.1]), ep("b", 0.0, [-0.2]), ep("c", 1.0, [0.5], group="h")]
    a1 = sc.estimate(sc.Rollouts.from_records(RECS), "oprl").step_advantage
    a2 = sc.estimate(sc.Rollouts.from_records(recs2), "oprl").step_advantage
    np.testing.assert_allclose(a2[[1, 0, 2, 3]], a1, rtol=1e-15)
    f1 = sc.estimate(sc.Rollouts.from_records(RECS), "oprl", baseline="first_steps").step_advantage
    f2 = sc.estimate(sc.Rollouts.from_records(recs2), "oprl", baseline="first_steps").step_advantage
    assert not np.allclose(f2[[1, 0, 2, 3]], f1)


# ---------------------------------------------------------------------- errors
def test_missing_process_and_bad_w():
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{}]}])
    with pytest.raises(sc.MissingColumnError, match="estimator 'oprl'.*'process'"):
        sc.estimate(ro, "oprl")
    ro = sc.Rollouts.from_records(RECS)
    with pytest.raises(sc.EstimatorError, match="w=nan"):
        sc.estimate(ro, "oprl", w=float("nan"))
    with pytest.raises(sc.EstimatorError, match="baseline"):
        sc.estimate(ro, "oprl", baseline="all")


def test_registered_with_citation():
    spec = sc.get_estimator("oprl")
    assert spec.requires == ("process",) and spec.family == "implicit" and "2509.19199" in spec.paper
    assert not spec.uses_step_reward({})
