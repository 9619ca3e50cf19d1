"""composite: vectorised == loop oracle, hand-worked cases, schedule, penalties, multipliers,
state round trip, and every parameter and data error."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from checks import close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import shaping_composite as ref
from strategies import rollout_records

import stepcredit as sc
from stepcredit.pipeline import Pipeline, PipelineState
from stepcredit.shaping import ShapingError, apply_transform, get_transform
from stepcredit.shaping.composite import parse_constraints, parse_names, parse_weights, schedule_fraction

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALUES = st.one_of(st.sampled_from((0.0, 1.0, -1.0, 0.5)), st.floats(-10, 10, allow_nan=False))
FACTORS = st.one_of(st.sampled_from((0.0, 1.0, 0.5)), st.floats(0.0, 1.0))


@st.composite
def component_records(draw):
    """rollout_records with a ``rewards`` object {a, b, pen} per episode (pen in [0, 1])."""
    records = draw(rollout_records(max_groups=4, max_group_size=5, max_steps=3))
    for rec in records:
        rec["rewards"] = {"a": draw(VALUES), "b": draw(VALUES), "pen": draw(FACTORS)}
    return records


GRID = [
    # (transform params, oracle params)
    ({}, {"weights": {"outcome": 1.0}}),
    ({"components": "a:1.5, b:-0.5"}, {"weights": {"a": 1.5, "b": -0.5}}),
    ({"components": "outcome:1,a:0.25", "penalties": "pen"}, {"weights": {"outcome": 1.0, "a": 0.25}, "penalties": ["pen"]}),
    (
        {"components": "a:0.2,b:1", "start": "a:1,b:0", "schedule": "cosine", "total_steps": 7},
        {"weights": {"a": 0.2, "b": 1.0}, "start": {"a": 1.0, "b": 0.0}, "schedule": "cosine", "total_steps": 7},
    ),
    (
        {"components": "outcome:1,b:2", "start": "b:-1", "schedule": "linear", "total_steps": 3, "penalties": "pen"},
        {"weights": {"outcome": 1.0, "b": 2.0}, "start": {"b": -1.0}, "schedule": "linear", "total_steps": 3,
         "penalties": ["pen"]},
    ),
    (
        {"components": "outcome:1", "constraints": "a>=0.5,b<=-0.25,pen=0.5", "dual_lr": 0.3},
        {"weights": {"outcome": 1.0}, "constraints": {"a": (">=", 0.5), "b": ("<=", -0.25), "pen": ("=", 0.5)},
         "dual_lr": 0.3},
    ),
    (
        {"components": "a:1", "constraints": "a:0.1", "dual_init": 2.0},
        {"weights": {"a": 1.0}, "constraints": {"a": (">=", 0.1)}},
    ),
]


def run(records, params, state=None):
    return apply_transform(sc.Rollouts.from_records(records), "composite", state=state, **params)


def _state_for(params, oracle, step, mults):
    cons = oracle.get("constraints") or {}
    m = {k: (mults[i] if cons[k][0] == "=" else abs(mults[i])) for i, k in enumerate(cons)}
    return {"step": step, "multipliers": m}


@pytest.mark.parametrize("case", range(len(GRID)))
@SETTINGS
@given(
    records=component_records(),
    step=st.integers(0, 12),
    mults=st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3),
    fresh=st.booleans(),
)
def test_vectorised_equals_oracle(case, records, step, mults, fresh):
    params, oracle = GRID[case]
    state = None if fresh else _state_for(params, oracle, step, mults)
    got = run(records, params, state)
    init = params.get("dual_init", 0.0)
    o_step = 0 if state is None else state["step"]
    o_mult = {k: init for k in oracle.get("constraints") or {}} if state is None else state["multipliers"]
    want, new_mult = ref.composite(records, step=o_step, multipliers=o_mult, **oracle)
    close(got.rollouts.outcome, want, "outcome")
    assert got.state["step"] == o_step + 1
    assert got.state["multipliers"].keys() == new_mult.keys()
    close([got.state["multipliers"][k] for k in new_mult], list(new_mult.values()), "multipliers")
    ro = sc.Rollouts.from_records(records)  # steps untouched
    np.testing.assert_array_equal(got.rollouts.reward, ro.reward)


# ---------------------------------------------------------------------- hand-worked cases
def _eps(*rows):
    """rows of (outcome, {components}) -> records with one step each."""
    return [
        {"episode_id": f"e{i}", "group_id": "g", "outcome": o, "rewards": comps, "steps": [{"reward": 0.5}]}
        for i, (o, comps) in enumerate(rows)
    ]


def test_hand_worked_weighted_sum_with_a_penalty():
    # components outcome:1, fmt:0.5; penalty pen:
    #   e0: (1 + 0.5·1)·1   = 1.5
    #   e1: (0 + 0.5·1)·0.5 = 0.25
    #   e2: (1 + 0.5·0)·0   = 0
    recs = _eps((1.0, {"fmt": 1.0, "pen": 1.0}), (0.0, {"fmt": 1.0, "pen": 0.5}), (1.0, {"fmt": 0.0, "pen": 0.0}))
    out = run(recs, {"components": "outcome:1,fmt:0.5", "penalties": "pen"})
    assert out.rollouts.outcome.tolist() == [1.5, 0.25, 0.0]
    assert out.diagnostics["penalty_mean"] == 0.5
    assert out.rollouts.reward.tolist() == [0.5, 0.5, 0.5]


def test_hand_worked_linear_schedule():
    # components fmt:0.2, judge:1 from start fmt:1, judge:0 over 4 calls, linear; call τ = 1:
    #   ρ = 1/4; w_fmt = (3/4)·1 + (1/4)·0.2 = 0.8; w_judge = (3/4)·0 + (1/4)·1 = 0.25
    #   e0 (fmt 1, judge 0.5): 0.8 + 0.125 = 0.925;   e1 (fmt 0, judge 1): 0.25
    recs = _eps((0.0, {"fmt": 1.0, "judge": 0.5}), (0.0, {"fmt": 0.0, "judge": 1.0}))
    params = {"components": "fmt:0.2,judge:1", "start": "fmt:1,judge:0", "schedule": "linear", "total_steps": 4}
    out = run(recs, params, state={"step": 1, "multipliers": {}})
    np.testing.assert_allclose(out.rollouts.outcome, [0.925, 0.25], rtol=1e-15)
    assert out.diagnostics["weight.fmt"] == pytest.approx(0.8) and out.diagnostics["weight.judge"] == 0.25
    assert out.state == {"step": 2, "multipliers": {}}


def test_hand_worked_constraint_terms_and_dual_step():
    # outcome:1; constraint fmt >= 0.5 with μ = 2, η = 0.1:
    #   g = fmt − 0.5 = [0.5, −0.5, −0.5]; R' = R + 2g = [1 + 1, 0 − 1, 1 − 1] = [2, −1, 0]
    #   ḡ = −1/6; μ' = max(0, 2 − 0.1·(−1/6)) = 2 + 1/60
    recs = _eps((1.0, {"fmt": 1.0}), (0.0, {"fmt": 0.0}), (1.0, {"fmt": 0.0}))
    out = run(recs, {"constraints": "fmt>=0.5", "dual_lr": 0.1}, state={"step": 0, "multipliers": {"fmt": 2.0}})
    assert out.rollouts.outcome.tolist() == [2.0, -1.0, 0.0]
    assert out.state["multipliers"]["fmt"] == pytest.approx(2 + 1 / 60, rel=1e-15)
    assert out.diagnostics["multiplier.fmt"] == 2.0
    assert out.diagnostics["constraint_mean.fmt"] == pytest.approx(-1 / 6)


# ---------------------------------------------------------------------- schedule
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_endpoints_and_monotone(schedule):
    T = 9
    rho = [schedule_fraction(t, T, schedule) for t in range(T + 5)]
    assert rho[0] == 0.0 and all(r == 1.0 for r in rho[T:])
    assert all(b >= a for a, b in zip(rho, rho[1:]))
    assert all(0.0 <= r <= 1.0 for r in rho)
    if schedule == "cosine":
        assert rho[1] < 1 / T and abs(schedule_fraction(1, 2, schedule) - 0.5) < 1e-15  # slow start, midpoint 1/2
    assert schedule_fraction(0, 1, "constant") == 1.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_weights_move_from_start_to_final_across_calls(schedule):
    recs = _eps((1.0, {"fmt": 1.0, "judge": 0.0}), (0.0, {"fmt": 0.0, "judge": 1.0}))
    params = {"components": "fmt:0.2,judge:1,outcome:3", "start": "fmt:1,judge:0",
              "schedule": schedule, "total_steps": 5}
    state, w_fmt, w_judge = None, [], []
    for _ in range(8):
        out = run(recs, params, state)
        state = json.loads(json.dumps(out.state))
        w_fmt.append(out.diagnostics["weight.fmt"])
        w_judge.append(out.diagnostics["weight.judge"])
        assert out.diagnostics["weight.outcome"] == 3.0  # not in start: constant
    assert w_fmt[0] == 1.0 and w_judge[0] == 0.0
    assert w_fmt[5:] == [0.2] * 3 and w_judge[5:] == [1.0] * 3
    assert all(b <= a for a, b in zip(w_fmt, w_fmt[1:])) and all(b >= a for a, b in zip(w_judge, w_judge[1:]))
    assert state["step"] == 8


# ---------------------------------------------------------------------- penalties
@FEW
@given(records=component_records())
def test_penalties_multiply(records):
    base = run(records, {"components": "outcome:1,a:0.5"}).rollouts.outcome
    pen = np.array([r["rewards"]["pen"] for r in records])
    got = run(records, {"components": "outcome:1,a:0.5", "penalties": "pen"}).rollouts.outcome
    np.testing.assert_array_equal(got, pen * base)


def test_two_penalties_multiply_and_one_is_neutral():
    recs = _eps((2.0, {"p": 0.5, "q": 0.25}), (4.0, {"p": 1.0, "q": 1.0}))
    got = run(recs, {"penalties": "p,q"}).rollouts.outcome
    assert got.tolist() == [2.0 * 0.5 * 0.25, 4.0]


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_penalty_outside_unit_interval_is_a_data_error(bad):
    recs = _eps((1.0, {"p": 1.0}), (1.0, {"p": bad}))
    with pytest.raises(sc.RolloutsError) as err:
        run(recs, {"penalties": "p"})
    assert err.value.record == "episode 'e1'" and err.value.field == "rewards.p"
    assert "outside [0, 1]" in err.value.problem and "transform 'composite'" in err.value.problem


# ---------------------------------------------------------------------- multipliers
def test_multiplier_grows_while_below_then_shrinks_to_zero():
    low = _eps((0.0, {"fmt": 0.2}), (0.0, {"fmt": 0.4}))  # mean 0.3 < θ = 0.8
    high = _eps((0.0, {"fmt": 1.0}), (0.0, {"fmt": 1.0}))  # mean 1.0 > θ
    params = {"components": "outcome:1", "constraints": "fmt>=0.8", "dual_lr": 0.5}
    state, mus = None, []
    for _ in range(4):
        out = run(low, params, state)
        state = out.state
        mus.append(state["multipliers"]["fmt"])
    np.testing.assert_allclose(mus, [0.25, 0.5, 0.75, 1.0], rtol=1e-12)  # + η(θ − c̄) = 0.25 per call
    for _ in range(12):
        out = run(high, params, state)
        assert out.state["multipliers"]["fmt"] <= state["multipliers"]["fmt"]
        state = out.state
    assert state["multipliers"]["fmt"] == 0.0  # projected at 0, stays there
    # while μ > 0 the constrained component is rewarded: below θ costs, above θ pays
    out = run(low, params, {"step": 0, "multipliers": {"fmt": 1.0}})
    np.testing.assert_allclose(out.rollouts.outcome, [0.2 - 0.8, 0.4 - 0.8], rtol=1e-12)


def test_upper_bound_constraint_mirrors():
    over = _eps((0.0, {"len": 0.9}), (0.0, {"len": 0.7}))  # mean 0.8 > θ = 0.5: violated
    params = {"constraints": "len<=0.5", "dual_lr": 1.0}
    out = run(over, params)
    assert out.state["multipliers"]["len"] == pytest.approx(0.3)
    out = run(over, params, out.state)
    np.testing.assert_allclose(out.rollouts.outcome, [0.3 * (0.5 - 0.9), 0.3 * (0.5 - 0.7)], rtol=1e-12)
    assert out.state["multipliers"]["len"] == pytest.approx(0.6)
    under = _eps((0.0, {"len": 0.0}), (0.0, {"len": 0.0}))  # mean 0 < θ: μ − 0.5 per call, floored at 0
    once = run(under, params, out.state).state
    assert once["multipliers"]["len"] == pytest.approx(0.1)
    assert run(under, params, once).state["multipliers"]["len"] == 0.0


def test_equality_constraint_multiplier_may_turn_negative():
    above = _eps((0.0, {"c": 1.0}))
    out = run(above, {"constraints": "c=0.5", "dual_lr": 1.0})
    assert out.state["multipliers"]["c"] == -0.5


def test_zero_learning_rate_keeps_the_multipliers():
    recs = _eps((0.0, {"c": 0.0}))
    out = run(recs, {"constraints": "c>=1", "dual_lr": 0.0, "dual_init": 0.7})
    assert out.state["multipliers"] == {"c": 0.7}


# ---------------------------------------------------------------------- state
@FEW
@given(records=component_records())
def test_state_json_round_trip(records):
    params = {"components": "a:0.2,b:1", "start": "a:1", "schedule": "cosine", "total_steps": 3,
              "constraints": "a>=0,b<=1"}
    first = run(records, params)
    text = json.dumps(first.state, allow_nan=False)
    again = run(records, params, json.loads(text))
    same = run(records, params, first.state)
    np.testing.assert_array_equal(again.rollouts.outcome, same.rollouts.outcome)
    assert again.state == same.state


def test_pipeline_state_round_trip_through_json():
    recs = _eps((1.0, {"fmt": 0.0}), (0.0, {"fmt": 1.0}), (1.0, {"fmt": 0.0}))
    ro = sc.Rollouts.from_records(recs)
    pipe = Pipeline.build("grpo", transforms=[("composite", {"constraints": "fmt>=0.9", "dual_lr": 1.0})])
    r1 = pipe.run(ro)
    st1 = PipelineState.from_json(r1.state.to_json())
    r2 = pipe.run(ro, st1)
    r2b = pipe.run(ro, r1.state)
    np.testing.assert_array_equal(r2.credit.step_advantage, r2b.credit.step_advantage)
    assert r2.state.stages[0]["state"]["step"] == 2
    assert pipe.initial_state().stages[0]["name"] == "composite"


@pytest.mark.parametrize(
    "state, match",
    [
        ({"step": -1, "multipliers": {"c": 0.0}}, "step"),
        ({"step": 1.5, "multipliers": {"c": 0.0}}, "step"),
        ({"multipliers": {"c": 0.0}}, "step"),
        ({"step": 0, "multipliers": {}}, "other constraints"),
        ({"step": 0, "multipliers": {"d": 0.0}}, "other constraints"),
        ({"step": 0, "multipliers": {"c": -1.0}}, "multiplier"),
        ({"step": 0, "multipliers": {"c": "x"}}, "multiplier"),
        ([1, 2], "object"),
    ],
)
def test_invalid_state_is_refused(state, match):
    recs = _eps((0.0, {"c": 0.0}))
    with pytest.raises(ShapingError, match=f"transform 'composite'.*{match}"):
        run(recs, {"constraints": "c>=1"}, state)


# ---------------------------------------------------------------------- parameters and fields
@pytest.mark.parametrize(
    "params, where",
    [
        ({"components": "outcome=1"}, "components"),
        ({"components": "outcome:1,"}, "components"),
        ({"components": "outcome:1:2"}, "components"),
        ({"components": "outcome:x"}, "components"),
        ({"components": "outcome:nan"}, "components"),
        ({"components": "outcome:1,outcome:2"}, "components"),
        ({"components": "rewards.fmt:1"}, "components"),
        ({"components": "two words:1"}, "components"),
        ({"components": ""}, "components"),
        ({"penalties": "a,,b"}, "penalties"),
        ({"penalties": "a,a"}, "penalties"),
        ({"constraints": "a>0.5"}, "constraints"),
        ({"constraints": "a>=x"}, "constraints"),
        ({"constraints": "a>=1,a<=2"}, "constraints"),
        ({"constraints": "a"}, "constraints"),
        ({"start": "outcome:1"}, "start"),
        ({"start": "nope:1", "schedule": "linear", "total_steps": 2}, "start"),
        ({"schedule": "linear"}, "total_steps"),
        ({"schedule": "cosine", "total_steps": 0}, "total_steps"),
        ({"dual_lr": -0.1}, "dual_lr"),
        ({"dual_init": -1.0}, "dual_init"),
        ({"schedule": "step"}, "schedule"),
        ({"total_steps": 1.5}, "total_steps"),
        ({"total_steps": -1}, "total_steps"),
        ({"nope": 1}, "nope"),
    ],
)
def test_parameter_errors_name_the_transform_and_parameter(params, where):
    recs = _eps((1.0, {"a": 0.5, "b": 0.5}))
    with pytest.raises(ShapingError, match=rf"transform 'composite'.*{where}"):
        run(recs, params)


def test_unknown_component_is_a_missing_field_naming_transform_and_component():
    recs = _eps((1.0, {"fmt": 1.0}))
    for params in ({"components": "outcome:1,nope:2"}, {"penalties": "nope"}, {"constraints": "nope>=1"}):
        with pytest.raises(sc.MissingColumnError) as err:
            run(recs, params)
        assert err.value.column == "rewards.nope" and "transform 'composite'" in str(err.value)
        pipe = Pipeline.build("grpo", transforms=[("composite", params)])
        with pytest.raises(sc.MissingColumnError, match=r"transform 'composite' \(#1\).*rewards\.nope"):
            pipe.check(sc.Rollouts.from_records(recs))


def test_requires_and_writes_follow_the_parameters():
    spec = get_transform("composite")
    assert spec.requires == () and spec.writes == ("outcome",) and spec.stateful
    p = spec.bind({"components": "outcome:1,fmt:0.5", "penalties": "pen", "constraints": "fmt>=1,len<=2"})
    assert spec.requires_for(p) == ("rewards.fmt", "rewards.pen", "rewards.len")


def test_parsers():
    assert parse_weights(" a : 1 , b:-2.5e-1") == {"a": 1.0, "b": -0.25}
    assert parse_names("x, y") == ["x", "y"] and parse_names(" ") == []
    assert parse_constraints("a:1, b<=2,c=-1 ,d>= 0.5") == {
        "a": (">=", 1.0), "b": ("<=", 2.0), "c": ("=", -1.0), "d": (">=", 0.5)}


# ---------------------------------------------------------------------- invariants
@FEW
@given(records=component_records(), data=st.data())
def test_default_is_identity_and_inputs_unmodified_and_deterministic(records, data):
    ro = sc.Rollouts.from_records(records)
    before = copy.deepcopy(records)
    out = apply_transform(ro, "composite")
    np.testing.assert_array_equal(out.rollouts.outcome, ro.outcome)
    params = {"components": "outcome:1,a:0.5", "penalties": "pen", "constraints": "b>=0"}
    a = apply_transform(ro, "composite", **params)
    b = apply_transform(ro, "composite", **params)
    np.testing.assert_array_equal(a.rollouts.outcome, b.rollouts.outcome)
    assert a.state == b.state and records == before
    assert ro.equals(sc.Rollouts.from_records(records))


@FEW
@given(records=component_records(), data=st.data())
def test_episode_permutation_permutes_the_outcome(records, data):
    params = {"components": "outcome:1,a:0.5", "penalties": "pen", "constraints": "b>=0"}
    perm = data.draw(st.permutations(range(len(records))))
    got = run(records, params, {"step": 0, "multipliers": {"b": 0.5}})
    permuted = run([records[i] for i in perm], params, {"step": 0, "multipliers": {"b": 0.5}})
    np.testing.assert_array_equal(permuted.rollouts.outcome, got.rollouts.outcome[list(perm)])
    assert math.isclose(permuted.state["multipliers"]["b"], got.state["multipliers"]["b"], rel_tol=1e-12, abs_tol=1e-12)
