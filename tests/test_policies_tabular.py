"""TabularPolicy: hand-worked probabilities and gradients, finite differences, sampling, saving."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcredit.policies import TabularPolicy


def _policy(rng: np.random.Generator, sizes=(2, 3, 1, 4)) -> TabularPolicy:
    """States s0..s3 with 2, 3, 1, 4 actions and random logits."""
    pol = TabularPolicy()
    pol.act([f"s{i}" for i in range(len(sizes))], [[f"a{j}" for j in range(k)] for k in sizes], np.random.default_rng(0))
    pol.set_logits(rng.normal(size=pol.n_entries) * 2)
    return pol


def _log_softmax_loop(pol: TabularPolicy, entry: int) -> float:
    """Reference: log π of one entry, by a loop over its state's entries."""
    st = pol.entry_state
    z = [pol.logits[p] for p in range(pol.n_entries) if st[p] == st[entry]]
    return pol.logits[entry] - math.log(sum(math.exp(v) for v in z))


def test_a_new_state_is_uniform_and_entries_follow_first_appearance():
    pol = TabularPolicy()
    out = pol.act(["s", "t"], [["x", "y", "z"], ["x", "y"]], np.random.default_rng(1))
    # s gets entries 0, 1, 2 (x, y, z); t gets 3, 4: logits 0, so π = 1/3 and 1/2
    assert pol.n_states == 2 and pol.n_entries == 5
    assert pol.entry_state.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_allclose(out.log_prob, [-math.log(3), -math.log(2)], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out.ref_log_prob, [-math.log(3), -math.log(2)], rtol=0, atol=1e-15)
    assert out.entry.tolist() == [out.index[0], 3 + out.index[1]]
    assert pol.entries(["t", "s"], ["y", "x"]).tolist() == [4, 0]


def test_log_prob_hand_worked():
    pol = TabularPolicy()
    pol.entries(["s", "s"], ["a", "b"])
    pol.set_logits(np.array([math.log(3.0), 0.0]))
    # π(a) = 3 / (3 + 1) = 0.75, π(b) = 0.25
    np.testing.assert_allclose(np.exp(pol.log_prob(np.array([0, 1]))), [0.75, 0.25], rtol=1e-15)


def test_gradient_hand_worked():
    pol = TabularPolicy()
    pol.entries(["s", "s", "u"], ["a", "b", "a"])
    # logits 0: π(·|s) = (1/2, 1/2); ∇ log π(a|s) = onehot(a) − π = (1/2, −1/2, 0); state u is untouched.
    # weights: 2 on (s, a) and 1 on (s, b): 2·(1/2, −1/2) + 1·(−1/2, 1/2) = (1/2, −1/2, 0)
    g = pol.grad_log_prob(np.array([0, 1]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(g, [0.5, -0.5, 0.0], rtol=0, atol=1e-15)


def test_log_prob_matches_a_loop_over_each_state():
    pol = _policy(np.random.default_rng(3))
    got = pol.log_prob(np.arange(pol.n_entries))
    want = [_log_softmax_loop(pol, p) for p in range(pol.n_entries)]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12))
def test_gradient_of_weighted_log_prob_matches_finite_differences(seed, n):
    rng = np.random.default_rng(seed)
    pol = _policy(rng)
    entries = rng.integers(0, pol.n_entries, size=n)
    c = rng.normal(size=n)
    z0 = pol.logits.copy()

    def f(z):
        pol.set_logits(z)
        return float(np.dot(c, pol.log_prob(entries)))

    h = 1e-6
    fd = np.array([(f(z0 + h * e) - f(z0 - h * e)) / (2 * h) for e in np.eye(z0.size)])
    pol.set_logits(z0)
    np.testing.assert_allclose(pol.grad_log_prob(entries, c), fd, rtol=1e-6, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_kl_to_initial_and_its_gradient(seed):
    rng = np.random.default_rng(seed)
    pol = _policy(rng)
    w = rng.random(pol.n_states)
    z0 = pol.logits.copy()
    kl, grad = pol.kl_to_initial(w)
    # loop reference: KL(π‖uniform) = Σ π log(π · n)
    for s in range(pol.n_states):
        p = [math.exp(_log_softmax_loop(pol, e)) for e in range(pol.n_entries) if pol.entry_state[e] == s]
        assert kl[s] == pytest.approx(sum(q * math.log(q * len(p)) for q in p), rel=1e-12, abs=1e-14)
    assert kl[2] == 0.0  # one action: π = π₀

    def f(z):
        pol.set_logits(z)
        return float(np.dot(w, pol.kl_to_initial()[0]))

    h = 1e-6
    fd = np.array([(f(z0 + h * e) - f(z0 - h * e)) / (2 * h) for e in np.eye(z0.size)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_ascend_zero_weights_is_a_no_op_and_a_positive_weight_raises_the_probability():
    pol = _policy(np.random.default_rng(5))
    z0 = pol.logits.copy()
    pol.ascend(np.array([0, 3, 4]), np.zeros(3), lr=10.0)
    np.testing.assert_array_equal(pol.logits, z0)
    before = math.exp(pol.log_prob(np.array([3]))[0])
    pol.ascend(np.array([3]), np.array([1.0]), lr=0.5)
    assert math.exp(pol.log_prob(np.array([3]))[0]) > before
    # other states are untouched
    st = pol.entry_state
    np.testing.assert_array_equal(pol.logits[st != st[3]], z0[st != st[3]])


def test_ascend_kl_moves_towards_uniform():
    pol = _policy(np.random.default_rng(6))
    entries = np.arange(pol.n_entries)
    kl0 = pol.kl_to_initial()[0].sum()
    pol.ascend(entries, np.zeros(entries.size), lr=0.5, kl_coef=1.0)
    assert pol.kl_to_initial()[0].sum() < kl0


def test_act_matches_a_per_environment_loop():
    """The vectorised sampler against a loop: softmax per environment, inverse CDF of u_b."""
    pol = _policy(np.random.default_rng(7))
    states = ["s1", "s0", "s3", "s2", "s1", "s3"]
    valid = [[f"a{j}" for j in range(k)] for k in (3, 2, 4, 1, 3, 4)]
    out = pol.act(states, valid, np.random.default_rng(11))
    u = np.random.default_rng(11).random(len(states))
    for b, (s, acts) in enumerate(zip(states, valid)):
        ent = pol.entries([s] * len(acts), acts)
        p = np.exp(pol.logits[ent] - pol.logits[ent].max())
        p /= p.sum()
        idx = min(int(np.searchsorted(np.cumsum(p), u[b], side="right")), len(acts) - 1)
        assert out.index[b] == idx
        assert out.entry[b] == ent[idx]
        assert out.log_prob[b] == pytest.approx(math.log(p[idx]), rel=1e-12)
        assert out.ref_log_prob[b] == pytest.approx(-math.log(len(acts)), rel=1e-15)


def test_act_samples_follow_the_policy():
    pol = TabularPolicy()
    pol.entries(["s"] * 3, ["a", "b", "c"])
    pol.set_logits(np.log([0.2, 0.5, 0.3]))
    n = 20_000
    out = pol.act(["s"] * n, [["a", "b", "c"]] * n, np.random.default_rng(0))
    freq = np.bincount(out.index, minlength=3) / n
    # binomial standard error <= 0.0036: 5 sigma
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.018)
    np.testing.assert_allclose(out.log_prob, np.log([0.2, 0.5, 0.3])[out.index], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20))
def test_act_is_deterministic_given_the_generator_and_agrees_with_log_prob(seed, n):
    def run():
        pol = TabularPolicy()
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, 4, size=n).tolist()
        states = [f"s{i}" for i in ids]
        valid = [[f"a{j}" for j in range(i + 1)] for i in ids]  # state s_i has i + 1 actions
        out = pol.act(states, valid, rng)
        return pol, out

    (p1, o1), (_, o2) = run(), run()
    np.testing.assert_array_equal(o1.index, o2.index)
    np.testing.assert_array_equal(o1.log_prob, o2.log_prob)
    np.testing.assert_allclose(p1.log_prob(o1.entry), o1.log_prob, rtol=1e-12, atol=1e-15)


def test_state_dependent_action_lists_grow_the_state():
    pol = TabularPolicy()
    pol.act(["s"], [["go", "look"]], np.random.default_rng(0))
    out = pol.act(["s"], [["go", "look", "take key"]], np.random.default_rng(0))
    assert pol.n_entries == 3 and pol.entry_state.tolist() == [0, 0, 0]
    np.testing.assert_allclose(out.log_prob, [-math.log(3)])
    # an action list missing an action samples among the listed ones only
    out = pol.act(["s"], [["look"]], np.random.default_rng(0))
    assert out.index.tolist() == [0] and out.entry.tolist() == [1] and out.log_prob[0] == 0.0


def test_bad_action_lists_are_refused():
    pol = TabularPolicy()
    with pytest.raises(ValueError, match="no valid action"):
        pol.act(["s"], [[]], np.random.default_rng(0))
    with pytest.raises(ValueError, match="repeat"):
        pol.act(["s"], [["a", "a"]], np.random.default_rng(0))
    with pytest.raises(ValueError, match="2 states but 1"):
        pol.act(["s", "t"], [["a"]], np.random.default_rng(0))
    with pytest.raises(ValueError, match="logits must be"):
        pol.set_logits(np.zeros(3))


def test_state_dict_round_trips_through_npz_without_pickle():
    pol = _policy(np.random.default_rng(8))
    pol.act(["ünïcode state ✓"], [["press 0", "press 1"]], np.random.default_rng(0))
    buf = io.BytesIO()
    np.savez(buf, **pol.state_dict())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    other = TabularPolicy()
    other.load_state_dict(loaded)
    np.testing.assert_array_equal(other.logits, pol.logits)
    np.testing.assert_array_equal(other.entry_state, pol.entry_state)
    states = ["s1", "ünïcode state ✓", "s3"]
    valid = [["a0", "a1", "a2"], ["press 0", "press 1"], ["a0", "a1", "a2", "a3"]]
    a, b = pol.act(states, valid, np.random.default_rng(4)), other.act(states, valid, np.random.default_rng(4))
    np.testing.assert_array_equal(a.entry, b.entry)
    np.testing.assert_array_equal(a.log_prob, b.log_prob)
    assert pol.n_entries == other.n_entries  # no entry created on either side


def test_empty_state_dict_and_bad_state_dicts():
    empty = TabularPolicy().state_dict()
    other = TabularPolicy()
    other.load_state_dict(empty)
    assert other.n_entries == 0 and other.n_states == 0
    good = _policy(np.random.default_rng(9)).state_dict()
    with pytest.raises(ValueError, match="missing array"):
        TabularPolicy().load_state_dict({k: v for k, v in good.items() if k != "logits"})
    with pytest.raises(ValueError, match="outside the states"):
        TabularPolicy().load_state_dict({**good, "entry_state": good["entry_state"] + 10})
    with pytest.raises(ValueError, match="repeats"):
        TabularPolicy().load_state_dict({**good, "entry_action": np.array(["a0"] * good["logits"].size)})
