"""lock_chain and the environment registry: the rules by hand, determinism, anchor states."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, get_env, list_envs, make_env, parse_env_kwarg


def _combination(env) -> list[int]:
    return [int(d) for d in env._combination]


def test_the_right_presses_open_the_lock_and_a_wrong_one_resets():
    env = make_env("lock_chain", length=3, n_actions=3)
    obs, info = env.reset(seed=1)
    code = _combination(env)  # drawn from the seed: [1, 1, 2]
    assert obs == "lock position 0/3" and info["state"] == obs
    obs, r, term, trunc, info = env.step(f"press {code[0]}")
    assert (obs, r, term, trunc, info["valid"]) == ("lock position 1/3", 0.0, False, False, True)
    wrong = (code[1] + 1) % 3
    obs, r, term, trunc, _ = env.step(f"press {wrong}")
    assert obs == "lock position 0/3" and r == 0.0 and not term  # back to the start
    for d in code:
        obs, r, term, trunc, info = env.step(f"press {d}")
    assert obs == "lock position 3/3" and r == 1.0 and term and not trunc and info["success"] is True
    with pytest.raises(RuntimeError, match="reset"):
        env.step("press 0")


def test_an_invalid_action_is_a_no_op_that_costs_a_step_and_the_limit_truncates():
    env = make_env("lock_chain", length=2, n_actions=2, max_steps=3)
    env.reset(seed=0)
    results = [env.step("open sesame") for _ in range(3)]
    assert [r[4]["valid"] for r in results] == [False] * 3
    obs, r, term, trunc, info = results[-1]
    assert obs == "lock position 0/2" and r == 0.0 and not term and trunc and info["success"] is False


def test_default_step_limit_and_protocol():
    env = make_env("lock_chain", length=5)
    assert env.max_steps == 20 and isinstance(env, TextEnv)
    env.reset(seed=3)
    assert env.valid_actions() == ["press 0", "press 1", "press 2"]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(st.integers(0, 2), min_size=1, max_size=16))
def test_a_group_with_the_same_actions_visits_the_same_states(seed, actions):
    """The task seed fixes the instance; the rest is deterministic given the actions, so equal
    action prefixes give equal states (the anchor states of a group)."""
    runs = []
    for _ in range(2):
        env = make_env("lock_chain", length=3)
        obs, info = env.reset(seed=seed)
        trace = [info["state"]]
        for a in actions:
            obs, r, term, trunc, info = env.step(f"press {a}")
            trace.append((info["state"], r, term, trunc))
            if term or trunc:
                break
        runs.append(trace)
    assert runs[0] == runs[1]


def test_a_random_policy_rarely_opens_a_long_lock():
    rng = np.random.default_rng(0)
    env = make_env("lock_chain", length=6, n_actions=3)
    wins = 0
    for seed in range(200):
        env.reset(seed=seed)
        while True:
            *_, term, trunc, info = env.step(f"press {rng.integers(3)}")
            if term or trunc:
                wins += info["success"]
                break
    assert wins < 20  # (1/3)^6 per attempt: sparse success, where step credit matters


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"length": 0}, "length=0"), ({"n_actions": 1}, "n_actions=1"), ({"colour": 1}, "has no parameter 'colour'"),
     ({"length": "4"}, "parameter length='4'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'lock_chain'") as exc:
        make_env("lock_chain", **kwargs)
    assert needle in str(exc.value)


def test_registry():
    assert "lock_chain" in {s.name for s in list_envs()}
    with pytest.raises(EnvError, match="valid environments: .*lock_chain.*gym:ENV_ID"):
        get_env("nope")
    assert parse_env_kwarg("lock_chain", "length=7") == ("length", 7)
    with pytest.raises(EnvError, match="key=value"):
        parse_env_kwarg("lock_chain", "length")
