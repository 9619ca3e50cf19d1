"""laser and laser_d: vectorised == loop oracle, hand-worked cases, state, invariants, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import close
from reference import shaping_length as ref
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.data import MissingColumnError
from stepcredit.shaping import ShapingError, apply_transform, get_transform
from stepcredit.shaping.length import LEVELS, laser, laser_d

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECORDS = rollout_records(tokens=True, value=False, state=False, action=False)
LASER_GRID = [
    {},
    {"target_length": 10},
    {"target_length": 0, "kind": "penalty"},
    {"target_length": 12, "kind": "hybrid", "explore": True, "scale": 0.25},
    {"target_length": 20, "correct_threshold": 0.0, "explore": True},
]
LASER_D_GRID = [
    {},
    {"min_length": 0, "max_length": 64, "length_step": 4, "update_every": 1},
    {"min_length": 5, "max_length": 40, "length_step": 3, "monitor": "all", "kind": "hybrid", "explore": True,
     "monitor_size": 7, "update_every": 3, "expected_correct": 2},
    {"group_size": 8, "min_length": 1, "max_length": 100, "length_step": 1, "update_every": 2,
     "correct_threshold": 0.5, "kind": "penalty", "scale": 2.0},
]
LENGTH_LISTS = st.lists(st.integers(0, 70), max_size=12)
STATES = st.one_of(
    st.none(),
    st.builds(
        lambda batches, lengths, targets: {
            "version": 1,
            "batches": batches,
            "lengths": dict(zip(LEVELS, lengths)),
            "targets": dict(zip(LEVELS, targets)),
        },
        st.integers(0, 12),
        st.tuples(LENGTH_LISTS, LENGTH_LISTS, LENGTH_LISTS),
        st.tuples(*[st.one_of(st.none(), st.integers(0, 80))] * 3),
    ),
)


def ep(eid, outcome, lengths, group="g"):
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": [{"tokens": t} for t in lengths]}


def ro_of(records):
    return sc.Rollouts.from_records(records)


# ---------------------------------------------------------------------- LASER
@pytest.mark.parametrize("params", LASER_GRID, ids=[str(g) for g in LASER_GRID])
@SETTINGS
@given(records=RECORDS)
def test_laser_equals_oracle(params, records):
    out = apply_transform(ro_of(records), "laser", **params)
    close(out.rollouts.outcome, ref.laser(records, **params), "laser outcome")


@pytest.mark.parametrize("params", LASER_GRID, ids=[str(g) for g in LASER_GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_laser_large_offsets_equal_oracle(params, k):
    records = LARGE_OFFSET_EXAMPLES[k]
    out = apply_transform(ro_of(records), "laser", **params)
    close(out.rollouts.outcome, ref.laser(records, **params), "laser outcome")


def test_laser_hand_worked():
    # L_T = 10, λ = 0.5; lengths: a 3+4 = 7, b 6+6 = 12, c 10, d 15.
    # reward:  a correct, 7 <= 10 -> 1.5; b correct, 12 > 10 -> 1; c correct, 10 <= 10 -> 1.5;
    #          d wrong -> 0
    # penalty: a 1; b 1 − 0.5 = 0.5; c 1; d 0.   hybrid: a 1.5, b 0.5, c 1.5, d 0
    # explore (reward): d wrong and 15 > 10 -> 0 + 0.5
    recs = [ep("a", 1.0, [3, 4]), ep("b", 1.0, [6, 6]), ep("c", 1.0, [10], "h"), ep("d", 0.0, [15], "h")]
    ro = ro_of(recs)
    run = lambda **p: apply_transform(ro, "laser", target_length=10, **p)  # noqa: E731
    assert run().rollouts.outcome.tolist() == [1.5, 1.0, 1.5, 0.0]
    assert run(kind="penalty").rollouts.outcome.tolist() == [1.0, 0.5, 1.0, 0.0]
    assert run(kind="hybrid").rollouts.outcome.tolist() == [1.5, 0.5, 1.5, 0.0]
    out = run(explore=True)
    assert out.rollouts.outcome.tolist() == [1.5, 1.0, 1.5, 0.5]
    assert out.diagnostics == {
        "correct_fraction": 0.75, "rewarded_fraction": 0.75, "penalised_fraction": 0.0,
        "mean_length": 11.0, "target_length": 10,
    }
    # the official code's scores 1 / −0.5 / −1 with θ = 1: a wrong −0.5 stays −0.5
    assert apply_transform(ro.with_outcome(np.array([1.0, -0.5, -1.0, 1.0])), "laser", target_length=10).rollouts.outcome.tolist() == [1.5, -0.5, -1.0, 1.0]


@SETTINGS
@given(records=RECORDS, target=st.integers(0, 40), explore=st.booleans())
def test_laser_bonus_rules(records, target, explore):
    ro = ro_of(records)
    before = copy.deepcopy(records)
    R = ro.outcome
    b = {
        kind: apply_transform(ro, "laser", target_length=target, kind=kind, explore=explore).rollouts.outcome - R
        for kind in ("reward", "penalty", "hybrid")
    }
    wrong = R < 1.0
    # b in {−λ, 0, λ} (up to the rounding of R + b − R); reward >= 0, penalty <= 0
    assert np.all(b["reward"][~wrong] >= 0) and np.all(b["penalty"][~wrong] <= 0)
    for kind in b:
        assert np.all(np.isclose(np.abs(b[kind]), 0.5, rtol=0, atol=1e-9) | (b[kind] == 0))
        if not explore:
            assert np.all(b[kind][wrong] == 0)  # wrong responses are unchanged
        else:
            assert np.all(b[kind][wrong] >= 0)
    # hybrid = reward + penalty on the correct responses
    assert np.allclose(b["hybrid"][~wrong], (b["reward"] + b["penalty"])[~wrong], rtol=0, atol=1e-9)
    assert records == before
    assert ro_of(records).equals(ro)


def test_laser_with_a_huge_target_rewards_every_correct_response():
    recs = [ep("a", 1.0, [12] * 5), ep("b", 0.0, [1]), ep("c", 1.0, [0])]
    out = apply_transform(ro_of(recs), "laser", target_length=10**9)
    assert out.rollouts.outcome.tolist() == [1.5, 0.0, 1.5]


# ---------------------------------------------------------------------- LASER-D
def check_laser_d(records, state, params):
    frozen = copy.deepcopy(state)
    out = apply_transform(ro_of(records), "laser_d", state=state, **params)
    want, want_state, want_diag = ref.laser_d(records, state, **params)
    close(out.rollouts.outcome, want, "laser_d outcome")
    assert out.state == want_state
    for key, value in want_diag.items():
        assert out.diagnostics[key] == value, key
    assert state == frozen  # the state given is not modified
    assert json.loads(json.dumps(out.state)) == out.state


@pytest.mark.parametrize("params", LASER_D_GRID, ids=[str(g) for g in LASER_D_GRID])
@SETTINGS
@given(records=RECORDS, state=STATES)
def test_laser_d_one_batch_equals_oracle(params, records, state):
    check_laser_d(records, state, params)


@pytest.mark.parametrize("params", LASER_D_GRID, ids=[str(g) for g in LASER_D_GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_laser_d_large_offsets_equal_oracle(params, k):
    check_laser_d(LARGE_OFFSET_EXAMPLES[k], None, params)


def hand_batch():
    # group A: all correct, lengths 10, 20, 30 -> a = 1 -> easy
    # group B: 1 of 3 correct (length 40), wrong 50, 60 -> a = 1/3 -> medium
    # group C: 0 of 2 correct, lengths 5, 70 -> hard
    return [
        ep("a1", 1.0, [4, 6], "A"), ep("a2", 1.0, [20], "A"), ep("a3", 1.0, [30], "A"),
        ep("b1", 1.0, [40], "B"), ep("b2", 0.0, [50], "B"), ep("b3", 0.0, [60], "B"),
        ep("c1", 0.0, [5], "C"), ep("c2", 0.0, [70], "C"),
    ]


def test_laser_d_hand_worked_first_batch():
    # n = 3 (largest group): n_easy = ⌊6/3⌋ = 2, n_medium = ⌊3/3⌋ = 1, n_hard = 1; grid 0, 10, ..., 100.
    # easy:   H = [10, 20, 30]; ⌊c·2⌋ >= 1 needs c >= 1/2: c(10) = 1/3, c(20) = 2/3 -> L_T = 20
    # medium: H = [40];         ⌊c·1⌋ >= 1 needs c = 1:    c(30) = 0,   c(40) = 1   -> L_T = 40
    # hard:   H = [] (no correct response) -> no target -> the longest response, 70
    # reward: a1 10 <= 20 +0.5, a2 20 <= 20 +0.5, a3 30 > 20 0; b1 40 <= 40 +0.5; wrong ones 0
    params = {"min_length": 0, "max_length": 100, "length_step": 10}
    out = apply_transform(ro_of(hand_batch()), "laser_d", **params)
    assert out.rollouts.outcome.tolist() == [1.5, 1.5, 1.0, 1.5, 0.0, 0.0, 0.0, 0.0]
    assert out.state == {
        "version": 1, "batches": 1,
        "lengths": {"easy": [10, 20, 30], "medium": [40], "hard": []},
        "targets": {"easy": 20, "medium": 40, "hard": None},
    }
    d = out.diagnostics
    assert (d["target_easy"], d["target_medium"], d["target_hard"]) == (20, 40, 70)
    assert (d["groups_easy"], d["groups_medium"], d["groups_hard"]) == (1, 1, 1)
    assert d["updated"] is True and d["monitored"] == 4
    # explore (LASER-DE): b2 50 > 40 and b3 60 > 40 get +0.5; c2 70 is not > 70 (the cap)
    ex = apply_transform(ro_of(hand_batch()), "laser_d", explore=True, **params)
    assert ex.rollouts.outcome.tolist() == [1.5, 1.5, 1.0, 1.5, 0.5, 0.5, 0.0, 0.0]
    # monitor="all": medium H = [40, 50, 60]: c(40) = 1/3, ⌊1/3⌋ = 0; c(60) = 1 -> 60;
    # hard H = [5, 70]: c(10) = 1/2 -> 0; c(70) = 1 -> 70
    al = apply_transform(ro_of(hand_batch()), "laser_d", monitor="all", **params)
    assert al.state["targets"] == {"easy": 20, "medium": 60, "hard": 70}


def test_laser_d_caps_targets_by_the_longest_response():
    # a stored target of 500 is capped by this batch's longest response (70)
    state = {"version": 1, "batches": 1, "lengths": {lv: [] for lv in LEVELS}, "targets": {lv: 500 for lv in LEVELS}}
    out = apply_transform(ro_of(hand_batch()), "laser_d", state=state, update_every=5)
    assert out.diagnostics["updated"] is False
    assert [out.diagnostics[f"target_{lv}"] for lv in LEVELS] == [70, 70, 70]
    assert out.state["targets"] == state["targets"]  # kept until the next update


def test_laser_d_level_without_enough_rollouts_gets_the_longest_response():
    # groups of 2 with one correct answer: a = 1/2 -> medium, n_medium = ⌊2/3⌋ = 0, so
    # ⌊c·0⌋ = 0 < 1 for every candidate: the target is the batch's longest response (9)
    recs = [ep("a", 1.0, [3], "A"), ep("b", 0.0, [9], "A"), ep("c", 1.0, [4], "B"), ep("d", 0.0, [2], "B")]
    out = apply_transform(ro_of(recs), "laser_d", min_length=0, max_length=20, length_step=1)
    assert out.state["targets"]["medium"] is None and out.diagnostics["target_medium"] == 9
    assert out.rollouts.outcome.tolist() == [1.5, 0.0, 1.5, 0.0]


def batch(b, lengths, groups=2):
    return [
        ep(f"b{b}-{g}-{i}", 1.0, [L], f"q{b}-{g}") for g in range(groups) for i, L in enumerate(lengths)
    ]


def test_laser_d_targets_adapt_to_shorter_responses():
    # every batch all correct (easy) and 8 tokens shorter than the last; the memory holds the
    # last two batches; targets recomputed every batch: they shrink with the responses
    params = {"min_length": 0, "max_length": 200, "length_step": 5, "monitor_size": 16, "update_every": 1}
    state, targets = None, []
    for b in range(8):
        out = apply_transform(ro_of(batch(b, [100 - 8 * b + d for d in (0, 5, 10, 15)])), "laser_d", state=state, **params)
        state = out.state
        targets.append(out.diagnostics["target_easy"])
    assert all(t2 <= t1 for t1, t2 in zip(targets, targets[1:]))
    assert targets[-1] < targets[0] - 40


def test_laser_d_memory_is_bounded_to_the_last_lengths():
    state, appended = None, []
    for b in range(9):
        lengths = [3 * b + d for d in range(4)]
        appended += lengths * 2
        state = apply_transform(ro_of(batch(b, lengths)), "laser_d", state=state, monitor_size=5).state
        assert len(state["lengths"]["easy"]) <= 5
        assert state["lengths"]["easy"] == appended[-5:]
        assert state["lengths"]["medium"] == state["lengths"]["hard"] == []
    assert state["batches"] == 9


def test_laser_d_updates_every_n_batches():
    # the memory holds the last batch only (2 groups × 4); n = 4, n_easy = ⌊8/3⌋ = 2: the target
    # is the smallest L covering half of it: batch 0 [60, 70, 80, 90] -> 70, batch 3
    # [45, 55, 80, 90] -> 55, batch 6 [30, 40, 80, 90] -> 40; kept in between
    params = {"min_length": 0, "max_length": 200, "length_step": 1, "update_every": 3, "monitor_size": 8}
    state, flags, stored = None, [], []
    for b in range(7):
        out = apply_transform(ro_of(batch(b, [60 - 5 * b, 70 - 5 * b, 80, 90])), "laser_d", state=state, **params)
        state = out.state
        flags.append(out.diagnostics["updated"])
        stored.append(state["targets"]["easy"])
    assert flags == [True, False, False, True, False, False, True]
    assert stored[0] == stored[1] == stored[2] and stored[3] == stored[4] == stored[5]
    assert (stored[0], stored[3], stored[6]) == (70, 55, 40)


def run_batches(params, through_json):
    state, outs = None, []
    for b in range(5):
        recs = batch(b, [40 - 3 * b, 55, 20 + b, 70]) + [ep(f"w{b}", 0.0, [30 + b], f"q{b}-0")]
        out = apply_transform(ro_of(recs), "laser_d", state=state, **params)
        outs.append((out.rollouts.outcome.tolist(), dict(out.diagnostics), out.state))
        state = json.loads(json.dumps(out.state)) if through_json else out.state
    return outs


@pytest.mark.parametrize("params", LASER_D_GRID, ids=[str(g) for g in LASER_D_GRID])
def test_laser_d_state_round_trips_through_json_and_is_deterministic(params):
    direct = run_batches(params, through_json=False)
    assert run_batches(params, through_json=True) == direct
    assert run_batches(params, through_json=False) == direct


def test_laser_d_in_a_pipeline_keeps_its_state():
    pipe = sc.Pipeline.build("grpo", transforms=[("laser_d", {"min_length": 0, "max_length": 100, "length_step": 10})])
    ro = ro_of(hand_batch())
    first = pipe.run(ro)
    assert first.state.stages[0]["state"]["batches"] == 1
    second = sc.Pipeline.build("grpo", transforms=[("laser_d", dict(pipe.transforms[0].params))]).run(
        ro, state=type(first.state).from_json(first.state.to_json())
    )
    assert second.state.stages[0]["state"]["batches"] == 2
    assert second.state.stages[0]["state"]["lengths"]["easy"] == [10, 20, 30] * 2


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "state, needle",
    [
        ([], "expected a dict"),
        ({"version": 1}, "expected the keys"),
        ({"version": 2, "batches": 0, "lengths": {}, "targets": {}}, "version 2"),
        ({"version": 1, "batches": -1, "lengths": {}, "targets": {}}, "batches=-1"),
        ({"version": 1, "batches": True, "lengths": {}, "targets": {}}, "batches=True"),
        ({"version": 1, "batches": 0, "lengths": {"easy": []}, "targets": {}}, "lengths must map"),
        ({"version": 1, "batches": 0, "lengths": {lv: [] for lv in LEVELS}, "targets": {lv: None for lv in ("easy", "medium")}}, "targets must map"),
        ({"version": 1, "batches": 0, "lengths": {"easy": [1.5], "medium": [], "hard": []}, "targets": {lv: None for lv in LEVELS}}, "lengths['easy']"),
        ({"version": 1, "batches": 0, "lengths": {"easy": [-1], "medium": [], "hard": []}, "targets": {lv: None for lv in LEVELS}}, "lengths['easy']"),
        ({"version": 1, "batches": 0, "lengths": {lv: [] for lv in LEVELS}, "targets": {"easy": "5", "medium": None, "hard": None}}, "targets['easy']"),
    ],
)
def test_laser_d_invalid_state(state, needle):
    with pytest.raises(ShapingError) as info:
        apply_transform(ro_of(hand_batch()), "laser_d", state=state)
    assert "'laser_d'" in str(info.value) and "invalid state" in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("laser", {"target_length": -1}, "target_length=-1"),
        ("laser", {"scale": 0.0}, "scale=0.0"),
        ("laser", {"scale": -0.5}, "scale=-0.5"),
        ("laser", {"kind": "both"}, "kind='both'"),
        ("laser", {"correct_threshold": float("nan")}, "correct_threshold=nan"),
        ("laser_d", {"scale": 0.0}, "scale=0.0"),
        ("laser_d", {"min_length": -1}, "min_length=-1"),
        ("laser_d", {"length_step": 0}, "length_step=0"),
        ("laser_d", {"min_length": 50, "max_length": 40}, "max_length=40"),
        ("laser_d", {"min_length": 0, "max_length": 10**9, "length_step": 1}, "candidate"),
        ("laser_d", {"expected_correct": 0}, "expected_correct=0"),
        ("laser_d", {"group_size": -1}, "group_size=-1"),
        ("laser_d", {"monitor_size": 0}, "monitor_size=0"),
        ("laser_d", {"update_every": 0}, "update_every=0"),
        ("laser_d", {"monitor": "wrong"}, "monitor='wrong'"),
    ],
)
def test_invalid_parameters_name_the_transform_and_parameter(name, params, needle):
    ro = ro_of(hand_batch())
    with pytest.raises(ShapingError) as info:
        apply_transform(ro, name, **params)
    assert f"'{name}'" in str(info.value) and needle in str(info.value)
    with pytest.raises(ShapingError) as info:  # the function validates on its own too
        (laser if name == "laser" else laser_d)(ro, **params)
    assert f"'{name}'" in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("name", ["laser", "laser_d"])
def test_missing_tokens_names_the_field_and_the_transform(name):
    ro = ro_of([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"reward": 0.0}]}])
    assert get_transform(name).requires == ("tokens",) and get_transform(name).writes == ("outcome",)
    with pytest.raises(MissingColumnError) as info:
        apply_transform(ro, name)
    assert "'tokens'" in str(info.value) and f"'{name}'" in str(info.value)
    with pytest.raises(MissingColumnError) as info:
        (laser if name == "laser" else laser_d)(ro)
    assert "'tokens'" in str(info.value) and f"'{name}'" in str(info.value)


def test_stateful_flags():
    assert get_transform("laser_d").stateful and not get_transform("laser").stateful
    with pytest.raises(ShapingError, match="keeps no state"):
        apply_transform(ro_of(hand_batch()), "laser", state={})
