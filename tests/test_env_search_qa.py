"""search_qa: retrieval by hand, a 2-hop episode by hand, every question solvable, state keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.envs import EnvError, TextEnv, make_env
from stepcredit.envs.search_qa import retrieve

FACTS = [
    "The capital of Veloria is Tarnis.",
    "The mayor of Tarnis is Ada Morwen.",
    "Ada Morwen was born in Ombra.",
    "The mayor of Ombra is Kel Dun.",
]


def test_retrieval_returns_every_fact_with_the_top_word_overlap():
    assert retrieve("Tarnis", FACTS) == [0, 1]  # "tarnis" in facts 0 and 1: score 1 each
    assert retrieve("mayor of Tarnis", FACTS) == [1]  # {mayor, tarnis}: fact 1 scores 2, facts 0 and 3 score 1
    assert retrieve("Ada Morwen", FACTS) == [1, 2]
    assert retrieve("ada", FACTS) == [1, 2]  # case-insensitive, part of a name
    assert retrieve("mayor", FACTS) == [1, 3]
    assert retrieve("the of is", FACTS) == []  # stopwords only
    assert retrieve("Zanzibar", FACTS) == [] and retrieve("", FACTS) == []


# seed 0: "Who/What is the birthplace of the mayor of Lindramouth?"; the chain is
# Lindramouth -mayor-> Lomor Lintam -birthplace-> Prafena
def test_a_two_hop_question_by_hand():
    env = make_env("search_qa")
    obs, info = env.reset(seed=0)
    q = "What is the birthplace of the mayor of Lindramouth?"
    assert obs == f"Question: {q}\nUse search[query] to look up facts and answer[text] to answer."
    assert (info["question"], info["gold_answer"], info["state"]) == (q, "Prafena", f"question: {q} | known: ")
    assert env.valid_actions() == ["search[Lindramouth]", "answer[Lindramouth]"]
    obs, r, term, trunc, info = env.step("search[Lindramouth]")
    assert obs == (
        f"Question: {q}\nsearch[Lindramouth] found:\n- The capital of Mikaia is Lindramouth.\n"
        "- The mayor of Lindramouth is Lomor Lintam."
    )
    assert (r, term, trunc, info["valid"], info["gold_answer"]) == (0.0, False, False, True, "Prafena")
    assert env.valid_actions() == [
        "search[Lindramouth]", "search[Lomor Lintam]", "search[Mikaia]",
        "answer[Lindramouth]", "answer[Lomor Lintam]", "answer[Mikaia]",
    ]
    obs, *_ = env.step("search[Lomor Lintam]")
    assert obs == (
        f"Question: {q}\nsearch[Lomor Lintam] found:\n- Lomor Lintam works for Thuxoex.\n"
        "- Thuxoex was founded by Lomor Lintam.\n- The mayor of Lindramouth is Lomor Lintam.\n"
        "- Lomor Lintam was born in Prafena."
    )
    assert "answer[Prafena]" in env.valid_actions()
    obs, r, term, trunc, info = env.step("answer[  prafena ]")  # case and spaces do not matter
    assert obs == f"Question: {q}\nYou answered '  prafena ': correct."
    assert (r, term, trunc, info["success"]) == (1.0, True, False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("search[x]")


def test_a_wrong_answer_ends_with_zero_and_an_unknown_action_is_a_no_op():
    env = make_env("search_qa", max_steps=3)
    _, info0 = env.reset(seed=0)
    obs, r, term, trunc, info = env.step("lookup Lindramouth")
    assert obs.endswith("Unknown action 'lookup Lindramouth': use search[query] or answer[text].")
    assert (r, term, trunc, info["valid"], info["state"]) == (0.0, False, False, False, info0["state"])
    *_, r, term, trunc, info = env.step("answer[Lomor Lintam]")
    assert (r, term, trunc, info["success"]) == (0.0, True, False, False)


def test_the_limit_truncates_without_an_answer():
    env = make_env("search_qa", hops=1)
    assert env.max_steps == 4 and isinstance(env, TextEnv)
    env.reset(seed=2)
    results = [env.step("search[nothing here]") for _ in range(4)]
    assert [r[3] for r in results] == [False, False, False, True] and results[-1][4]["success"] is False
    assert results[0][0].endswith("search[nothing here] found nothing.")


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_every_question_is_solvable_by_searching_its_chain_with_valid_actions(hops):
    """Searching entity i of the chain reveals entity i + 1 (a fact links them), so hops + 1
    steps answer every question; the question names the start entity; the answer is unique."""
    env = make_env("search_qa", hops=hops, entities=4 * (hops + 1))
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        chain = env._chain
        assert len(chain) == hops + 1 == len(set(chain)) and chain[0] in info["question"]
        assert info["gold_answer"] == chain[-1] and chain[-1] not in info["question"]
        for e, nxt in zip(chain[:-1], chain[1:], strict=True):
            assert f"search[{e}]" in env.valid_actions()
            obs, *_ = env.step(f"search[{e}]")
            assert nxt in obs
            # an entity's name retrieves exactly the facts that mention it
            mentions = [i for i, pair in enumerate(env._fact_entities) if e in pair]
            assert obs.split("\n")[2:] == [f"- {env.facts[i]}" for i in mentions]
        *_, r, term, _, info = env.step(f"answer[{chain[-1]}]")
        assert r == 1.0 and term and info["success"]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), queries=st.lists(st.sampled_from(["capital", "mayor", "born", "works", "city", "x"]), min_size=2, max_size=5))
def test_the_state_is_the_set_of_facts_found_whatever_the_order(seed, queries):
    keys = []
    for order in (queries, queries[::-1], queries + queries):
        env = make_env("search_qa", max_steps=20)
        env.reset(seed=seed)
        for q in order:
            *_, info = env.step(f"search[{q}]")
        keys.append((info["state"], env.valid_actions()))
    assert keys[0] == keys[1] == keys[2]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), picks=st.lists(st.integers(0, 20), min_size=1, max_size=8))
def test_same_seed_and_actions_give_the_same_episode_and_the_state_determines_the_actions(seed, picks):
    runs, by_state = [], {}
    for _ in range(2):
        env = make_env("search_qa", hops=2, distractors=12)
        obs, info = env.reset(seed=seed)
        trace = [obs]
        for p in picks:
            acts = env.valid_actions()
            assert acts and by_state.setdefault(info["state"], acts) == acts
            assert "gold_answer" in info
            obs, r, term, trunc, info = env.step(acts[p % len(acts)])
            trace.append((obs, r, term, trunc, info))
            if term or trunc:
                break
        runs.append(trace)
    assert runs[0] == runs[1]


def test_a_random_policy_rarely_answers_right():
    rng = np.random.default_rng(0)
    env = make_env("search_qa", hops=2)
    wins = 0
    for seed in range(200):
        env.reset(seed=seed)
        while True:
            acts = env.valid_actions()
            *_, term, trunc, info = env.step(acts[rng.integers(len(acts))])
            if term or trunc:
                wins += info["success"]
                break
    assert wins < 30


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"hops": 0}, "hops=0"), ({"hops": 3, "entities": 15}, "entities=15"), ({"distractors": -1}, "distractors=-1"),
     ({"hops": 2, "max_steps": 2}, "max_steps=2"), ({"topic": "x"}, "has no parameter 'topic'")],
)
def test_bad_parameters_name_the_environment(kwargs, needle):
    with pytest.raises(EnvError, match="environment 'search_qa'") as exc:
        make_env("search_qa", **kwargs)
    assert needle in str(exc.value)
