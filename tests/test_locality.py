"""stepcredit.locality: every built-in stage is classified; the filters it calls group-local are
(split-and-concatenate equals one run); the stages it calls batch-dependent really are (so the
dataset backend does not refuse pipelines it could run). The estimators' and transforms' "local"
classifications are checked in test_estimators_properties and test_shaping_properties."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import rollout_records

import stepcredit as sc
from stepcredit.locality import (
    batch_dependence,
    classified,
    declare_group_local,
    is_group_local,
    stage_dependence,
)

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_built_in_stage_is_classified():
    registered = (
        {("estimator", s.name) for s in sc.list_estimators()}
        | {("transform", s.name) for s in sc.list_transforms()}
        | {("filter", s.name) for s in sc.list_filters()}
    )
    missing = registered - classified()
    assert not missing, f"say in stepcredit.locality whether {sorted(missing)} are group-local"


def _split_run(pipe: sc.Pipeline, ro: sc.Rollouts, part_of_group: np.ndarray):
    """Run ``pipe`` on each part (whole groups), scatter the credit back to the episode order."""
    step_adv = np.full(ro.n_steps, np.nan)
    weight = np.full(ro.n_episodes, np.nan)
    for part in np.unique(part_of_group):
        eps = np.flatnonzero(part_of_group[ro.episode_group] == part)
        credit = pipe.run(ro.take(eps)).credit
        steps = np.concatenate([np.arange(ro.episode_offsets[i], ro.episode_offsets[i + 1]) for i in eps])
        step_adv[steps] = credit.step_advantage
        weight[eps] = 1.0 if credit.episode_weight is None else credit.episode_weight
    return step_adv, weight


FILTER_CASES = [
    ("zero_variance", {}),
    ("zero_variance", {"action": "flag", "singletons": "collapsed"}),
    ("prof", {"remove": 2}),
    ("prof", {"remove": 1, "score": "paper", "variant": "correct", "seed": 3}),
    ("replay", {}),
]


@pytest.mark.parametrize(("name", "params"), FILTER_CASES, ids=[f"{n}-{p}" for n, p in FILTER_CASES])
@pytest.mark.parametrize("refit", [True, False])
@FEW
@given(records=rollout_records(extra=True, max_steps=4, huge=False), data=st.data())
def test_group_local_filters_split_by_groups_equal_whole(name, params, refit, records, data):
    pipe = sc.Pipeline.build("grpo", filters=[(name, params)], refit=refit)
    assert is_group_local(pipe)
    ro = sc.Rollouts.from_records(records)
    whole = pipe.run(ro).credit
    part_of = np.array(data.draw(st.lists(st.integers(0, 2), min_size=ro.n_groups, max_size=ro.n_groups)))
    step_adv, weight = _split_run(pipe, ro, part_of)
    np.testing.assert_array_equal(step_adv, whole.step_advantage)
    np.testing.assert_array_equal(weight, np.ones(ro.n_episodes) if whole.episode_weight is None else whole.episode_weight)


def _two_group_rollouts() -> sc.Rollouts:
    rng = np.random.default_rng(0)
    records = []
    for g in range(4):
        for i in range(4):
            n = 2 + (i + g) % 3
            records.append({
                "episode_id": f"g{g}e{i}", "group_id": f"g{g}", "outcome": float(rng.normal(g, 1 + g)),
                "steps": [{"state": f"s{t}-{g % 3}", "value": float(rng.normal()), "tokens": int(rng.integers(1, 40)),
                           "reward": float(rng.normal())} for t in range(n)],
            })
    return sc.Rollouts.from_records(records)


@pytest.mark.parametrize(
    ("pipe", "fragment"),
    [
        (sc.Pipeline.build("grpo", params={"scale": "batch"}), "batch's standard deviation"),
        (sc.Pipeline.build("reinforce_pp"), "whole batch"),
        (sc.Pipeline.build("gae", params={"whiten": True}), "whitens"),
        (sc.Pipeline.build("spa"), "scope='group'"),
        (sc.Pipeline.build("grpo", transforms=[("laser_d", {"min_length": 2, "length_step": 2, "update_every": 1})]),
         "length targets"),
    ],
    ids=["grpo-batch", "reinforce_pp", "gae-whiten", "spa-global", "laser_d"],
)
def test_batch_dependent_stages_are_named_and_really_depend_on_the_batch(pipe, fragment):
    problems = batch_dependence(pipe)
    assert len(problems) == 1 and fragment in problems[0], problems
    assert not is_group_local(pipe)
    ro = _two_group_rollouts()
    whole = pipe.run(ro).credit.step_advantage
    split, _ = _split_run(pipe, ro, np.arange(ro.n_groups) % 2)
    assert not np.allclose(split, whole), "classified batch-dependent, but splitting the batch changes nothing"


def test_the_local_choices_of_the_same_stages_are_local():
    for pipe in (
        sc.Pipeline.build("grpo", params={"scale": "none"}),
        sc.Pipeline.build("gae"),
        sc.Pipeline.build("spa", params={"scope": "group"}),
        sc.Pipeline.build("spa", params={"variant": "code"}),
    ):
        assert batch_dependence(pipe) == [], pipe.describe()


def test_user_stages_are_batch_dependent_until_declared(monkeypatch):
    from stepcredit import locality
    from stepcredit.estimators import registry

    user = dataclasses.replace(sc.get_estimator("grpo"), name="_user_grpo")
    monkeypatch.setitem(registry._REGISTRY, "_user_grpo", user)
    monkeypatch.setattr(locality, "_RULES", dict(locality._RULES))  # the declaration is undone after the test
    pipe = sc.Pipeline.build("_user_grpo")
    (reason,) = batch_dependence(pipe)
    assert "not classified" in reason and "declare_group_local" in reason
    declare_group_local("estimator", "_user_grpo", lambda p: "scale='batch'" if p["scale"] == "batch" else None)
    assert is_group_local(pipe)
    assert stage_dependence("estimator", "_user_grpo", {"scale": "batch"}) == "scale='batch'"
    declare_group_local("estimator", "_user_grpo")
    assert stage_dependence("estimator", "_user_grpo", {"scale": "batch"}) is None
    with pytest.raises(ValueError, match="kind must be"):
        declare_group_local("stage", "x")
