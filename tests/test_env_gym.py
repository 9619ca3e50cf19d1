"""gym:ENV_ID: the gymnasium adapter on the toy-text environments, its errors, its kwargs parser,
and minigrid when installed."""

from __future__ import annotations

import importlib.util
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("gymnasium", reason="gymnasium not installed (the envs extra): pip install 'stepcredit[envs]'")

from stepcredit.envs import EnvError, TextEnv, get_env, make_env, parse_env_kwarg  # noqa: E402
from stepcredit.envs.gym_adapter import DEFAULT_MAX_STEPS, parse_gym_kwargs, parse_literal  # noqa: E402

HAVE_MINIGRID = importlib.util.find_spec("minigrid") is not None
needs_minigrid = pytest.mark.skipif(not HAVE_MINIGRID, reason="minigrid not installed (pip install minigrid)")

TOY_TEXT = ["FrozenLake-v1", "CliffWalking-v1", "Taxi-v4"]
_ENVS: dict[tuple, object] = {}


def _env(env_id: str, **kwargs):
    """One environment per (id, kwargs), reused across hypothesis examples (reset starts afresh)."""
    key = (env_id, tuple(sorted(kwargs.items())))
    if key not in _ENVS:
        _ENVS[key] = make_env(f"gym:{env_id}", **kwargs)
    return _ENVS[key]


def _run(env, seed, actions):
    """(obs, reward, terminated, truncated, info) of each step, taking ``actions`` from reset."""
    obs, info = env.reset(seed=seed)
    trace = [(obs, info["state"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        trace.append((obs, r, term, trunc, info["state"], info.get("success")))
        if term or trunc:
            break
    return trace


def _shortest_path(unwrapped, start: int) -> list[int]:
    """Breadth-first search over a deterministic toy-text transition table P to a terminal state."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        for a, outcomes in unwrapped.P[s].items():
            (_, nxt, _, done), = outcomes  # deterministic: one outcome
            if done:
                path = [a]
                while parent[s] is not None:
                    s, a = parent[s]
                    path.append(a)
                return path[::-1]
            if nxt not in parent:
                parent[nxt] = (s, a)
                queue.append(nxt)
    raise AssertionError("no terminal state reachable")


# ----------------------------------------------------------------------------- hand-worked cases


def test_frozen_lake_by_hand_goal_and_hole():
    # 4x4 map:  S F F F / F H F H / F F F H / H F F G ; non-slippery, so moves are exact.
    env = make_env("gym:FrozenLake-v1", is_slippery=False)
    assert isinstance(env, TextEnv) and env.max_steps == 100  # the registered TimeLimit
    obs, info = env.reset(seed=0)
    assert obs == "FrozenLake-v1 state 0: row 0, col 0" == info["state"] and info["gym_obs"] == 0
    assert env.valid_actions() == ["action 0 (left)", "action 1 (down)", "action 2 (right)", "action 3 (up)"]
    # right, right, down, down, down, right: (0,1) (0,2) (1,2) (2,2) (3,2) (3,3)=G
    path = ["right", "action 2", "action 1 (down)", "DOWN", "down", "right"]
    results = [env.step(a) for a in path]
    assert [r[0] for r in results][:2] == ["FrozenLake-v1 state 1: row 0, col 1", "FrozenLake-v1 state 2: row 0, col 2"]
    assert [r[1] for r in results] == [0, 0, 0, 0, 0, 1.0]  # the goal's 1 is the only reward
    obs, r, term, trunc, info = results[-1]
    assert obs == "FrozenLake-v1 state 15: row 3, col 3" and term and not trunc and info["success"] is True
    with pytest.raises(RuntimeError, match="reset"):
        env.step("left")
    env.reset(seed=0)
    env.step("down")  # (1,0): F
    obs, r, term, trunc, info = env.step("right")  # (1,1): a hole ends the episode with 0
    assert obs == "FrozenLake-v1 state 5: row 1, col 1" and r == 0.0 and term and info["success"] is False


def test_cliff_walking_cliff_rewards_and_shortest_path():
    env = make_env("gym:CliffWalking-v1")
    assert env.max_steps == DEFAULT_MAX_STEPS  # CliffWalking has no TimeLimit of its own
    obs, _ = env.reset(seed=0)
    assert obs == "CliffWalking-v1 state 36: row 3, col 0"
    obs, r, term, *_ = env.step("right")  # (3,1) is the cliff: -100, back to the start
    assert (obs, r, term) == ("CliffWalking-v1 state 36: row 3, col 0", -100.0, False)
    obs, r, *_ = env.step("up")  # (2,0) = 2*12 + 0 = 24, -1
    assert (obs, r) == ("CliffWalking-v1 state 24: row 2, col 0", -1.0)
    env.reset(seed=0)
    path = _shortest_path(env.env.unwrapped, 36)
    assert len(path) == 13  # up, 11 x right, down
    rewards = [env.step(env.valid_actions()[a]) for a in path]
    *_, term, trunc, info = rewards[-1]
    assert sum(r[1] for r in rewards) == -13.0 and term and not trunc and info["success"] is True


def test_taxi_decoded_state_illegal_pickup_and_delivery():
    env = make_env("gym:Taxi-v4")
    obs, info = env.reset(seed=7)
    row, col, passenger, dest = env.env.unwrapped.decode(info["gym_obs"])
    places = ["Red", "Green", "Yellow", "Blue", "in taxi"]
    assert obs == (
        f"Taxi-v4 state {info['gym_obs']}: taxi at row {row}, col {col}; "
        f"passenger at {places[passenger]}; destination {places[dest]}"
    )
    path = _shortest_path(env.env.unwrapped, info["gym_obs"])
    if passenger < 4 and (row, col) != [(0, 0), (0, 4), (4, 0), (4, 3)][passenger]:
        _, r, *_ = env.step("pickup")  # nobody to pick up here: -10
        assert r == -10.0
        env.reset(seed=7)
    results = [env.step(env.valid_actions()[a]) for a in path]
    assert [r[1] for r in results] == [-1.0] * (len(path) - 1) + [20.0]  # -1 per step, +20 delivery
    assert results[-1][2] and results[-1][4]["success"] is True


def test_blackjack_tuple_observation_and_positive_reward_success():
    env = make_env("gym:Blackjack-v1")
    obs, info = env.reset(seed=3)
    player, dealer, ace = info["gym_obs"]
    assert obs.startswith(f"Blackjack-v1 state ({player}, {dealer}, {ace}): player sum {player}, dealer shows ")
    _, r, term, _, info = env.step("stick")  # sticking ends the hand: success = a win (reward > 0)
    assert term and info["success"] is (r > 0)


def test_invalid_action_is_a_no_op_and_the_limit_truncates():
    env = make_env("gym:FrozenLake-v1", is_slippery=False, max_steps=3)
    assert env.max_steps == 3
    obs0, _ = env.reset(seed=0)
    results = [env.step(a) for a in ("jump", "action 9", "left")]
    assert [r[4]["valid"] for r in results] == [False, False, True]
    assert all(r[0] == obs0 and r[1] == 0.0 and r[4]["gym_obs"] == 0 for r in results)  # "left" at (0,0) stays
    *_, term, trunc, info = results[-1]
    assert not term and trunc and info["success"] is False


def test_max_steps_overrides_the_time_limit_upwards():
    env = make_env("gym:FrozenLake-v1", is_slippery=False, max_steps=150)
    env.reset(seed=0)
    ends = [env.step("left")[3] for _ in range(150)]
    assert ends == [False] * 149 + [True]  # not cut at the registered 100


def test_outcome_reward_mode_and_success_rules():
    env = make_env("gym:CliffWalking-v1", reward="outcome")
    env.reset(seed=0)
    path = _shortest_path(env.env.unwrapped, 36)
    rewards = [env.step(env.valid_actions()[a])[1] for a in path]
    assert rewards == [0.0] * 12 + [1.0]
    env = make_env("gym:CliffWalking-v1", success_rule="positive_reward")
    env.reset(seed=0)
    *_, info = [env.step(env.valid_actions()[a]) for a in path][-1]
    assert info["success"] is False  # the last reward is -1: not a success under this rule


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("env_id", TOY_TEXT)
def test_random_policy_runs_to_the_end(env_id):
    env = _env(env_id)
    rng = np.random.default_rng(0)
    lengths, successes = [], 0
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert info["state"] == obs
        for t in range(1, env.max_steps + 1):
            actions = env.valid_actions()
            assert actions
            obs, r, term, trunc, info = env.step(actions[rng.integers(len(actions))])
            assert info["state"] == obs and isinstance(r, float) and np.isfinite(r)
            if term or trunc:
                assert isinstance(info["success"], bool) and not (term and trunc)
                successes += info["success"]
                break
            assert "success" not in info
        else:
            raise AssertionError("the episode did not end by max_steps")
        lengths.append(t)
    assert max(lengths) <= env.max_steps and successes <= 30


@settings(max_examples=40, deadline=None)
@given(
    env_id=st.sampled_from(TOY_TEXT),
    slippery=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    actions=st.lists(st.integers(0, 5), min_size=1, max_size=30),
)
def test_the_same_seed_and_actions_give_the_same_episode(env_id, slippery, seed, actions):
    """Determinism given the seed, also for the stochastic variants (their noise is reseeded at
    reset, so the episodes of a group share it)."""
    kwargs = {}
    if slippery:
        kwargs = {"is_rainy": True} if env_id == "Taxi-v4" else {"is_slippery": True}
    elif env_id == "FrozenLake-v1":
        kwargs = {"is_slippery": False}
    env = _env(env_id, **kwargs)
    names = env.valid_actions()
    texts = [names[a % len(names)] for a in actions]
    assert _run(env, seed, texts) == _run(env, seed, texts)


@settings(max_examples=20, deadline=None)
@given(env_id=st.sampled_from(TOY_TEXT), seed=st.integers(0, 1000))
def test_state_text_is_a_function_of_the_observation(env_id, seed):
    """info["state"] is equal exactly when gymnasium's observation is equal (anchor states)."""
    env = _env(env_id)
    rng = np.random.default_rng(seed)
    pairs = set()
    for episode in range(3):
        _, info = env.reset(seed=seed + episode)
        pairs.add((info["state"], info["gym_obs"]))
        while True:
            *_, term, trunc, info = env.step(env.valid_actions()[rng.integers(len(env.valid_actions()))])
            pairs.add((info["state"], info["gym_obs"]))
            if term or trunc:
                break
    assert len({s for s, _ in pairs}) == len({o for _, o in pairs}) == len(pairs)


def test_group_rollouts_feed_the_estimators():
    import stepcredit as sc

    env = _env("FrozenLake-v1", is_slippery=False)
    rng = np.random.default_rng(1)
    records = []
    for g in range(3):
        for k in range(4):
            obs, _ = env.reset(seed=g)
            steps, total = [], 0.0
            while True:
                action = env.valid_actions()[rng.integers(4)]
                nxt, r, term, trunc, info = env.step(action)
                steps.append({"state": obs, "action": action, "reward": r})
                total, obs = total + r, nxt
                if term or trunc:
                    break
            records.append({"episode_id": f"{g}-{k}", "group_id": str(g), "outcome": total, "steps": steps})
    ro = sc.Rollouts.from_records(records)
    credit = sc.estimate(ro, "gigpo")
    assert np.isfinite(credit.step_advantage).all() and credit.step_advantage.shape == (ro.n_steps,)


# ----------------------------------------------------------------------------- errors and parameters


def test_a_continuous_observation_space_is_refused_by_name():
    with pytest.raises(EnvError, match=r"environment 'gym:CartPole-v1': observation space Box\(") as exc:
        make_env("gym:CartPole-v1")
    assert "Discrete" in str(exc.value)


@pytest.mark.parametrize(
    "env_id, needle",
    [("NoSuchEnv-v0", "doesn't exist"), ("CliffWalking-v0", "CliffWalking-v1"), ("Taxi-v3", "Taxi-v4"),
     ("FrozenLake-v7", "FrozenLake")],
)
def test_unknown_or_deprecated_ids(env_id, needle):
    with pytest.raises(EnvError, match=f"environment 'gym:{env_id}'") as exc:
        get_env(f"gym:{env_id}")
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"colour": 1}, "has no parameter 'colour'"), ({"is_slippery": "no"}, "parameter is_slippery='no'"),
     ({"map_name": "9x9"}, "gymnasium.make failed"), ({"max_steps": -1}, "max_steps=-1"),
     ({"reward": "dense"}, "parameter reward='dense'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'gym:FrozenLake-v1'") as exc:
        make_env("gym:FrozenLake-v1", **kwargs)
    assert needle in str(exc.value)


def test_spec_params_come_from_the_constructor():
    spec = get_env("gym:FrozenLake-v1")
    assert spec.name == "gym:FrozenLake-v1" and spec.source == "gymnasium"
    p = spec.params
    assert (p["is_slippery"].type, p["is_slippery"].default) == (bool, True)
    assert p["map_name"].default == "4x4" and p["max_steps"].default == 0
    assert get_env("gym:FrozenLake8x8-v1").params["map_name"].default == "8x8"  # registered kwargs
    assert "render_mode" not in p


@pytest.mark.parametrize(
    "text, value",
    [("false", False), ("True", True), ("none", None), ("12", 12), ("-3", -3), ("0.5", 0.5), ("1e-3", 1e-3),
     ("8x8", "8x8"), ("'12'", "12"), ('["SF", "FG"]', ["SF", "FG"]), ('{"a": 1}', {"a": 1}), ("", "")],
)
def test_parse_literal(text, value):
    got = parse_literal(text)
    assert got == value and type(got) is type(value)


def test_parse_gym_kwargs_and_parse_env_kwarg():
    assert parse_gym_kwargs(["is_slippery=false", "map_name=8x8"]) == {"is_slippery": False, "map_name": "8x8"}
    typed = parse_gym_kwargs(["is_slippery=false", "map_name=8x8", "max_steps=50"], "FrozenLake-v1")
    assert typed == {"is_slippery": False, "map_name": "8x8", "max_steps": 50}
    env = make_env("gym:FrozenLake-v1", **typed)
    assert env.max_steps == 50 and env.reset(seed=0)[0] == "FrozenLake-v1 state 0: row 0, col 0"
    assert env.env.unwrapped.ncol == 8
    assert parse_env_kwarg("gym:FrozenLake-v1", "is_slippery=no") == ("is_slippery", False)
    assert parse_env_kwarg("gym:FrozenLake-v1", 'desc=["SF", "FG"]') == ("desc", ["SF", "FG"])
    assert parse_env_kwarg("gym:Taxi-v4", "rainy_probability=1") == ("rainy_probability", 1.0)
    with pytest.raises(EnvError, match="key=value"):
        parse_gym_kwargs(["is_slippery"])
    with pytest.raises(EnvError, match="given twice"):
        parse_gym_kwargs(["a=1", "a=2"])
    with pytest.raises(EnvError, match="not valid JSON"):
        parse_gym_kwargs(["desc=[1,"])
    with pytest.raises(EnvError, match="has no parameter 'colour'"):
        parse_gym_kwargs(["colour=red"], "FrozenLake-v1")
    with pytest.raises(EnvError, match="parameter is_slippery='maybe'"):
        parse_env_kwarg("gym:FrozenLake-v1", "is_slippery=maybe")


def test_custom_map_through_desc():
    env = make_env("gym:FrozenLake-v1", desc=["SF", "FG"], is_slippery=False)
    env.reset(seed=0)
    env.step("right")
    *_, term, _, info = env.step("down")
    assert term and info["success"] is True


# ----------------------------------------------------------------------------- minigrid


@pytest.mark.skipif(HAVE_MINIGRID, reason="minigrid is installed: the missing-package error cannot occur")
def test_minigrid_without_the_package_says_how_to_install_it():
    with pytest.raises(EnvError, match="environment 'gym:MiniGrid-DoorKey-5x5-v0': .*pip install minigrid"):
        make_env("gym:MiniGrid-DoorKey-5x5-v0")


@needs_minigrid
def test_minigrid_doorkey_text_view_and_random_run():
    env = make_env("gym:MiniGrid-DoorKey-5x5-v0")
    assert env.max_steps == 250  # minigrid's own max_steps (10 * 5 * 5)
    assert env.valid_actions()[2] == "action 2 (forward)"
    obs, info = env.reset(seed=1)
    lines = obs.splitlines()
    assert lines[0] == "MiniGrid-DoorKey-5x5-v0 mission: use the key to open the door and then get to the goal"
    assert len(lines) == 3 + 7 and lines[-1].split()[3] == "^" and info["state"] == obs
    rng = np.random.default_rng(0)
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(env.max_steps):
            *_, term, trunc, info = env.step(env.valid_actions()[rng.integers(7)])
            if term or trunc:
                break
        assert term or trunc
        assert isinstance(info["success"], bool)


@needs_minigrid
def test_minigrid_is_deterministic_and_max_steps_reaches_the_env():
    env = make_env("gym:MiniGrid-DoorKey-5x5-v0", max_steps=20)
    assert env.max_steps == 20 and env.env.unwrapped.max_steps == 20
    actions = [env.valid_actions()[a] for a in np.random.default_rng(3).integers(0, 7, size=25)]
    assert _run(env, 5, actions) == _run(env, 5, actions)
