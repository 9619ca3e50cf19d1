"""keydoor: the rules by hand on the fixed layout, solvable layouts, determinism, anchor states."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, make_env
from stepcredit.envs.keydoor import ACTIONS

FIXED_5 = """\
#######
#@_#__#
#__#__#
#__D__#
#__#__#
#K_#_G#
#######
carrying key: no"""


def _replay(env, seed, actions):
    """(trace of (state, reward, terminated, truncated, valid), last info) after ``actions`` from reset."""
    obs, info = env.reset(seed=seed)
    trace = [info["state"]]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        trace.append((info["state"], r, term, trunc, info["valid"]))
        if term or trunc:
            break
    return trace, info


def _shortest(env, seed):
    """Breadth-first search over the environment's states (replaying each action path from reset):
    the shortest action list that reaches the goal, or None."""
    start, _ = env.reset(seed=seed)
    seen, todo = {start}, deque([[]])
    while todo:
        path = todo.popleft()
        for a in ACTIONS:
            env.reset(seed=seed)
            for b in path:
                env.step(b)
            obs, r, term, trunc, info = env.step(a)
            if term:
                return path + [a]
            if not trunc and obs not in seen:
                seen.add(obs)
                todo.append(path + [a])
    return None


def test_the_fixed_layout_by_hand():
    env = make_env("keydoor", size=5, random_layout=False)
    obs, info = env.reset(seed=123)
    assert obs == FIXED_5 and info["state"] == obs
    # walking into the outer wall, picking up away from the key, opening without the key: no-ops
    for a in ("up", "left", "pick up", "open", "dance"):
        obs, r, term, trunc, info = env.step(a)
        assert (obs, r, term, trunc, info["valid"]) == (FIXED_5, 0.0, False, False, False), a
    for a in ("down", "down", "down"):  # (0,0) -> (3,0): the key at (4,0) is below the agent
        obs, *_ , info = env.step(a)
    assert info["valid"]
    obs, r, term, trunc, info = env.step("down")  # the key is an obstacle
    assert not info["valid"]
    obs, r, term, trunc, info = env.step("Pick Up ")  # case and surrounding spaces are ignored
    assert info["valid"] and obs.endswith("carrying key: yes") and "K" not in obs
    obs, *_, info = env.step("pick up")  # nothing left to pick up
    assert not info["valid"]
    env.step("up")
    obs, *_, info = env.step("right")  # (2,1): next to the door at (2,2)
    assert obs.splitlines()[3] == "#_@D__#"
    obs, *_, info = env.step("open")
    assert info["valid"] and obs.splitlines()[3] == "#_@/__#"
    obs, *_, info = env.step("open")  # already open
    assert not info["valid"]
    for a in ("right", "right", "right", "down"):
        obs, r, term, trunc, info = env.step(a)
        assert r == 0.0 and not term
    obs, r, term, trunc, info = env.step("down")  # (4,4): the goal
    assert r == 1.0 and term and not trunc and info["success"] is True
    with pytest.raises(RuntimeError, match="reset"):
        env.step("up")


def test_the_locked_door_blocks_and_the_limit_truncates():
    env = make_env("keydoor", size=3, random_layout=False, max_steps=4)
    obs, _ = env.reset(seed=0)
    assert obs.splitlines()[1:4] == ["#@#_#", "#_D_#", "#K#G#"]
    env.step("down")  # (1,0), next to the locked door
    obs, r, term, trunc, info = env.step("right")  # the locked door is a wall
    assert not info["valid"] and obs.splitlines()[2] == "#@D_#"
    env.step("open")  # no key: no-op
    obs, r, term, trunc, info = env.step("up")
    assert r == 0.0 and not term and trunc and info["success"] is False


@pytest.mark.parametrize("size, length", [(3, 6), (5, 12), (7, 18)])
def test_shortest_solution_of_the_fixed_layout(size, length):
    # size 5: 3 down, pick up, up, right, open, 4 right/down to (4,4) via the door -> 12
    env = make_env("keydoor", size=size, random_layout=False)
    path = _shortest(env, seed=0)
    assert path is not None and len(path) == length


def test_defaults_and_protocol():
    env = make_env("keydoor")
    assert isinstance(env, TextEnv) and env.max_steps == 100 and env.random_layout
    env.reset(seed=0)
    assert env.valid_actions() == ["up", "down", "left", "right", "pick up", "open"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(3, 6))
def test_random_layouts_are_well_formed_and_solvable(seed, size):
    env = make_env("keydoor", size=size)
    obs, _ = env.reset(seed=seed)
    rows = obs.splitlines()
    assert len(rows) == size + 3 and all(len(r) == size + 2 for r in rows[:-1])
    assert sum(r.count(ch) for r in rows for ch in "@KDG") == 4  # one each
    assert 1 <= env.wall_col <= size - 2 and env.door == (env.door_row, env.wall_col)
    assert env.start[1] < env.wall_col and env.key[1] < env.wall_col and env.goal[1] > env.wall_col
    assert env.start != env.key
    path = _shortest(env, seed)
    assert path is not None and len(path) <= env.max_steps
    assert path.count("pick up") == 1 and path.count("open") == 1


def test_the_layout_is_drawn_from_the_seed_only_when_asked():
    rand = make_env("keydoor", size=5)
    fixed = make_env("keydoor", size=5, random_layout=False)
    assert len({rand.reset(seed=s)[0] for s in range(20)}) > 10
    assert {fixed.reset(seed=s)[0] for s in range(20)} == {FIXED_5}


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=30),
    cut=st.integers(0, 30),
)
def test_a_group_with_the_same_action_prefix_visits_the_same_states(seed, actions, cut):
    """Two episodes of one group (same task seed, separate environment objects) that share an
    action prefix share the states along it: the anchor states of the group."""
    other = actions[:cut] + list(reversed(actions[cut:]))
    a, _ = _replay(make_env("keydoor"), seed, actions)
    b, _ = _replay(make_env("keydoor"), seed, other)
    n = min(cut, len(a) - 1, len(b) - 1)
    assert a[: n + 1] == b[: n + 1]
    c, _ = _replay(make_env("keydoor"), seed, actions)
    assert c == a  # determinism


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), moves=st.lists(st.sampled_from(["up", "down", "left", "right"]), max_size=12))
def test_the_state_key_has_no_history(seed, moves):
    """Undoing a walk (each move followed by its opposite, or blocked) returns to the very same state key."""
    undo = {"up": "down", "down": "up", "left": "right", "right": "left"}
    env = make_env("keydoor", max_steps=1000)
    _, info = env.reset(seed=seed)
    before = info["state"]
    for m in moves:
        *_, info = env.step(m)
        if info["valid"]:
            *_, info = env.step(undo[m])
        assert info["state"] == before


def test_a_random_policy_sometimes_succeeds_and_every_episode_ends_by_max_steps():
    rng = np.random.default_rng(0)
    env = make_env("keydoor", size=5)
    wins = 0
    for seed in range(200):
        env.reset(seed=seed)
        assert env.valid_actions()
        for t in range(1, env.max_steps + 1):
            *_, term, trunc, info = env.step(ACTIONS[rng.integers(len(ACTIONS))])
            if term or trunc:
                break
        assert term or trunc and t == env.max_steps
        wins += info["success"]
    assert 2 <= wins <= 60  # about 9% at size 5: sparse success, where step credit matters


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"size": 2}, "size=2"), ({"max_steps": -1}, "max_steps=-1"), ({"random_layout": 1}, "random_layout=1"),
     ({"doors": 2}, "has no parameter 'doors'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'keydoor'") as exc:
        make_env("keydoor", **kwargs)
    assert needle in str(exc.value)
