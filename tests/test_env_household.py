"""household: an ALFWorld task by hand, an oracle that solves every task type, state keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, make_env
from stepcredit.envs.household import GOALS


def test_a_clean_task_by_hand():
    env = make_env("household", goal="clean", n_receptacles=4, n_objects=3)
    obs, info = env.reset(seed=1)
    assert obs == (
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a garbagecan 1, "
        "a sidetable 1, and a sink 1.\n\nYour task is to: put a clean mug on sidetable."
    )
    assert info["goal"] == "put a clean mug on sidetable."
    assert env.valid_actions() == ["go to cabinet 1", "go to garbagecan 1", "go to sidetable 1", "go to sink 1", "look", "inventory"]
    script = [
        ("go to cabinet 1", "You arrive at cabinet 1. The cabinet 1 is closed."),
        ("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1."),
        ("take mug 1 from cabinet 1", "You pick up the mug 1 from the cabinet 1."),
        ("inventory", "You are carrying: a mug 1."),
        ("go to sidetable 1", "You arrive at sidetable 1. On the sidetable 1, you see nothing."),
        ("go to sink 1", "You arrive at sink 1. On the sink 1, you see a book 1."),
        ("clean mug 1 with sink 1", "You clean the mug 1 using the sink 1."),
        ("go to sidetable 1", "You arrive at sidetable 1. On the sidetable 1, you see nothing."),
    ]
    for action, expected in script:
        assert action in env.valid_actions()
        obs, r, term, trunc, info = env.step(action)
        assert (obs, r, term, trunc, info["valid"]) == (expected, 0.0, False, False, True)
    assert info["state"] == (
        "task: put a clean mug on sidetable. | at: sidetable 1 | holding: mug 1 | open: cabinet 1 | "
        "book 1@sink 1; bread 1@garbagecan 1; mug 1@hand+clean"
    )
    assert env.valid_actions() == ["go to cabinet 1", "go to garbagecan 1", "go to sink 1", "put mug 1 in/on sidetable 1", "look", "inventory"]
    obs, r, term, trunc, info = env.step("put mug 1 in/on sidetable 1")
    assert obs == "You put the mug 1 in/on the sidetable 1." and (r, term, trunc, info["success"]) == (1.0, True, False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("look")


def test_an_uncleaned_mug_on_the_sidetable_is_not_the_goal_and_inadmissible_commands_are_no_ops():
    env = make_env("household", goal="clean", n_receptacles=4, n_objects=3)
    _, info0 = env.reset(seed=1)
    obs, r, term, trunc, info = env.step("take mug 1 from cabinet 1")  # not at the cabinet
    assert (obs, r, term, trunc, info["valid"]) == ("Nothing happens.", 0.0, False, False, False)
    assert info["state"] == info0["state"]
    for a in ["go to cabinet 1", "open cabinet 1", "take mug 1 from cabinet 1", "go to sidetable 1"]:
        env.step(a)
    *_, r, term, trunc, info = env.step("put mug 1 in/on sidetable 1")
    assert r == 0.0 and not term and info["valid"]


def _plan_to(env, receptacle):
    """Commands that bring the agent to ``receptacle`` with it open (if it opens)."""
    out = [] if env._at == receptacle else [f"go to {receptacle}"]
    if receptacle.split()[0] in ("cabinet", "drawer", "fridge", "microwave") and receptacle not in env._open:
        out.append(f"open {receptacle}")
    return out


def _do(env, commands):
    result = None
    for c in commands:
        assert c in env.valid_actions(), (c, env.valid_actions())
        result = env.step(c)
    return result


def _solve(env):
    """An oracle that reads the scene: fetch, process and place the goal's object(s)."""
    task, target, dest = env._task, env._target, env._dest
    objs = [o for o in env.objects if env._otype[o] == target]
    if task == "examine":
        o = objs[0]
        _do(env, _plan_to(env, env._loc[o]) + [f"take {o} from {env._loc[o]}"])
        return _do(env, ([f"go to {env._lamp}"] if env._at != env._lamp else []) + ["use desklamp 1"])
    goal_r = next(r for r in env.receptacles if env._rtype[r] == dest)
    result = None
    for o in objs[: 2 if task == "two" else 1]:
        _do(env, _plan_to(env, env._loc[o]) + [f"take {o} from {env._loc[o]}"])
        if task in ("clean", "heat", "cool"):
            app = next(r for r in env.receptacles if env._rtype[r] == {"clean": "sink", "heat": "microwave", "cool": "fridge"}[task])
            verb = {"sink": "clean", "microwave": "heat", "fridge": "cool"}[env._rtype[app]]
            _do(env, ([f"go to {app}"] if env._at != app else []) + [f"{verb} {o} with {app}"])
        result = _do(env, _plan_to(env, goal_r) + [f"put {o} in/on {goal_r}"])
    return result


@pytest.mark.parametrize("goal", GOALS)
def test_the_oracle_solves_every_task_type_within_the_limit(goal):
    for n_receptacles, n_objects in [(3, 2), (6, 4), (12, 10)]:
        env = make_env("household", goal=goal, n_receptacles=n_receptacles, n_objects=n_objects)
        for seed in range(40):
            env.reset(seed=seed)
            assert not env._goal_holds()
            assert env.goal.startswith("examine" if goal == "examine" else f"put {'two' if goal == 'two' else 'a'}")
            _, r, term, trunc, info = _solve(env)
            assert (r, term, trunc, info["success"]) == (1.0, True, False, True), (goal, seed, env.goal)
            assert env._t <= env.max_steps


def test_any_draws_every_task_type():
    env = make_env("household")
    drawn = set()
    for seed in range(200):
        env.reset(seed=seed)
        drawn.add(env._task)
        _, r, *_ = _solve(env)
        assert r == 1.0
    assert drawn == set(GOALS)


def test_looking_and_reopening_leave_the_state_key_unchanged():
    env = make_env("household", goal="clean", n_receptacles=4, n_objects=3)
    _, info = env.reset(seed=1)
    _, _, _, _, at_cabinet = env.step("go to cabinet 1")
    keys = [env.step(a)[4]["state"] for a in ["look", "inventory", "open cabinet 1", "close cabinet 1", "look"]]
    assert keys[0] == keys[1] == keys[3] == keys[4] == at_cabinet["state"] != keys[2]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), picks=st.lists(st.integers(0, 30), min_size=1, max_size=40))
def test_same_seed_and_actions_give_the_same_episode_and_the_state_key_determines_the_actions(seed, picks):
    runs, by_state = [], {}
    for _ in range(2):
        env = make_env("household", n_receptacles=5, n_objects=4)
        obs, info = env.reset(seed=seed)
        trace = [obs]
        for p in picks:
            acts = env.valid_actions()
            assert acts and acts[-2:] == ["look", "inventory"]
            assert by_state.setdefault(info["state"], acts) == acts
            obs, r, term, trunc, info = env.step(acts[p % len(acts)])
            trace.append((obs, r, term, trunc, info))
            if term or trunc:
                break
        runs.append(trace)
    assert runs[0] == runs[1]


def test_a_random_policy_rarely_succeeds_and_every_episode_ends_by_the_limit():
    rng = np.random.default_rng(0)
    env = make_env("household", goal="clean")
    assert env.max_steps == 30 and isinstance(env, TextEnv)
    wins = 0
    for seed in range(100):
        env.reset(seed=seed)
        for t in range(env.max_steps):
            acts = env.valid_actions()
            *_, term, trunc, info = env.step(acts[rng.integers(len(acts))])
            if term or trunc:
                wins += info["success"]
                assert term or t == env.max_steps - 1
                break
        else:
            pytest.fail("episode did not end by max_steps")
    assert wins < 15


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"n_receptacles": 2}, "n_receptacles=2"), ({"n_objects": 0}, "n_objects=0"),
     ({"goal": "two", "n_objects": 1}, "goal 'two'"), ({"goal": "fly"}, "parameter goal='fly'"),
     ({"max_steps": -1}, "max_steps=-1")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'household'") as exc:
        make_env("household", **kwargs)
    assert needle in str(exc.value)
