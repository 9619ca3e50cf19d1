"""reward_fn: user reward functions by 'module:function' (the functions are in tests/reward_fns.py),
per episode and per step, add and replace, and every error: import, call, return value."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import rollout_records

import stepcredit as sc
from stepcredit.pipeline import Pipeline
from stepcredit.shaping import ShapingError, apply_transform, get_transform
from stepcredit.shaping.custom import load_reward_fn

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def records():
    return [
        {"episode_id": "e0", "group_id": "g", "outcome": 1.0, "rewards": {"fmt": 1.0, "len": 0.5},
         "steps": [{"action": "left", "reward": 0.5}, {"action": "right", "reward": 0.0}]},
        {"episode_id": "e1", "group_id": "g", "outcome": 0.0, "rewards": {"fmt": 0.0, "len": 0.25},
         "steps": [{"action": "right", "reward": 1.0}]},
        {"episode_id": "e2", "group_id": "h", "outcome": 2.0, "rewards": {"fmt": 1.0, "len": 0.0},
         "steps": [{"action": "left", "reward": 0.0}, {"action": "left", "reward": 0.0}, {"action": "up", "reward": -1.0}]},
    ]


def shaped(records, **params):
    return apply_transform(sc.Rollouts.from_records(records), "reward_fn", **params)


# ---------------------------------------------------------------------- episode level
def test_episode_add_and_replace(records):
    # n_steps = [2, 1, 3]: add -> [1 + 2, 0 + 1, 2 + 3]; replace -> [2, 1, 3]
    add = shaped(records, fn="reward_fns:n_steps")
    assert add.rollouts.outcome.tolist() == [3.0, 1.0, 5.0]
    assert add.diagnostics == {"calls": 3, "mean_value": 2.0, "added": 6.0}
    rep = shaped(records, fn="reward_fns:n_steps", mode="replace")
    assert rep.rollouts.outcome.tolist() == [2.0, 1.0, 3.0]
    assert rep.diagnostics["added"] == 3.0  # (2 − 1) + (1 − 0) + (3 − 2)
    np.testing.assert_array_equal(rep.rollouts.reward, sc.Rollouts.from_records(records).reward)


def test_episode_function_sees_the_record(records):
    # outcome_plus_bonus = outcome + 0.5 if the first action is "left": [1.5, 0, 2.5], replaced
    assert shaped(records, fn="reward_fns:outcome_plus_bonus", mode="replace").rollouts.outcome.tolist() == [1.5, 0.0, 2.5]
    # component_sum reads the "rewards" object: [1.5, 0.25, 1.0], added to [1, 0, 2]
    assert shaped(records, fn="reward_fns:component_sum").rollouts.outcome.tolist() == [2.5, 0.25, 3.0]


def test_bool_numpy_scalar_and_dotted_attribute_returns(records):
    assert shaped(records, fn="reward_fns:is_success", mode="replace").rollouts.outcome.tolist() == [1.0, 0.0, 1.0]
    assert shaped(records, fn="reward_fns:numpy_scalar", mode="replace").rollouts.outcome.tolist() == [0.5, 0.25, 0.75]
    assert shaped(records, fn=" reward_fns : Scorer.score ", mode="replace").rollouts.outcome.tolist() == [2.0] * 3


# ---------------------------------------------------------------------- step level
def test_step_add_and_replace(records):
    # step_index: [0, 1 | 0 | 0, 1, 2]; rewards [0.5, 0 | 1 | 0, 0, −1]
    add = shaped(records, fn="reward_fns:step_index", level="step")
    assert add.rollouts.reward.tolist() == [0.5, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert add.diagnostics == {"calls": 6, "mean_value": 4 / 6, "added": 4.0}
    rep = shaped(records, fn="reward_fns:step_index", level="step", mode="replace")
    assert rep.rollouts.reward.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 2.0]
    np.testing.assert_array_equal(rep.rollouts.outcome, [1.0, 0.0, 2.0])


def test_step_function_sees_the_whole_episode(records):
    # last_step_outcome: the outcome on each episode's last step: [0, 1 | 0 | 0, 0, 2]
    got = shaped(records, fn="reward_fns:last_step_outcome", level="step", mode="replace")
    assert got.rollouts.reward.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 2.0]
    # step_reward_doubled reads the step's own reward from the record: 2r, added: 3r
    got = shaped(records, fn="reward_fns:step_reward_doubled", level="step")
    assert got.rollouts.reward.tolist() == [1.5, 0.0, 3.0, 0.0, 0.0, -3.0]


@FEW
@given(recs=rollout_records(max_groups=3, max_group_size=4, max_steps=4))
def test_step_index_oracle_and_inputs_unmodified(recs):
    # loop oracle: r'_t = r_t + t (an absent reward is 0)
    before = copy.deepcopy(recs)
    ro = sc.Rollouts.from_records(recs)
    got = apply_transform(ro, "reward_fn", fn="reward_fns:step_index", level="step").rollouts.reward
    want = [(step.get("reward") or 0.0) + t for rec in recs for t, step in enumerate(rec["steps"])]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    out = apply_transform(ro, "reward_fn", fn="reward_fns:n_steps").rollouts.outcome
    np.testing.assert_array_equal(out, [r["outcome"] + len(r["steps"]) for r in recs])
    assert recs == before and ro.equals(sc.Rollouts.from_records(recs))


# ---------------------------------------------------------------------- errors from the function
@pytest.mark.parametrize(
    "fn, level, record, problem",
    [
        ("reward_fns:raises", "episode", "episode 'e0'", "raised ValueError: boom"),
        ("reward_fns:fails_on_second_step", "step", "episode 'e0', step 1", "raised KeyError"),
        ("reward_fns:returns_nan", "episode", "episode 'e0'", "returned nan, not a finite number"),
        ("reward_fns:returns_inf_at_step", "step", "episode 'e0', step 0", "returned inf"),
        ("reward_fns:returns_text", "episode", "episode 'e0'", "returned '1.0' of type str, not a number"),
        ("reward_fns:returns_none", "episode", "episode 'e0'", "returned None of type NoneType"),
    ],
)
def test_function_errors_are_rollouts_errors_naming_episode_and_step(records, fn, level, record, problem):
    with pytest.raises(sc.RolloutsError) as err:
        shaped(records, fn=fn, level=level)
    e = err.value
    assert (e.source, e.record, e.field) == ("<rollouts>", record, "reward_fn")
    assert problem in e.problem and fn in e.problem and e.fix


def test_the_user_exception_is_chained(records):
    with pytest.raises(sc.RolloutsError) as err:
        shaped(records, fn="reward_fns:raises")
    assert isinstance(err.value.__cause__, ValueError)


def test_step_errors_name_the_right_episode(records):
    records[0]["steps"] = records[0]["steps"][:1]  # e0 has one step: e2 is the first with a step 1
    with pytest.raises(sc.RolloutsError, match=r"episode 'e2', step 1: field 'reward_fn'"):
        shaped(records, fn="reward_fns:fails_on_second_step", level="step")


# ---------------------------------------------------------------------- errors from the name
@pytest.mark.parametrize(
    "fn, match",
    [
        ("", "parameter fn is required"),
        ("reward_fns", "must be written 'module:function'"),
        (":n_steps", "must be written 'module:function'"),
        ("reward_fns:", "must be written 'module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("reward_fns:nope", "module 'reward_fns' has no attribute 'nope'"),
        ("reward_fns:Scorer.nope", "has no attribute 'Scorer.nope'"),
        ("reward_fns:NOT_CALLABLE", "'NOT_CALLABLE' in module 'reward_fns' is a float, not a function"),
    ],
)
def test_bad_function_names_are_shaping_errors(records, fn, match):
    with pytest.raises(ShapingError, match=rf"transform 'reward_fn'.*{match}"):
        shaped(records, fn=fn)


def test_module_that_fails_to_import(tmp_path, monkeypatch, records):
    (tmp_path / "broken_rewards_xyz.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ShapingError, match=r"importing module 'broken_rewards_xyz' raised RuntimeError: half-written"):
        shaped(records, fn="broken_rewards_xyz:f")
    sys.modules.pop("broken_rewards_xyz", None)


def test_a_module_on_the_path_is_found(tmp_path, monkeypatch, records):
    (tmp_path / "llm_written_reward_xyz.py").write_text(
        "def reward(episode):\n    return 1.0 if episode['outcome'] > 0.5 else -1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert shaped(records, fn="llm_written_reward_xyz:reward", mode="replace").rollouts.outcome.tolist() == [1.0, -1.0, 1.0]
    assert load_reward_fn("llm_written_reward_xyz:reward")({"outcome": 0.0}) == -1.0
    sys.modules.pop("llm_written_reward_xyz", None)


@pytest.mark.parametrize("params, where", [({"level": "token"}, "level"), ({"mode": "mul"}, "mode"), ({"fn": 3}, "fn")])
def test_parameter_errors_name_the_transform_and_parameter(records, params, where):
    with pytest.raises(ShapingError, match=rf"transform 'reward_fn'.*{where}"):
        shaped(records, **{"fn": "reward_fns:n_steps", **params})


def test_writes_follow_the_level_and_the_pipeline_check(records):
    spec = get_transform("reward_fn")
    assert spec.requires == () and spec.writes == ("outcome",) and not spec.stateful
    assert spec.writes_for(spec.bind({"level": "step"})) == ("reward",)
    ro = sc.Rollouts.from_records(records)
    result = Pipeline.build("grpo", transforms=[("reward_fn", {"fn": "reward_fns:n_steps"})]).run(ro)
    assert result.rollouts.outcome.tolist() == [3.0, 1.0, 5.0]
