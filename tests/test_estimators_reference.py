"""Vectorised estimators == loop oracles (tests/reference), and tiny hand-worked cases.

Every registered estimator is run on hypothesis rollouts for every point of its parameter grid
(every Literal choice, a few values of each float) and compared with its oracle at
rtol=1e-9, atol=1e-12. The hand-worked cases below write the arithmetic out in comments.
"""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from reference import OracleCredit
from reference import anchor as ref_anchor
from reference import attribution as ref_attribution
from reference import graph as ref_graph
from reference import information as ref_information
from reference import oprl as ref_oprl
from reference import progress as ref_progress
from reference import redistribution as ref_redistribution
from reference import tree as ref_tree
from reference import turning as ref_turning
from reference import outcome as ref_outcome
from reference import value as ref_value
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit
from stepcredit import Rollouts

RTOL, ATOL = 1e-9, 1e-12

# name -> loop oracle; name -> parameter grid (every Literal choice, a few float values)
ORACLES: dict[str, typing.Callable[..., OracleCredit]] = {
    "grpo": ref_outcome.grpo,
    "drgrpo": ref_outcome.drgrpo,
    "rloo": ref_outcome.rloo,
    "reinforce_pp": ref_outcome.reinforce_pp,
    "gae": ref_value.gae,
    # the step-level estimators are compared in their own files, on rollouts shaped for them
    # (recurring states, trees, ...): tests/test_estimators_<module>.py
    "gigpo": ref_anchor.gigpo,
    "salt": ref_graph.salt,
    "tree": ref_tree.tree,
    "pav": ref_progress.pav,
    "potential": ref_progress.potential,
    "igpo": ref_information.igpo,
    "turning_point": ref_turning.turning_point,
    "spa": ref_attribution.spa,
    "redistribute": ref_redistribution.redistribute,
    "oprl": ref_oprl.oprl,
}
GRIDS: dict[str, dict[str, tuple]] = {
    "grpo": {
        "scale": ("group", "batch", "none"),
        "epsilon": (1e-6, 1e-4),
        "singleton": ("raw", "zero"),
    },
    "drgrpo": {"singleton": ("raw", "zero")},
    "rloo": {"singleton": ("raw", "zero")},
    "reinforce_pp": {
        "weight": ("steps", "tokens", "episodes"),
        "epsilon": (1e-8, 1e-4),
        "singleton": ("raw", "zero"),
    },
    "gae": {
        "gamma": (1.0, 0.9, 0.0),
        "lam": (1.0, 0.95, 0.0),
        "whiten": (False, True),
    },
}


def grid(name: str) -> list[dict]:
    keys = list(GRIDS[name])
    return [dict(zip(keys, values)) for values in itertools.product(*GRIDS[name].values())]


def whitening_scale(name: str, params: dict, records, expected: OracleCredit) -> float:
    """The scale of the absolute tolerance (1 unless the estimator whitens the batch).

    A batch whitening subtracts one batch-wide weighted mean μ from every element; the float
    rounding of μ is relative to the largest weighted centred value, so an element that cancels
    to ~0 carries an error of order ε_mach · max |A_i| over the episodes of positive weight, in
    any float implementation (e.g. c = [0, 0, 5.8] with weights [0, 0, 3]: μ = fl(3·5.8)/3 is not
    5.8, and the 1/sqrt(0 + 1e-8) scaling shows the difference as 9e-12). Elements of weight 0
    do not enter μ and do not widen the tolerance.
    """
    if name == "reinforce_pp":
        w = [ref_outcome.episode_weight(rec, params["weight"]) for rec in records]
        values = [abs(a) for a, wi in zip(expected.episode_advantage, w) if wi > 0]
    elif name == "gae" and params["whiten"]:
        values = [abs(a) for a in expected.step_advantage]
    else:
        return 1.0
    return max([1.0, *values])


def assert_matches(credit, expected: OracleCredit, what: str, scale: float = 1.0) -> None:
    """Every field the oracle gives, elementwise at rtol=1e-9 and atol=1e-12 (advantages:
    atol=1e-12 · ``scale``, see :func:`whitening_scale`)."""
    for field in ("step_advantage", "episode_advantage", "step_return", "step_reward"):
        want = getattr(expected, field)
        if want is None:
            continue
        got = getattr(credit, field)
        assert got is not None, f"{what}: {field} missing"
        atol = ATOL * scale if field in ("step_advantage", "episode_advantage") else ATOL
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=f"{what}: {field}")


# ---------------------------------------------------------------------- the grid covers the registry
def test_every_registered_estimator_has_an_oracle():
    names = {spec.name for spec in stepcredit.list_estimators()}
    assert names == set(ORACLES), "add a loop oracle in tests/reference/ for every estimator"


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_grid_covers_every_choice_and_names_real_parameters(name):
    spec = stepcredit.get_estimator(name)
    for pname, values in GRIDS[name].items():
        assert pname in spec.params, f"{name} has no parameter {pname}"
        p = spec.params[pname]
        if p.choices is not None:
            assert set(values) == set(p.choices), f"{name}.{pname}: grid misses a choice"
        elif p.type is bool:
            assert set(values) == {False, True}
        assert p.default in values, f"{name}.{pname}: grid misses the default {p.default!r}"
    assert set(GRIDS[name]) == set(spec.params), f"{name}: grid misses a parameter"


# ---------------------------------------------------------------------- vectorised == oracle
# One hypothesis test per value of one axis of each grid (so that a failure names that value and
# does not hide the other values); each drawn rollout is checked at every point of the rest of
# the grid, and every failing point is reported.
SPLIT = {
    "grpo": "scale", "drgrpo": "singleton", "rloo": "singleton", "reinforce_pp": "weight", "gae": "whiten",
}
CASES = [
    pytest.param(name, {SPLIT[name]: v}, id=f"{name}-{SPLIT[name]}={v}")
    for name in sorted(GRIDS)
    for v in GRIDS[name][SPLIT[name]]
]


def _with_examples(test):
    for recs in LARGE_OFFSET_EXAMPLES:
        test = example(records=recs)(test)
    return test


@pytest.mark.parametrize(("name", "fixed"), CASES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=rollout_records(value=True, tokens=True))
@_with_examples
def test_vectorised_equals_oracle(name, fixed, records):
    # value for GAE, tokens for reinforce_pp(weight="tokens"): every estimator can run on them
    ro = Rollouts.from_records(records)
    failures = []
    for params in grid(name):
        if any(params[k] != v for k, v in fixed.items()):
            continue
        credit = stepcredit.estimate(ro, name, **params)
        expected = ORACLES[name](records, **params)
        try:
            scale = whitening_scale(name, params, records, expected)
            assert_matches(credit, expected, f"{name}({params})", scale)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, f"{len(failures)} grid points differ:\n" + "\n".join(failures)


# ---------------------------------------------------------------------- hand-worked cases
def records(outcomes, groups=None, steps=None, **step_fields):
    """Records with one step each unless ``steps`` (a list of step-dict lists) is given."""
    groups = groups or ["g"] * len(outcomes)
    out = []
    for i, (r, g) in enumerate(zip(outcomes, groups)):
        s = steps[i] if steps is not None else [{}]
        out.append({"episode_id": f"e{i}", "group_id": g, "outcome": r, "steps": s})
    return out


def run(recs, name, **params):
    return stepcredit.estimate(Rollouts.from_records(recs), name, **params)


def test_grpo_hand_binary_group():
    # outcomes [1, 0, 0, 1]: mean 0.5, deviations ±0.5, Σ dev² = 4·0.25 = 1,
    # unbiased variance 1/(4−1) = 1/3, std = sqrt(1/3) = 0.57735..., so
    # A = ±0.5 / (0.57735 + 1e-6) = ±0.8660239...
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert a == pytest.approx(0.8660239, abs=1e-7)
    credit = run(records([1.0, 0.0, 0.0, 1.0]), "grpo")
    np.testing.assert_allclose(credit.episode_advantage, [a, -a, -a, a], rtol=1e-12)


def test_grpo_hand_epsilon_trl():
    # same group with TRL's ε = 1e-4: A = ±0.5 / (0.57735 + 1e-4) = ±0.86587...
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    credit = run(records([1.0, 0.0, 0.0, 1.0]), "grpo", epsilon=1e-4)
    np.testing.assert_allclose(credit.episode_advantage, [a, -a, -a, a], rtol=1e-12)


def test_grpo_all_equal_group_is_zero():
    # [2, 2, 2]: every deviation is 0 and the std is 0, so A = 0 / (0 + ε) = 0
    credit = run(records([2.0, 2.0, 2.0]), "grpo")
    assert np.array_equal(credit.episode_advantage, [0.0, 0.0, 0.0])


def test_grpo_near_equal_at_large_offset_keeps_the_difference():
    # a = 1e6, b = 1e6 + 1e-7 (as float64: 1e6 + d with d = b − a exact, about 1.0000003e-7).
    # mean = a + d/2, deviations ±d/2; std = sqrt(2·(d/2)²/1) = d/√2.
    # Dr. GRPO: A = ∓d/2 exactly; GRPO: A = ∓(d/2) / (d/√2 + 1e-6) ≈ ∓0.0467.
    a, b = 1e6, 1e6 + 1e-7
    d = b - a
    credit = run(records([a, b]), "drgrpo")
    np.testing.assert_allclose(credit.episode_advantage, [-d / 2, d / 2], rtol=1e-12, atol=0)
    g = (d / 2) / (d / math.sqrt(2) + 1e-6)
    credit = run(records([a, b]), "grpo")
    np.testing.assert_allclose(credit.episode_advantage, [-g, g], rtol=1e-9, atol=0)


def test_grpo_scale_batch_and_none():
    # groups g1 = [1, 0], g2 = [2, 2] (episodes interleaved: g1, g2, g1, g2).
    # group means 0.5 and 2: centred c = [0.5, 0, −0.5, 0].
    # batch outcomes [1, 2, 0, 2]: mean 1.25, deviations [−.25, .75, −1.25, .75],
    # Σ dev² = .0625 + .5625 + 1.5625 + .5625 = 2.75, unbiased var 2.75/3, std = 0.957427...
    recs = records([1.0, 2.0, 0.0, 2.0], groups=["g1", "g2", "g1", "g2"])
    std = math.sqrt(2.75 / 3)
    batch = run(recs, "grpo", scale="batch")
    np.testing.assert_allclose(
        batch.episode_advantage, [0.5 / (std + 1e-6), 0.0, -0.5 / (std + 1e-6), 0.0], rtol=1e-12
    )
    none = run(recs, "grpo", scale="none")
    np.testing.assert_allclose(none.episode_advantage, [0.5, 0.0, -0.5, 0.0], rtol=1e-12)
    # a batch of one episode: batch std taken as 1, a raw singleton gives R / (1 + ε)
    one = run(records([3.0]), "grpo", scale="batch")
    np.testing.assert_allclose(one.episode_advantage, [3.0 / (1.0 + 1e-6)], rtol=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_singleton_conventions(scale):
    # g1 = [1, 0] (mean 0.5, c = ±0.5, std sqrt(0.5)); g2 = [3] alone.
    recs = records([1.0, 0.0, 3.0], groups=["g1", "g1", "g2"])
    # "raw" (verl): the singleton's mean is 0 and std 1, so c = 3 and under scale="group"
    # A = 3 / (1 + 1e-6); "zero" (TRL): A = 0.
    raw = run(recs, "grpo", scale=scale, singleton="raw").episode_advantage
    zero = run(recs, "grpo", scale=scale, singleton="zero").episode_advantage
    if scale == "group":
        assert raw[2] == pytest.approx(3.0 / (1.0 + 1e-6), rel=1e-12)
        assert raw[0] == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-6), rel=1e-12)
    elif scale == "none":
        assert raw[2] == 3.0
    else:
        # batch [1, 0, 3]: mean 4/3, Σ dev² = 1/9 + 16/9 + 25/9 = 42/9, var 21/9, std 1.5275...
        assert raw[2] == pytest.approx(3.0 / (math.sqrt(21 / 9) + 1e-6), rel=1e-12)
    assert zero[2] == 0.0
    assert zero[0] == raw[0] and zero[1] == raw[1]  # the other group is not affected
    for name in ("drgrpo", "rloo"):
        # Dr. GRPO and RLOO: a raw singleton passes its outcome through, "zero" gives 0
        assert run(recs, name, singleton="raw").episode_advantage[2] == 3.0
        assert run(recs, name, singleton="zero").episode_advantage[2] == 0.0


def test_drgrpo_and_rloo_hand():
    # [1, 0, 0]: mean 1/3, Dr. GRPO A = [1 − 1/3, 0 − 1/3, 0 − 1/3] = [2/3, −1/3, −1/3];
    # RLOO baseline = mean of the *others*: [1 − (0+0)/2, 0 − (1+0)/2, 0 − (1+0)/2] = [1, −0.5, −0.5]
    # (= 3/2 · Dr. GRPO, the G/(G−1) factor).
    recs = records([1.0, 0.0, 0.0])
    np.testing.assert_allclose(run(recs, "drgrpo").episode_advantage, [2 / 3, -1 / 3, -1 / 3], rtol=1e-12)
    np.testing.assert_allclose(run(recs, "rloo").episode_advantage, [1.0, -0.5, -0.5], rtol=1e-12)


def test_outcome_advantage_is_broadcast_to_steps():
    # episode 0 has 3 steps, episode 1 has 1: step_advantage = [A0, A0, A0, A1]
    recs = records([1.0, 0.0], steps=[[{}, {}, {}], [{}]])
    credit = run(recs, "drgrpo")
    np.testing.assert_allclose(credit.step_advantage, [0.5, 0.5, 0.5, -0.5], rtol=0)


def _rpp_records():
    # g1: episode A (2 steps, tokens 3 + 1 = 4) outcome 1; episode B (1 step, 2 tokens) outcome 0.
    # g2: episode C alone (1 step, 5 tokens) outcome 3.
    # group-centred (raw singleton: mean 0) c = [0.5, −0.5, 3].
    return records(
        [1.0, 0.0, 3.0],
        groups=["g1", "g1", "g2"],
        steps=[[{"tokens": 3}, {"tokens": 1}], [{"tokens": 2}], [{"tokens": 5}]],
    )


def test_reinforce_pp_hand_weights():
    recs = _rpp_records()
    # weight="episodes": w = [1, 1, 1], N = 3, μ = (0.5 − 0.5 + 3)/3 = 1,
    # d = c − μ = [−0.5, −1.5, 2], Σ w d² = 0.25 + 2.25 + 4 = 6.5, var = 6.5/3 · 3/2 = 3.25
    d = np.array([-0.5, -1.5, 2.0])
    got = run(recs, "reinforce_pp", weight="episodes").episode_advantage
    np.testing.assert_allclose(got, d / math.sqrt(3.25 + 1e-8), rtol=1e-12)
    # weight="steps": w = [2, 1, 1], N = 4, μ = (2·0.5 − 0.5 + 3)/4 = 0.875,
    # d = [−0.375, −1.375, 2.125], Σ w d² = 2·0.140625 + 1.890625 + 4.515625 = 6.6875,
    # var = 6.6875/4 · 4/3 = 2.2291666...
    d = np.array([-0.375, -1.375, 2.125])
    got = run(recs, "reinforce_pp", weight="steps").episode_advantage
    np.testing.assert_allclose(got, d / math.sqrt(6.6875 / 3 + 1e-8), rtol=1e-12)
    # weight="tokens": w = [4, 2, 5], N = 11, μ = (4·0.5 − 2·0.5 + 5·3)/11 = 16/11,
    # d = [0.5 − 16/11, −0.5 − 16/11, 3 − 16/11] = [5.5 − 16, −5.5 − 16, 33 − 16]/11 = [−10.5, −21.5, 17]/11,
    # Σ w d² = (4·110.25 + 2·462.25 + 5·289)/121 = (441 + 924.5 + 1445)/121 = 2810.5/121,
    # var = 2810.5/121/11 · 11/10 = 2810.5/1210 = 2.3227..., A_0 = −0.9545/1.5240 = −0.6263
    d = np.array([-10.5, -21.5, 17.0]) / 11
    got = run(recs, "reinforce_pp", weight="tokens").episode_advantage
    np.testing.assert_allclose(got, d / math.sqrt(2810.5 / 1210 + 1e-8), rtol=1e-12)
    assert got[0] == pytest.approx(-0.6263, abs=1e-4)
    # every step gets its episode's value
    credit = run(recs, "reinforce_pp", weight="tokens")
    np.testing.assert_allclose(credit.step_advantage, np.repeat(credit.episode_advantage, [2, 1, 1]), rtol=0)


def test_reinforce_pp_degenerate_weights():
    # one episode, weight="episodes": N = 1, the variance is undefined, A = c − μ = 0
    assert run(records([5.0]), "reinforce_pp", weight="episodes").episode_advantage[0] == 0.0
    # no tokens at all: N = 0, A = 0 everywhere
    recs = records([1.0, 0.0], steps=[[{"tokens": 0}], [{"tokens": 0}]])
    assert np.array_equal(run(recs, "reinforce_pp", weight="tokens").episode_advantage, [0.0, 0.0])
    # N = 1 token: μ = the weighted episode's c, A = c − μ: c = [0.5, −0.5], w = [1, 0]
    # → μ = 0.5, A = [0, −1]
    recs = records([1.0, 0.0], steps=[[{"tokens": 1}], [{"tokens": 0}]])
    got = run(recs, "reinforce_pp", weight="tokens").episode_advantage
    np.testing.assert_allclose(got, [0.0, -1.0], rtol=0)


def test_reinforce_pp_singletons_at_large_offset():
    # Four singleton groups (raw: c = R) at 1e6 + k·1e-7, k = 0..3, one step each.
    # Exactly: c_k = 1e6 + k·d_k with d the float spacing; μ = mean c, c − μ ≈ [−1.5, −0.5, 0.5, 1.5]·1e-7,
    # Σ (c − μ)² ≈ 5e-14, var ≈ 5e-14/3 = 1.67e-14 ≪ ε = 1e-8, so A ≈ (c − μ)/1e-4 ≈ [−1.5, −.5, .5, 1.5]e-3.
    # The whitening must keep the 1e-7 differences as exactly as the group centring does.
    recs = records([1e6 + k * 1e-7 for k in range(4)], groups=["a", "b", "c", "d"])
    expected = ref_outcome.reinforce_pp(recs).episode_advantage
    assert expected[0] == pytest.approx(-1.5e-3, rel=1e-3)
    got = run(recs, "reinforce_pp").episode_advantage
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_reinforce_pp_large_offset_behind_a_zero_weight_episode():
    # weight="tokens": episode z (0 tokens, outcome 0, alone) takes no part in μ and σ²; the four
    # weighted singletons are 1e6 + k·1e-7 as above, so A_k ≈ [−1.5, −0.5, 0.5, 1.5]·1e-3 again,
    # and A_z = (0 − μ)/sqrt(σ² + ε) ≈ −1e6/1e-4 = −1e10. Centring on a reference value only
    # keeps the 1e-7 differences if the reference is one of the weighted values.
    recs = [{"episode_id": "z", "group_id": "z", "outcome": 0.0, "steps": [{"tokens": 0}]}] + [
        {"episode_id": f"e{k}", "group_id": f"g{k}", "outcome": 1e6 + k * 1e-7, "steps": [{"tokens": 1}]}
        for k in range(4)
    ]
    expected = ref_outcome.reinforce_pp(recs, weight="tokens").episode_advantage
    assert expected[1] == pytest.approx(-1.5e-3, rel=1e-3)
    assert expected[0] == pytest.approx(-1e10, rel=1e-3)
    got = run(recs, "reinforce_pp", weight="tokens").episode_advantage
    np.testing.assert_allclose(got[1:], expected[1:], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[0], expected[0], rtol=RTOL)


def test_gae_hand_three_steps():
    # r = [0, 0, 0] + outcome 1 on the last step = [0, 0, 1], V = [0.5, 0.6, 0.8], V_3 = 0,
    # γ = 0.9, λ = 0.8, γλ = 0.72:
    # δ_2 = 1 + 0.9·0   − 0.8 = 0.2
    # δ_1 = 0 + 0.9·0.8 − 0.6 = 0.12
    # δ_0 = 0 + 0.9·0.6 − 0.5 = 0.04
    # A_2 = 0.2; A_1 = 0.12 + 0.72·0.2 = 0.264; A_0 = 0.04 + 0.72·0.264 = 0.23008
    # returns = A + V = [0.73008, 0.864, 1.0]
    recs = records([1.0], steps=[[{"value": 0.5}, {"value": 0.6}, {"value": 0.8}]])
    credit = run(recs, "gae", gamma=0.9, lam=0.8)
    np.testing.assert_allclose(credit.step_advantage, [0.23008, 0.264, 0.2], rtol=1e-12)
    np.testing.assert_allclose(credit.step_return, [0.73008, 0.864, 1.0], rtol=1e-12)
    np.testing.assert_allclose(credit.step_reward, [0.0, 0.0, 1.0], rtol=0)
    np.testing.assert_allclose(credit.episode_advantage, [0.23008], rtol=1e-12)


def test_gae_hand_rewards_and_two_episodes():
    # episode 0: r = [1, 2] (+ outcome 0), V = [0, 0]; γ = 0.5, λ = 1:
    #   δ = [1 + 0.5·0 − 0, 2] = [1, 2], A_1 = 2, A_0 = 1 + 0.5·2 = 2 (= return-to-go 1 + 0.5·2)
    # episode 1: one step, r = 0 + outcome −1, V = 0.25: δ = −1 − 0.25 = −1.25 = A
    recs = records(
        [0.0, -1.0],
        groups=["a", "b"],
        steps=[[{"reward": 1.0, "value": 0.0}, {"reward": 2.0, "value": 0.0}], [{"value": 0.25}]],
    )
    credit = run(recs, "gae", gamma=0.5, lam=1.0)
    np.testing.assert_allclose(credit.step_advantage, [2.0, 2.0, -1.25], rtol=1e-12)
    np.testing.assert_allclose(credit.episode_advantage, [2.0, -1.25], rtol=1e-12)
    # whitened over the 3 steps: mean 2.75/3, the unbiased var, ε = 1e-8
    a = np.array([2.0, 2.0, -1.25])
    mu = a.mean()
    w = (a - mu) / math.sqrt(((a - mu) ** 2).sum() / 2 + 1e-8)
    white = run(recs, "gae", gamma=0.5, lam=1.0, whiten=True)
    np.testing.assert_allclose(white.step_advantage, w, rtol=1e-12)
    np.testing.assert_allclose(white.step_return, [2.0, 2.0, -1.0], rtol=1e-12)  # A + V, unwhitened


def test_gae_whiten_single_step_is_zero():
    # one step in the batch: the variance is undefined, A − μ = 0
    recs = records([1.0], steps=[[{"value": 0.3}]])
    assert run(recs, "gae", whiten=True).step_advantage[0] == 0.0


def test_oracles_reproduce_the_hand_cases():
    # the oracles themselves, on the hand-worked numbers above
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    np.testing.assert_allclose(
        ref_outcome.grpo(records([1.0, 0.0, 0.0, 1.0])).episode_advantage, [a, -a, -a, a], rtol=1e-12
    )
    np.testing.assert_allclose(ref_outcome.rloo(records([1.0, 0.0, 0.0])).episode_advantage, [1.0, -0.5, -0.5])
    np.testing.assert_allclose(
        ref_outcome.drgrpo(records([1.0, 0.0, 0.0])).episode_advantage, [2 / 3, -1 / 3, -1 / 3], rtol=1e-12
    )
    d = np.array([-10.5, -21.5, 17.0]) / 11
    np.testing.assert_allclose(
        ref_outcome.reinforce_pp(_rpp_records(), weight="tokens").episode_advantage,
        d / math.sqrt(2810.5 / 1210 + 1e-8), rtol=1e-12,
    )
    three = records([1.0], steps=[[{"value": 0.5}, {"value": 0.6}, {"value": 0.8}]])
    g = ref_value.gae(three, gamma=0.9, lam=0.8)
    np.testing.assert_allclose(g.step_advantage, [0.23008, 0.264, 0.2], rtol=1e-12)
    np.testing.assert_allclose(g.step_return, [0.73008, 0.864, 1.0], rtol=1e-12)
    assert ref_outcome.grpo(records([3.0]), singleton="raw").episode_advantage == [3.0 / (1.0 + 1e-6)]
    assert ref_outcome.grpo(records([3.0]), singleton="zero").episode_advantage == [0.0]
