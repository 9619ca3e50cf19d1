"""stepcredit.prm.labels: first errors, aggregated verifications, Math-Shepherd HE/SE labels and
preference pairs. Vectorised == loop oracle, hand-worked cases, invariants, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import prm_labels as ref

from stepcredit.prm import PRMError
from stepcredit.prm.labels import (
    aggregate_verifications,
    first_error,
    hard_labels,
    preference_pairs,
    soft_labels,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def ragged_flags(draw):
    """Episode lengths 1..6 (length 1 often), E 0..8, and a bool per step."""
    lengths = draw(st.lists(st.sampled_from((1, 1, 2, 3, 6)) | st.integers(1, 6), min_size=0, max_size=8))
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))).astype(np.int64)
    flags = draw(st.lists(st.booleans(), min_size=int(offsets[-1]), max_size=int(offsets[-1])))
    return np.array(flags, dtype=bool), offsets


@st.composite
def vote_tables(draw):
    """[S, K] votes (hard 0/1, exactly 1/2, or soft), a mask with at least one vote per step."""
    n_steps = draw(st.integers(1, 12))
    k = draw(st.integers(1, 6))
    value = st.sampled_from((0.0, 1.0, 0.5)) | st.floats(0.0, 1.0)
    votes = np.array([[draw(value) for _ in range(k)] for _ in range(n_steps)], dtype=np.float64)
    mask = np.array([[draw(st.booleans()) for _ in range(k)] for _ in range(n_steps)], dtype=bool)
    for s in range(n_steps):
        if not mask[s].any():
            mask[s, draw(st.integers(0, k - 1))] = True
    votes[~mask] = np.nan  # absent votes may hold anything
    return votes, mask


# ---------------------------------------------------------------------- first_error
@SETTINGS
@given(data=ragged_flags())
def test_first_error_equals_oracle(data):
    correct, offsets = data
    got = first_error(correct, offsets)
    assert got.dtype == np.int64
    assert got.tolist() == ref.first_error(correct.tolist(), offsets.tolist())


def test_first_error_hand_worked():
    # episode 0: steps [✓, ✗, ✗] -> first error at 1; episode 1: [✓, ✓] -> −1;
    # episode 2: [✗] -> 0
    got = first_error([1, 0, 0, 1, 1, 0], [0, 3, 5, 6])
    assert got.tolist() == [1, -1, 0]


def test_first_error_no_episodes():
    assert first_error(np.zeros(0, dtype=bool), [0]).tolist() == []


@pytest.mark.parametrize(
    ("correct", "offsets", "match"),
    [
        ([1, 0], [0, 1], "must end at the number of steps 2"),
        ([1, 0], [1, 2], "must start at 0"),
        ([1, 0], [0, 0, 2], "episode 0 has no steps"),
        ([1, 2], [0, 2], "got 2.0 at step 1"),
        ([1, 0], [0.0, 2.0], "integer array"),
        ([[1, 0]], [0, 2], "must be 1-D"),
    ],
)
def test_first_error_errors(correct, offsets, match):
    with pytest.raises(PRMError, match=match):
        first_error(correct, offsets)


# ---------------------------------------------------------------------- aggregate_verifications
@pytest.mark.parametrize(("method", "tie"), [("majority", "zero"), ("majority", "half"), ("majority", "one"), ("mean", "zero"), ("all", "zero")])
@SETTINGS
@given(table=vote_tables())
def test_aggregate_equals_oracle(method, tie, table):
    votes, mask = table
    before = votes.copy()
    got = aggregate_verifications(votes, mask, method=method, tie=tie)
    labels, n_votes, agree, unanimous, kappa, n_rated = ref.aggregate(votes.tolist(), mask.tolist(), method, tie)
    np.testing.assert_allclose(got.labels, labels, rtol=1e-12, atol=0)
    assert got.n_votes.tolist() == n_votes
    assert got.n_rated == n_rated
    for value, want in ((got.mean_pairwise_agreement, agree), (got.fraction_unanimous, unanimous), (got.fleiss_kappa, kappa)):
        if want is None:
            assert math.isnan(value)
        else:
            assert math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-12)
    np.testing.assert_array_equal(votes, before)  # inputs untouched (NaNs included)


def test_aggregate_hand_worked_fleiss():
    # 4 steps, 3 verifiers; hard "correct" counts n⁺ = 3, 2, 0, 1:
    # P_s = [n⁺(n⁺−1) + n⁻(n⁻−1)] / 6 = 6/6, 2/6, 6/6, 2/6 -> P̄ = (1 + 1/3 + 1 + 1/3)/4 = 2/3
    # p⁺ = 6/12 = 1/2, P̄_e = 1/4 + 1/4 = 1/2, κ = (2/3 − 1/2)/(1 − 1/2) = 1/3
    # unanimous: steps 0 and 2 -> 1/2; majority labels 1, 1, 0, 0
    votes = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=float)
    got = aggregate_verifications(votes)
    assert got.labels.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert math.isclose(got.mean_pairwise_agreement, 2 / 3, rel_tol=1e-15)
    assert got.fraction_unanimous == 0.5
    assert math.isclose(got.fleiss_kappa, 1 / 3, rel_tol=1e-12)
    assert got.n_rated == 4
    # mean: 1, 2/3, 0, 1/3; all: 1, 0, 0, 0
    np.testing.assert_allclose(aggregate_verifications(votes, method="mean").labels, [1, 2 / 3, 0, 1 / 3], rtol=1e-15)
    assert aggregate_verifications(votes, method="all").labels.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_aggregate_ties_and_soft_votes():
    # two votes split 1/1 -> tie; soft votes 0.9 and 0.2 -> hard 1 and 0 -> tie too;
    # a soft vote of exactly 0.5 is a hard 0 (h = 1[v > 1/2])
    votes = np.array([[1.0, 0.0], [0.9, 0.2], [0.5, 0.5]])
    assert aggregate_verifications(votes, tie="zero").labels.tolist() == [0.0, 0.0, 0.0]
    assert aggregate_verifications(votes, tie="half").labels.tolist() == [0.5, 0.5, 0.0]
    assert aggregate_verifications(votes, tie="one").labels.tolist() == [1.0, 1.0, 0.0]
    np.testing.assert_allclose(aggregate_verifications(votes, method="mean").labels, [0.5, 0.55, 0.5], rtol=1e-15)


def test_aggregate_statistics_undefined_cases():
    # one vote per step: nothing is rated -> NaN statistics; all votes agree on "correct": κ undefined
    single = aggregate_verifications(np.array([[1.0], [0.0]]))
    assert single.n_rated == 0 and math.isnan(single.mean_pairwise_agreement) and math.isnan(single.fleiss_kappa)
    agree = aggregate_verifications(np.ones((3, 4)))
    assert agree.mean_pairwise_agreement == 1.0 and agree.fraction_unanimous == 1.0 and math.isnan(agree.fleiss_kappa)


@SETTINGS
@given(table=vote_tables(), seed=st.integers(0, 2**16))
def test_aggregate_invariants(table, seed):
    votes, mask = table
    maj = aggregate_verifications(votes, mask).labels
    all_ = aggregate_verifications(votes, mask, method="all").labels
    mean = aggregate_verifications(votes, mask, method="mean").labels
    assert ((all_ == 1) <= (maj == 1)).all()  # unanimous "correct" implies a majority for it
    assert ((mean >= 0) & (mean <= 1)).all()
    # permuting the verifiers (columns) changes nothing
    perm = np.random.default_rng(seed).permutation(votes.shape[1])
    a, b = aggregate_verifications(votes, mask), aggregate_verifications(votes[:, perm], mask[:, perm])
    np.testing.assert_array_equal(a.labels, b.labels)
    for x, y in ((a.mean_pairwise_agreement, b.mean_pairwise_agreement), (a.fleiss_kappa, b.fleiss_kappa)):
        assert (math.isnan(x) and math.isnan(y)) or x == y


def test_aggregate_odd_votes_never_tie():
    votes = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=float)
    for tie in ("zero", "half", "one"):
        assert aggregate_verifications(votes, tie=tie).labels.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("votes", "mask", "kwargs", "match"),
    [
        ([[1.0, 0.0]], [[False, False]], {}, "step 0 has no vote"),
        ([[1.0, 1.5]], None, {}, "got 1.5 at step 0, vote 1"),
        ([[1.0, np.nan]], None, {}, "at step 0, vote 1"),
        ([1.0, 0.0], None, {}, "must be 2-D"),
        ([[1.0, 0.0]], [[1, 1]], {}, "must be bool"),
        ([[1.0, 0.0]], [[True]], {}, "shape"),
        ([[1.0]], None, {"method": "median"}, "'method'"),
        ([[1.0]], None, {"tie": "coin"}, "'tie'"),
    ],
)
def test_aggregate_errors(votes, mask, kwargs, match):
    m = None if mask is None else np.array(mask)
    with pytest.raises(PRMError, match=match):
        aggregate_verifications(np.array(votes), m, **kwargs)


# ---------------------------------------------------------------------- Math-Shepherd labels
@SETTINGS
@given(rows=st.lists(st.integers(1, 8).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), min_size=0, max_size=20),
       threshold=st.sampled_from((0.0, 0.5, 0.25)))
def test_soft_and_hard_labels_equal_oracle(rows, threshold):
    k = np.array([r[0] for r in rows], dtype=np.int64)
    n = np.array([r[1] for r in rows], dtype=np.int64)
    soft = soft_labels(k, n)
    assert soft.tolist() == ref.soft(k.tolist(), n.tolist())
    assert hard_labels(soft, threshold).tolist() == ref.hard(soft.tolist(), threshold)


def test_hard_estimation_is_any_correct_continuation():
    # 4 continuations per step; 0, 1, 3 and 4 of them reach the gold answer:
    # SE = 0, 1/4, 3/4, 1; HE = 1[any] = 0, 1, 1, 1; a 1/2 cut gives 0, 0, 1, 1
    soft = soft_labels([0, 1, 3, 4], 4)
    assert soft.tolist() == [0.0, 0.25, 0.75, 1.0]
    assert hard_labels(soft).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert hard_labels(soft, 0.5).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("k", "n", "match"),
    [([3], [2], "n_correct"), ([-1], [2], "n_correct"), ([1], [0], "n_rollouts"), ([0.5], [2], "n_correct"),
     ([1, 1], [2, 2, 2], "shape of 'n_correct'")],
)
def test_soft_labels_errors(k, n, match):
    with pytest.raises(PRMError, match=match):
        soft_labels(k, n)


def test_hard_labels_errors():
    with pytest.raises(PRMError, match="non-finite value at index 1"):
        hard_labels([0.1, np.nan])


# ---------------------------------------------------------------------- preference pairs
@st.composite
def grouped_outcomes(draw):
    n = draw(st.integers(0, 14))
    names = draw(st.sampled_from((("a", "b", "c"), (3, 1, 7), ("任务", "", "z"))))
    group = [draw(st.sampled_from(names)) for _ in range(n)]
    outcome = [draw(st.sampled_from((0.0, 1.0, 0.5, -1.0, 1e-7))) for _ in range(n)]
    return outcome, group


@pytest.mark.parametrize(("pairing", "threshold"), [("success", 0.0), ("success", 0.5), ("ordered", 0.0)])
@SETTINGS
@given(data=grouped_outcomes())
def test_preference_pairs_equal_oracle(pairing, threshold, data):
    outcome, group = data
    got = preference_pairs(np.array(outcome), np.array(group), pairing=pairing, threshold=threshold)
    want = ref.pairs(outcome, group, pairing, threshold)
    assert list(zip(got.preferred.tolist(), got.dispreferred.tolist())) == want
    assert len(got) == len(want)


def test_preference_pairs_hand_worked():
    # group a: episodes 0 (1), 1 (0), 4 (1); group b: 2 (1), 3 (0), 5 (0)
    # success × failure: a -> (0,1), (4,1); b -> (2,3), (2,5)
    got = preference_pairs([1, 0, 1, 0, 1, 0], ["a", "a", "b", "b", "a", "b"])
    assert got.preferred.tolist() == [0, 4, 2, 2]
    assert got.dispreferred.tolist() == [1, 1, 3, 5]


@SETTINGS
@given(data=grouped_outcomes())
def test_binary_outcomes_success_pairs_are_the_ordered_pairs(data):
    outcome, group = data
    binary = (np.array(outcome) > 0.5).astype(float)
    a = preference_pairs(binary, np.array(group), pairing="success")
    b = preference_pairs(binary, np.array(group), pairing="ordered")
    np.testing.assert_array_equal(a.preferred, b.preferred)
    np.testing.assert_array_equal(a.dispreferred, b.dispreferred)
    g = np.array(group)
    assert (g[a.preferred] == g[a.dispreferred]).all()


def test_preference_pairs_errors():
    with pytest.raises(PRMError, match="'pairing'"):
        preference_pairs([1.0], ["a"], pairing="all")  # type: ignore[arg-type]
    with pytest.raises(PRMError, match="shape"):
        preference_pairs([1.0, 0.0], ["a"])
    with pytest.raises(PRMError, match="non-finite value at index 0"):
        preference_pairs([np.inf], ["a"])
