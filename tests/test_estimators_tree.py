"""tree (PORTool / SLATE): vectorised == loop oracle, hand-worked cases, tree validation,
reductions (weight 0 == grpo, no shared prefix), sibling sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks import assert_grid_covers, close, close_within
import stepcredit as sc
from reference import tree as ref_tree
from stepcredit.estimators.trees import node_parents
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TREES = rollout_records(tree=True, extra=True, max_steps=5)
GRID = [
    {},
    {"norm": "mean"},
    {"weight": 1.0, "score": "reward"},  # SLATE: siblings only, the step's reward
    {"weight": 1.0, "score": "process", "norm": "mean"},
    {"weight": 0.25, "score": "max_outcome"},
    {"tool_weight": 0.5},  # tool_field grounding
    {"tool_weight": 0.5, "tool_field": "process", "score": "max_outcome", "epsilon": 1e-4},
    {"tool_weight": -1.0, "tool_field": "reward", "norm": "mean"},
    {"weight": 0.0, "singleton": "zero"},
]


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "tree", **params)
    want = ref_tree.tree(records, **params)
    close_within(got.step_advantage, want.step_advantage, want.diagnostics["step_tolerance"], "step_advantage")
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    close(got.step_reward, want.step_reward, "step_reward")
    assert got.step_return is None
    for key in ("nodes", "forks", "singleton_groups"):
        assert got.diagnostics[key] == want.diagnostics[key], key
    for key in ("branching_step_fraction", "shared_step_fraction"):
        assert got.diagnostics[key] == pytest.approx(want.diagnostics[key]), key


def test_grid_covers_every_choice():
    assert_grid_covers("tree", GRID)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=TREES)
def test_vectorised_equals_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def ep(eid, outcome, nodes, group="g", **fields):
    steps = [{"node": n} for n in nodes]
    for name, values in fields.items():
        for step, v in zip(steps, values):
            step[name] = v
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": steps}


# root ─┬─ a ─┬─ x   τ1, outcome 1
#       │     └─ y   τ2, outcome 0
#       └─ b         τ3, outcome 0
FORK_AGAIN = [ep("t1", 1.0, ["a", "x"]), ep("t2", 0.0, ["a", "y"]), ep("t3", 0.0, ["b"])]


def test_hand_worked_root_with_two_children_one_forking_again_mean():
    # norm = mean (F = 1), w = 0.5.  V(a) = mean(1, 0) = 1/2, V(b) = 0, V(x) = 1, V(y) = 0.
    # fork: root's children {a, b}, mean 1/4: A(a) = +1/4, A(b) = −1/4;
    #       a's children {x, y}, mean 1/2:   A(x) = +1/2, A(y) = −1/2.
    # traj (Dr. GRPO): mean(1, 0, 0) = 1/3: τ1 +2/3, τ2 −1/3, τ3 −1/3.
    # A = ½ fork + ½ traj: τ1 [1/8 + 1/3, 1/4 + 1/3] = [11/24, 7/12]
    #                      τ2 [1/8 − 1/6, −1/4 − 1/6] = [−1/24, −5/12]
    #                      τ3 [−1/8 − 1/6] = [−7/24]
    c = sc.estimate(sc.Rollouts.from_records(FORK_AGAIN), "tree", norm="mean")
    close(c.step_advantage, [11 / 24, 7 / 12, -1 / 24, -5 / 12, -7 / 24], "A")
    close(c.episode_advantage, [2 / 3, -1 / 3, -1 / 3], "A^traj")
    close(c.step_reward, [0.5, 1.0, 0.5, 0.0, 0.0], "R(n) = V(n)")
    assert c.diagnostics == {
        "nodes": 4,  # a, b, x, y
        "forks": 2,  # the root and a
        "branching_step_fraction": 1.0,  # every node has a sibling
        "shared_step_fraction": 0.4,  # a's two steps of five
        "singleton_groups": 0,
    }


def test_hand_worked_root_with_two_children_one_forking_again_mean_std():
    # w = 1 (siblings only), F = unbiased std + 1e-6:
    #   {a, b} = {1/2, 0}: mean 1/4, std sqrt(2·(1/4)²/1) = sqrt(1/8) -> A(a) = −A(b) = (1/4)/(sqrt(1/8)+ε)
    #   {x, y} = {1, 0}:   mean 1/2, std sqrt(1/2)                     -> A(x) = −A(y) = (1/2)/(sqrt(1/2)+ε)
    c = sc.estimate(sc.Rollouts.from_records(FORK_AGAIN), "tree", weight=1.0)
    a = 0.25 / (math.sqrt(1 / 8) + 1e-6)
    x = 0.5 / (math.sqrt(1 / 2) + 1e-6)
    close(c.step_advantage, [a, x, a, -x, -a], "A^fork")
    # and the trajectory part is GRPO's whatever the weight
    close(c.episode_advantage, sc.estimate(sc.Rollouts.from_records(FORK_AGAIN), "grpo").episode_advantage, "A^traj")


def test_hand_worked_slate_judge_rewards_and_an_only_child():
    # SLATE: a shared prefix p, then k = 3 candidate next steps with judge rewards 2, 0, −1
    # (the step field reward; SLATE's search-step reward lies in [−2, 2]); w = 1.
    #   p is the root's only child: A(p) = 0 (SLATE's code: NaN for k = 1).
    #   {2, 0, −1}: mean 1/3, centred 5/3, −1/3, −4/3, unbiased var (25 + 1 + 16)/9/2 = 7/3.
    recs = [ep(f"t{j}", 0.0, ["p", f"c{j}"], reward=[0.5, r]) for j, r in enumerate([2.0, 0.0, -1.0])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "tree", weight=1.0, score="reward")
    s = math.sqrt(7 / 3) + 1e-6
    close(c.step_advantage, [0.0, (5 / 3) / s, 0.0, (-1 / 3) / s, 0.0, (-4 / 3) / s], "A")
    # the same as SLATE's Eq. 5 written directly: (r − mean r) / (std(r, ddof=1) + 1e-6)
    r = np.array([2.0, 0.0, -1.0])
    close(c.step_advantage[1::2], (r - r.mean()) / (r.std(ddof=1) + 1e-6), "Eq. 5")
    close(c.step_reward, [0.5, 2.0, 0.5, 0.0, 0.5, -1.0], "R(n) = the step's reward")
    assert c.diagnostics["forks"] == 1  # p's children; the root has one child
    assert c.diagnostics["branching_step_fraction"] == 0.5


def test_hand_worked_tool_term_separates_equal_outcomes():
    # two first steps, both episodes correct; only the first step's tool call executed:
    # R = V + β·u = 1 + 0.5·1 = 1.5 and 1 + 0.5·0 = 1; norm = mean, w = 1: A = ±(1.5 − 1.25) = ±0.25
    recs = [ep("t1", 1.0, ["a"], grounding=[1.0]), ep("t2", 1.0, ["b"], grounding=[0.0])]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "tree", weight=1.0, norm="mean", tool_weight=0.5)
    close(c.step_advantage, [0.25, -0.25], "A")
    close(c.step_reward, [1.5, 1.0], "R")
    assert sc.estimate(ro, "tree", weight=1.0, norm="mean").step_advantage.tolist() == [0.0, 0.0]


def test_hand_worked_max_outcome():
    # V_max(a) = max(1, 0) = 1 (some episode below a succeeds), V_max(b) = 0; norm = mean, w = 1:
    # root's children {1, 0}: A(a) = +1/2, A(b) = −1/2; a's children x (1), y (0): ±1/2
    c = sc.estimate(sc.Rollouts.from_records(FORK_AGAIN), "tree", weight=1.0, norm="mean", score="max_outcome")
    close(c.step_advantage, [0.5, 0.5, 0.5, -0.5, -0.5], "A")
    close(c.step_reward, [1.0, 1.0, 1.0, 0.0, 0.0], "R = V_max")


def test_episode_ending_at_an_inner_node():
    # τ1 = [a] ends at a while τ2 = [a, x] goes on: V(a) = mean(1, 0) = 1/2; a is the root's
    # only child and x is a's only child, so no fork anywhere: A = (1 − w) A^traj
    recs = [ep("t1", 1.0, ["a"]), ep("t2", 0.0, ["a", "x"])]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "tree", weight=0.25)
    g = sc.estimate(ro, "grpo")
    close(c.step_advantage, 0.75 * g.step_advantage, "A")
    close(c.step_reward, [0.5, 0.5, 0.0], "R")
    assert c.diagnostics["forks"] == 0 and c.diagnostics["shared_step_fraction"] == 2 / 3


def test_singleton_group():
    # one episode: no sibling anywhere, A^traj = R/(1+ε) ("raw") or 0 ("zero")
    ro = sc.Rollouts.from_records([ep("t", 2.0, ["a", "b"])])
    c = sc.estimate(ro, "tree", weight=0.5)
    close(c.step_advantage, [1.0 / (1 + 1e-6)] * 2, "raw")
    assert c.diagnostics["singleton_groups"] == 1 and c.diagnostics["forks"] == 0
    assert sc.estimate(ro, "tree", singleton="zero").step_advantage.tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------- reductions, invariants
@pytest.mark.parametrize("singleton", ["raw", "zero"])
@PROPERTY
@given(records=TREES)
def test_weight_zero_is_exactly_grpo(singleton, records):
    ro = sc.Rollouts.from_records(records)
    for norm, base in (("mean_std", sc.estimate(ro, "grpo", singleton=singleton)),
                       ("mean", sc.estimate(ro, "drgrpo", singleton=singleton))):
        c = sc.estimate(ro, "tree", weight=0.0, norm=norm, singleton=singleton)
        assert np.array_equal(c.step_advantage, base.step_advantage), norm
        assert np.array_equal(c.episode_advantage, base.episode_advantage), norm


@PROPERTY
@given(records=rollout_records(max_steps=4), weight=st.sampled_from([0.0, 0.3, 0.5, 1.0]), norm=st.sampled_from(["mean_std", "mean"]))
def test_no_shared_prefix_first_steps_are_grpo_later_steps_traj_only(records, weight, norm):
    # every node unique: the root's children are the group's first steps, V = R_i, so the
    # fork part of a first step is GRPO's advantage (groups of >= 2); later steps are only
    # children: A^fork = 0 and A = (1 − w) A^traj. A singleton's first step has no sibling.
    for k, rec in enumerate(records):
        rec["steps"] = [{**s, "node": f"{k}-{t}"} for t, s in enumerate(rec["steps"])]
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "tree", weight=weight, norm=norm)
    g = sc.estimate(ro, "grpo" if norm == "mean_std" else "drgrpo").episode_advantage
    size = np.bincount(ro.episode_group)[ro.episode_group]
    first = ro.episode_offsets[:-1]
    want_first = np.where(size >= 2, g, (1.0 - weight) * g)
    close(c.step_advantage[first], want_first, "first steps")
    later = ro.step_index > 0
    close(c.step_advantage[later], ((1.0 - weight) * g)[ro.step_episode][later], "later steps")
    assert c.diagnostics["shared_step_fraction"] == 0.0
    assert c.diagnostics["forks"] == int(np.sum(np.bincount(ro.episode_group) >= 2))


def fork_parts(ro, credit):
    """Node-level A^fork (from a weight=1 run) and each node's parent code."""
    code, node_parent, N = node_parents(ro)
    fork = np.zeros(N)
    fork[code] = credit.step_advantage
    return fork, node_parent, N + ro.n_groups


@PROPERTY
@given(records=TREES, score=st.sampled_from(["mean_outcome", "max_outcome", "process", "reward"]))
def test_sibling_advantages_sum_to_zero_with_norm_mean(records, score):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "tree", weight=1.0, norm="mean", score=score)
    fork, parent, P = fork_parts(ro, c)
    sums = np.bincount(parent, weights=fork, minlength=P)
    spread = np.bincount(parent, weights=np.abs(fork), minlength=P) + np.abs(c.step_reward).max()
    assert np.all(np.abs(sums) <= 1e-12 * spread)


@PROPERTY
@given(records=TREES)
def test_sibling_advantages_standardised_with_norm_mean_std(records):
    # over every fork: mean 0 and unbiased std = std/(std + ε) <= 1
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "tree", weight=1.0)
    fork, parent, P = fork_parts(ro, c)
    k = np.bincount(parent, minlength=P)
    mean = np.bincount(parent, weights=fork, minlength=P) / np.maximum(k, 1)
    ss = np.bincount(parent, weights=(fork - mean[parent]) ** 2, minlength=P)
    forks = k >= 2
    assert np.all(np.abs(mean[forks]) <= 1e-9)
    assert np.all(np.sqrt(ss[forks] / (k[forks] - 1)) <= 1.0 + 1e-9)
    assert np.all(fork[k[parent] == 1] == 0.0)  # an only child


@PROPERTY
@given(records=TREES, weight=st.sampled_from([0.25, 1.0]))
def test_steps_at_one_node_share_the_fork_part(records, weight):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "tree", weight=weight)
    part = c.step_advantage - (1.0 - weight) * c.episode_advantage[ro.step_episode]
    code, _, N = node_parents(ro)
    lo = np.full(N, np.inf)
    hi = np.full(N, -np.inf)
    np.minimum.at(lo, code, part)
    np.maximum.at(hi, code, part)
    assert np.all(hi - lo <= 1e-9 * (1 + np.abs(hi)))
    reward = c.step_reward
    assert np.all(reward == reward[np.unique(code, return_index=True)[1]][code])


@PROPERTY
@given(records=TREES)
def test_node_ids_scoped_by_group_relabelling_changes_nothing(records):
    # ids restart in every group (the strategy's trees); making them unique across the batch
    # takes tree's fast path and must give the same credit
    ro = sc.Rollouts.from_records(records)
    for rec in records:
        rec["steps"] = [{**s, "node": f"{rec['group_id']}|{s['node']}"} for s in rec["steps"]]
    unique = sc.Rollouts.from_records(records)
    for params in ({}, {"weight": 1.0, "score": "process"}):
        a, b = sc.estimate(ro, "tree", **params), sc.estimate(unique, "tree", **params)
        assert np.array_equal(a.step_advantage, b.step_advantage)
        assert a.diagnostics == b.diagnostics


# ---------------------------------------------------------------------- tree validation
@PROPERTY
@given(records=rollout_records(max_steps=4, max_group_size=4), data=st.data())
def test_invalid_trees_raise_exactly_when_the_oracle_says_so(records, data):
    # node ids from a pool of three: trees and non-trees (two parents, repeats) both occur
    for rec in records:
        rec["steps"] = [{**s, "node": data.draw(st.sampled_from("abc"))} for s in rec["steps"]]
    ro = sc.Rollouts.from_records(records)
    if ref_tree.is_tree(records):
        sc.estimate(ro, "tree")
    else:
        with pytest.raises(sc.RolloutsError) as err:
            sc.estimate(ro, "tree")
        assert err.value.source == "<rollouts>" and err.value.field == "steps[].node"


def test_two_parents_named_with_both_episodes():
    recs = [ep("first", 1.0, ["a", "x"]), ep("second", 0.0, ["b", "x"])]
    with pytest.raises(sc.RolloutsError) as err:
        sc.estimate(sc.Rollouts.from_records(recs), "tree")
    e = err.value
    assert (e.source, e.record, e.field) == ("<rollouts>", "episode 1 ('second'), step 1", "steps[].node")
    assert "node 'x' follows node 'b' here but node 'a' in episode 0 ('first'), step 1" in e.problem
    assert str(e).startswith("<rollouts>: episode 1 ('second'), step 1: field 'steps[].node': ")


def test_first_step_elsewhere_second_step_is_two_parents():
    recs = [ep("e0", 1.0, ["a"]), ep("e1", 0.0, ["b", "a"])]
    with pytest.raises(sc.RolloutsError, match="node 'a' follows node 'b' here but the start of the episode") as err:
        sc.estimate(sc.Rollouts.from_records(recs), "tree")
    assert err.value.record == "episode 1 ('e1'), step 1"


def test_node_twice_in_one_episode():
    recs = [ep("loop", 1.0, ["a", "b", "a"])]
    with pytest.raises(sc.RolloutsError, match=r"node 'a' occurs twice in this episode \(steps 0 and 2\)") as err:
        sc.estimate(sc.Rollouts.from_records(recs), "tree")
    assert err.value.record == "episode 0 ('loop'), step 2"


def test_the_same_id_in_two_groups_is_two_nodes():
    # "a" starts both groups' episodes but is a different node in each: no conflict, no sharing
    recs = [ep("e0", 1.0, ["a", "x"], group="g1"), ep("e1", 0.0, ["y", "a"], group="g2")]
    c = sc.estimate(sc.Rollouts.from_records(recs), "tree")
    assert c.diagnostics["nodes"] == 4 and c.diagnostics["shared_step_fraction"] == 0.0


def test_integer_node_ids():
    recs = [ep("t1", 1.0, [0, 1]), ep("t2", 0.0, [0, 2]), ep("t3", 0.0, [3])]
    a = sc.estimate(sc.Rollouts.from_records(recs), "tree")
    b = sc.estimate(sc.Rollouts.from_records(FORK_AGAIN), "tree")
    assert np.array_equal(a.step_advantage, b.step_advantage)


# ---------------------------------------------------------------------- columns, parameters
def test_needs_node_and_the_fields_its_parameters_name():
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"value": 1.0}]}])
    with pytest.raises(sc.MissingColumnError, match="'node'"):
        sc.estimate(ro, "tree")
    ro = sc.Rollouts.from_records(FORK_AGAIN)
    with pytest.raises(sc.MissingColumnError, match="'process'"):
        sc.estimate(ro, "tree", score="process")
    with pytest.raises(sc.MissingColumnError, match="'grounding'"):
        sc.estimate(ro, "tree", tool_weight=0.5)
    sc.estimate(ro, "tree", score="reward", tool_weight=0.5, tool_field="reward")  # absent reward = 0
    sc.estimate(ro, "tree", tool_field="process")  # tool_weight 0: the field is not read


def test_refuses_bad_parameters():
    ro = sc.Rollouts.from_records(FORK_AGAIN)
    for bad in (1.5, -0.1):
        with pytest.raises(sc.EstimatorError, match=r"weight=.* must lie in \[0, 1\]"):
            sc.estimate(ro, "tree", weight=bad)
    with pytest.raises(sc.EstimatorError, match="epsilon"):
        sc.estimate(ro, "tree", epsilon=0.0)
    with pytest.raises(sc.EstimatorError, match="'mean_outcome', 'max_outcome', 'process', 'reward'"):
        sc.estimate(ro, "tree", score="judge")
    with pytest.raises(sc.EstimatorError, match="tool_weight"):
        sc.estimate(ro, "tree", tool_weight=math.inf)
