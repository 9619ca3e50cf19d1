"""SPA (progress attribution): the least-squares fit against the dense normal equations, the
credit against the loop oracle, hand-worked cases from the definitions, invariants, the hook."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import RTOL, assert_grid_covers, close
from reference import attribution as ref
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.estimators.attribution import (
    LeastSquaresProgress,
    ProgressModel,
    spa_credit,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = {"max_groups": 4, "max_group_size": 4, "max_steps": 4}
# every Literal choice and a few floats; the solver runs to (near) exact convergence
GRID = [
    {},
    {"features": "state_action"},
    {"scope": "group"},
    {"scope": "group", "features": "state_action", "ridge": 0.1},
    {"ridge": 10.0, "beta": 0.0, "gamma": 0.9},
    {"norm": "none", "gamma": 0.5, "beta": 2.0},
    {"norm": "none", "epsilon": 1e-3, "gamma": 0.0},
    {"epsilon": 1e-3, "beta": -1.0},
    {"variant": "code"},
    {"variant": "code", "norm": "none", "gamma": 0.9},
]
EXACT = {"iterations": 1000, "tol": 1e-13}


def fitted(ro, params) -> LeastSquaresProgress:
    keys = ("features", "scope", "ridge", "iterations", "tol")
    return LeastSquaresProgress(**{k: v for k, v in {**EXACT, **params}.items() if k in keys}).fit(ro)


def test_grid_covers_every_choice():
    assert_grid_covers("spa", GRID)


# ---------------------------------------------------------------------- the fit == dense normal equations
def theta_by_key(records, c, features, scope) -> dict:
    """θ per oracle feature key from per-step contributions (all steps of a key agree)."""
    theta: dict = {}
    k = 0
    for rec in records:
        for step in rec["steps"]:
            key = ref.feature_key(rec, step, features, scope)
            assert theta.setdefault(key, c[k]) == c[k], "two steps of one feature differ"
            k += 1
    return theta


def term_scale(records, theta, features, scope, ridge) -> float:
    """‖ |Xᵀ| (|X| |θ| + |R|) + λ|θ| ‖₂: the size of the terms the residual sums. A float
    evaluation of the residual, in any order, is off by a few ulps of this per term."""
    acc: dict = {key: ridge * abs(v) for key, v in theta.items()}
    for rec in records:
        keys = [ref.feature_key(rec, s, features, scope) for s in rec["steps"]]
        e = abs(rec["outcome"]) + sum(abs(theta[k]) for k in keys)
        for k in keys:
            acc[k] += e
    return math.hypot(*acc.values())


@pytest.mark.parametrize("scope", ["global", "group"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rollout_records(state=True, action=True, **SMALL))
def test_fit_solves_the_normal_equations(scope, records):
    ro = sc.Rollouts.from_records(records)
    for features in ("state", "state_action"):
        for ridge in (1e-3, 1.0):
            model = fitted(ro, {"features": features, "scope": scope, "ridge": ridge})
            theta = theta_by_key(records, model.contributions(ro).tolist(), features, scope)
            # (1) the solver converged: the exact residual of its θ is at the rounding level
            # of the terms (CG reaches ~1e-16 relative; 1e-10 leaves 1e6 of margin, while a
            # wrong system, e.g. a mis-indexed feature, leaves a residual of the terms' size)
            rho = ref.residual_norm(records, theta, features, scope, ridge)
            assert rho <= 1e-10 * term_scale(records, theta, features, scope, ridge)
            # (2) it agrees with the dense solve within the rigorous bound: every eigenvalue
            # of XᵀX + λI is >= λ, so |θ̃_f − θ*_f| <= ‖ρ̃‖₂/λ and |θ_ref − θ*| <= ‖ρ_ref‖₂/λ
            want, ref_bound = ref.fit(records, features, scope, ridge)
            for key, v in theta.items():
                assert abs(v - want[key]) <= RTOL * abs(want[key]) + rho / ridge + ref_bound, key
            assert model.diagnostics["features"] == len(want)
            assert model.diagnostics["cg_residual"] <= 1e-9


@SETTINGS
@given(records=rollout_records(state=True, **SMALL))
def test_spa_uses_the_fitted_contributions_bitwise(records):
    # the estimator's internal fast path and the model's lookup give identical contributions
    ro = sc.Rollouts.from_records(records)
    credit = sc.estimate(ro, "spa", beta=0.0, norm="none")
    model = LeastSquaresProgress().fit(ro)
    assert np.array_equal(credit.step_reward, model.contributions(ro))
    hooked = spa_credit(ro, model, beta=0.0, norm="none")
    assert np.array_equal(hooked.step_advantage, credit.step_advantage)


# ---------------------------------------------------------------------- the credit == loop oracle
def check_against_oracle(records, params):
    ro = sc.Rollouts.from_records(records)
    full = {**EXACT, **params}
    got = sc.estimate(ro, "spa", **full)
    # the credit, given the fitted contributions (the fit itself is compared above)
    c = None if params.get("variant") == "code" else fitted(ro, params).contributions(ro).tolist()
    want = ref.spa(records, **full, contributions=c)
    for field in ("step_advantage", "episode_advantage", "step_return", "step_reward"):
        close(getattr(got, field), getattr(want, field), field)
    assert got.diagnostics["grounding_used"] == want.diagnostics["grounding_used"]


# one hypothesis test per variant and grounding presence; each draw is checked at every grid
# point of that variant, and every failing point is reported
@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("grounding", [True, False], ids=["grounding", "no-grounding"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rollout_records(state=True, action=True, extra=True, **SMALL))
def test_vectorised_equals_oracle(variant, grounding, records):
    if not grounding:
        records = [{**rec, "steps": [{k: v for k, v in s.items() if k != "grounding"} for s in rec["steps"]]}
                   for rec in records]
    failures = []
    for params in GRID:
        if params.get("variant", "paper") == variant:
            try:
                check_against_oracle(records, params)
            except AssertionError as err:
                failures.append(f"{params}: {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def ep(eid, outcome, states, group="g", grounding=None, actions=None):
    steps = [{"state": s} for s in states]
    for step, g in zip(steps, grounding or []):
        step["grounding"] = g
    for step, a in zip(steps, actions or []):
        step["action"] = a
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": steps}


TWO = [ep("a", 1.0, ["s0", "s1"]), ep("b", 0.0, ["s0", "s2"])]


def test_hand_two_episodes_shared_first_state():
    # X = [[1, 1, 0], [1, 0, 1]] (features s0, s1, s2), R = [1, 0], λ = 1:
    #   (2+λ)θ0 + θ1 + θ2 = 1,  θ0 + (1+λ)θ1 = 1,  θ0 + (1+λ)θ2 = 0
    #   θ1 = (1 − θ0)/2, θ2 = −θ0/2  ->  3θ0 + (1 − 2θ0)/2 = 1  ->  θ0 = 1/4, θ1 = 3/8, θ2 = −1/8
    # c = [1/4, 3/8 | 1/4, −1/8]; Σ_t c = [5/8, 1/8] (shrunk towards 0 from R = [1, 0] by λ)
    # norm="none", γ = 1, no grounding: A = reward-to-go = [5/8, 3/8 | 1/8, −1/8]
    ro = sc.Rollouts.from_records(TWO)
    c = sc.estimate(ro, "spa", ridge=1.0, norm="none", **EXACT)
    np.testing.assert_allclose(c.step_reward, [1 / 4, 3 / 8, 1 / 4, -1 / 8], rtol=1e-14)
    np.testing.assert_allclose(c.step_advantage, [5 / 8, 3 / 8, 1 / 8, -1 / 8], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(c.episode_advantage, [5 / 8, 1 / 8], rtol=1e-14)
    # R² = 1 − ((5/8 − 1)² + (1/8)²) / ((1 − 1/2)² + (0 − 1/2)²) = 1 − (10/64)/(1/2) = 11/16
    assert c.diagnostics["fit_r2"] == pytest.approx(11 / 16, rel=1e-12)
    assert c.diagnostics["features"] == 3 and c.diagnostics["grounding_used"] is False
    # norm="group": the four rewards have mean (1/4 + 3/8 + 1/4 − 1/8)/4 = 3/16, centred
    # [1/16, 3/16, 1/16, −5/16], unbiased variance (1 + 9 + 1 + 25)/256/3 = 3/64, std √3/8;
    # ñ = centred/(std + ε), A = reward-to-go of ñ: [ñ0 + ñ1, ñ1 | ñ2 + ñ3, ñ3]
    g = sc.estimate(ro, "spa", ridge=1.0, **EXACT)
    n = np.array([1, 3, 1, -5]) / 16 / (math.sqrt(3) / 8 + 1e-6)
    np.testing.assert_allclose(g.step_advantage, [n[0] + n[1], n[1], n[2] + n[3], n[3]], rtol=1e-12)


def test_hand_small_ridge_is_the_minimum_norm_decomposition():
    # λ → 0: θ0 = 1/(3+λ) → 1/3, θ1 → 2/3, θ2 → −1/3 (the least-norm θ with Σ_t c_t = R exactly)
    c = sc.estimate(sc.Rollouts.from_records(TWO), "spa", ridge=1e-9, norm="none", **EXACT)
    np.testing.assert_allclose(c.step_reward, [1 / 3, 2 / 3, 1 / 3, -1 / 3], rtol=1e-8)
    np.testing.assert_allclose(c.episode_advantage, [1.0, 0.0], atol=1e-8)


def test_hand_grounding_bonus_and_discount():
    # same fit (λ = 1): c = [1/4, 3/8 | 1/4, −1/8]; grounding [1, 0 | 1, 1], β = 0.5:
    # r = [3/4, 3/8 | 3/4, 3/8]; γ = 0.5, norm none: A = [3/4 + 3/16, 3/8 | 3/4 + 3/16, 3/8]
    recs = [ep("a", 1.0, ["s0", "s1"], grounding=[1.0, 0.0]), ep("b", 0.0, ["s0", "s2"], grounding=[1.0, 1.0])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "spa", ridge=1.0, gamma=0.5, norm="none", **EXACT)
    np.testing.assert_allclose(c.step_reward, [3 / 4, 3 / 8, 3 / 4, 3 / 8], rtol=1e-14)
    np.testing.assert_allclose(c.step_advantage, [15 / 16, 3 / 8, 15 / 16, 3 / 8], rtol=1e-14)
    assert c.diagnostics["grounding_used"] is True


def test_hand_code_variant():
    # group of three, outcomes [1, 0, 0]: R_i − mean of the others = [1, −1/2, −1/2] on every
    # step; grounding field [0, 0 | 1 | 0], the last step forced to 1: g = [0, 1 | 1 | 1];
    # β = 0.5, norm none, γ = 1: r = [1, 1.5 | 0 | 0], A = [2.5, 1.5 | 0 | 0]
    recs = [
        ep("a", 1.0, ["x", "y"], grounding=[0.0, 0.0]),
        ep("b", 0.0, ["x"], grounding=[1.0]),
        ep("c", 0.0, ["z"], grounding=[0.0]),
    ]
    c = sc.estimate(sc.Rollouts.from_records(recs), "spa", variant="code", norm="none")
    assert c.step_reward.tolist() == [1.0, 1.5, 0.0, 0.0]
    assert c.step_advantage.tolist() == [2.5, 1.5, 0.0, 0.0]
    # alone in its group: c = R itself (the script's "filtered list is empty" branch)
    solo = sc.estimate(sc.Rollouts.from_records([ep("s", 0.75, ["x"])]), "spa", variant="code", norm="none", beta=0.0)
    assert solo.step_reward.tolist() == [0.75]


def test_hand_feature_shared_by_every_episode():
    # one feature s, visited n_i = [1, 2, 1] times, outcomes [1, 0, 0.5], λ = 0.5:
    # θ = Σ n_i R_i / (Σ n_i² + λ) = (1 + 0 + 0.5) / (1 + 4 + 1 + 0.5) = 1.5/6.5
    recs = [ep("a", 1.0, ["s"]), ep("b", 0.0, ["s", "s"]), ep("c", 0.5, ["s"])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "spa", ridge=0.5, norm="none", **EXACT)
    np.testing.assert_allclose(c.step_reward, [1.5 / 6.5] * 4, rtol=1e-14)


def test_singleton_step_group_and_all_equal_group():
    # a group with one step: mean 0, std 1, ñ = r/(1 + ε); r = c = R·1/(1 + λ) (one private
    # feature, visited once). A group whose steps all have the same reward: ñ = 0/(0 + ε) = 0.
    recs = [ep("a", 2.0, ["s"], group="one"), ep("b", 1.0, ["t"], group="eq"), ep("c", 1.0, ["u"], group="eq")]
    c = sc.estimate(sc.Rollouts.from_records(recs), "spa", ridge=0.25, **EXACT)
    assert c.step_advantage[0] == pytest.approx(2.0 / 1.25 / (1 + 1e-6), rel=1e-14)
    assert c.step_advantage[1:].tolist() == [0.0, 0.0]


def test_code_variant_near_equal_outcomes_next_to_the_grounding_bonus():
    # five one-step episodes, outcomes 1 + k·1e-7 with k = [0, 0, 1, 0, 2], grounding 0 (the
    # last step is grounded: g = 1): c_i = R_i − mean of the others = (5/4)(k_i − 3/5)·1e-7,
    # r_i = c_i + 0.5, and the advantage is (r_i − mean r) / (std r + ε) = (5/4)(k_i − 3/5)·1e-7
    # / ((5/4)·std k·1e-7 + 1e-6) with std k = sqrt(3.2/4): [−0.0675, −0.0675, 0.0450,
    # −0.0675, 0.1574]. The rounded r keeps only ulp(0.5) = 1.1e-16 of c's differences; the
    # advantage is computed from c's own differences, so it matches the exact value to ~1e-15
    # (1e-11 would be off by up to ulp(0.5) / (std + ε) = 1e-10 otherwise) and does not depend
    # on the order of the episodes, whose changes move c by its last bit only.
    recs = [ep(f"e{i}", 1.0 + k * 1e-7, ["s"], grounding=[0.0]) for i, k in enumerate((0, 0, 1, 0, 2))]
    ro = sc.Rollouts.from_records(recs)
    got = sc.estimate(ro, "spa", variant="code").episode_advantage
    k = np.array([(Fraction(r["outcome"]) - 1) for r in recs])  # exact k·1e-7 as stored
    c = [5 * (ki - sum(k) / 5) / 4 for ki in k]
    std = math.sqrt(float(sum(ci * ci for ci in c) / 4))
    want = [float(ci) / (std + 1e-6) for ci in c]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got, ref.spa(recs, variant="code").episode_advantage, rtol=1e-13, atol=1e-15)
    for perm in itertools.permutations(range(5)):
        perm = np.array(perm)
        permuted = sc.estimate(ro.take(perm), "spa", variant="code").episode_advantage
        np.testing.assert_allclose(permuted, got[perm], rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------- invariants
@SETTINGS
@given(records=rollout_records(state=True, **SMALL))
def test_contributions_sum_to_the_outcome_when_every_episode_has_its_own_feature(records):
    # one private feature per episode makes Σ_t c_t = R_i solvable for every i: the residual
    # of episode i is λ/(λ + w_i) <= λ times what the shared features leave, e_i, so with
    # λ = 1e-12 and |e_i| a few times max |R|, |Σ_t c_t − R_i| <= 1e-10 max |R|
    records = [
        {**rec, "steps": rec["steps"][:-1] + [{**rec["steps"][-1], "state": f"private-{k}"}]}
        for k, rec in enumerate(records)
    ]
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "spa", ridge=1e-12, beta=0.0, norm="none", gamma=1.0, **EXACT)
    scale = max(1.0, float(np.max(np.abs(ro.outcome))))
    assert np.all(np.abs(c.episode_advantage - ro.outcome) <= 1e-10 * scale)


@SETTINGS
@given(records=rollout_records(state=True, **SMALL))
def test_group_normalised_rewards_sum_to_zero_per_group(records):
    # γ = 1: the first-step advantage is Σ_t ñ_t, and ñ sums to 0 over a group of >= 2 steps
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "spa", gamma=1.0, beta=0.0)
    sums = np.bincount(ro.episode_group, weights=c.episode_advantage, minlength=ro.n_groups)
    steps = np.bincount(ro.episode_group, weights=ro.step_counts, minlength=ro.n_groups)
    scale = 1.0 + np.bincount(ro.episode_group, weights=np.abs(c.episode_advantage), minlength=ro.n_groups)
    assert np.all(np.abs(sums[steps > 1]) <= 1e-9 * scale[steps > 1])


@SETTINGS
@given(records=rollout_records(state=True, **SMALL), seed=st.integers(0, 2**32 - 1))
def test_contributions_are_bitwise_permutation_equivariant(records, seed):
    # the fit runs in episode_id order, so its float sums do not depend on the input order
    ro = sc.Rollouts.from_records(records)
    perm = np.random.default_rng(seed).permutation(ro.n_episodes)
    steps = np.concatenate([np.arange(ro.episode_offsets[e], ro.episode_offsets[e + 1]) for e in perm])
    for scope in ("global", "group"):
        whole = LeastSquaresProgress(scope=scope).fit(ro).contributions(ro)
        permuted = LeastSquaresProgress(scope=scope).fit(ro.take(perm)).contributions(ro.take(perm))
        assert np.array_equal(permuted, whole[steps])


@SETTINGS
@given(records=rollout_records(state=True, action=True, max_group_size=12, max_steps=6), data=st.data())
def test_group_scope_is_group_local(records, data):
    # scope="group": no feature matches across groups and each group's block is solved on its
    # own, so removing another group changes nothing, bit for bit (also when one group is left)
    ro = sc.Rollouts.from_records(records)
    g = data.draw(st.integers(0, ro.n_groups - 1), label="group")
    for keep in (np.flatnonzero(ro.episode_group != g), np.flatnonzero(ro.episode_group == g)):
        if keep.size == 0:
            continue
        part = ro.take(keep)
        steps = np.concatenate([np.arange(ro.episode_offsets[e], ro.episode_offsets[e + 1]) for e in keep])
        for features in ("state", "state_action"):
            model = LeastSquaresProgress(scope="group", features=features)
            whole = model.fit(ro).contributions(ro)
            assert np.array_equal(model.fit(part).contributions(part), whole[steps])


def test_group_scope_is_group_local_with_many_shared_features():
    # two groups of 12 episodes x 6 steps over 10 states and 5 actions: dozens of shared
    # features per group, CG stops at tol after several iterations (any change of rounding
    # would show at ~1e-9), yet a group alone gives bitwise the same contributions
    recs = [
        {"episode_id": f"e{i}", "group_id": f"g{i % 2}", "outcome": ((i * 37) % 11) / 10,
         "steps": [{"state": f"s{(i * 7 + t * 3) % 10}", "action": f"a{(i + t * t) % 5}"} for t in range(6)]}
        for i in range(24)
    ]
    ro = sc.Rollouts.from_records(recs)
    for features in ("state", "state_action"):
        model = LeastSquaresProgress(scope="group", features=features)
        whole = model.fit(ro).contributions(ro)
        assert model.diagnostics["cg_iterations"] > 3
        for g in range(2):
            keep = np.flatnonzero(ro.episode_group == g)
            steps = np.concatenate([np.arange(6 * e, 6 * e + 6) for e in keep])
            assert np.array_equal(model.fit(ro.take(keep)).contributions(ro.take(keep)), whole[steps])


def test_unseen_features_get_zero_and_seen_keep_their_weight():
    model = LeastSquaresProgress(ridge=1.0, **EXACT).fit(sc.Rollouts.from_records(TWO))
    new = sc.Rollouts.from_records([ep("z", 1.0, ["s1", "never", "s0"])])
    np.testing.assert_allclose(model.contributions(new), [3 / 8, 0.0, 1 / 4], rtol=1e-14)
    assert isinstance(model, ProgressModel)


def batch(tag, outcomes, states):
    return sc.Rollouts.from_records(
        [ep(f"{tag}{i}", r, s, group=f"g{i % 2}") for i, (r, s) in enumerate(zip(outcomes, states))]
    )


BATCHES = [
    batch("p", [1.0, 0.0, 0.5], [["a", "b"], ["a", "c"], ["d"]]),
    batch("q", [0.0, 0.0, 1.0], [["a", "e"], ["b"], ["a", "f", "b"]]),
    batch("r", [1.0, 1.0], [["a"], ["e", "g"]]),
    batch("s", [0.25], [["b", "a"]]),
]


def concat(batches):
    recs = []
    for b in batches:
        for e in range(b.n_episodes):
            lo, hi = b.episode_offsets[e], b.episode_offsets[e + 1]
            recs.append(ep(b.episode_id[e].as_py(), float(b.outcome[e]), b.key_values["state"][lo:hi].to_pylist(),
                           group=b.group_id[e].as_py()))
    return sc.Rollouts.from_records(recs)


def test_replay_fits_the_last_batches_together_and_keeps_at_most_replay():
    model = LeastSquaresProgress(replay=2, ridge=0.1, **EXACT)
    for k, b in enumerate(BATCHES):
        model.fit(b)
        assert model.diagnostics["replayed_batches"] == min(k, 2)
        assert model.replayed == min(k + 1, 2)
        # the fit equals a fresh fit on this batch and the (at most 2) before it, pooled
        pooled = LeastSquaresProgress(ridge=0.1, **EXACT).fit(concat(BATCHES[max(0, k - 2) : k + 1]))
        close(model.contributions(b), pooled.contributions(b), f"batch {k}")
    # deterministic: the same sequence of fits gives the same θ, bit for bit
    again = LeastSquaresProgress(replay=2, ridge=0.1, **EXACT)
    for b in BATCHES:
        again.fit(b)
    assert np.array_equal(again.keys_, model.keys_) and np.array_equal(again.theta_, model.theta_)
    # and replay changes the fit: without it, batch 1 alone gives another θ for "a"
    alone = LeastSquaresProgress(ridge=0.1, **EXACT).fit(BATCHES[1]).contributions(BATCHES[1])
    replayed = LeastSquaresProgress(replay=1, ridge=0.1, **EXACT).fit(BATCHES[0]).fit(BATCHES[1])
    assert not np.allclose(alone, replayed.contributions(BATCHES[1]))


# ---------------------------------------------------------------------- the hook
class TableModel:
    """A hand-made progress model: a fixed contribution per state."""

    def __init__(self, table):
        self.table = table
        self.diagnostics = {"table_size": len(table), "note": "not a number"}

    def fit(self, ro):
        return self

    def contributions(self, ro):
        return np.array([self.table.get(s, 0.0) for s in ro.key_values["state"].to_pylist()])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rollout_records(state=True, extra=True, **SMALL))
def test_hook_gives_c_plus_beta_grounding_exactly(records):
    ro = sc.Rollouts.from_records(records)
    states = sorted({s["state"] for rec in records for s in rec["steps"]})
    model = TableModel({s: 0.125 * k - 1.0 for k, s in enumerate(states)})
    assert isinstance(model, ProgressModel)
    c = model.contributions(ro)
    for beta in (0.5, 0.0, -3.0):
        credit = spa_credit(ro, model, beta=beta, norm="none", gamma=1.0)
        assert np.array_equal(credit.step_reward, c + beta * ro.column("grounding"))
        want = ref.spa(records, beta=beta, norm="none", gamma=1.0, contributions=c.tolist())
        close(credit.step_advantage, want.step_advantage, "advantage")
    d = spa_credit(ro, model).diagnostics
    assert d["table_size"] == len(states) and "note" not in d and d["grounding_used"] is True


def test_hook_refuses_bad_contributions():
    ro = sc.Rollouts.from_records(TWO)

    class Bad:
        def __init__(self, out):
            self.out = out

        def fit(self, ro):
            return self

        def contributions(self, ro):
            return self.out

    with pytest.raises(ValueError, match="expected 4 finite"):
        spa_credit(ro, Bad(np.zeros(3)))
    with pytest.raises(ValueError, match="expected 4 finite"):
        spa_credit(ro, Bad(np.array([0.0, np.nan, 0.0, 0.0])))


# ---------------------------------------------------------------------- errors
def test_needs_state_and_action_for_state_action():
    no_state = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"value": 1.0}]}])
    with pytest.raises(sc.MissingColumnError, match="state"):
        sc.estimate(no_state, "spa")
    ro = sc.Rollouts.from_records(TWO)
    for variant in ("paper", "code"):
        with pytest.raises(sc.MissingColumnError, match="action"):
            sc.estimate(ro, "spa", features="state_action", variant=variant)
    with_action = sc.Rollouts.from_records([ep("a", 1.0, ["s"], actions=["go"])])
    assert sc.estimate(with_action, "spa", features="state_action").diagnostics["features"] == 1


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("ridge", 0.0, "ridge"),
        ("ridge", -1.0, "ridge"),
        ("epsilon", 0.0, "epsilon"),
        ("gamma", 1.5, "gamma"),
        ("iterations", 0, "iterations"),
        ("tol", -1e-3, "tol"),
        ("norm", "mean", "'group', 'none'"),
        ("variant", "released", "'paper', 'code'"),
        ("features", "action", "'state', 'state_action'"),
    ],
)
def test_refuses_bad_parameters(param, value, match):
    with pytest.raises(sc.EstimatorError, match=match):
        sc.estimate(sc.Rollouts.from_records(TWO), "spa", **{param: value})


def test_model_refuses_bad_parameters():
    for kwargs in ({"replay": -1}, {"replay": 1.5}, {"ridge": 0.0}, {"scope": "task"}, {"features": "x"}):
        with pytest.raises(sc.EstimatorError):
            LeastSquaresProgress(**kwargs)


def test_exact_fraction_check_of_the_hand_case():
    # the residual helper of the oracle is exact: θ = (1/4, 3/8, −1/8) solves the λ = 1 system
    theta = {("str", "s0"): 0.25, ("str", "s1"): 0.375, ("str", "s2"): -0.125}
    theta = {(k,): v for k, v in theta.items()}
    assert ref.residual_norm(TWO, theta, "state", "global", 1.0) == 0.0
    assert Fraction(0.375) == Fraction(3, 8)
