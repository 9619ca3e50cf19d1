"""Truncated step-level sampling: rollout trees (``collect_tree``, ``TrainConfig.branching``)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import list_envs, make_env
from stepcredit.estimators import estimate
from stepcredit.estimators.trees import node_parents
from stepcredit.policies import TabularPolicy
from stepcredit.train import WALL_CLOCK_FIELDS, TrainConfig, TrainError, train
from stepcredit.train.rollout import collect, collect_tree


def _strip(metrics):
    return [{k: v for k, v in m.items() if k not in WALL_CLOCK_FIELDS} for m in metrics]


def _episodes(ro):
    """Per episode: (group, [node], [state], [action], [logp], outcome)."""
    off = ro.episode_offsets
    node = ro.key_values["node"].to_pylist()
    state = ro.key_values["state"].to_pylist()
    action = ro.key_values["action"].to_pylist()
    logp = ro.column("logp", by="test")
    out = []
    for e in range(ro.n_episodes):
        a, b = int(off[e]), int(off[e + 1])
        out.append((int(ro.episode_group[e]), node[a:b], state[a:b], action[a:b], logp[a:b].tolist(), float(ro.outcome[e])))
    return out


def _common(x, y):
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def _tree(env="lock_chain", n=2, G=8, k=2, b=1, seed=0, **kw):
    envs = [make_env(env, **kw) for _ in range(n * G)]
    return collect_tree(envs, TabularPolicy(), list(range(10, 10 + n)), G, np.random.default_rng(seed), branching=k, branch_every=b)


def _check_tree(batch, n, G, env=None, seeds=None, env_kwargs=None):
    """The invariants of every tree batch; returns the episodes."""
    ro = batch.rollouts
    node_parents(ro)  # raises unless the node ids form a tree in every group
    assert ro.n_episodes == n * G and ro.n_groups == n
    assert np.array_equal(np.bincount(ro.episode_group, minlength=n), np.full(n, G))
    assert len(set(ro.episode_id.to_pylist())) == n * G
    eps = _episodes(ro)
    for (g1, n1, s1, a1, l1, _), (g2, n2, s2, a2, l2, _) in itertools.combinations(eps, 2):
        if g1 != g2:
            assert not set(n1) & set(n2)  # node ids never cross groups
            continue
        c = _common(n1, n2)  # the shared prefix: same nodes -> exactly the same steps
        assert s1[:c] == s2[:c] and a1[:c] == a2[:c] and l1[:c] == l2[:c]
        assert not set(n1[c:]) & set(n2[c:])  # once apart, never the same node again
        if c < min(len(n1), len(n2)):
            assert s1[c] == s2[c]  # siblings fork from one state
    assert batch.sampled_steps == len({x for e in eps for x in e[1]})
    if env is not None:  # every episode is exactly what a fresh env does with its actions
        for e, (g, _, states, actions, _, outcome) in enumerate(eps):
            env_ = make_env(env, **(env_kwargs or {}))
            _, info = env_.reset(seed=int(seeds[g]))
            total = 0.0
            for t, a in enumerate(actions):
                assert info["state"] == states[t]
                _, r, term, trunc, info = env_.step(a)
                total += r
                assert (term or trunc) == (t == len(actions) - 1)
            assert total == pytest.approx(batch.episode_return[e])
            a = int(ro.episode_offsets[e])
            stored = ro.column("reward", by="test")[a:a + len(actions)]
            assert stored[-1] == 0 and outcome + stored.sum() == pytest.approx(total)
            assert bool(batch.success[e]) == bool(info.get("success", False))
    return eps


def test_binary_tree_hand_worked():
    """k=2, G=8, b=1: forks at steps 0, 1, 2, so in depth-first leaf order episode 0 shares 2
    steps with episode 1, 1 step with episodes 2-3 and none with 4-7 (its root siblings)."""
    batch = _tree(n=2, G=8, k=2, b=1, length=4)
    eps = _check_tree(batch, 2, 8, "lock_chain", [10, 11], {"length": 4})
    for g in range(2):
        grp = [e for e in eps if e[0] == g]
        for i, j in itertools.combinations(range(8), 2):
            want = 2 if i // 2 == j // 2 else 1 if i // 4 == j // 4 else 0
            assert _common(grp[i][1], grp[j][1]) == want
    ro = batch.rollouts
    assert batch.sampled_steps < ro.n_steps  # shared steps are stored once per episode
    assert ro.episode_id.to_pylist()[:2] == ["i0/t10/e0", "i0/t10/e1"]


def test_branch_every_and_uneven_quota():
    """G=5, k=3, b=2: quotas 2,2,1 at step 0; the two quota-2 paths fork again at step 2."""
    batch = _tree(n=1, G=5, k=3, b=2, length=4)
    eps = _check_tree(batch, 1, 5, "lock_chain", [10], {"length": 4})
    common = {(i, j): _common(eps[i][1], eps[j][1]) for i, j in itertools.combinations(range(5), 2)}
    assert common[(0, 1)] == 2 and common[(2, 3)] == 2
    assert all(v == 0 for key, v in common.items() if key not in ((0, 1), (2, 3)))


def test_an_episode_ending_before_its_forks_counts_for_its_quota():
    """max_steps=1: every path ends at step 0, so the two root children (quota 4) are 4 leaves each."""
    batch = _tree(n=1, G=8, k=2, b=1, length=3, max_steps=1)
    eps = _check_tree(batch, 1, 8)
    assert all(len(e[1]) == 1 for e in eps)
    assert len({e[1][0] for e in eps}) == 2 and batch.sampled_steps == 2


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 9), st.integers(2, 4), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**31 - 1))
def test_property_every_group_has_G_leaves_on_a_tree(G, k, b, n, seed):
    batch = _tree(n=n, G=G, k=k, b=b, seed=seed, length=3)
    _check_tree(batch, n, G, "lock_chain", [10 + i for i in range(n)], {"length": 3})


@pytest.mark.parametrize("spec", list_envs(), ids=lambda s: s.name)
def test_every_env_replays_to_the_same_prefix(spec):
    """Random-policy smoke run of every built-in environment: forked children replayed in fresh
    instances continue exactly from the shared state (checked against a replay from reset)."""
    batch = _tree(env=spec.name, n=2, G=4, k=2, b=2, seed=3)
    _check_tree(batch, 2, 4, spec.name, [10, 11])


def test_collect_tree_is_deterministic_and_rejects_bad_arguments():
    a, b = _tree(seed=5), _tree(seed=5)
    assert _episodes(a.rollouts) == _episodes(b.rollouts)
    np.testing.assert_array_equal(a.action_index, b.action_index)
    envs = [make_env("lock_chain") for _ in range(8)]
    for kw in ({"branching": 1}, {"branch_every": 0}):
        with pytest.raises(ValueError, match="branching >= 2"):
            collect_tree(envs, TabularPolicy(), [1], 8, np.random.default_rng(0), **kw)
    with pytest.raises(ValueError, match="8 environments"):
        collect_tree(envs[:4], TabularPolicy(), [1], 8, np.random.default_rng(0))


def test_tree_estimator_on_the_batch_differs_from_grpo():
    ro = _tree(n=4, G=8, k=2, b=1, seed=1, length=2, n_actions=2).rollouts
    assert 0 < float(np.mean(ro.outcome)) < 1
    t = estimate(ro, "tree")
    g = estimate(ro, "grpo")
    assert t.diagnostics["forks"] > 0 and t.diagnostics["shared_step_fraction"] > 0
    assert not np.allclose(t.step_advantage, g.step_advantage)
    np.testing.assert_allclose(estimate(ro, "tree", weight=0.0).step_advantage, g.step_advantage)


def test_without_branching_the_collector_is_unchanged():
    """branching=0 uses ``collect``: independent episodes (no node field)."""
    envs = [make_env("lock_chain") for _ in range(8)]
    batch = collect(envs, TabularPolicy(), [1], 8, np.random.default_rng(0))
    assert "node" not in batch.rollouts.key_values and batch.sampled_steps is None
    assert batch.n_sampled_steps == batch.n_steps


# ---------------------------------------------------------------------- training
def _cfg(**kw):
    base = dict(env="lock_chain", env_kwargs={"length": 4}, estimator="tree", branching=2,
                group_size=8, tasks_per_iter=4, budget=1536, seed=0, checkpoint_every=3)
    base.update(kw)
    return TrainConfig(**base)


def test_config_checks_and_to_dict():
    with pytest.raises(TrainError, match="branching"):
        TrainConfig(branching=1)
    with pytest.raises(TrainError, match="branch_every"):
        TrainConfig(branching=2, branch_every=0)
    with pytest.raises(TrainError, match="non-recurrent"):
        TrainConfig(branching=2, policy="gru")
    assert "branching" not in TrainConfig().to_dict()  # configs without branching read as before
    d = TrainConfig(branching=3, branch_every=2).to_dict()
    assert d["branching"] == 3 and d["branch_every"] == 2


def test_training_with_branching_and_tree_learns(tmp_path):
    t0 = time.perf_counter()
    res = train(_cfg(), tmp_path)
    assert time.perf_counter() - t0 < 20
    # random play opens a length-4, 3-digit lock within 16 presses rarely (about 0.06)
    assert np.mean([m["success_rate"] for m in res.metrics[-3:]]) >= 0.8
    first = res.metrics[0]
    assert first["env_steps"] < first["mean_length"] * first["episodes"]  # shared steps sampled once


def test_branching_runs_are_deterministic_and_resume_exactly(tmp_path):
    cfg = _cfg(budget=320)
    full = train(cfg, tmp_path / "full")
    again = train(cfg, tmp_path / "again")
    assert _strip(full.metrics) == _strip(again.metrics)
    part = train(cfg, tmp_path / "run", stop_after=4)
    assert not part.completed
    res = train(cfg, tmp_path / "run")
    assert res.resumed_from == 4 and _strip(res.metrics) == _strip(full.metrics)
    np.testing.assert_array_equal(res.policy.logits, full.policy.logits)
    with pytest.raises(TrainError, match="branching"):
        train(_cfg(budget=320, branching=4), tmp_path / "run")  # another tree shape: another config


def test_branching_with_the_mlp_policy(tmp_path):
    pytest.importorskip("torch")
    res = train(_cfg(policy="mlp", budget=64, group_size=4, tasks_per_iter=2), tmp_path)
    assert res.completed and len(res.metrics) == 8
