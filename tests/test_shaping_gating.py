"""gated (G-RA): loop oracle, hand-worked cases, and the gate's invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import stepcredit as sc
from stepcredit.pipeline import Pipeline

from reference import shaping_gating as ref
from strategies import rollout_records

GRID = [
    {}, {"threshold": 0.5}, {"target": "outcome"}, {"source": "process", "weight": 0.5},
    {"source": "process", "target": "outcome", "threshold": -1.0},
]


@pytest.mark.parametrize("params", GRID, ids=str)
@settings(max_examples=60, deadline=None)
@given(records=rollout_records(extra=True, max_groups=4))
def test_gated_equals_the_loop_oracle(params, records):
    ro = sc.Rollouts.from_records(records)
    out = sc.apply_transform(ro, "gated", **params).rollouts
    want_outcome, want_reward = ref.gated(records, **params)
    # the outcome sum runs left to right in the oracle, pairwise in reduceat: a few ulps of
    # the largest term apart
    scale = max([1.0, *map(abs, want_outcome), *(abs(s.get("reward", 0.0)) for r in records for s in r["steps"])])
    np.testing.assert_allclose(out.outcome, want_outcome, rtol=1e-12, atol=1e-14 * scale * 8)
    np.testing.assert_allclose(out.reward, want_reward, rtol=0, atol=0)
    assert out.episode_offsets.tolist() == ro.episode_offsets.tolist()


def _ro(outcomes, rewards, process=None):
    recs = []
    for i, (R, rs) in enumerate(zip(outcomes, rewards)):
        steps = [{"reward": r} for r in rs]
        if process is not None:
            for s, p in zip(steps, process[i]):
                s["process"] = p
        recs.append({"episode_id": f"e{i}", "group_id": "g", "outcome": R, "steps": steps})
    return sc.Rollouts.from_records(recs)


def test_hand_worked():
    # episode 0 reaches the threshold 1: its rewards 0.5 and 0.25 count (total 1 + 0.75);
    # episode 1 (outcome 0) loses its 0.5: total 0
    ro = _ro([1.0, 0.0], [[0.5, 0.25], [0.5]])
    s = sc.apply_transform(ro, "gated")
    assert s.rollouts.reward.tolist() == [0.5, 0.25, 0.0]
    assert s.rollouts.outcome.tolist() == [1.0, 0.0]
    assert s.diagnostics == {"gated_fraction": 0.5, "discarded": 0.5, "added": 0.75}
    o = sc.apply_transform(ro, "gated", target="outcome").rollouts
    assert o.outcome.tolist() == [1.75, 0.0] and o.reward.tolist() == [0.0, 0.0, 0.0]
    # process scores 0.9, 0.8 / 0.7 with weight 0.5: episode 0 gets 0.45 and 0.4 added to its rewards
    ro = _ro([1.0, 0.0], [[0.5, 0.25], [0.5]], process=[[0.9, 0.8], [0.7]])
    p = sc.apply_transform(ro, "gated", source="process", weight=0.5).rollouts
    np.testing.assert_allclose(p.reward, [0.95, 0.65, 0.5], rtol=1e-15)


@settings(max_examples=60, deadline=None)
@given(records=rollout_records(extra=True, max_groups=4))
def test_nothing_is_added_below_the_threshold(records):
    ro = sc.Rollouts.from_records(records)
    theta = float(np.median(ro.outcome))
    for params in ({"source": "reward"}, {"source": "process"}):
        out = sc.apply_transform(ro, "gated", threshold=theta, target="outcome", **params).rollouts
        below = ro.outcome < theta
        assert np.array_equal(out.outcome[below], ro.outcome[below])
        step_out = sc.apply_transform(ro, "gated", threshold=theta, **params).rollouts
        steps_below = np.repeat(below, ro.step_counts)
        want = 0.0 if params["source"] == "reward" else ro.reward[steps_below]
        assert np.all(step_out.reward[steps_below] == want)


def test_a_policy_cannot_collect_step_rewards_without_the_outcome():
    # a failing episode padded with many rewarded steps gains nothing once gated
    short = [0.1]
    padded = [0.1] * 50
    ro = _ro([0.0, 0.0], [short, padded])
    shaped = Pipeline.build("gae", transforms=["gated"]).run(ro.replace_columns(value=np.zeros(ro.n_steps)))
    assert shaped.rollouts.reward.sum() == 0.0
    raw = sc.estimate(ro.replace_columns(value=np.zeros(ro.n_steps)), "gae")
    assert raw.step_advantage[1] > raw.step_advantage[0]  # ungated: padding pays
    assert shaped.credit.step_advantage[1] == shaped.credit.step_advantage[0] == 0.0


@pytest.mark.parametrize(
    "params, needle",
    [({"threshold": float("nan")}, "threshold=nan"), ({"source": "value"}, "source='value'"),
     ({"target": "process"}, "target='process'"), ({"weight": "1"}, "weight='1'")],
)
def test_bad_parameters_name_the_transform(params, needle):
    ro = _ro([1.0], [[0.0]])
    with pytest.raises(sc.ShapingError, match="transform 'gated'") as exc:
        sc.apply_transform(ro, "gated", **params)
    assert needle in str(exc.value)


def test_missing_process_is_named():
    with pytest.raises(sc.MissingColumnError, match="transform 'gated'.*'process'"):
        sc.apply_transform(_ro([1.0], [[0.0]]), "gated", source="process")
