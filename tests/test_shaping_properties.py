"""Registry-wide properties of every reward transform (the shaping twin of
test_estimators_properties): deterministic, inputs unmodified, the same episodes and steps,
only the declared fields written, finite output, and episode permutation permutes the output.

Each transform runs on hypothesis rollouts that carry the fields it needs, with a few parameter
sets; a new transform must be added to CASES (a test fails otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stepcredit as sc
from stepcredit.locality import stage_dependence
from strategies import rollout_records

# transform -> (strategy keyword arguments, parameter sets)
CASES: dict[str, tuple[dict, list[dict]]] = {
    "gated": ({"extra": True}, [{}, {"threshold": 0.5, "target": "outcome"}, {"source": "process"}]),
    "prm_clip": ({"extra": True}, [{}, {"target": "outcome", "eta": 0.8}, {"target": "process"}]),
    "prm_delta": ({"extra": True}, [{}, {"target": "outcome", "last_step": "keep"}, {"target": "process"}]),
    "prm_min": ({"extra": True}, [{}, {"mode": "replace", "weight": 2.0}]),
    "prm_mean": ({"extra": True}, [{}, {"mode": "replace"}]),
    "prm_last": ({"extra": True}, [{}, {"mode": "replace"}]),
    "renorm": ({"extra": True, "unit_outcome": True}, [{}, {"form": "separate"}, {"target": "outcome"}]),
    "par": ({}, [{}, {"reference": "group_mean", "k": 3.0}]),
    "laser": ({"tokens": True}, [{"target_length": 20}, {"target_length": 10, "kind": "hybrid", "explore": True}]),
    "laser_d": ({"tokens": True}, [{}, {"monitor": "all", "min_length": 2, "length_step": 3}]),
    "composite": ({}, [{}, {"components": "outcome:0.5", "schedule": "linear", "start": "outcome:2", "total_steps": 4}]),
    "tool_call": ({"action": True, "reference": True, "tool_calls": True}, [{}, {"target": "outcome"}]),
    "reward_fn": ({}, [{"fn": "reward_fns:n_steps"}, {"fn": "reward_fns:step_index", "level": "step"}]),
}
TOOL_CALLS = (
    "",
    "[]",
    '{"name": "search", "arguments": {"q": "x"}}',
    '{"name": "search", "arguments": {"q": "y", "k": 2}}',
    '[{"name": "calc", "arguments": {"a": 1}}, {"name": "search", "arguments": {"q": "x"}}]',
)
CASE_LIST = [(name, params) for name, (_, plist) in CASES.items() for params in plist]


def test_every_transform_has_cases():
    assert set(CASES) == {s.name for s in sc.list_transforms()}


@st.composite
def records_for(draw, name: str):
    kwargs = dict(CASES[name][0])
    unit = kwargs.pop("unit_outcome", False)
    calls = kwargs.pop("tool_calls", False)
    # small groups: par's references are the first `maxref` others in input order, so only
    # groups of at most maxref + 1 episodes are order-free
    records = draw(rollout_records(max_groups=4, huge=False, **kwargs))
    if unit:  # renorm takes outcomes in [0, 1]
        for rec in records:
            rec["outcome"] = min(1.0, max(0.0, rec["outcome"]))
    if calls:  # tool_call: well-formed references (a malformed one is a data error), any action
        for rec in records:
            for step in rec["steps"]:
                step["reference"] = draw(st.sampled_from(TOOL_CALLS[1:]))
                step["action"] = draw(st.sampled_from(TOOL_CALLS + ("not json", "{")))
    return records


def _snapshot(ro: sc.Rollouts) -> dict:
    return {"outcome": ro.outcome.copy(), **{k: v.copy() for k, v in ro.columns.items()},
            **{f"key:{k}": v.copy() for k, v in ro.keys.items()}}


def _run(ro, name, params):
    return sc.apply_transform(ro, name, **params)


@pytest.mark.parametrize(("name", "params"), CASE_LIST, ids=[f"{n}-{p}" for n, p in CASE_LIST])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_transform_contract(name, params, data):
    records = data.draw(records_for(name))
    ro = sc.Rollouts.from_records(records)
    before = _snapshot(ro)
    a = _run(ro, name, params)
    b = _run(ro, name, params)
    # deterministic, input untouched
    assert a.rollouts.equals(b.rollouts) and a.diagnostics == b.diagnostics and a.state == b.state
    after = _snapshot(ro)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    out = a.rollouts
    # the same episodes and steps
    assert out.episode_id.equals(ro.episode_id) and out.group_id.equals(ro.group_id)
    assert np.array_equal(out.episode_offsets, ro.episode_offsets)
    for k in ro.keys:
        assert np.array_equal(out.keys[k], ro.keys[k])
    # only the declared fields change
    writes = set(sc.get_transform(name).writes_for(sc.get_transform(name).bind(params)))
    if "outcome" not in writes:
        assert np.array_equal(out.outcome, ro.outcome)
    for col in set(ro.columns) | set(out.columns):
        if col not in writes:
            assert np.array_equal(out.reward if col == "reward" else out.columns[col],
                                  ro.reward if col == "reward" else ro.columns[col]), col
    # finite
    assert np.all(np.isfinite(out.outcome))
    assert all(np.all(np.isfinite(v)) for v in out.columns.values())


@pytest.mark.parametrize(("name", "params"), CASE_LIST, ids=[f"{n}-{p}" for n, p in CASE_LIST])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_episode_permutation_permutes_the_output(name, params, data):
    records = data.draw(records_for(name))
    perm = data.draw(st.permutations(range(len(records))))
    ro = sc.Rollouts.from_records(records)
    whole = _run(ro, name, params).rollouts
    permuted = _run(sc.Rollouts.from_records([records[i] for i in perm]), name, params).rollouts
    scale = max(1.0, float(np.max(np.abs(ro.outcome))))
    np.testing.assert_allclose(permuted.outcome, whole.outcome[list(perm)], rtol=1e-9, atol=1e-12 * scale)
    steps = np.concatenate([np.arange(ro.episode_offsets[i], ro.episode_offsets[i + 1]) for i in perm])
    for col in whole.columns:
        np.testing.assert_allclose(
            permuted.reward if col == "reward" else permuted.columns[col],
            (whole.reward if col == "reward" else whole.columns[col])[steps], rtol=1e-9, atol=1e-12 * scale,
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_parameters_are_refused(name):
    ro = sc.read_rollouts(sc.__file__.replace("src/stepcredit/__init__.py", "examples/rollouts.jsonl"))
    with pytest.raises(sc.ShapingError, match=f"transform '{name}' has no parameter 'colour'"):
        sc.apply_transform(ro, name, colour=1)


def _group_local(name, params) -> bool:
    return stage_dependence("transform", name, sc.get_transform(name).bind(params)) is None


LOCAL_CASE_LIST = [(n, p) for n, p in CASE_LIST if _group_local(n, p)]


@pytest.mark.parametrize(("name", "params"), LOCAL_CASE_LIST, ids=[f"{n}-{p}" for n, p in LOCAL_CASE_LIST])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_group_local_transforms_split_by_groups_equal_whole(name, params, data):
    # stepcredit.locality says this transform is group-local: deal the groups into parts, run
    # each part from the initial state, scatter back: equal to one run on the whole batch
    records = data.draw(records_for(name))
    ro = sc.Rollouts.from_records(records)
    whole = _run(ro, name, params).rollouts
    part_of = np.array(data.draw(st.lists(st.integers(0, 2), min_size=ro.n_groups, max_size=ro.n_groups)))
    outcome = np.full(ro.n_episodes, np.nan)
    cols = {c: np.full(ro.n_steps, np.nan) for c in whole.columns}
    for part in range(3):
        eps = np.flatnonzero(part_of[ro.episode_group] == part)
        if eps.size == 0:
            continue
        got = _run(ro.take(eps), name, params).rollouts
        outcome[eps] = got.outcome
        steps = np.concatenate([np.arange(ro.episode_offsets[i], ro.episode_offsets[i + 1]) for i in eps])
        for c in cols:
            cols[c][steps] = got.reward if c == "reward" else got.columns[c]
    np.testing.assert_array_equal(outcome, whole.outcome)
    for c in cols:
        np.testing.assert_array_equal(cols[c], whole.reward if c == "reward" else whole.columns[c], err_msg=c)
