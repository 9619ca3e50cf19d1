"""Monte-Carlo step labels from rollout trees (Math-Shepherd's hard and soft estimation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.data import Rollouts
from stepcredit.envs import make_env
from stepcredit.policies import TabularPolicy
from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.mc_labels import mc_label_rollouts, tree_mc_labels


def _oracle(records: list[dict], threshold: float) -> tuple[list[float], list[float], list[int]]:
    """For each step: the distinct episodes of its group (one per last node: repeated leaves
    count once) that have a step with its node id (or itself alone without node ids), and the
    share of them whose outcome reaches the threshold."""
    soft, hard, n = [], [], []
    for rec in records:
        for step in rec["steps"]:
            if "node" in step:
                distinct = {}
                for r in records:
                    if r["group_id"] == rec["group_id"]:
                        distinct.setdefault(r["steps"][-1]["node"], r)
                through = [r for r in distinct.values() if any(s["node"] == step["node"] for s in r["steps"])]
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
            rec = {"episode_id": f"g{g}e{e}", "group_id": f"g{g}",
                   "outcome": float(draw(st.sampled_from([0.0, 0.5, 1.0]))), "steps": steps}
            records.append(rec)
            if draw(st.booleans()):  # a repeated leaf, as collect_tree makes for short episodes
                records.append({**rec, "episode_id": f"g{g}e{e}r"})
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


def test_repeated_leaves_count_once():
    # b repeats a's leaf (collect_tree's filler for a path that ended early): one continuation
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"node": "r"}, {"node": "x"}]},
        {"episode_id": "b", "group_id": "g", "outcome": 1.0, "steps": [{"node": "r"}, {"node": "x"}]},
        {"episode_id": "c", "group_id": "g", "outcome": 0.0, "steps": [{"node": "r"}, {"node": "y"}]},
    ]
    lab = tree_mc_labels(Rollouts.from_records(recs))
    np.testing.assert_allclose(lab.soft, [0.5, 1, 0.5, 1, 0.5, 0])
    np.testing.assert_array_equal(lab.n, [2, 1, 2, 1, 2, 1])


class First:
    """A deterministic policy: always the first valid action (log-probs unused here)."""

    recurrent = False

    def act(self, states, valid_actions, rng):
        from types import SimpleNamespace

        B = len(states)
        rng.random(B)
        return SimpleNamespace(index=np.zeros(B, dtype=np.int64), log_prob=np.zeros(B), ref_log_prob=np.zeros(B))


def test_completions_of_a_deterministic_policy_by_hand():
    # with a policy that always presses digit 0, a completion from a state is deterministic: the
    # label of step t is 1 iff pressing 0 from the position step t reached opens the lock within
    # max_steps, computed here by stepping a fresh environment by hand
    kw = {"length": 3, "n_actions": 2, "max_steps": 6}
    ro = mc_label_rollouts("lock_chain", First(), list(range(12)), continuations=3, env_kwargs=kw)
    labels = ro.column("label")
    off = ro.episode_offsets
    metas = [json.loads(m) for m in ro.meta.to_pylist()]
    for e in range(ro.n_episodes):
        seed = metas[e]["task_seed"]
        steps = off[e + 1] - off[e]
        for t in range(steps):
            env = make_env("lock_chain", **kw)
            env.reset(seed=seed)
            done, ok = False, False
            for _ in range(t + 1):  # the spine's prefix: all presses of 0
                _, _, term, trunc, info = env.step("press 0")
                done, ok = term or trunc, bool(info.get("success", False))
            while not done:
                _, _, term, trunc, info = env.step("press 0")
                done, ok = term or trunc, bool(info.get("success", False))
            assert labels[off[e] + t] == float(ok), (e, t)
        assert metas[e]["info"]["label_n"] == [3] * (steps - 1) + [1]


def test_mc_labels_on_lock_chain_rank_right_presses_above_wrong_ones():
    # a wrong press sends the lock back to position 0, a right one advances it, so under the
    # uniform completer the chance of opening the lock is higher after a right press: over many
    # tasks the mean soft label of right presses must exceed that of wrong presses
    kw = {"length": 3, "n_actions": 2, "max_steps": 12}
    ro = mc_label_rollouts("lock_chain", TabularPolicy(), list(range(40)), continuations=8, episodes_per_task=2,
                           env_kwargs=kw, seed=1)
    assert ro.has("label") and ro.has("process") and ro.n_episodes == 80
    label, right = ro.column("label"), ro.column("process") == 1.0
    assert 0 < label.mean() < 1
    assert label[right].mean() > label[~right].mean() + 0.1
    metas = [json.loads(m) for m in ro.meta.to_pylist()]
    n = np.concatenate([m["info"]["label_n"] for m in metas])
    assert n.shape == (ro.n_steps,) and set(n.tolist()) <= {1, 8}
    hard = np.concatenate([m["info"]["label_hard"] for m in metas])
    np.testing.assert_array_equal(hard == 1, label > 0)
    # deterministic for a seed
    again = mc_label_rollouts("lock_chain", TabularPolicy(), list(range(40)), continuations=8, episodes_per_task=2,
                              env_kwargs=kw, seed=1)
    np.testing.assert_array_equal(again.column("label"), label)


def test_mc_label_rollouts_errors():
    with pytest.raises(PRMError, match="continuations=0"):
        mc_label_rollouts("lock_chain", TabularPolicy(), [0], continuations=0)
    with pytest.raises(PRMError, match="no task"):
        mc_label_rollouts("lock_chain", TabularPolicy(), [])
