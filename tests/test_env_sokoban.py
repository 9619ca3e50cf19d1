"""sokoban: board text, the reward rules on hand-made levels, the solver, solvable generated levels,
the two level modes, determinism and anchor states."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, make_env
from stepcredit.envs.sokoban import ACTIONS, generate_level, parse_level, render_level, solve

# a corridor: player, box, target, floor, box, target
CORRIDOR = """\
########
#@$._$.#
########"""


def _play(env, actions, *, seed=None, level=None):
    """[(obs, reward, terminated, truncated, info)] for ``actions`` from a reset, stopping at the end."""
    env.reset(seed=seed, options=None if level is None else {"level": level})
    out = []
    for a in actions:
        out.append(env.step(a))
        if out[-1][2] or out[-1][3]:
            break
    return out


def test_board_text_format_round_trips():
    text = "######\n#@__*#\n#_$__#\n#+#__#\n######"
    with pytest.raises(EnvError, match="exactly one player"):
        parse_level(text)
    text = "######\n#___*#\n#_$__#\n#+#__#\n######"
    level = parse_level(text)
    assert (level.height, level.width) == (5, 6)
    assert level.player == 3 * 6 + 1 and level.targets == (10, 19) and level.boxes == (10, 14)
    assert render_level(level) == text
    # space and '-' are read as floor too, and written back as '_'
    assert render_level(parse_level(text.replace("_", " "))) == text
    assert render_level(parse_level(text.replace("_", "-"))) == text


@pytest.mark.parametrize(
    "text, needle",
    [("###\n#@$.#", "one length"), ("#@$x#", "unknown character 'x'"), ("#@_.#", "as many targets as boxes"),
     ("#_$.#", "exactly one player"), ("#@$$.#", "as many targets as boxes")],
)
def test_bad_boards_are_refused(text, needle):
    with pytest.raises(EnvError, match="environment 'sokoban'") as exc:
        parse_level(text)
    assert needle in str(exc.value)


def test_reward_rules_on_a_hand_made_level():
    env = make_env("sokoban")
    obs, info = env.reset(options={"level": CORRIDOR})
    assert obs == CORRIDOR and info["state"] == obs
    obs, r, term, trunc, info = env.step("right")  # box onto the first target: +1, not solved (1 of 2)
    assert obs.splitlines()[1] == "#_@*_$.#" and r == 1.0 and not term and info["valid"] and info["boxes_on_target"] == 1
    obs, r, term, trunc, info = env.step("right")  # the same box pushed off its target: -1
    assert obs.splitlines()[1] == "#__+$$.#" and r == -1.0 and info["boxes_on_target"] == 0
    obs, r, term, trunc, info = env.step("right")  # box into a box: invalid no-op, -0.1
    assert obs.splitlines()[1] == "#__+$$.#" and r == pytest.approx(-0.1) and not info["valid"]
    obs, r, term, trunc, info = env.step("up")  # into a wall: invalid no-op, -0.1
    assert obs.splitlines()[1] == "#__+$$.#" and r == pytest.approx(-0.1) and not info["valid"]
    obs, r, term, trunc, info = env.step("jump!")  # unparsable: invalid no-op, -0.1
    assert r == pytest.approx(-0.1) and not info["valid"] and not term
    obs, r, term, trunc, info = env.step("left")  # a plain step: 0
    assert obs.splitlines()[1] == "#_@.$$.#" and r == 0.0 and info["valid"]


def test_the_last_box_on_its_target_gives_one_plus_ten_and_ends():
    steps = _play(make_env("sokoban"), [" Move Right\n"], level="#####\n#@$.#\n#####")
    obs, r, term, trunc, info = steps[-1]
    assert obs == "#####\n#_@*#\n#####" and r == 11.0 and term and not trunc
    assert info == {"state": obs, "valid": True, "boxes_on_target": 1, "success": True}


def test_a_box_cannot_be_pushed_into_a_wall_and_the_limit_truncates():
    env = make_env("sokoban", max_steps=3)
    steps = _play(env, ["left", "left", "left"], level="#####\n#$@.#\n#####")
    assert [s[1] for s in steps] == [pytest.approx(-0.1)] * 3
    obs, r, term, trunc, info = steps[-1]
    assert obs == "#####\n#$@.#\n#####" and not term and trunc and info["success"] is False
    with pytest.raises(RuntimeError, match="reset"):
        env.step("right")
    with pytest.raises(EnvError, match="already solved"):
        env.reset(options={"level": "####\n#@*#\n####"})


def test_solver_finds_shortest_solutions_and_knows_dead_ends():
    level = parse_level("######\n#@_$.#\n######")
    assert solve(level) == ["right", "right"]
    assert solve(level, max_moves=1) is None
    assert solve(parse_level("#####\n#$_.#\n#_@_#\n#####")) is None  # a box in a corner is stuck
    # CORRIDOR: the first box can only go right and ends against the second, which it blocks
    assert solve(parse_level(CORRIDOR)) is None
    grid = parse_level("######\n#____#\n#_$__#\n#__.@#\n######")
    # the box (row 2, col 2) goes down and right onto (3,3). Down first: walk (3,4)->(2,4)->(1,4)->
    # (1,3)->(1,2) = 4, push down = 1, walk (2,2)->(2,1)->(3,1) = 2, push right = 1: 8 moves (right
    # first is 8 too), and no shorter way exists
    path = solve(grid)
    assert path is not None and len(path) == 8
    assert _play(make_env("sokoban"), path, level=render_level(grid))[-1][4]["success"]


def test_default_pool_levels_are_solvable_within_the_limit_and_replay_to_success():
    env = make_env("sokoban")
    assert isinstance(env, TextEnv) and (env.size, env.boxes, env.max_steps, env.pool) == (6, 1, 15, 64)
    lengths = []
    for seed in range(64):
        level = env.level_for(seed)
        path = solve(level, env.max_steps)
        assert path is not None and 1 <= len(path) <= 15
        steps = _play(env, path, seed=seed)
        assert len(steps) == len(path) and steps[-1][2] and steps[-1][4]["success"]
        assert all(s[4]["valid"] for s in steps)
        lengths.append(len(path))
    assert np.median(lengths) >= 5  # not trivial: the generator picks boxes far from the targets


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(5, 7), boxes=st.integers(1, 2), max_steps=st.integers(8, 25),
    pool_seed=st.integers(0, 2**31), seed=st.integers(0, 2**32 - 1),
)
def test_every_generated_level_is_solvable_within_max_steps(size, boxes, max_steps, pool_seed, seed):
    env = make_env("sokoban", size=size, boxes=boxes, max_steps=max_steps, pool=0, pool_seed=pool_seed)
    obs, _ = env.reset(seed=seed)
    level = env.level
    rows = obs.splitlines()
    assert len(rows) == size and all(len(r) == size and r[0] == r[-1] == "#" for r in rows)
    assert rows[0] == rows[-1] == "#" * size
    assert len(level.boxes) == len(level.targets) == boxes and not level.solved()
    path = solve(level, max_steps)
    assert path is not None and 1 <= len(path) <= max_steps
    steps = _play(env, path, seed=seed)
    assert steps[-1][2] and steps[-1][4]["success"]


def test_pool_modes():
    pooled = make_env("sokoban", pool=8)
    fresh = make_env("sokoban", pool=0)
    assert pooled.reset(seed=3)[0] == pooled.reset(seed=11)[0] == pooled.reset(seed=3 + 8 * 1000)[0]
    assert len({pooled.reset(seed=s)[0] for s in range(100)}) <= 8
    assert len({fresh.reset(seed=s)[0] for s in range(100)}) > 50
    # the pool is the first N levels of the sequence that pool=0 plays
    assert [pooled.level_for(s) for s in range(8)] == [fresh.level_for(s) for s in range(8)]
    other = make_env("sokoban", pool=8, pool_seed=1)
    assert sum(other.level_for(s) != pooled.level_for(s) for s in range(8)) >= 6
    with pytest.raises(EnvError, match="seed -1"):
        fresh.reset(seed=-1)


def test_generation_is_a_function_of_the_generator_state():
    a = generate_level(np.random.default_rng(7), size=7, boxes=2, max_steps=20)
    b = generate_level(np.random.default_rng(7), size=7, boxes=2, max_steps=20)
    assert a == b
    with pytest.raises(EnvError, match="no level with size=4"):
        generate_level(np.random.default_rng(0), size=4)  # a 2 x 2 room allows no push at all


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.sampled_from([*ACTIONS, "wait"]), min_size=1, max_size=15),
    cut=st.integers(0, 15),
)
def test_a_group_with_the_same_action_prefix_visits_the_same_states(seed, actions, cut):
    other = actions[:cut] + list(reversed(actions[cut:]))
    a = [s[4]["state"] for s in _play(make_env("sokoban"), actions, seed=seed)]
    b = [s[4]["state"] for s in _play(make_env("sokoban"), other, seed=seed)]
    n = min(cut, len(a), len(b))
    assert a[:n] == b[:n]
    again = _play(make_env("sokoban"), actions, seed=seed)
    assert [s[4]["state"] for s in again] == a  # determinism


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(st.sampled_from([*ACTIONS, "north"]), min_size=1, max_size=15))
def test_rewards_add_up_to_placements_invalid_moves_and_the_bonus(seed, actions):
    """Return = −0.1·(invalid moves) + (boxes on targets at the end − at the start) + 10·solved."""
    env = make_env("sokoban", size=6, boxes=2, max_steps=15, pool=0)
    obs, _ = env.reset(seed=seed)
    start_on = obs.count("*")
    steps = _play(env, actions, seed=seed)
    invalid = sum(not s[4]["valid"] for s in steps)
    solved = bool(steps[-1][2])
    expected = -0.1 * invalid + steps[-1][4]["boxes_on_target"] - start_on + 10 * solved
    assert sum(s[1] for s in steps) == pytest.approx(expected)
    assert all(s[4]["state"] == s[0] for s in steps)


def test_a_random_policy_sometimes_solves_and_every_episode_ends_by_max_steps():
    rng = np.random.default_rng(0)
    env = make_env("sokoban")
    wins = 0
    for seed in range(300):
        env.reset(seed=seed)
        assert env.valid_actions() == ["up", "down", "left", "right"]
        for t in range(1, env.max_steps + 1):
            *_, term, trunc, info = env.step(ACTIONS[rng.integers(4)])
            if term or trunc:
                break
        assert term or (trunc and t == env.max_steps)
        wins += info["success"]
    assert 3 <= wins <= 60  # about 7%


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"size": 4}, "size=4"), ({"boxes": 0}, "boxes=0"), ({"max_steps": 0}, "max_steps=0"), ({"pool": -1}, "pool=-1"),
     ({"pool_seed": -2}, "pool_seed=-2"), ({"size": 5, "boxes": 8}, "do not fit"), ({"walls": 3}, "has no parameter 'walls'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'sokoban'") as exc:
        make_env("sokoban", **kwargs)
    assert needle in str(exc.value)
