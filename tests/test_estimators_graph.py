"""SALT: vectorised == loop oracle, hand-worked cases from the definition, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import assert_grid_covers, close
from reference import graph as ref_graph
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = [
    {},
    {"merge": "state_action"},
    {"merge": "state", "count": "step"},
    {"merge": "history"},
    {"count": "step"},
    {"base": "drgrpo"},
    {"base": "rloo", "singleton": "zero", "merge": "state_action", "count": "step"},
    {"base": "grpo", "epsilon": 1e-4, "merge": "state"},
    {"base": "drgrpo", "merge": "history", "count": "step", "singleton": "zero"},
]
STATES = rollout_records(state=True, action=True, max_steps=6)


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "salt", **params)
    want = ref_graph.salt(records, **params)
    close(got.step_advantage, want.step_advantage, "step_advantage")
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    assert got.step_return is None and got.step_reward is None
    for key in ("nodes", "merged_nodes"):
        assert got.diagnostics[key] == want.diagnostics[key], key
    assert got.diagnostics["merged_step_fraction"] == pytest.approx(want.diagnostics["merged_step_fraction"])


def ep(eid, outcome, steps, group="g"):
    """An episode record; ``steps`` is a list of (state, action) pairs."""
    return {
        "episode_id": eid,
        "group_id": group,
        "outcome": outcome,
        "steps": [{"state": s, "action": a} for s, a in steps],
    }


def test_grid_covers_every_choice():
    assert_grid_covers("salt", GRID)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=STATES)
def test_vectorised_equals_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def test_hand_worked_shared_first_step_drgrpo():
    # drgrpo base, outcomes [1, 0, 0]: mean 1/3, A = [2/3, −1/3, −1/3].
    #   τ1: (A, x) (B, y)   τ2: (A, x) (C, z)   τ3: (D, w)
    # merge="state_action": node (A, x) holds τ1 and τ2 -> (2/3 − 1/3)/2 = 1/6 for both;
    # every other step is unique and keeps its episode's A.
    recs = [ep("t1", 1.0, [("A", "x"), ("B", "y")]), ep("t2", 0.0, [("A", "x"), ("C", "z")]), ep("t3", 0.0, [("D", "w")])]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "salt", base="drgrpo", merge="state_action")
    np.testing.assert_allclose(c.step_advantage, [1 / 6, 2 / 3, 1 / 6, -1 / 3, -1 / 3], rtol=1e-15)
    np.testing.assert_allclose(c.episode_advantage, [2 / 3, -1 / 3, -1 / 3], rtol=1e-15)
    assert c.diagnostics["merged_nodes"] == 1 and c.diagnostics["merged_step_fraction"] == 2 / 5
    # merge="transition": (A, x) leads to B in τ1 and to C in τ2: two different transitions,
    # nothing is merged and SALT is its base
    c = sc.estimate(ro, "salt", base="drgrpo")
    assert c.diagnostics["merged_nodes"] == 0
    np.testing.assert_array_equal(c.step_advantage, sc.estimate(ro, "drgrpo").step_advantage)


def test_hand_worked_transition_grpo():
    # grpo base, outcomes [1, 0]: mean 1/2, unbiased std sqrt(((1/2)² + (1/2)²)/1) = sqrt(1/2),
    # A = ±(1/2)/(sqrt(1/2) + 1e-6).
    #   τ1: (A, x) -> B, then (B, y), end    τ2: (A, x) -> B, then (B, z), end
    # The transition (A, x, B) is shared: (A1 + A2)/2 = 0. (B, y, end) and (B, z, end) are unique.
    recs = [ep("t1", 1.0, [("A", "x"), ("B", "y")]), ep("t2", 0.0, [("A", "x"), ("B", "z")])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "salt")
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(c.step_advantage, [0.0, a, 0.0, -a], rtol=1e-15, atol=1e-16)
    # "state": the second steps share the state B too: (a − a)/2 = 0 everywhere
    c = sc.estimate(sc.Rollouts.from_records(recs), "salt", merge="state")
    np.testing.assert_allclose(c.step_advantage, [0.0, 0.0, 0.0, 0.0], atol=1e-16)


def test_the_end_of_an_episode_is_a_next_state_of_its_own():
    # τ1 stops after (A, x); τ2 goes on from B: (A, x, end) and (A, x, B) are different
    # transitions, while "state_action" merges them
    recs = [ep("t1", 1.0, [("A", "x")]), ep("t2", 0.0, [("A", "x"), ("B", "y")])]
    ro = sc.Rollouts.from_records(recs)
    assert sc.estimate(ro, "salt").diagnostics["merged_nodes"] == 0
    assert sc.estimate(ro, "salt", merge="state_action").diagnostics["merged_nodes"] == 1


def test_hand_worked_count_trajectory_or_step():
    # drgrpo base, outcomes [1, 0]: A = [1/2, −1/2]. τ1 takes (A, x) twice, τ2 once.
    # count="trajectory": node (A, x) is the mean over {τ1, τ2} = (1/2 − 1/2)/2 = 0.
    # count="step": the mean over its three steps = (1/2 + 1/2 − 1/2)/3 = 1/6.
    recs = [ep("t1", 1.0, [("A", "x"), ("A", "x")]), ep("t2", 0.0, [("A", "x")])]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "salt", base="drgrpo", merge="state_action")
    np.testing.assert_allclose(c.step_advantage, [0.0, 0.0, 0.0], atol=1e-16)
    c = sc.estimate(ro, "salt", base="drgrpo", merge="state_action", count="step")
    np.testing.assert_allclose(c.step_advantage, [1 / 6, 1 / 6, 1 / 6], rtol=1e-15)


def test_hand_worked_history_is_a_prefix_tree():
    # rloo base, outcomes [1, 0, 1]: A_i = R_i − mean of the other two = [1/2, −1, 1/2].
    #   τ1: (A, x) (B, y)   τ2: (A, x) (B, y) (C, z)   τ3: (B, y)
    # history: prefixes [(A,x)] and [(A,x),(B,y)] are shared by τ1 and τ2: (1/2 − 1)/2 = −1/4;
    # τ3's first step has a prefix of its own although its (B, y) matches their second steps.
    # state_action instead merges (B, y) of all three: (1/2 − 1 + 1/2)/3 = 0.
    recs = [
        ep("t1", 1.0, [("A", "x"), ("B", "y")]),
        ep("t2", 0.0, [("A", "x"), ("B", "y"), ("C", "z")]),
        ep("t3", 1.0, [("B", "y")]),
    ]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "salt", base="rloo", merge="history")
    np.testing.assert_allclose(c.step_advantage, [-0.25, -0.25, -0.25, -0.25, -1.0, 0.5], rtol=1e-15)
    assert c.diagnostics["nodes"] == 4 and c.diagnostics["merged_nodes"] == 2
    c = sc.estimate(ro, "salt", base="rloo", merge="state_action")
    np.testing.assert_allclose(c.step_advantage, [-0.25, 0.0, -0.25, 0.0, -1.0, 0.0], rtol=1e-15, atol=1e-16)


def test_steps_merge_only_within_a_group():
    recs = [ep("a", 1.0, [("S", "x")], group="g1"), ep("b", 0.0, [("S", "x")], group="g2"), ep("c", 0.5, [("S", "x")], group="g2")]
    c = sc.estimate(sc.Rollouts.from_records(recs), "salt", base="drgrpo")
    # g1 is a singleton (raw: A = R = 1); g2: A = [−1/4, 1/4] merged into 0
    np.testing.assert_allclose(c.step_advantage, [1.0, 0.0, 0.0], atol=1e-16)
    assert c.diagnostics["merged_nodes"] == 1


# ---------------------------------------------------------------------- invariants
def _unique_steps(records):
    for k, rec in enumerate(records):
        rec["steps"] = [{**s, "state": f"unique-{k}-{t}", "action": "a"} for t, s in enumerate(rec["steps"])]
    return records


@pytest.mark.parametrize("merge", ["transition", "state_action", "state", "history"])
@FEW
@given(records=rollout_records(max_steps=4))
def test_no_shared_step_is_the_base_exactly(merge, records):
    ro = sc.Rollouts.from_records(_unique_steps(records))
    for base in ("grpo", "drgrpo", "rloo"):
        for count in ("trajectory", "step"):
            c = sc.estimate(ro, "salt", base=base, merge=merge, count=count)
            assert c.diagnostics["merged_nodes"] == 0
            np.testing.assert_array_equal(c.step_advantage, sc.estimate(ro, base).step_advantage)
            np.testing.assert_array_equal(c.episode_advantage, sc.estimate(ro, base).episode_advantage)


@pytest.mark.parametrize("base", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("merge", ["transition", "state_action", "state", "history"])
@FEW
@given(records=rollout_records(max_steps=4))
def test_a_step_shared_by_every_trajectory_of_a_group_gets_zero(base, merge, records):
    # every episode starts with the same step (and goes on to the same next state): in a group
    # of two or more it is one node whose value is the group mean of A, which is 0
    for k, rec in enumerate(records):
        rec["steps"] = [{"state": "start", "action": "go"}, {"state": "next", "action": f"a{k}"}] + [
            {"state": f"unique-{k}-{t}", "action": "a"} for t in range(len(rec["steps"]))
        ]
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "salt", base=base, merge=merge)
    first = ro.episode_offsets[:-1]
    sizes = np.bincount(ro.episode_group)[ro.episode_group]
    scale = max(1.0, float(np.max(np.abs(c.episode_advantage))))
    assert np.all(np.abs(c.step_advantage[first][sizes >= 2]) <= 1e-12 * scale)
    # a one-episode group keeps its base advantage
    np.testing.assert_array_equal(c.step_advantage[first][sizes == 1], c.episode_advantage[sizes == 1])


@SETTINGS
@given(records=STATES, params=st.sampled_from(GRID))
def test_step_advantages_lie_between_the_group_extremes(records, params):
    # a node's value is a mean of advantages of its group: a convex combination
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "salt", **params)
    g = ro.episode_group
    lo = np.full(ro.n_groups, np.inf)
    hi = np.full(ro.n_groups, -np.inf)
    np.minimum.at(lo, g, c.episode_advantage)
    np.maximum.at(hi, g, c.episode_advantage)
    sg = g[ro.step_episode]
    slack = 1e-12 * np.maximum(1.0, np.abs(hi[sg]))
    assert np.all(c.step_advantage >= lo[sg] - slack) and np.all(c.step_advantage <= hi[sg] + slack)


@FEW
@given(records=STATES, params=st.sampled_from(GRID), seed=st.integers(0, 2**32 - 1))
def test_episode_permutation_permutes_the_output(records, params, seed):
    ro = sc.Rollouts.from_records(records)
    perm = np.random.default_rng(seed).permutation(ro.n_episodes)
    whole = sc.estimate(ro, "salt", **params)
    permuted = sc.estimate(ro.take(perm), "salt", **params)
    steps = np.concatenate([np.arange(ro.episode_offsets[e], ro.episode_offsets[e + 1]) for e in perm])
    close(permuted.step_advantage, whole.step_advantage[steps], "step_advantage")
    assert permuted.diagnostics == whole.diagnostics


@FEW
@given(records=STATES, params=st.sampled_from(GRID), data=st.data())
def test_each_group_is_computed_from_that_group_alone(records, params, data):
    ro = sc.Rollouts.from_records(records)
    g = data.draw(st.integers(0, ro.n_groups - 1), label="group")
    alone = np.flatnonzero(ro.episode_group == g)
    whole = sc.estimate(ro, "salt", **params)
    part = sc.estimate(ro.take(alone), "salt", **params)
    steps = np.concatenate([np.arange(ro.episode_offsets[e], ro.episode_offsets[e + 1]) for e in alone])
    close(part.step_advantage, whole.step_advantage[steps], "step_advantage")


# ---------------------------------------------------------------------- errors
def test_missing_columns():
    no_state = {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"action": "x"}]}
    with pytest.raises(sc.MissingColumnError, match="state"):
        sc.estimate(sc.Rollouts.from_records([no_state]), "salt")
    no_action = {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]}
    ro = sc.Rollouts.from_records([no_action])
    for merge in ("transition", "state_action", "history"):
        with pytest.raises(sc.MissingColumnError, match=f"merge='{merge}'.*'action'"):
            sc.estimate(ro, "salt", merge=merge)
    assert sc.estimate(ro, "salt", merge="state").step_advantage.shape == (1,)


def test_bad_parameters():
    ro = sc.Rollouts.from_records([ep("a", 1.0, [("A", "x")])])
    with pytest.raises(sc.EstimatorError, match="epsilon"):
        sc.estimate(ro, "salt", epsilon=0.0)
    with pytest.raises(sc.EstimatorError, match="'grpo', 'drgrpo', 'rloo'"):
        sc.estimate(ro, "salt", base="ppo")
    with pytest.raises(sc.EstimatorError, match="merge"):
        sc.estimate(ro, "salt", merge="node")
    with pytest.raises(sc.EstimatorError, match="count"):
        sc.estimate(ro, "salt", count="visits")
