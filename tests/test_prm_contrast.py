"""Contrast pairs on arith_chain and the explicit-task reset they rely on."""

from __future__ import annotations

import numpy as np
import pytest

from stepcredit.envs import EnvError, make_env
from stepcredit.prm.contrast import arith_contrast_set, contrast_scores
from stepcredit.prm.feature_model import PRMError

KW = {"length": 3, "max_number": 5, "n_candidates": 3}


def test_explicit_task_reset_plays_the_given_chain():
    env = make_env("arith_chain", **KW)
    obs, _ = env.reset(seed=0, options={"start": 4, "ops": [("add", 3), ("multiply", 2), ("subtract", 5)]})
    assert obs.startswith("Start at 4, add 3, multiply by 2, subtract 5.")
    assert env.task == (4, (("add", 3), ("multiply", 2), ("subtract", 5)))
    for v, last in ((7, False), (14, False), (9, True)):  # 4+3, 7*2, 14-5
        _, r, term, _, info = env.step(str(v))
        assert info["step_correct"] and term == last
    assert r == 1.0 and info["success"]
    with pytest.raises(EnvError, match="options\\['ops'\\]"):
        env.reset(seed=0, options={"ops": [("add", 1)]})
    # without options a seed plays the same task as before
    a, b = make_env("arith_chain", **KW), make_env("arith_chain", **KW)
    assert a.reset(seed=5)[0] == b.reset(seed=5, options={})[0]


def test_contrast_pairs_differ_in_one_number_and_in_the_answer():
    cs = arith_contrast_set(20, env_kwargs=KW, first_task=100)
    assert cs.n_pairs == 20 and cs.rollouts.n_episodes == 80
    states = [str(s) for s in cs.rollouts.key_values["state"].to_pylist()]
    actions = [str(a) for a in cs.rollouts.key_values["action"].to_pylist()]
    for p in range(20):
        sa, sa2, sb, sb2 = states[4 * p:4 * p + 4]
        assert sa == sa2 and sb == sb2 and sa != sb
        qa, qb = sa.split("\n")[0].split(), sb.split("\n")[0].split()
        assert len(qa) == len(qb) and sum(x != y for x, y in zip(qa, qb)) == 1  # one number changed
        A, B = cs.answers[p]
        assert A != B and actions[4 * p:4 * p + 4] == [str(A), str(B), str(B), str(A)]
    np.testing.assert_array_equal(cs.rollouts.outcome.reshape(20, 4), [[1, 0, 1, 0]] * 20)
    with pytest.raises(PRMError, match="n_pairs"):
        arith_contrast_set(0)


class AnswerOnly:
    """A scorer that reads the stated number only (prefers larger numbers)."""

    def score_steps(self, ro):
        return np.array([float(a) for a in ro.key_values["action"].to_pylist()])


class Oracle:
    """A scorer that checks the stated number against the question (a perfect verifier)."""

    def score_steps(self, ro):
        from stepcredit.envs.arith_chain import _apply

        out = []
        for s, a in zip(ro.key_values["state"].to_pylist(), ro.key_values["action"].to_pylist()):
            q = s.split("\n")[0][len("Start at "):-1].split(", ")
            v = int(q[0])
            for part in q[1:]:
                w = part.split()
                v = _apply("multiply" if w[0] == "multiply" else w[0], int(w[-1]), v)
            out.append(1.0 if int(a) == v else 0.0)
        return np.array(out)


def test_consistency_separates_a_verifier_from_an_answer_reader():
    cs = arith_contrast_set(30, env_kwargs=KW)
    assert contrast_scores(Oracle(), cs)["consistency"] == 1.0
    r = contrast_scores(AnswerOnly(), cs)
    assert r["consistency"] == 0.0 and r["comparison_accuracy"] == pytest.approx(0.5)
