"""arith_chain: the arithmetic by hand, step labels and first errors, candidates, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, make_env

# seed 0, length 3: "Start at 8, subtract 5, add 3, add 1."  v = 8 -> 3 -> 6 -> 7
QUESTION = "Start at 8, subtract 5, add 3, add 1."


def _run(actions, seed=0, **kwargs):
    env = make_env("arith_chain", length=3, **kwargs)
    obs, info = env.reset(seed=seed)
    out = [(obs, None, False, False, info)]
    for a in actions:
        out.append(env.step(a))
    return env, out


def test_the_right_intermediate_results_solve_the_chain():
    env, out = _run(["3", "6", "7"])
    obs, info = out[0][0], out[0][4]
    assert obs == f"{QUESTION}\nStep 1/3: the value so far is 8; subtract 5 gives ?" and info["state"] == obs
    fresh = make_env("arith_chain", length=3)
    fresh.reset(seed=0)
    # v_1 = 8 - 5 = 3 and slips drawn from the state: 8 + 5 = 13 (wrong operation), 8 * 5 = 40, 3 - 10 = -7
    assert fresh.valid_actions() == ["-7", "3", "13", "40"]
    obs, r, term, trunc, info = out[1]
    assert obs == f"{QUESTION}\nStep 2/3: the value so far is 3; add 3 gives ?"
    assert (r, term, trunc, info["valid"], info["step_correct"], info["step_consistent"], info["true_value"]) == (
        0.0, False, False, True, True, True, 3)
    obs, r, term, trunc, info = out[3]
    assert obs == f"{QUESTION}\nFinal answer: 7"
    assert (r, term, trunc, info["success"], info["first_error"]) == (1.0, True, False, True, -1)


def test_a_wrong_step_propagates_to_the_end():
    # 8 - 5 = 3, stated 4 (wrong); then 4 + 3 = 7 and 7 + 1 = 8 are consistent with it but not true (6, 7)
    _, out = _run(["4", "7", "8"])
    infos = [o[4] for o in out[1:]]
    assert [i["step_correct"] for i in infos] == [False, False, False]
    assert [i["step_consistent"] for i in infos] == [False, True, True]
    assert [i["true_value"] for i in infos] == [3, 6, 7]
    obs, r, term, trunc, info = out[-1]
    assert obs.endswith("Final answer: 8") and r == 0.0 and term and not trunc
    assert info["success"] is False and info["first_error"] == 0


def test_a_return_to_the_true_value_is_right_answer_wrong_process():
    # 3 (right), 5 (wrong: 3 + 3 = 6), then 7 = v_3 although 5 + 1 = 6 (any integer is a valid
    # statement, candidate or not): outcome 1, first error at step 1
    _, out = _run(["3", "5", "7"])
    infos = [o[4] for o in out[1:]]
    assert [i["step_correct"] for i in infos] == [True, False, True]
    assert [i["step_consistent"] for i in infos] == [True, False, False]
    assert out[-1][1] == 1.0 and infos[-1]["success"] is True and infos[-1]["first_error"] == 1


def test_an_unparsable_action_is_a_no_op_that_costs_a_step_and_the_limit_truncates():
    env, out = _run(["three", " 3 ", "x", "y"], max_steps=4)
    bad = out[1]
    assert bad[0] == out[0][0] and bad[4]["state"] == out[0][4]["state"]  # same state, operation not consumed
    assert bad[4]["valid"] is False and bad[4]["step_correct"] is False and bad[4]["step_consistent"] is False
    assert out[2][4]["valid"] and out[2][4]["step_correct"]  # int(" 3 ") = 3
    obs, r, term, trunc, info = out[-1]
    assert r == 0.0 and not term and trunc and info["success"] is False
    assert info["first_error"] == 0  # the invalid step 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step("1")


def test_default_step_limit_and_protocol():
    env = make_env("arith_chain", length=5)
    assert env.max_steps == 10 and isinstance(env, TextEnv)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 6),
    n_candidates=st.integers(2, 6),
    max_number=st.integers(2, 20),
    picks=st.lists(st.integers(0, 10), min_size=12, max_size=12),
)
def test_episode_invariants(seed, length, n_candidates, max_number, picks):
    """Candidates: n distinct sorted integers holding op_t(a_{t−1}) (= v_t on track); K valid steps
    end the episode; first_error is the first False step_correct; success iff a_K = v_K."""
    env = make_env("arith_chain", length=length, n_candidates=n_candidates, max_number=max_number)
    env.reset(seed=seed)
    labels, t, info, term = [], 0, {}, False
    while not term:
        cands = env.valid_actions()
        values = [int(c) for c in cands]
        assert len(values) == n_candidates == len(set(values)) and values == sorted(values)
        op, n = env._ops[t]
        consistent = {"add": env._value + n, "subtract": env._value - n, "multiply": env._value * n}[op]
        assert consistent in values
        assert (env._true[t + 1] in values) == (env._value == env._true[t])  # off track, no way back
        action = cands[picks[t] % len(cands)]
        obs, r, term, trunc, info = env.step(action)
        assert not trunc
        labels.append(info["step_correct"])
        assert info["step_correct"] == (int(action) == env._true[t + 1])
        t += 1
    assert t == length
    assert info["first_error"] == (labels.index(False) if False in labels else -1)
    assert info["success"] == (int(action) == env._true[-1]) == (r == 1.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), picks=st.lists(st.integers(0, 5), min_size=8, max_size=8))
def test_same_seed_and_actions_give_the_same_episode_and_state_determines_the_candidates(seed, picks):
    runs, by_state = [], {}
    for _ in range(2):
        env = make_env("arith_chain", length=4)
        obs, info = env.reset(seed=seed)
        trace = [obs]
        for p in picks:
            by_state.setdefault(info["state"], env.valid_actions())
            assert by_state[info["state"]] == env.valid_actions()
            cands = env.valid_actions()
            obs, r, term, trunc, info = env.step(cands[p % len(cands)] if p < 5 else "?")
            trace.append((obs, r, term, trunc, info))
            if term or trunc:
                break
        runs.append(trace)
    assert runs[0] == runs[1]


def test_a_random_policy_over_the_candidates_rarely_gets_a_long_chain_right():
    rng = np.random.default_rng(0)
    env = make_env("arith_chain", length=6, n_candidates=4)
    wins = firsts = 0
    for seed in range(200):
        env.reset(seed=seed)
        while True:
            cands = env.valid_actions()
            *_, term, trunc, info = env.step(cands[rng.integers(len(cands))])
            if term or trunc:
                wins += info["success"]
                firsts += info["first_error"] >= 0
                break
    # (1/4)^6 = 0.00024 per episode: 200 episodes almost surely all fail; success iff no error
    assert wins == 200 - firsts and wins <= 1


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"length": 0}, "length=0"), ({"max_number": 1}, "max_number=1"), ({"n_candidates": 1}, "n_candidates=1"),
     ({"length": 4, "max_steps": 3}, "max_steps=3"), ({"colour": 1}, "has no parameter 'colour'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'arith_chain'") as exc:
        make_env("arith_chain", **kwargs)
    assert needle in str(exc.value)
