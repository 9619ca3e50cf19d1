"""PRM-guided best-of-N and step-level beam search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import make_env
from stepcredit.policies import TabularPolicy
from stepcredit.prm.evaluation import best_of_n
from stepcredit.prm.feature_model import PRMError
from stepcredit.prm.search import aggregate_scores, beam_search, best_of_n_search

LOCK = {"length": 4, "n_actions": 3, "max_steps": 8}


class LockOracle:
    """A perfect PRM for lock_chain: 1 for the right press at a position, else 0."""

    def __init__(self, seeds):
        self.combo = {}
        for s in seeds:
            env = make_env("lock_chain", **LOCK)
            env.reset(seed=s)
            self.combo[s] = env._combination.tolist()
        self.calls = 0

    def score_steps(self, ro):
        self.calls += 1
        out = []
        gid = [str(g) for g in ro.to_arrow().column("group_id").to_pylist()]
        for e in range(ro.n_episodes):
            seed = int(gid[e].lstrip("t").split("#")[0])
            for t in range(ro.episode_offsets[e], ro.episode_offsets[e + 1]):
                state = str(ro.key_values["state"][t])
                action = str(ro.key_values["action"][t])
                pos = int(state.split()[2].split("/")[0])
                out.append(1.0 if action == f"press {self.combo[seed][pos]}" else 0.0)
        return np.array(out)


class Constant:
    def score_steps(self, ro):
        return np.zeros(ro.n_steps)


@settings(max_examples=100, deadline=None)
@given(lens=st.lists(st.integers(1, 5), min_size=1, max_size=6), data=st.data())
def test_aggregates_equal_loops(lens, data):
    off = np.concatenate([[0], np.cumsum(lens)])
    S = int(off[-1])
    s = np.array(data.draw(st.lists(st.floats(0, 1), min_size=S, max_size=S)))
    for how, f in [("min", min), ("last", lambda x: x[-1]), ("mean", lambda x: sum(x) / len(x)),
                   ("prod", lambda x: sum(np.log(max(v, 1e-12)) for v in x))]:
        want = [f(list(s[off[i]:off[i + 1]])) for i in range(len(lens))]
        np.testing.assert_allclose(aggregate_scores(s, off, how), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(PRMError, match="aggregate"):
        aggregate_scores(s, off, "max")  # type: ignore[arg-type]


def test_best_of_n_with_a_perfect_prm_reaches_pass_at_n():
    seeds = list(range(30))
    res = best_of_n_search("lock_chain", TabularPolicy(), LockOracle(seeds), seeds, 16, env_kwargs=LOCK, seed=3)
    # with "min", an episode scores 1 only if every press was right, i.e. it opened the lock at
    # once; a succeeding episode may contain wrong presses (resets), so guided <= pass@N, and
    # guided >= unguided holds per task only in expectation: check the means
    assert res.success.shape == (30,)
    assert res.summary()["success"] >= res.summary()["unguided_success"]
    assert np.all(res.success <= res.oracle_success + 1e-12)
    assert res.generated_steps == res.rollouts.n_steps
    # the per-task rates agree with the evaluation module's best_of_n on the same scores
    ro = res.rollouts
    path = aggregate_scores(ro.column("process"), ro.episode_offsets, "min")
    ev = best_of_n(path, np.repeat(np.arange(30), 16), res.rollouts.outcome >= 1)
    np.testing.assert_allclose([ev["best_of_n"], ev["random"], ev["oracle"]],
                               [res.success.mean(), res.baseline_success.mean(), res.oracle_success.mean()], rtol=1e-12)
    # with "min" an episode scores 1 iff every press was right, i.e. it opened the lock at once
    # (length 4 <= max_steps): wherever such an episode exists, the guided answer succeeds
    ro = res.rollouts
    path = aggregate_scores(ro.column("process"), ro.episode_offsets, "min").reshape(30, 16)
    clean = path.max(axis=1) == 1.0
    assert clean.any()
    np.testing.assert_array_equal(res.success[clean], 1.0)


def test_best_of_n_with_an_uninformative_prm_is_the_unguided_rate():
    seeds = list(range(20))
    res = best_of_n_search("lock_chain", TabularPolicy(), Constant(), seeds, 8, env_kwargs=LOCK)
    # every episode ties, so the answer's success is the mean of the N: exactly the baseline
    np.testing.assert_allclose(res.success, res.baseline_success)


def test_beam_search_with_a_perfect_prm_solves_every_task():
    seeds = list(range(15))
    res = beam_search("lock_chain", TabularPolicy(), LockOracle(seeds), seeds, beam_width=2, candidates=12, env_kwargs=LOCK)
    # 12 uniform proposals over 3 digits miss the right one with probability (2/3)^12 ≈ 0.008
    # per step and beam, so about 0.5 misses are expected over 15 tasks x 4 steps, and a miss
    # can still be recovered within max_steps
    assert res.success.mean() >= 0.9
    assert res.generated_steps > 0 and res.env_steps <= res.generated_steps
    # unguided: a constant PRM keeps the first proposals; far fewer tasks are solved
    flat = beam_search("lock_chain", TabularPolicy(), Constant(), seeds, beam_width=2, candidates=12, env_kwargs=LOCK)
    assert flat.success.mean() < res.success.mean()


def test_beam_search_is_deterministic_and_checks_arguments():
    seeds = [1, 2, 3]
    a = beam_search("lock_chain", TabularPolicy(), LockOracle(seeds), seeds, env_kwargs=LOCK, seed=5)
    b = beam_search("lock_chain", TabularPolicy(), LockOracle(seeds), seeds, env_kwargs=LOCK, seed=5)
    np.testing.assert_array_equal(a.success, b.success)
    assert (a.generated_steps, a.env_steps) == (b.generated_steps, b.env_steps)
    with pytest.raises(PRMError, match="beam_width"):
        beam_search("lock_chain", TabularPolicy(), Constant(), seeds, beam_width=0)
    with pytest.raises(PRMError, match="aggregate"):
        beam_search("lock_chain", TabularPolicy(), Constant(), seeds, aggregate="max")  # type: ignore[arg-type]

    class Bad:
        def score_steps(self, ro):
            return np.zeros(ro.n_steps + 1)

    with pytest.raises(PRMError, match="returned shape"):
        best_of_n_search("lock_chain", TabularPolicy(), Bad(), seeds, 2, env_kwargs=LOCK)
