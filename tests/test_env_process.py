"""Oracle process scores (``info["process"]``) of lock_chain, keydoor and arith_chain, and the
consistent-mistake noise ``prm_noise``: hand-worked episodes, determinism, the flip rate, and
that nothing else the environments output changes."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, make_env, parse_env_kwarg
from stepcredit.envs.base import oracle_process, process_flip_draw
from stepcredit.envs.keydoor import ACTIONS
from stepcredit.policies import TabularPolicy
from stepcredit.train import collect

PRM_ENVS = ("lock_chain", "keydoor", "arith_chain")
F = 1 << 30  # keydoor's distance of an unreached cell


def _processes(env, seed, actions):
    env.reset(seed=seed)
    out = []
    for a in actions:
        *_, term, trunc, info = env.step(a)
        out.append(info["process"])
        if term or trunc:
            break
    return out


def _random_actions(env, rng, n):
    """``n`` actions drawn uniformly from the valid actions, for an environment that is not stepped
    (lock_chain and keydoor: the same list in every state)."""
    acts = env.valid_actions()
    return [acts[i] for i in rng.integers(len(acts), size=n)]


# ---------------------------------------------------------------------- lock_chain
def test_lock_chain_scores_a_right_press_1_and_a_wrong_or_invalid_one_0():
    env = make_env("lock_chain", length=3, n_actions=3)
    env.reset(seed=1)
    code = [int(d) for d in env._combination]  # [1, 1, 2] for seed 1
    assert code == [1, 1, 2]
    presses = ["press 1",   # position 0: right -> 1
               "press 0",   # position 1: wrong (c_1 = 1) -> 0, back to 0
               "open",      # invalid no-op -> 0
               "press 1", "press 1",  # right, right -> 1, 1
               "press 2"]   # right, opens the lock -> 1
    assert _processes(env, 1, presses) == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------- keydoor
def test_keydoor_subgoal_distances_of_the_fixed_3x3_layout_by_hand():
    # #@#_#      cells (row, col); inner wall column 1 with the door at (1, 1);
    # #_D_#      key (2, 0), goal (2, 2); F = not reachable
    # #K#G#
    env = make_env("keydoor", size=3, random_layout=False)
    env.reset(seed=0)
    to_key, to_door, to_goal = env.subgoal_distances()
    # to the key, door locked: only the left column is reachable
    assert to_key.tolist() == [[2, F, F], [1, F, F], [0, F, F]]
    # to the locked door (key held): both rooms reach it, walls do not
    assert to_door.tolist() == [[2, F, 2], [1, 0, 1], [2, F, 2]]
    # to the goal with the door open: (1,0) -> (1,1) -> (1,2) -> (2,2) is 3
    assert to_goal.tolist() == [[4, F, 2], [3, 2, 1], [4, F, 0]]


def test_keydoor_scores_progress_toward_the_current_subgoal():
    env = make_env("keydoor", size=3, random_layout=False)
    steps = [
        ("up", 0.0),       # into the outer wall: invalid
        ("open", 0.0),     # no key: invalid
        ("down", 1.0),     # (0,0) -> (1,0): distance to the key 2 -> 1
        ("up", 0.0),       # back: 1 -> 2
        ("down", 1.0),     # 2 -> 1
        ("right", 0.0),    # into the locked door: invalid
        ("pick up", 1.0),  # the key: subgoal done, next the door
        ("down", 0.0),     # (2,0): distance to the door 1 -> 2
        ("up", 1.0),       # (1,0): 2 -> 1
        ("pick up", 0.0),  # nothing left to pick up
        ("open", 1.0),     # the door: next the goal
        ("right", 1.0),    # (1,1), the open door: distance to the goal 3 -> 2
        ("right", 1.0),    # (1,2): 2 -> 1
        ("down", 1.0),     # (2,2): the goal, 1 -> 0, reward 1
    ]
    assert _processes(env, 0, [a for a, _ in steps]) == [p for _, p in steps]


def test_keydoor_a_move_that_does_not_get_closer_scores_0():
    # fixed layout of size 5: agent (0,0), key (4,0); distances to the key: (0,0) 4, (1,0) 3, (0,1) 5, (1,1) 4
    env = make_env("keydoor", size=5, random_layout=False)
    assert _processes(env, 0, ["right", "left", "down", "right", "left"]) == [0.0, 1.0, 1.0, 0.0, 1.0]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(3, 7))
def test_keydoor_following_the_oracle_solves_every_layout_on_shortest_subgoal_routes(seed, size):
    """In every state some action scores 1, and an agent that always takes one (the first in
    ACTIONS order) solves the task in exactly (d_key(start) − 1) + 1 + (d_door(p₁) − 1) + 1 +
    d_goal(p₂) steps, p₁ / p₂ its cells when it picks up the key / opens the door: each scored
    move is a step of a shortest route to the current subgoal."""
    env = make_env("keydoor", size=size)
    env.reset(seed=seed)
    to_key, to_door, to_goal = env.subgoal_distances()
    start, at = env.start, {}
    steps, term = 0, False
    while not term:
        for a in ACTIONS:
            trial = copy.deepcopy(env)
            obs, r, term, trunc, info = trial.step(a)
            if info["process"] == 1.0:
                if a in ("pick up", "open"):
                    at[a] = env._agent
                env = trial
                break
        else:
            pytest.fail(f"no action scores 1 in\n{env._obs()}")
        steps += 1
        assert not trunc
    assert r == 1.0 and info["success"]
    assert steps == (to_key[start] - 1) + 1 + (to_door[at["pick up"]] - 1) + 1 + to_goal[at["open"]]


# ---------------------------------------------------------------------- arith_chain
@pytest.mark.parametrize(
    "actions, want",
    [
        (["3", "6", "7"], [1.0, 1.0, 1.0]),   # 8 - 5 = 3, + 3 = 6, + 1 = 7: all correct
        (["4", "7", "8"], [0.0, 0.0, 0.0]),   # wrong at once; later steps consistent but not true
        (["3", "5", "7"], [1.0, 0.0, 1.0]),   # right answer, wrong process
        (["x", "3", "6", "7"], [0.0, 1.0, 1.0, 1.0]),  # unparsable: a no-op scored 0
    ],
)
def test_arith_chain_process_is_step_correct(actions, want):
    env = make_env("arith_chain", length=3)  # seed 0: "Start at 8, subtract 5, add 3, add 1."
    env.reset(seed=0)
    got = []
    for a in actions:
        *_, info = env.step(a)
        got.append(info["process"])
        assert info["process"] == float(info["step_correct"])
    assert got == want


# ---------------------------------------------------------------------- all three
@pytest.mark.parametrize("name", PRM_ENVS)
def test_process_is_on_every_step_and_a_column_after_collect(name):
    envs = [make_env(name) for _ in range(8)]
    batch = collect(envs, TabularPolicy(), [3, 4], 4, np.random.default_rng(0))
    ro = batch.rollouts
    assert "process" in ro.step_fields
    p = ro.to_records()
    values = [s["process"] for rec in p for s in rec["steps"]]
    assert len(values) == ro.n_steps and set(values) <= {0.0, 1.0}
    if name == "lock_chain":  # a step scored 1 is one that advanced the lock
        for rec in p:
            pos = [int(s["state"].split()[2].split("/")[0]) for s in rec["steps"]]
            for t in range(len(pos) - 1):
                assert rec["steps"][t]["process"] == float(pos[t + 1] == pos[t] + 1)


def _trace(name, seed, picks, **kw):
    """Everything the environment outputs for actions picked from its valid actions (index p), and
    the process scores apart; "?" (invalid) where the pick is 9."""
    env = make_env(name, **kw)
    obs, info = env.reset(seed=seed)
    out, procs = [(obs, dict(info))], []
    for p in picks:
        acts = env.valid_actions()
        a = "?" if p == 9 else acts[p % len(acts)]
        obs, r, term, trunc, info = env.step(a)
        info = dict(info)
        procs.append(info.pop("process"))
        out.append((obs, r, term, trunc, info, env.valid_actions() if not (term or trunc) else None))
        if term or trunc:
            break
    return out, procs


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(PRM_ENVS),
    seed=st.integers(0, 2**32 - 1),
    picks=st.lists(st.integers(0, 9), min_size=1, max_size=30),
    noise=st.floats(0.0, 0.5),
)
def test_prm_noise_changes_nothing_but_process_and_is_deterministic(name, seed, picks, noise):
    exact, p_exact = _trace(name, seed, picks)
    noisy, p_noisy = _trace(name, seed, picks, prm_noise=noise)
    assert noisy == exact  # observations, rewards, ends, states, every other info key, valid actions
    again, p_again = _trace(name, seed, picks, prm_noise=noise)
    assert p_again == p_noisy  # no hidden random state
    assert _trace(name, seed, picks, prm_noise=0.0)[1] == p_exact  # prm_noise=0 is the oracle
    assert all(q in (p, 1.0 - p) for p, q in zip(p_exact, p_noisy))


@pytest.mark.parametrize("name", PRM_ENVS)
def test_the_flip_is_a_function_of_seed_state_and_action(name):
    """Across episodes, environment objects and repeats within an episode, one (task seed, state,
    action) triple always gets the same noisy score, and it is flipped iff its draw < prm_noise."""
    rng = np.random.default_rng(1)
    q = 0.3
    seen: dict[tuple, float] = {}
    for seed in range(4):
        for _ in range(5):
            exact, noisy = make_env(name), make_env(name, prm_noise=q)
            _, info = exact.reset(seed=seed)
            noisy.reset(seed=seed)
            done = False
            while not done:
                acts = exact.valid_actions()
                a = acts[rng.integers(len(acts))]
                state = info["state"]
                *_, t1, tr1, info = exact.step(a)
                *_, _, _, info_n = noisy.step(a)
                key = (seed, state, a)
                assert seen.setdefault(key, info_n["process"]) == info_n["process"]
                flipped = info_n["process"] != info["process"]
                assert flipped == (process_flip_draw(seed, state, a) < q)
                done = t1 or tr1
    assert len(seen) > 30


@pytest.mark.parametrize("q", [0.05, 0.2, 0.5])
def test_the_flip_rate_over_many_distinct_steps_is_prm_noise(q):
    """The fraction of flipped scores over n distinct (seed, state, action) triples is within 4
    binomial standard deviations sqrt(q(1−q)/n) of q (deterministic: fixed seeds and actions)."""
    rng = np.random.default_rng(0)
    flips: dict[tuple, bool] = {}
    for seed in range(300):
        exact, noisy = make_env("lock_chain", length=5, prm_noise=0.0), make_env("lock_chain", length=5, prm_noise=q)
        _, info = exact.reset(seed=seed)
        noisy.reset(seed=seed)
        for a in _random_actions(exact, rng, 20):
            state = info["state"]
            *_, t1, tr1, info = exact.step(a)
            *_, info_n = noisy.step(a)
            flips[(seed, state, a)] = info_n["process"] != info["process"]
            if t1 or tr1:
                break
    n = len(flips)
    rate = sum(flips.values()) / n
    assert n > 2000
    assert abs(rate - q) <= 4 * math.sqrt(q * (1 - q) / n), (rate, n)


def test_the_draw_is_uniform_and_stable():
    # pinned values: the draw must not change between versions (runs with noise stay reproducible)
    # u = (blake2b-64 of "0\x1flock position 0/4\x1fpress 1", little-endian) >> 11, · 2^-53
    assert process_flip_draw(0, "lock position 0/4", "press 1") == 0.256277070262535
    assert process_flip_draw(7, "lock position 2/4", "press 0") == 0.8253681921357352
    draws = np.array([process_flip_draw(s, "lock position 0/4", f"press {a}") for s in range(4000) for a in range(3)])
    assert draws.min() >= 0.0 and draws.max() < 1.0
    hist = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - 1200) < 4 * math.sqrt(1200 * 0.9))  # about uniform
    assert oracle_process(1.0, 0.0, 0, "s", "a") == 1.0  # no noise: no hashing, the score as it is
    assert oracle_process(0.0, 0.5, 0, "s", "a") == (1.0 if process_flip_draw(0, "s", "a") < 0.5 else 0.0)
    assert process_flip_draw(None, "s", "a") != process_flip_draw(0, "s", "a")


@pytest.mark.parametrize("name", PRM_ENVS)
@pytest.mark.parametrize("noise", [-0.1, 0.51, 1.0])
def test_prm_noise_outside_0_to_half_is_refused(name, noise):
    with pytest.raises(EnvError, match=f"environment '{name}': prm_noise={noise} must lie in \\[0, 0.5\\]"):
        make_env(name, prm_noise=noise)


@pytest.mark.parametrize("name", PRM_ENVS)
def test_prm_noise_is_a_parameter_from_the_command_line(name):
    assert parse_env_kwarg(name, "prm_noise=0.1") == ("prm_noise", 0.1)
    assert make_env(name, prm_noise=0).prm_noise == 0.0  # an int is taken as a float
