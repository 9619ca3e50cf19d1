"""PAV and potential-based shaping: vectorised == loop oracle, hand-worked cases from the papers'
definitions, reductions, and the policy invariance of potential shaping on small tabular MDPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import assert_grid_covers, close, close_within
from reference import progress as ref_progress
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.estimators.progress import with_potential

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAV_GRID = [
    {},
    {"base": "drgrpo"},
    {"base": "grpo"},
    {"alpha": 0.0},
    {"alpha": 0.5, "singleton": "zero"},
    {"alpha": 5.0, "base": "grpo", "singleton": "zero"},
]
POTENTIAL_GRID = [
    {},
    {"gamma": 0.9},
    {"gamma": 0.0},
    {"scale": 0.0},
    {"scale": -2.5, "gamma": 0.5},
    {"singleton": "zero"},
    {"baseline": "none"},
    {"baseline": "none", "gamma": 0.95, "scale": 0.5},
]


def check_pav(records, params):
    ro = sc.Rollouts.from_records(records)
    got = sc.estimate(ro, "pav", **params)
    want = ref_progress.pav(records, **params)
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    close(got.step_reward, want.step_reward, "step_reward")
    # A_t = A^base + α A^μ: the sum can only carry the base's own (checked) difference and the
    # rounding of one addition
    base_err = np.abs(got.episode_advantage - np.asarray(want.episode_advantage))[ro.step_episode]
    spacing = np.spacing(np.abs(np.asarray(want.step_advantage))) + np.spacing(np.abs(got.episode_advantage))[ro.step_episode]
    close_within(got.step_advantage, want.step_advantage, base_err + spacing, "step_advantage")
    assert got.step_return is None
    for key in ("groups", "singleton_groups", "zero_variance_groups"):
        assert got.diagnostics[key] == want.diagnostics[key], key
    assert got.diagnostics["negative_progress_fraction"] == pytest.approx(want.diagnostics["negative_progress_fraction"])
    scale = max(1.0, float(np.max(np.abs(ro.column("value")))), float(np.max(np.abs(ro.outcome))))
    assert got.diagnostics["mean_progress"] == pytest.approx(want.diagnostics["mean_progress"], rel=1e-9, abs=1e-12 * scale * 16)


def check_potential(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "potential", **params)
    want = ref_progress.potential(records, **params)
    close(got.step_reward, want.step_reward, "step_reward")
    close(got.step_return, want.step_return, "step_return")
    close_within(got.step_advantage, want.step_advantage, want.diagnostics["step_tolerance"], "step_advantage")
    close_within(got.episode_advantage, want.episode_advantage, want.diagnostics["episode_tolerance"], "episode_advantage")
    assert got.diagnostics["singleton_groups"] == want.diagnostics["singleton_groups"]
    bound = 16 * max([1.0] + [abs(x) for x in want.step_reward]) * 1e-12
    assert got.diagnostics["mean_shaping"] == pytest.approx(want.diagnostics["mean_shaping"], rel=1e-9, abs=bound)


@pytest.mark.parametrize(("name", "grid"), [("pav", PAV_GRID), ("potential", POTENTIAL_GRID)])
def test_grid_covers_every_choice(name, grid):
    assert_grid_covers(name, grid)


# ---------------------------------------------------------------------- oracle comparison
@pytest.mark.parametrize("params", PAV_GRID, ids=[str(g) for g in PAV_GRID])
@SETTINGS
@given(records=rollout_records(value=True, max_steps=6))
def test_pav_equals_oracle(params, records):
    check_pav(records, params)


@pytest.mark.parametrize("params", POTENTIAL_GRID, ids=[str(g) for g in POTENTIAL_GRID])
@SETTINGS
@given(records=rollout_records(value=True, max_steps=6))
def test_potential_equals_oracle(params, records):
    check_potential(records, params)


@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(k):
    for params in PAV_GRID:
        check_pav(LARGE_OFFSET_EXAMPLES[k], params)
    for params in POTENTIAL_GRID:
        check_potential(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- PAV: hand-worked cases
def ep(eid, outcome, values, group="g", states=None, rewards=None):
    steps = [{"value": v} for v in values]
    for step, s in zip(steps, states or []):
        step["state"] = s
    for step, r in zip(steps, rewards or []):
        step["reward"] = r
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": steps}


def test_pav_hand_worked_progress_in_a_failed_trace():
    # α = 2, base = rloo. Prover values V^μ before each step, outcome = value after the last:
    #   τ1: V = [0.5, 0.75], R = 1 -> progress [0.75 − 0.5, 1 − 0.75] = [0.25, 0.25]
    #   τ2: V = [0.5, 0.75], R = 0 -> progress [0.25, 0 − 0.75] = [0.25, −0.75]
    # RLOO: A^base = R_i − R_other = [+1, −1].
    # A = A^base + 2·progress: τ1 [1.5, 1.5]; τ2 [−1 + 0.5, −1 − 1.5] = [−0.5, −2.5].
    # The first step of the failed trace made progress and is penalised far less than its last.
    recs = [ep("t1", 1.0, [0.5, 0.75]), ep("t2", 0.0, [0.5, 0.75])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "pav", alpha=2.0)
    assert c.step_advantage.tolist() == [1.5, 1.5, -0.5, -2.5]
    assert c.episode_advantage.tolist() == [1.0, -1.0]
    assert c.step_reward.tolist() == [0.5, 0.5, 0.5, -1.5]
    assert c.diagnostics["mean_progress"] == (0.25 + 0.25 + 0.25 - 0.75) / 4
    assert c.diagnostics["negative_progress_fraction"] == 0.25


def test_pav_hand_worked_grpo_base_and_singleton():
    # base = grpo, α = 1: group g of outcomes [1, 0]: mean 0.5, unbiased std sqrt(0.5),
    #   A^base = ±0.5 / (sqrt(0.5) + 1e-6). τ1: V = [0.25] -> progress [1 − 0.25] = [0.75];
    #   τ2: V = [0.5] -> progress [0 − 0.5] = [−0.5].
    # Singleton group h, outcome 1, V = [1.0]: progress 0; A^base = 1/(1+1e-6) ("raw") or 0.
    recs = [ep("t1", 1.0, [0.25]), ep("t2", 0.0, [0.5]), ep("s", 1.0, [1.0], group="h")]
    ro = sc.Rollouts.from_records(recs)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    c = sc.estimate(ro, "pav", base="grpo", alpha=1.0)
    np.testing.assert_allclose(c.step_advantage, [a + 0.75, -a - 0.5, 1 / (1 + 1e-6)], rtol=1e-15)
    z = sc.estimate(ro, "pav", base="grpo", alpha=1.0, singleton="zero")
    np.testing.assert_allclose(z.step_advantage, [a + 0.75, -a - 0.5, 0.0], rtol=1e-15)
    assert c.diagnostics["singleton_groups"] == 1


def test_pav_too_strong_prover_gives_the_outcome_advantage():
    # the paper's failure case: a prover that succeeds from every state (V^μ = 1 everywhere)
    # on successful traces measures no progress, so PAV reduces to its base
    recs = [ep("a", 1.0, [1.0, 1.0, 1.0]), ep("b", 1.0, [1.0]), ep("c", 0.0, [0.0, 0.0])]
    ro = sc.Rollouts.from_records(recs)
    c = sc.estimate(ro, "pav")
    assert np.array_equal(c.step_advantage, sc.estimate(ro, "rloo").step_advantage)


# ---------------------------------------------------------------------- PAV: properties
@pytest.mark.parametrize("base", ["rloo", "drgrpo", "grpo"])
@pytest.mark.parametrize("singleton", ["raw", "zero"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rollout_records(value=True, max_steps=5))
def test_pav_alpha_zero_is_the_base_estimator(base, singleton, records):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "pav", alpha=0.0, base=base, singleton=singleton)
    b = sc.estimate(ro, base, singleton=singleton)
    assert np.array_equal(c.step_advantage, b.step_advantage)
    assert np.array_equal(c.episode_advantage, b.episode_advantage)


@PROPERTY
@given(records=rollout_records(value=True, max_steps=6), alpha=st.sampled_from([0.5, 1.0, 3.0, 5.0]))
def test_pav_progress_telescopes_to_outcome_minus_first_value(records, alpha):
    # Σ_t α A^μ_t = α (R_i − V^μ(s_0)); each step's advantage = its episode's base + α A^μ_t
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "pav", alpha=alpha)
    v = ro.column("value")
    sums = np.add.reduceat(c.step_reward, ro.episode_offsets[:-1])
    expected = alpha * (ro.outcome - v[ro.episode_offsets[:-1]])
    scale = alpha * (np.abs(v).max() + np.abs(ro.outcome).max() + 1.0) * ro.step_counts.max()
    np.testing.assert_allclose(sums, expected, rtol=1e-9, atol=1e-13 * scale)
    np.testing.assert_allclose(c.step_advantage - c.episode_advantage[ro.step_episode], c.step_reward, rtol=1e-9, atol=1e-13 * scale)


# ---------------------------------------------------------------------- potential: hand-worked
def test_potential_hand_worked_two_episodes():
    # γ = 0.5, k = 1, Φ(terminal) = 0.
    #   τ1: Φ = [1, 2], rewards [0, 0], outcome 4 -> r = [0, 4]
    #       shaping [0.5·2 − 1, 0.5·0 − 2] = [0, −2] -> r' = [0, 2]
    #       G' = [0 + 0.5·2, 2] = [1, 2]   (= G − Φ = [0.5·4, 4] − [1, 2])
    #   τ2: Φ = [1], outcome 2 -> r = [2], shaping [−1], r' = [1], G' = [1]
    # group baseline: mean(G'_0) = (1 + 1)/2 = 1 -> A τ1 = [0, 1], τ2 = [0]
    recs = [ep("t1", 4.0, [1.0, 2.0]), ep("t2", 2.0, [1.0])]
    c = sc.estimate(sc.Rollouts.from_records(recs), "potential", gamma=0.5)
    assert c.step_reward.tolist() == [0.0, 2.0, 1.0]
    assert c.step_return.tolist() == [1.0, 2.0, 1.0]
    assert c.step_advantage.tolist() == [0.0, 1.0, 0.0]
    assert c.episode_advantage.tolist() == [0.0, 0.0]
    n = sc.estimate(sc.Rollouts.from_records(recs), "potential", gamma=0.5, baseline="none")
    assert n.step_advantage.tolist() == [1.0, 2.0, 1.0] and n.episode_advantage.tolist() == [1.0, 1.0]


def test_potential_hand_worked_singleton_and_scale():
    # one episode, γ = 1, k = 2: Φ = [3], reward 1, outcome 0 -> r = [1],
    # shaping 2·(0 − 3) = −6, r' = [−5], G' = [−5];
    # "raw": baseline 0 -> A = −5; "zero": baseline G'_0 -> A = 0
    recs = [ep("a", 0.0, [3.0], rewards=[1.0])]
    ro = sc.Rollouts.from_records(recs)
    assert sc.estimate(ro, "potential", scale=2.0).step_advantage.tolist() == [-5.0]
    assert sc.estimate(ro, "potential", scale=2.0, singleton="zero").step_advantage.tolist() == [0.0]
    assert sc.estimate(ro, "potential").diagnostics["singleton_groups"] == 1


# ---------------------------------------------------------------------- potential: properties
GAMMA = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0))
SCALE = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5]), st.floats(-3.0, 3.0))


@PROPERTY
@given(records=rollout_records(value=True, max_steps=6), gamma=GAMMA, k=SCALE)
def test_shaped_return_telescopes_to_return_minus_potential(records, gamma, k):
    # G'_t = G_t − kΦ_t, with G_t the unshaped discounted return-to-go (gae, λ = 1, V = 0)
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "potential", gamma=gamma, scale=k)
    g = sc.estimate(ro.replace_columns(value=np.zeros(ro.n_steps)), "gae", gamma=gamma, lam=1.0).step_advantage
    phi = ro.column("value")
    r = np.abs(ro.reward).max() + np.abs(ro.outcome).max()
    scale = (r + 2 * abs(k) * np.abs(phi).max() + 1.0) * ro.step_counts.max()
    np.testing.assert_allclose(c.step_return, g - k * phi, rtol=1e-9, atol=1e-13 * scale)


@pytest.mark.parametrize("singleton", ["raw", "zero"])
@PROPERTY
@given(records=rollout_records(value=True, max_steps=5))
def test_potential_scale_zero_without_rewards_is_drgrpo(singleton, records):
    # k = 0, γ = 1, no immediate rewards: G'_t = R_i, A_t = R_i − mean_g R
    for rec in records:
        rec["steps"] = [{**s, "reward": 0.0} for s in rec["steps"]]
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "potential", scale=0.0, singleton=singleton)
    d = sc.estimate(ro, "drgrpo", singleton=singleton)
    close(c.step_advantage, d.step_advantage, "step_advantage")
    close(c.episode_advantage, d.episode_advantage, "episode_advantage")


@PROPERTY
@given(records=rollout_records(value=True, max_steps=5), k=SCALE)
def test_shared_start_potential_cancels_in_the_group_baseline(records, k):
    # every episode of a group starts in a state of the same potential: with γ = 1, kΦ(s_0)
    # is common to the group's G'_0 and the episode advantages equal the unshaped ones
    first_value: dict[str, float] = {}
    for rec in records:
        v0 = first_value.setdefault(rec["group_id"], rec["steps"][0]["value"])
        rec["steps"][0] = {**rec["steps"][0], "value": v0}
    ro = sc.Rollouts.from_records(records)
    shaped = sc.estimate(ro, "potential", scale=k).episode_advantage
    plain = sc.estimate(ro, "potential", scale=0.0).episode_advantage
    multi = np.bincount(ro.episode_group)[ro.episode_group] > 1  # singletons keep G'_0 ("raw")
    scale = (np.abs(ro.column("value")).max() * (abs(k) + 1) + np.abs(ro.outcome).max() + np.abs(ro.reward).max() + 1) * ro.step_counts.max()
    np.testing.assert_allclose(shaped[multi], plain[multi], rtol=1e-9, atol=1e-13 * scale)


@PROPERTY
@given(records=rollout_records(value=True, max_steps=5), gamma=GAMMA)
def test_potential_group_baseline_has_mean_zero(records, gamma):
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "potential", gamma=gamma)
    sums = np.bincount(ro.episode_group, weights=c.episode_advantage, minlength=ro.n_groups)
    sizes = np.bincount(ro.episode_group, minlength=ro.n_groups)
    mags = np.bincount(ro.episode_group, weights=np.abs(c.step_return[ro.episode_offsets[:-1]]), minlength=ro.n_groups)
    assert np.all(np.abs(sums[sizes > 1]) <= 1e-12 * (mags[sizes > 1] + 1.0))


# ---------------------------------------------------------------------- policy invariance (Ng et al. 1999)
N_STATES, N_ACTIONS = 6, 3
SEEDS = list(range(8))


def random_mdp(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """P [s, a, s'] and R [s, a, s'] over 6 states plus an absorbing terminal state (index 6),
    reached with probability >= 0.1 from every (s, a): every policy ends, so γ = 1 is proper."""
    rng = np.random.default_rng(seed)
    p_end = rng.uniform(0.1, 0.4, size=(N_STATES, N_ACTIONS))
    P = np.empty((N_STATES, N_ACTIONS, N_STATES + 1))
    P[..., :N_STATES] = rng.dirichlet(np.ones(N_STATES), size=(N_STATES, N_ACTIONS)) * (1 - p_end)[..., None]
    P[..., N_STATES] = p_end
    R = rng.normal(size=(N_STATES, N_ACTIONS, N_STATES + 1))
    return P, R


def optimal_q(P: np.ndarray, R: np.ndarray, gamma: float) -> np.ndarray:
    """Q* [s, a] by value iteration; V(terminal) = 0."""
    Q = np.zeros((N_STATES, N_ACTIONS))
    for _ in range(10_000):
        v = np.append(Q.max(axis=1), 0.0)
        new = (P * (R + gamma * v)).sum(axis=-1)
        if np.max(np.abs(new - Q)) < 1e-13:
            return new
        Q = new
    raise AssertionError("value iteration did not converge")


def shaped(R: np.ndarray, phi: np.ndarray, gamma: float) -> np.ndarray:
    """R'(s, a, s') = R + γΦ(s') − Φ(s), with Φ(terminal) = 0."""
    phi_next = np.append(phi, 0.0)
    return R + gamma * phi_next[None, None, :] - phi[:, None, None]


@pytest.mark.parametrize("gamma", [0.9, 1.0])
@pytest.mark.parametrize("seed", SEEDS)
def test_potential_shaping_keeps_the_optimal_policy(seed, gamma):
    P, R = random_mdp(seed)
    phi = np.random.default_rng(1000 + seed).normal(scale=5.0, size=N_STATES)  # large: a strong test
    q = optimal_q(P, R, gamma)
    q_shaped = optimal_q(P, shaped(R, phi, gamma), gamma)
    np.testing.assert_allclose(q_shaped, q - phi[:, None], atol=1e-9)  # Q' = Q − Φ(s)
    assert np.array_equal(q_shaped.argmax(axis=1), q.argmax(axis=1))


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_negative_control_non_potential_bonus_changes_the_optimal_policy(gamma):
    # a bonus for action 0 is not potential-based: it must change the optimal policy somewhere,
    # or the invariance test above could not fail
    changed = 0
    for seed in SEEDS:
        P, R = random_mdp(seed)
        bonus = R.copy()
        bonus[:, 0, :] += 1.0
        changed += not np.array_equal(optimal_q(P, bonus, gamma).argmax(axis=1), optimal_q(P, R, gamma).argmax(axis=1))
    assert changed >= 1


def test_negative_control_shaping_without_discount_changes_the_optimal_policy():
    # Φ(s') − Φ(s) under γ = 0.9 adds (1 − γ)Φ(s'), a state bonus: not potential-based for γ
    changed = 0
    for seed in SEEDS:
        P, R = random_mdp(seed)
        phi = np.random.default_rng(1000 + seed).normal(scale=5.0, size=N_STATES)
        wrong = shaped(R, phi, 1.0)  # the γ of the returns is 0.9
        changed += not np.array_equal(optimal_q(P, wrong, 0.9).argmax(axis=1), optimal_q(P, R, 0.9).argmax(axis=1))
    assert changed >= 1


def sample_episodes(seed: int, n: int = 20) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """Episodes of a uniform random policy from state 0; the rewards of R, the values of Φ."""
    P, R = random_mdp(seed)
    rng = np.random.default_rng(2000 + seed)
    phi = rng.normal(scale=5.0, size=N_STATES)
    records = []
    for e in range(n):
        s, steps = 0, []
        while s != N_STATES:
            a = int(rng.integers(N_ACTIONS))
            s2 = int(rng.choice(N_STATES + 1, p=P[s, a]))
            steps.append({"state": f"s{s}", "action": f"a{a}", "reward": float(R[s, a, s2]), "value": float(phi[s]), "next": s2})
            s = s2
        records.append({"episode_id": f"e{e}", "group_id": f"g{e % 4}", "outcome": 0.0, "steps": steps})
    return records, P, R, phi


@pytest.mark.parametrize("gamma", [0.9, 1.0])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_estimator_shaped_rewards_on_sampled_episodes_match_the_mdp(seed, gamma):
    records, _, R, phi = sample_episodes(seed)
    expected = []
    for rec in records:
        for step in rec["steps"]:
            s, a = int(step["state"][1:]), int(step["action"][1:])
            expected.append(shaped(R, phi, gamma)[s, a, step.pop("next")])
    ro = sc.Rollouts.from_records(records)
    c = sc.estimate(ro, "potential", gamma=gamma)
    np.testing.assert_allclose(c.step_reward, expected, rtol=1e-12, atol=1e-12)
    # the same potential given as a function of the state
    ro_fn = with_potential(ro.replace_columns(value=None), lambda state: phi[int(state[1:])])
    c_fn = sc.estimate(ro_fn, "potential", gamma=gamma)
    assert np.array_equal(c_fn.step_advantage, c.step_advantage)
    assert np.array_equal(c_fn.step_reward, c.step_reward)


# ---------------------------------------------------------------------- with_potential
def test_with_potential_calls_phi_once_per_distinct_state():
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "x"}, {"state": "y"}, {"state": "x"}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"state": "y"}]},
    ]
    ro = sc.Rollouts.from_records(recs)
    calls: list = []

    def phi(state):
        calls.append(state)
        return {"x": 0.5, "y": -2.0}[state]

    out = with_potential(ro, phi)
    assert sorted(calls) == ["x", "y"]
    assert out.column("value").tolist() == [0.5, -2.0, 0.5, -2.0]
    assert not ro.has("value")  # the input is unchanged
    assert with_potential(ro, phi, column="process").column("process").tolist() == [0.5, -2.0, 0.5, -2.0]


def test_with_potential_integer_states_and_errors():
    recs = [{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": 3}, {"state": 7}]}]
    ro = sc.Rollouts.from_records(recs)
    assert with_potential(ro, lambda s: s / 2).column("value").tolist() == [1.5, 3.5]
    with pytest.raises(ValueError, match="7"):
        with_potential(ro, lambda s: math.inf if s == 7 else 0.0)
    with pytest.raises(ValueError, match="not a number"):
        with_potential(ro, lambda s: "high")
    with pytest.raises(ValueError, match="float step column"):
        with_potential(ro, lambda s: 0.0, column="tokens")
    no_state = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"value": 1.0}]}])
    with pytest.raises(sc.MissingColumnError, match="state"):
        with_potential(no_state, lambda s: 0.0)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["pav", "potential"])
def test_needs_value(name):
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]}])
    with pytest.raises(sc.MissingColumnError, match="value"):
        sc.estimate(ro, name)


def test_refuses_bad_parameters():
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5])])
    with pytest.raises(sc.EstimatorError, match="alpha"):
        sc.estimate(ro, "pav", alpha=-0.5)
    with pytest.raises(sc.EstimatorError, match="'rloo', 'drgrpo', 'grpo'"):
        sc.estimate(ro, "pav", base="gae")
    with pytest.raises(sc.EstimatorError, match="gamma"):
        sc.estimate(ro, "potential", gamma=1.5)
    with pytest.raises(sc.EstimatorError, match="gamma"):
        sc.estimate(ro, "potential", gamma=-0.1)
    with pytest.raises(sc.EstimatorError, match="'group', 'none'"):
        sc.estimate(ro, "potential", baseline="episode")
