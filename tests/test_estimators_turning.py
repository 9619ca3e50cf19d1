"""TP-GRPO (turning_point): vectorised == loop oracle, hand-worked cases, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import assert_grid_covers, close
from reference import turning as ref_turning
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.estimators.turning import turning_points

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=60)
GRID = [
    {},
    {"indicator": "sign_flip"},
    {"balanced": False},
    {"indicator": "sign_flip", "balanced": False, "singleton": "raw"},
    {"singleton": "raw", "epsilon": 1e-6},
    {"eta": 0.5},
    {"eta": 0.0, "indicator": "sign_flip"},
    {"eta": 2.0, "epsilon": 1e-2},
]


def check_against_oracle(records, params):
    got = sc.estimate(sc.Rollouts.from_records(records), "turning_point", **params)
    want = ref_turning.turning_point(records, **params)
    close(got.step_advantage, want.step_advantage, "step_advantage")
    close(got.episode_advantage, want.episode_advantage, "episode_advantage")
    close(got.step_reward, want.step_reward, "step_reward")
    assert got.step_return is None
    assert got.diagnostics == want.diagnostics


@st.composite
def small_integer_values(draw, max_steps: int = 6):
    """Records whose values and outcomes are small integers: zero increments, ties of |B| and
    every sign pattern are common (random floats almost never tie)."""
    records = draw(rollout_records(value=True, max_steps=max_steps))
    for rec in records:
        rec["outcome"] = float(draw(st.integers(-2, 2)))
        for s in rec["steps"]:
            s["value"] = float(draw(st.integers(-2, 2)))
    return records


def test_grid_covers_every_choice():
    assert_grid_covers("turning_point", GRID)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=rollout_records(value=True, max_steps=6))
def test_vectorised_equals_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@FEWER
@given(records=small_integer_values())
def test_vectorised_equals_oracle_with_ties(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def ep(eid, outcome, values, group="g"):
    return {
        "episode_id": eid,
        "group_id": group,
        "outcome": outcome,
        "steps": [{"value": v} for v in values],
    }


def test_hand_worked_turning_point():
    # τ1: v = [0.5, 0.25, 0.75], R = 1: Δ = 0.5, d = [−0.25, 0.5, 0.25], s = [−1, +1, +1]
    #   step 0: sign(d_0)·sign(R − v_1) = (−1)(+1) < 0: no
    #   step 1: s_0 < 0 < s_1, sign(d_1)·sign(R − v_2) = (+1)(+1) > 0: a turning point,
    #           B_1 = R − v_1 = 0.75
    #   step 2: s_1 > 0: no (and R − v_3 = 0)
    #   r = [−0.25, 0.75, 0.25]
    # τ2: v = [0.5, 0.5, 0.5], R = 0.5: d = [0, 0, 0], no turning point, r = [0, 0, 0]
    # per step index over {τ1, τ2}: A = ±(x − y)/2 / (|x − y|/2 + ε) = ±|x−y|/(|x−y| + 2ε)
    ro = sc.Rollouts.from_records([ep("t1", 1.0, [0.5, 0.25, 0.75]), ep("t2", 0.5, [0.5, 0.5, 0.5])])
    c = sc.estimate(ro, "turning_point")
    assert c.step_reward.tolist() == [-0.25, 0.75, 0.25, 0.0, 0.0, 0.0]
    a = [
        (-0.25 / 2) / (0.25 / 2 + 1e-4),
        (0.75 / 2) / (0.75 / 2 + 1e-4),
        (0.25 / 2) / (0.25 / 2 + 1e-4),
    ]
    np.testing.assert_allclose(c.step_advantage, a + [-x for x in a], rtol=1e-12)
    assert c.episode_advantage.tolist() == [c.step_advantage[0], c.step_advantage[3]]
    assert c.diagnostics == {
        "turning_points": 1,
        "kept_turning_points": 1,
        "singleton_positions": 0,
    }
    # η = 2 doubles the long-term reward; η = 0 leaves the increments
    assert sc.estimate(ro, "turning_point", eta=2.0).step_reward[1] == 1.5
    assert sc.estimate(ro, "turning_point", eta=0.0).step_reward.tolist() == [
        -0.25,
        0.5,
        0.25,
        0,
        0,
        0,
    ]


def test_hand_worked_first_step_and_sign_flip():
    # v = [0, 0.5, 0.25], R = 1: d = [0.5, −0.25, 0.75], Δ = 1, s = [+1, −1, +1]
    #   step 0: sign(0.5)·sign(1 − 0.5) > 0: a turning point (first-step rule), B_0 = Δ = 1
    #   step 1: s_0 > 0: no; sign_flip: d_0·d_1 < 0 but sign(d_1)·sign(R − v_2) = (−1)(+1) < 0: no
    #   step 2: last step, R − v_3 = 0: never
    ro = sc.Rollouts.from_records([ep("t", 1.0, [0.0, 0.5, 0.25])])
    for indicator in ("consistent", "sign_flip"):
        assert turning_points(ro, indicator).tolist() == [True, False, False]
        assert sc.estimate(ro, "turning_point", indicator=indicator).step_reward.tolist() == [
            1.0,
            -0.25,
            0.75,
        ]
    # v = [0, −0.5, 0.25, 0.75], R = 0.5: d = [−0.5, 0.75, 0.5, −0.25], Δ = 0.5, s = [−1, +1, +1, −1]
    #   step 1: s_0 < 0 < s_1 and sign(0.75)·sign(0.5 − 0.25) > 0: a turning point in both
    #   step 2: consistent: s_1 > 0: no; sign_flip: d_1·d_2 > 0: no
    #   step 3: last: never (sign_flip sees d_2·d_3 < 0 but R − v_4 = 0)
    ro = sc.Rollouts.from_records([ep("t", 0.5, [0.0, -0.5, 0.25, 0.75])])
    assert turning_points(ro, "consistent").tolist() == [False, True, False, False]
    assert turning_points(ro, "sign_flip").tolist() == [False, True, False, False]
    # a flip against Δ: v = [0, 1, 0.5], R = 0.25 (Δ = 0.25): d = [1, −0.5, −0.25], s = [+, −, −]
    #   step 1: consistent: s_0 > 0: no; sign_flip: d_0·d_1 < 0 and sign(−0.5)·sign(0.25 − 0.5) > 0: yes
    ro = sc.Rollouts.from_records([ep("t", 0.25, [0.0, 1.0, 0.5])])
    assert turning_points(ro, "consistent").tolist() == [False, False, False]
    assert turning_points(ro, "sign_flip").tolist() == [False, True, False]
    assert sc.estimate(ro, "turning_point", indicator="sign_flip").step_reward.tolist() == [1.0, -0.75, -0.25]


def test_hand_worked_balancing():
    # Three episodes of one group, each one turning point at step 0 (monotone values):
    #   a: v = [0, 0.5], R = 1  -> B_0 = +1;   b: v = [0, 1], R = 2 -> B_0 = +2
    #   c: v = [0, −1], R = −2 -> B_0 = −2
    # one negative, two positive: keep the negative and the positive with the largest |B| (b)
    recs = [
        ep("a", 1.0, [0.0, 0.5]),
        ep("b", 2.0, [0.0, 1.0]),
        ep("c", -2.0, [0.0, -1.0]),
    ]
    ro = sc.Rollouts.from_records(recs)
    bal = sc.estimate(ro, "turning_point")
    assert bal.step_reward.tolist() == [
        0.5,
        0.5,
        2.0,
        1.0,
        -2.0,
        -1.0,
    ]  # a keeps d_0 = 0.5
    assert bal.diagnostics["turning_points"] == 3 and bal.diagnostics["kept_turning_points"] == 2
    assert sc.estimate(ro, "turning_point", balanced=False).step_reward.tolist() == [
        1.0,
        0.5,
        2.0,
        1.0,
        -2.0,
        -1.0,
    ]
    # a tie at the cut: a' with B_0 = +2 as well -> both positives kept
    recs[0] = ep("a", 2.0, [0.0, 0.5])
    tie = sc.estimate(sc.Rollouts.from_records(recs), "turning_point")
    assert tie.step_reward.tolist() == [2.0, 1.5, 2.0, 1.0, -2.0, -1.0]
    # balancing stays inside the group: the same negative episode in another group balances nothing
    recs[2] = ep("c", -2.0, [0.0, -1.0], group="h")
    apart = sc.estimate(sc.Rollouts.from_records(recs), "turning_point")
    assert apart.diagnostics["kept_turning_points"] == 3


def test_singleton_positions():
    # a 3-step and a 1-step episode: step indices 1, 2 have one episode each
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5, 0.25, 0.75]), ep("b", 0.0, [0.5])])
    z = sc.estimate(ro, "turning_point")
    r = sc.estimate(ro, "turning_point", singleton="raw")
    assert z.step_advantage[1:3].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(r.step_advantage[1:3], np.array([0.75, 0.25]) / (1 + 1e-4), rtol=1e-15)
    assert z.diagnostics["singleton_positions"] == 2
    assert z.step_advantage[0] == r.step_advantage[0]  # index 0 has two episodes


# ---------------------------------------------------------------------- properties
@FEWER
@given(records=rollout_records(value=True, max_steps=6))
def test_increments_sum_to_the_global_change(records):
    # η = 0: no bonus, r_t = d_t, and Σ_t d_t = R − v_0 (telescoping)
    ro = sc.Rollouts.from_records(records)
    r = sc.estimate(ro, "turning_point", eta=0.0).step_reward
    total = np.add.reduceat(r, ro.episode_offsets[:-1])
    v0 = ro.column("value")[ro.episode_offsets[:-1]]
    scale = np.abs(ro.column("value")).max() + np.abs(ro.outcome).max() + 1
    np.testing.assert_allclose(total, ro.outcome - v0, rtol=0, atol=1e-12 * scale * 8)


@FEWER
@given(
    data=st.data(),
    n=st.integers(1, 6),
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=5),
)
def test_monotone_values_have_one_turning_point_at_the_start(data, n, sizes):
    # strictly monotone towards R: every s_t = +1, no flip; only the first-step rule fires
    # (for T >= 2), giving r_0 = η Δ, and r_t = d_t elsewhere
    recs = []
    for g, size in enumerate(sizes):
        for k in range(size):
            T = data.draw(st.integers(1, n))
            up = data.draw(st.booleans())
            steps = sorted(
                data.draw(
                    st.lists(
                        st.integers(-50, 50),
                        min_size=T + 1,
                        max_size=T + 1,
                        unique=True,
                    )
                )
            )
            path = [x / 8 for x in (steps if up else steps[::-1])]
            recs.append(ep(f"{g}-{k}", path[-1], path[:-1], group=f"g{g}"))
    ro = sc.Rollouts.from_records(recs)
    for indicator in ("consistent", "sign_flip"):
        tp = turning_points(ro, indicator)
        assert np.array_equal(tp, (ro.step_index == 0) & (ro.step_counts[ro.step_episode] >= 2))
    c = sc.estimate(ro, "turning_point", eta=0.5, balanced=False)
    d = sc.estimate(ro, "turning_point", eta=0.0).step_reward
    v0 = ro.column("value")[ro.episode_offsets[:-1]]
    expected = d.copy()
    first = ro.episode_offsets[:-1][ro.step_counts >= 2]
    expected[first] = 0.5 * (ro.outcome - v0)[ro.step_counts >= 2]
    assert np.array_equal(c.step_reward, expected)


@pytest.mark.parametrize("indicator", ["consistent", "sign_flip"])
@FEWER
@given(records=st.one_of(rollout_records(value=True, max_steps=6), small_integer_values()))
def test_bonus_keeps_the_direction_of_the_step(indicator, records):
    # at a kept turning point r_t = B_t = d_t + (R − v_{t+1}), both terms of one sign:
    # same sign as d_t and at least as large
    ro = sc.Rollouts.from_records(records)
    r = sc.estimate(ro, "turning_point", indicator=indicator).step_reward
    d = sc.estimate(ro, "turning_point", eta=0.0).step_reward
    changed = r != d
    assert np.all(np.sign(r[changed]) == np.sign(d[changed]))
    assert np.all(np.abs(r[changed]) >= np.abs(d[changed]))
    if indicator == "consistent":  # and the bonus has the sign of the global change Δ
        delta = (ro.outcome - ro.column("value")[ro.episode_offsets[:-1]])[ro.step_episode]
        assert np.all(np.sign(r[changed]) == np.sign(delta[changed]))


@FEWER
@given(records=st.one_of(rollout_records(value=True, max_steps=6), small_integer_values()))
def test_balanced_keeps_as_many_positive_as_negative(records):
    ro = sc.Rollouts.from_records(records)
    tp = turning_points(ro)
    B = ro.outcome[ro.step_episode] - ro.column("value")
    r = sc.estimate(ro, "turning_point").step_reward
    kept = tp & (r == B) & (B != 0)
    group = ro.episode_group[ro.step_episode]
    for g in range(ro.n_groups):
        pos, neg = tp & (group == g) & (B > 0), tp & (group == g) & (B < 0)
        kp, kn = int((kept & pos).sum()), int((kept & neg).sum())
        if pos.any() and neg.any():
            k = min(int(pos.sum()), int(neg.sum()))
            assert kp >= k and kn >= k
            for side, kept_n in ((pos, kp), (neg, kn)):
                if np.unique(np.abs(B[side])).size == side.sum():  # distinct |B|: exactly k
                    assert kept_n == k
        else:
            assert kp == int(pos.sum()) and kn == int(neg.sum())


@FEWER
@given(records=rollout_records(value=True, max_steps=6))
def test_advantages_have_mean_zero_per_step_index(records):
    ro = sc.Rollouts.from_records(records)
    a = sc.estimate(ro, "turning_point").step_advantage
    cell = ro.episode_group[ro.step_episode] * (int(ro.step_index.max()) + 1) + ro.step_index
    sums = np.bincount(cell, weights=a)
    count = np.bincount(cell)
    scale = np.bincount(cell, weights=np.abs(a)) + 1.0
    assert np.all(np.abs(sums[count >= 2]) <= 1e-9 * scale[count >= 2])
    assert np.all(a[count[cell] == 1] == 0.0)


def test_needs_value_and_refuses_bad_parameters():
    ro = sc.Rollouts.from_records(
        [
            {
                "episode_id": "a",
                "group_id": "g",
                "outcome": 1.0,
                "steps": [{"p_answer": 1.0}],
            }
        ]
    )
    with pytest.raises(sc.MissingColumnError, match="value"):
        sc.estimate(ro, "turning_point")
    with pytest.raises(sc.MissingColumnError, match="value"):
        turning_points(ro)
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.5])])
    with pytest.raises(sc.EstimatorError, match="eta"):
        sc.estimate(ro, "turning_point", eta=-1.0)
    with pytest.raises(sc.EstimatorError, match="epsilon"):
        sc.estimate(ro, "turning_point", epsilon=0.0)
    with pytest.raises(sc.EstimatorError, match="'consistent', 'sign_flip'"):
        sc.estimate(ro, "turning_point", indicator="both")
