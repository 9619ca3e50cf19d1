"""stepcredit.prm.evaluation: ProcessBench first-error F1, pairwise accuracy by length, contrast
consistency, best-of-N. Vectorised == loop oracle, hand-worked cases, edge cases, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import prm_evaluation as ref

from stepcredit.prm import PRMError
from stepcredit.prm.evaluation import (
    best_of_n,
    contrast_consistency,
    pairwise_accuracy,
    predict_first_error,
    processbench_f1,
)
from stepcredit.prm.labels import first_error

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# scores with exact repeats (ties), near-ties and the threshold itself
SCORE = st.sampled_from((0.0, 0.5, 1.0, 0.5 + 1e-12, 0.3, 1e6)) | st.floats(-5.0, 5.0)


def same(a, b):
    """Equal floats, NaN equal to NaN."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) if isinstance(a, float) else a == b


def assert_same_dict(got, want):
    for key, value in want.items():
        if key == "buckets":
            assert len(got[key]) == len(value)
            for g, w in zip(got[key], value):
                assert_same_dict(g, w)
        else:
            assert same(got[key], value), (key, got[key], value)


@st.composite
def scored_episodes(draw):
    lengths = draw(st.lists(st.integers(1, 6), min_size=0, max_size=8))
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))).astype(np.int64)
    scores = draw(st.lists(SCORE, min_size=int(offsets[-1]), max_size=int(offsets[-1])))
    return np.array(scores, dtype=np.float64), offsets


# ---------------------------------------------------------------------- ProcessBench
@SETTINGS
@given(data=scored_episodes(), threshold=st.sampled_from((0.5, 0.0, 0.3)))
def test_predict_first_error_equals_oracle(data, threshold):
    scores, offsets = data
    got = predict_first_error(scores, offsets, threshold)
    assert got.tolist() == ref.predict_first_error(scores.tolist(), offsets.tolist(), threshold)


@SETTINGS
@given(data=scored_episodes())
def test_predicting_from_true_correctness_recovers_the_first_error(data):
    scores, offsets = data
    correct = scores >= 0.5
    np.testing.assert_array_equal(predict_first_error(correct.astype(float), offsets, 0.5), first_error(correct, offsets))


def test_predict_first_error_hand_worked():
    # episode 0 scores [0.9, 0.4, 0.2]: first below 0.5 is step 1; episode 1 [0.5, 0.7]: none
    # (0.5 is not below 0.5); episode 2 [0.1]: step 0
    got = predict_first_error([0.9, 0.4, 0.2, 0.5, 0.7, 0.1], [0, 3, 5, 6])
    assert got.tolist() == [1, -1, 0]


@st.composite
def first_error_pairs(draw):
    n = draw(st.integers(0, 20))
    idx = st.sampled_from((-1, -1, 0, 1, 2, 3))
    return [draw(idx) for _ in range(n)], [draw(idx) for _ in range(n)]


@SETTINGS
@given(data=first_error_pairs())
def test_processbench_f1_equals_oracle(data):
    pred, true = data
    assert_same_dict(processbench_f1(pred, true), ref.processbench(pred, true))


def test_processbench_f1_hand_worked():
    # erroneous episodes (true ≠ −1): true [2, 0, 1], pred [2, 1, 1] -> 2 exact of 3: error_acc = 2/3
    # correct episodes (true = −1): pred [−1, 0] -> 1 of 2: correct_acc = 1/2
    # f1 = 2·(2/3)·(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    got = processbench_f1([2, 1, 1, -1, 0], [2, 0, 1, -1, -1])
    assert math.isclose(got["error_acc"], 2 / 3, rel_tol=1e-15)
    assert got["correct_acc"] == 0.5
    assert math.isclose(got["f1"], 4 / 7, rel_tol=1e-15)
    assert (got["n_error"], got["n_correct"]) == (3, 2)


def test_processbench_f1_edge_cases():
    # no erroneous episode: error_acc and f1 undefined (NaN), correct_acc defined
    only_correct = processbench_f1([-1, 0], [-1, -1])
    assert math.isnan(only_correct["error_acc"]) and math.isnan(only_correct["f1"]) and only_correct["correct_acc"] == 0.5
    # no correct episode: correct_acc and f1 NaN
    only_err = processbench_f1([1], [1])
    assert only_err["error_acc"] == 1.0 and math.isnan(only_err["correct_acc"]) and math.isnan(only_err["f1"])
    # both accuracies 0: f1 = 0 (the harmonic mean's limit), not 0/0
    assert processbench_f1([-1, 0], [0, -1])["f1"] == 0.0
    # perfect: 1; no episodes: NaN everywhere
    assert processbench_f1([3, -1], [3, -1])["f1"] == 1.0
    empty = processbench_f1([], [])
    assert math.isnan(empty["f1"]) and empty["n_error"] == 0


def test_processbench_f1_predicting_no_error_everywhere():
    # "always −1" is right on every correct episode and wrong on every erroneous one: f1 = 0
    got = processbench_f1([-1, -1, -1], [-1, 2, 0])
    assert got["correct_acc"] == 1.0 and got["error_acc"] == 0.0 and got["f1"] == 0.0


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (processbench_f1, ([0, 1], [0]), "same shape"),
        (processbench_f1, ([-2], [0]), "must be >= -1, got -2 at episode 0"),
        (processbench_f1, ([0.5], [0]), "integer array"),
        (predict_first_error, ([0.1, np.nan], [0, 2]), "non-finite value at index 1"),
        (predict_first_error, ([0.1, 0.2], [0, 1]), "must end at the number of steps 2"),
    ],
)
def test_processbench_errors(fn, args, match):
    with pytest.raises(PRMError, match=match):
        fn(*args)


# ---------------------------------------------------------------------- pairwise accuracy
@st.composite
def scored_pairs(draw):
    n_ep = draw(st.integers(1, 10))
    scores = [draw(SCORE) for _ in range(n_ep)]
    lengths = [draw(st.integers(1, 40)) for _ in range(n_ep)]
    n_pairs = draw(st.integers(0, 15))
    better = [draw(st.integers(0, n_ep - 1)) for _ in range(n_pairs)]
    worse = [draw(st.integers(0, n_ep - 1)) for _ in range(n_pairs)]
    return scores, lengths, better, worse


@pytest.mark.parametrize("pair_length", ["max", "mean", "better"])
@SETTINGS
@given(data=scored_pairs(), edges=st.sampled_from(((4, 8, 16, 32), (10,), (2.5, 3.5))))
def test_pairwise_accuracy_equals_oracle(pair_length, data, edges):
    scores, lengths, better, worse = data
    got = pairwise_accuracy(scores, np.array(better, dtype=np.int64), np.array(worse, dtype=np.int64), lengths,
                            edges=edges, pair_length=pair_length)
    assert_same_dict(got, ref.pairwise(scores, better, worse, lengths, list(edges), pair_length))
    assert sum(b["n_pairs"] for b in got["buckets"]) == got["n_pairs"]


def test_pairwise_accuracy_hand_worked():
    # episodes: scores [3, 1, 2, 2], lengths [2, 5, 10, 12]
    # pairs (better, worse): (0,1) 3>1 -> 1; (1,0) 1<3 -> 0; (2,3) tie -> 1/2; (0,2) 3>2 -> 1
    # accuracy = 2.5/4 = 0.625; ties 1/4
    # lengths (max): 5, 5, 12, 10; edges (4, 8) -> buckets (−∞,4): none, [4,8): pairs 0,1 -> 1/2,
    # [8,∞): pairs 2,3 -> (1/2 + 1)/2 = 3/4
    got = pairwise_accuracy([3.0, 1.0, 2.0, 2.0], np.array([0, 1, 2, 0]), np.array([1, 0, 3, 2]), [2, 5, 10, 12], edges=(4, 8))
    assert got["accuracy"] == 0.625 and got["ties"] == 0.25 and got["n_pairs"] == 4
    assert [b["n_pairs"] for b in got["buckets"]] == [0, 2, 2]
    assert math.isnan(got["buckets"][0]["accuracy"])
    assert got["buckets"][1]["accuracy"] == 0.5 and got["buckets"][2]["accuracy"] == 0.75
    assert got["buckets"][2]["high"] == math.inf and got["buckets"][0]["low"] == -math.inf


@SETTINGS
@given(data=scored_pairs())
def test_pairwise_accuracy_invariants(data):
    scores, lengths, better, worse = data
    b, w = np.array(better, dtype=np.int64), np.array(worse, dtype=np.int64)
    if not len(better):
        return
    fwd = pairwise_accuracy(scores, b, w, lengths)["accuracy"]
    back = pairwise_accuracy(scores, w, b, lengths)["accuracy"]
    assert math.isclose(fwd + back, 1.0, rel_tol=1e-12)  # swapping every pair mirrors the accuracy
    # a constant scorer sits exactly at chance, whatever the pairs
    assert pairwise_accuracy(np.zeros(len(scores)), b, w, lengths)["accuracy"] == 0.5
    # an order-preserving rescaling of the scores changes nothing (×2 is exact in floats)
    assert pairwise_accuracy(2.0 * np.array(scores), b, w, lengths)["accuracy"] == fwd


def test_pairwise_accuracy_without_lengths_is_one_bucket():
    got = pairwise_accuracy([1.0, 0.0], np.array([0]), np.array([1]))
    assert got["accuracy"] == 1.0 and len(got["buckets"]) == 1 and got["buckets"][0]["n_pairs"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"better": np.array([0, 2])}, "episode index 2 at pair 1"),
        ({"worse": np.array([0])}, "same shape"),
        ({"edges": (4, 4)}, "strictly increasing"),
        ({"pair_length": "min"}, "'pair_length'"),
        ({"lengths": [1.0]}, "shape"),
    ],
)
def test_pairwise_accuracy_errors(kwargs, match):
    args = {"scores": [1.0, 0.0], "better": np.array([0, 1]), "worse": np.array([1, 0]), "lengths": [3, 4], **kwargs}
    with pytest.raises(PRMError, match=match):
        pairwise_accuracy(args.pop("scores"), args.pop("better"), args.pop("worse"), args.pop("lengths"), **args)


# ---------------------------------------------------------------------- contrast consistency
@SETTINGS
@given(rows=st.lists(st.tuples(SCORE, SCORE, SCORE, SCORE), min_size=0, max_size=15))
def test_contrast_consistency_equals_oracle(rows):
    cols = [list(c) for c in zip(*rows)] if rows else [[], [], [], []]
    assert_same_dict(contrast_consistency(*cols), ref.contrast(*cols))


def test_contrast_consistency_hand_worked():
    # pair 0: s(a,A)=0.9 > s(a,B)=0.2 and s(b,B)=0.8 > s(b,A)=0.1 -> consistent, 2 wins
    # pair 1: s(a,A)=0.6 > 0.5 but s(b,B)=0.4 < 0.7 -> inconsistent, 1 win
    # pair 2: tie 0.5 = 0.5 and 0.9 > 0.3 -> inconsistent (strict), 1/2 + 1
    # consistency = 1/3; comparison accuracy = (2 + 1 + 1.5)/6 = 0.75; ties 1/6
    got = contrast_consistency([0.9, 0.6, 0.5], [0.2, 0.5, 0.5], [0.8, 0.4, 0.9], [0.1, 0.7, 0.3])
    assert math.isclose(got["consistency"], 1 / 3, rel_tol=1e-15)
    assert got["comparison_accuracy"] == 0.75
    assert math.isclose(got["ties"], 1 / 6, rel_tol=1e-15)


@SETTINGS
@given(answer_score=st.lists(st.tuples(SCORE, SCORE), min_size=1, max_size=10))
def test_answer_only_scorer_is_never_consistent(answer_score):
    # a scorer that ignores the task: s(x, A) = f(A), s(x, B) = f(B) for both tasks; it can win
    # at most one of a pair's two comparisons
    fa = [a for a, _ in answer_score]
    fb = [b for _, b in answer_score]
    got = contrast_consistency(fa, fb, fb, fa)
    assert got["consistency"] == 0.0
    assert got["comparison_accuracy"] == 0.5


def test_contrast_consistency_errors():
    with pytest.raises(PRMError, match="same shape"):
        contrast_consistency([1.0], [1.0, 2.0], [1.0], [1.0])
    with pytest.raises(PRMError, match="'score_bb' has a non-finite value at index 0"):
        contrast_consistency([1.0], [1.0], [np.nan], [1.0])


# ---------------------------------------------------------------------- best of N
@st.composite
def groups_of_candidates(draw):
    n = draw(st.integers(1, 25))
    names = draw(st.sampled_from((("q1", "q2", "q3"), (5, 2), ("任务", "", "x", "y"))))
    group = [draw(st.sampled_from(names)) for _ in range(n)]
    scores = [draw(st.sampled_from((0.0, 1.0, 0.5)) | st.floats(-3, 3)) for _ in range(n)]
    success = [draw(st.sampled_from((0.0, 1.0)) | st.floats(0, 1)) for _ in range(n)]
    return scores, group, success


@SETTINGS
@given(data=groups_of_candidates())
def test_best_of_n_equals_oracle(data):
    scores, group, success = data
    got = best_of_n(scores, np.array(group), success)
    assert_same_dict(got, ref.best_of_n(scores, group, success))


def test_best_of_n_hand_worked():
    # group q1: scores [0.9, 0.9, 0.1], success [1, 0, 1]: top tie {0, 1} -> (1 + 0)/2 = 1/2;
    #   random 2/3; oracle 1
    # group q2: scores [0.2, 0.8], success [0, 1]: top {4} -> 1; random 1/2; oracle 1
    # best_of_n = (1/2 + 1)/2 = 3/4; random = (2/3 + 1/2)/2 = 7/12; oracle = 1
    got = best_of_n([0.9, 0.9, 0.1, 0.2, 0.8], np.array(["q1", "q1", "q1", "q2", "q2"]), [1, 0, 1, 0, 1])
    assert got["best_of_n"] == 0.75
    assert math.isclose(got["random"], 7 / 12, rel_tol=1e-15)
    assert got["oracle"] == 1.0 and got["n_groups"] == 2 and got["mean_group_size"] == 2.5


@SETTINGS
@given(data=groups_of_candidates(), seed=st.integers(0, 2**16))
def test_best_of_n_invariants(data, seed):
    scores, group, success = data
    g = np.array(group)
    base = best_of_n(scores, g, success)
    # a constant scorer picks uniformly: exactly the unguided baseline
    assert math.isclose(best_of_n(np.zeros(len(scores)), g, success)["best_of_n"], base["random"], rel_tol=1e-12)
    # the success itself as the score reaches the oracle
    assert math.isclose(best_of_n(success, g, success)["best_of_n"], base["oracle"], rel_tol=1e-12)
    # between the worst and the best pick
    assert base["best_of_n"] <= base["oracle"] + 1e-12
    # permuting the episodes changes nothing
    perm = np.random.default_rng(seed).permutation(len(scores))
    moved = best_of_n(np.array(scores)[perm], g[perm], np.array(success)[perm])
    for key in ("best_of_n", "random", "oracle"):
        assert math.isclose(moved[key], base[key], rel_tol=1e-12, abs_tol=1e-15)


def test_best_of_n_errors_and_empty():
    with pytest.raises(PRMError, match="same shape"):
        best_of_n([1.0, 2.0], np.array(["a"]), [1.0, 0.0])
    with pytest.raises(PRMError, match="'scores' has a non-finite value at index 1"):
        best_of_n([1.0, np.nan], np.array(["a", "a"]), [1.0, 0.0])
    empty = best_of_n([], np.array([], dtype=str), [])
    assert empty["n_groups"] == 0 and math.isnan(empty["best_of_n"])
