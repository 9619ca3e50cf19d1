"""Monte-Carlo step labels from rollout trees (Math-Shepherd's hard and soft estimation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.data import Rollouts
from stepcredit.policies import TabularPolicy
from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.mc_labels import mc_label_rollouts, tree_mc_labels


def _oracle(records: list[dict], threshold: float) -> tuple[list[float], list[float], list[int]]:
    """For each step: the episodes of its group that have a step with its node id (or itself
    alone without node ids), and the share of them whose outcome reaches the threshold."""
    soft, hard, n = [], [], []
    for rec in records:
        for step in rec["steps"]:
            if "node" in step:
                through = [r for r in records if r["group_id"] == rec["group_id"]
                           and any(s["node"] == step["node"] for s in r["steps"])]
            else:
                through = [rec]
            wins = sum(1 for r in through if r["outcome"] >= threshold)
            soft.append(wins / len(through))
            hard.append(1.0 if wins else 0.0)
            n.append(len(through))
    return soft, hard, n


@st.composite
def _tree_records(draw):
    """Groups of episodes that are root-to-leaf paths of random trees (node ids = paths)."""
    records = []
    for g in range(draw(st.integers(1, 3))):
        for e in range(draw(st.integers(1, 5))):
            length = draw(st.integers(1, 5))
            path, steps = "", []
            for _ in range(length):
                path += str(draw(st.integers(0, 1)))
                steps.append({"state": f"s{len(path)}", "action": "a", "node": f"n{path}"})
            records.append({"episode_id": f"g{g}e{e}", "group_id": f"g{g}",
                            "outcome": float(draw(st.sampled_from([0.0, 0.5, 1.0]))), "steps": steps})
    return records


@settings(max_examples=100, deadline=None)
@given(records=_tree_records(), threshold=st.sampled_from([0.5, 1.0]))
def test_tree_labels_equal_the_loop_oracle(records, threshold):
    ro = Rollouts.from_records(records)
    lab = tree_mc_labels(ro, threshold=threshold)
    soft, hard, n = _oracle(records, threshold)
    np.testing.assert_allclose(lab.soft, soft, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(lab.hard, hard)
    np.testing.assert_array_equal(lab.n, n)
    assert np.all((lab.soft > 0) == (lab.hard == 1))


def test_labels_by_hand():
    # group g: root node r shared by 3 episodes (outcomes 1, 0, 1): its label 2/3 (N = 3); node
    # x shared by the first two: 1/2; the tails are their own episode's outcome (N = 1)
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"node": "r"}, {"node": "x"}, {"node": "a2"}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"node": "r"}, {"node": "x"}, {"node": "b2"}]},
        {"episode_id": "c", "group_id": "g", "outcome": 1.0, "steps": [{"node": "r"}, {"node": "c1"}]},
        {"episode_id": "d", "group_id": "h", "outcome": 0.0, "steps": [{"node": "r"}]},  # other group
    ]
    lab = tree_mc_labels(Rollouts.from_records(recs))
    np.testing.assert_allclose(lab.soft, [2 / 3, 1 / 2, 1, 2 / 3, 1 / 2, 0, 2 / 3, 1, 0])
    np.testing.assert_array_equal(lab.hard, [1, 1, 1, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(lab.n, [3, 2, 1, 3, 2, 1, 3, 1, 1])
    # an explicit success array overrides the outcome threshold
    lab2 = tree_mc_labels(Rollouts.from_records(recs), success=np.array([False, False, True, True]))
    np.testing.assert_allclose(lab2.soft[:3], [1 / 3, 0, 0])


def test_without_node_ids_each_step_gets_its_own_outcome():
    recs = [{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}, {"state": "t"}]},
            {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"state": "s"}]}]
    lab = tree_mc_labels(Rollouts.from_records(recs))
    np.testing.assert_array_equal(lab.soft, [1, 1, 0])
    np.testing.assert_array_equal(lab.n, [1, 1, 1])
    with pytest.raises(PRMError, match="success has shape"):
        tree_mc_labels(Rollouts.from_records(recs), success=np.array([True]))


def test_mc_labels_on_lock_chain_rank_right_presses_above_wrong_ones():
    # a wrong press sends the lock back to position 0, a right one advances it, so under the
    # uniform completer the chance of opening the lock is higher after a right press: over many
    # tasks the mean soft label of right presses must exceed that of wrong presses
    ro = mc_label_rollouts("lock_chain", TabularPolicy(), list(range(40)), continuations=8,
                           env_kwargs={"length": 3, "n_actions": 2, "max_steps": 12}, seed=1)
    assert ro.has("label") and ro.has("node") and ro.has("process")
    label, right = ro.column("label"), ro.column("process") == 1.0
    assert 0 < label.mean() < 1
    assert label[right].mean() > label[~right].mean() + 0.1
    metas = [json.loads(m) for m in ro.meta.to_pylist()]
    n = np.concatenate([m["info"]["label_n"] for m in metas])
    # the tree forks 2 ways before the first step, so a first step has N/2 = 4 continuations
    assert n.shape == (ro.n_steps,) and n.max() == 4 and n.min() >= 1
    hard = np.concatenate([m["info"]["label_hard"] for m in metas])
    np.testing.assert_array_equal(hard == 1, label > 0)
    # deterministic for a seed
    again = mc_label_rollouts("lock_chain", TabularPolicy(), list(range(40)), continuations=8,
                              env_kwargs={"length": 3, "n_actions": 2, "max_steps": 12}, seed=1)
    np.testing.assert_array_equal(again.column("label"), label)


def test_mc_label_rollouts_errors():
    with pytest.raises(PRMError, match="continuations=1"):
        mc_label_rollouts("lock_chain", TabularPolicy(), [0], continuations=1)
    with pytest.raises(PRMError, match="no task"):
        mc_label_rollouts("lock_chain", TabularPolicy(), [])
