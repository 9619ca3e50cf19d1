"""PRM shaping (prm_clip, prm_delta, prm_min/mean/last, renorm): vectorised == loop oracle,
hand-worked cases, invariants, errors, and the reward-hacking demonstration."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from checks import close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import shaping_prm as ref
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.shaping import prm

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTRA = rollout_records(extra=True, max_steps=8)
SCORE = st.floats(0.0, 1.0)
SCORES = st.lists(SCORE, min_size=1, max_size=10)

GRIDS = {
    "prm_clip": [
        {},
        {"target": "outcome", "eta": 0.7, "weight": 2.5},
        {"target": "process", "eta": 0.0},
        {"target": "reward", "eta": 1.0, "weight": 0.0},
    ],
    "prm_delta": [
        {},
        {"target": "outcome", "weight": 0.5},
        {"target": "process", "last_step": "keep"},
        {"target": "reward", "last_step": "keep", "weight": 3.0},
        {"target": "outcome", "last_step": "keep"},
    ],
    "prm_min": [{}, {"mode": "replace", "weight": 2.0}],
    "prm_mean": [{}, {"mode": "replace"}, {"weight": 0.25}],
    "prm_last": [{}, {"mode": "replace", "weight": 0.5}],
    "renorm": [
        {},
        {"form": "separate"},
        {"target": "outcome"},
        {"form": "separate", "target": "outcome"},
    ],
}
CASES = [(name, params) for name, grid in GRIDS.items() for params in grid]
AGG = {"prm_min": "min", "prm_mean": "mean", "prm_last": "last"}


def oracle(records, name, params):
    if name in AGG:
        return ref.aggregate(records, AGG[name], **params)
    return getattr(ref, name)(records, **params)


def unit_outcomes(records):
    """ReNorm needs outcomes in [0, 1]: clip the drawn ones (0, 1 and fractions remain)."""
    out = copy.deepcopy(records)
    for rec in out:
        rec["outcome"] = min(max(rec["outcome"], 0.0), 1.0)
    return out


def check_against_oracle(records, name, params):
    if name == "renorm":
        records = unit_outcomes(records)
    ro = sc.Rollouts.from_records(records)
    got = sc.apply_transform(ro, name, **params).rollouts
    want = oracle(records, name, params)
    close(got.outcome, want.outcome, f"{name} outcome")
    close(got.reward, want.reward, f"{name} reward")
    close(got.column("process"), want.process, f"{name} process")
    assert got.n_steps == ro.n_steps and got.episode_offsets.tolist() == ro.episode_offsets.tolist()


def ep(eid, outcome, process, group="g", reward=None, value=None):
    steps = []
    for t, p in enumerate(process):
        step = {"process": p}
        if reward is not None:
            step["reward"] = reward[t]
        if value is not None:
            step["value"] = value
        steps.append(step)
    return {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": steps}


def process_return(name, ps, **params):
    """Σ_t r̃_t of one episode with scores ps (target="outcome" from outcome 0 gives the sum)."""
    ro = sc.Rollouts.from_records([ep("e", 0.0, ps)])
    return float(sc.apply_transform(ro, name, target="outcome", **params).rollouts.outcome[0])


# ---------------------------------------------------------------------- registry and grids
def test_grids_cover_every_choice():
    for name, grid in GRIDS.items():
        for p in sc.get_transform(name).params.values():
            if p.choices:
                assert {g.get(p.name, p.default) for g in grid} == set(p.choices), f"{name}.{p.name}"


def test_registered_fields():
    clip = sc.get_transform("prm_clip")
    assert clip.requires == ("process",)
    assert [clip.writes_for({"target": t}) for t in ("reward", "outcome", "process")] == [
        ("reward",), ("outcome",), ("process",)
    ]
    for name in AGG:
        assert sc.get_transform(name).writes == ("outcome",)
    ren = sc.get_transform("renorm")
    assert ren.writes_for({"form": "combined", "target": "reward"}) == ("reward",)
    assert ren.writes_for({"form": "separate", "target": "reward"}) == ("reward", "outcome")
    assert ren.writes_for({"form": "separate", "target": "outcome"}) == ("outcome",)


# ---------------------------------------------------------------------- oracle comparisons
@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
@SETTINGS
@given(records=EXTRA)
def test_vectorised_equals_oracle(name, params, records):
    check_against_oracle(records, name, params)


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(name, params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], name, params)


@FEW
@given(records=EXTRA)
def test_inputs_unmodified_and_deterministic(records):
    ro = sc.Rollouts.from_records(records)
    before = ro.to_records()
    ro01 = sc.Rollouts.from_records(unit_outcomes(records))
    for name, params in CASES:
        data = ro01 if name == "renorm" else ro
        a = sc.apply_transform(data, name, **params)
        b = sc.apply_transform(data, name, **params)
        assert a.rollouts.equals(b.rollouts) and dict(a.diagnostics) == dict(b.diagnostics)
        assert all(np.isfinite(v) for v in a.diagnostics.values())
    assert ro.to_records() == before


# ---------------------------------------------------------------------- hand-worked cases
def test_hand_worked_clip():
    # η = 0.5, p = [0.9, 0.2, 0.5, 0.4]: r̃ = [min(0.4,0), min(-0.3,0), min(0,0), min(-0.1,0)]
    #   = [0, -0.3, 0, -0.1]; with reward [1, 0, 0, 0] and w = 2: r' = [1, -0.6, 0, -0.2]
    # outcome target from R = 1: R' = 1 + 2·(-0.4) = 0.2
    rec = [ep("a", 1.0, [0.9, 0.2, 0.5, 0.4], reward=[1.0, 0.0, 0.0, 0.0])]
    ro = sc.Rollouts.from_records(rec)
    out = sc.apply_transform(ro, "prm_clip", weight=2.0)
    np.testing.assert_allclose(out.rollouts.reward, [1.0, -0.6, 0.0, -0.2], rtol=0, atol=1e-15)
    assert out.rollouts.outcome.tolist() == [1.0]
    assert out.diagnostics["penalised_fraction"] == 0.5  # 0.2 and 0.4 are below η; 0.5 is not
    np.testing.assert_allclose(out.diagnostics["mean_process_return"], -0.4, rtol=1e-15)
    o = sc.apply_transform(ro, "prm_clip", weight=2.0, target="outcome").rollouts
    np.testing.assert_allclose(o.outcome, [0.2], rtol=1e-14)
    assert o.reward.tolist() == [1.0, 0.0, 0.0, 0.0]
    p = sc.apply_transform(ro, "prm_clip", target="process").rollouts
    np.testing.assert_allclose(p.column("process"), [0.0, -0.3, 0.0, -0.1], rtol=0, atol=1e-15)


def test_hand_worked_delta():
    # p = [0.7, 0.2, 0.4, 0.8] (the paper's Figure 2 shape):
    #   drop: r̃ = [0.7-0.2, 0.2-0.4, 0.4-0.8, 0] = [0.5, -0.2, -0.4, 0], sum 0.7-0.8 = -0.1
    #   keep: r̃ = [0.5, -0.2, -0.4, 0.8], sum 0.7 = p_0
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.7, 0.2, 0.4, 0.8])])
    drop = sc.apply_transform(ro, "prm_delta").rollouts
    np.testing.assert_allclose(drop.reward, [0.5, -0.2, -0.4, 0.0], rtol=0, atol=1e-15)
    assert drop.reward[-1] == 0.0
    keep = sc.apply_transform(ro, "prm_delta", last_step="keep").rollouts
    np.testing.assert_allclose(keep.reward, [0.5, -0.2, -0.4, 0.8], rtol=0, atol=1e-15)
    # outcome target: R' = 1 + Σ r̃ = 1 - 0.1 = 0.9 (drop), 1 + 0.7 = 1.7 (keep)
    np.testing.assert_allclose(sc.apply_transform(ro, "prm_delta", target="outcome").rollouts.outcome, [0.9])
    np.testing.assert_allclose(
        sc.apply_transform(ro, "prm_delta", target="outcome", last_step="keep").rollouts.outcome, [1.7]
    )
    # a one-step episode: drop gives 0, keep gives p_0
    one = sc.Rollouts.from_records([ep("b", 0.0, [0.3])])
    assert sc.apply_transform(one, "prm_delta").rollouts.reward.tolist() == [0.0]
    assert sc.apply_transform(one, "prm_delta", last_step="keep").rollouts.reward.tolist() == [0.3]


def test_hand_worked_delta_episodes_do_not_leak():
    # two episodes back to back: the last step of the first must not see the second's p_0
    # ep a: [0.5, 0.25] -> drop [0.25, 0]; ep b: [1.0] -> drop [0]
    ro = sc.Rollouts.from_records([ep("a", 0.0, [0.5, 0.25]), ep("b", 0.0, [1.0])])
    assert sc.apply_transform(ro, "prm_delta").rollouts.reward.tolist() == [0.25, 0.0, 0.0]
    assert sc.apply_transform(ro, "prm_delta", last_step="keep").rollouts.reward.tolist() == [0.25, 0.25, 1.0]


def test_hand_worked_aggregation():
    # p = [0.5, 0.25, 1.0]: min 0.25, mean 1.75/3, last 1.0; R = 2, w = 2
    #   add: R' = 2 + 2·S -> 2.5, 2 + 3.5/3, 4;  replace: R' = 2·S -> 0.5, 3.5/3, 2
    ro = sc.Rollouts.from_records([ep("a", 2.0, [0.5, 0.25, 1.0])])
    add = {n: sc.apply_transform(ro, n, weight=2.0).rollouts.outcome[0] for n in AGG}
    rep = {n: sc.apply_transform(ro, n, weight=2.0, mode="replace").rollouts.outcome[0] for n in AGG}
    assert add["prm_min"] == 2.5 and add["prm_last"] == 4.0
    np.testing.assert_allclose(add["prm_mean"], 2.0 + 3.5 / 3, rtol=1e-15)
    assert rep["prm_min"] == 0.5 and rep["prm_last"] == 2.0
    np.testing.assert_allclose(rep["prm_mean"], 3.5 / 3, rtol=1e-15)
    assert sc.apply_transform(ro, "prm_min").diagnostics["mean_score"] == 0.25


def test_hand_worked_renorm():
    # success R = 1, p = [0.25, 0.75]: u = p + R - 1 = [0.25, 0.75]; failure R = 0, p = [0.5]: u = [-0.5]
    # combined writes [0.25, 0.75 - 1] = [0.25, -0.25] and [0.5 - 1] = [-0.5]; the estimator adds
    # R back at the last step: effective [0.25, 0.75] and [-0.5]
    ro = sc.Rollouts.from_records([ep("s", 1.0, [0.25, 0.75]), ep("f", 0.0, [0.5])])
    out = sc.apply_transform(ro, "renorm")
    assert out.rollouts.reward.tolist() == [0.25, -0.25, -0.5]
    assert out.rollouts.outcome.tolist() == [1.0, 0.0]
    assert out.diagnostics["success_fraction"] == 0.5
    assert out.diagnostics["mean_step_reward"] == (0.25 + 0.75 - 0.5) / 3
    # separate: r' = p - 1/2 = [-0.25, 0.25], [0]; R' = R - 1/2 = [0.5, -0.5]
    sep = sc.apply_transform(ro, "renorm", form="separate").rollouts
    assert sep.reward.tolist() == [-0.25, 0.25, 0.0] and sep.outcome.tolist() == [0.5, -0.5]
    # outcome target: R' = mean p + R - 1 = 0.5 and -0.5
    assert sc.apply_transform(ro, "renorm", target="outcome").rollouts.outcome.tolist() == [0.5, -0.5]


# ---------------------------------------------------------------------- invariants
@FEW
@given(ps=SCORES)
def test_delta_return_is_the_first_score_whatever_the_length(ps):
    # keep: Σ r̃ = p_0 exactly; drop: p_0 − p_{T−1} (0 for one step); terms telescope
    np.testing.assert_allclose(process_return("prm_delta", ps, last_step="keep"), ps[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(process_return("prm_delta", ps), ps[0] - ps[-1], rtol=0, atol=1e-12)


@FEW
@given(ps=SCORES, k=st.integers(1, 20), at=st.integers(0, 10), high=SCORE)
def test_repeating_or_padding_steps_cannot_raise_the_delta_return(ps, k, at, high):
    # the return depends only on p_0 ("keep") or p_0 and p_{T−1} ("drop"): repeating any step,
    # or inserting k steps of any score after the first (and, for "drop", before the last),
    # leaves it unchanged
    at = min(at, len(ps) - 1)
    repeated = ps[: at + 1] + [ps[at]] * k + ps[at + 1 :]
    cases = {"keep": [repeated, ps[:1] + [high] * k + ps[1:]], "drop": [repeated]}
    if len(ps) >= 2:
        cases["drop"].append(ps[:-1] + [high] * k + ps[-1:])
    for last_step, longer in cases.items():
        base = process_return("prm_delta", ps, last_step=last_step)
        for steps in longer:
            got = process_return("prm_delta", steps, last_step=last_step)
            assert got == pytest.approx(base, rel=0, abs=1e-12)


@FEW
@given(ps=SCORES, extra=SCORES, eta=st.floats(-1.0, 2.0))
def test_clip_terms_are_non_positive_and_the_return_never_grows(ps, extra, eta):
    ro = sc.Rollouts.from_records([ep("e", 0.0, ps)])
    assert np.all(sc.apply_transform(ro, "prm_clip", eta=eta).rollouts.reward <= 0.0)
    returns = [process_return("prm_clip", (ps + extra)[:n], eta=eta) for n in range(1, len(ps) + len(extra) + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(returns, returns[1:]))  # appending never raises it (to rounding)
    assert returns[-1] <= 0.0


@FEW
@given(records=EXTRA)
def test_aggregation_bounds(records):
    ro = sc.Rollouts.from_records(records)
    S = {n: sc.apply_transform(ro, n, mode="replace").rollouts.outcome for n in AGG}
    p = ro.column("process")
    off = ro.episode_offsets
    mx = np.maximum.reduceat(p, off[:-1])
    assert np.all(S["prm_min"] <= S["prm_mean"] * (1 + 1e-15) + 1e-15)
    assert np.all(S["prm_mean"] <= mx * (1 + 1e-15) + 1e-15)
    assert S["prm_last"].tolist() == p[off[1:] - 1].tolist()
    single = ro.step_counts == 1  # one step: all three are that step's score
    assert S["prm_min"][single].tolist() == S["prm_last"][single].tolist()
    close(S["prm_mean"][single], S["prm_last"][single], "mean of one step")


@FEW
@given(records=EXTRA)
def test_renorm_range_failed_steps_never_above_successful_ones(records):
    recs = copy.deepcopy(records)
    for i, rec in enumerate(recs):
        rec["outcome"] = float(i % 2)  # alternate success and failure
        for step in rec["steps"]:
            step["value"] = 0.0
            step.pop("reward", None)
    ro = sc.Rollouts.from_records(recs)
    for form in ("combined", "separate"):
        shaped = sc.apply_transform(ro, "renorm", form=form).rollouts
        # the rewards the estimator uses: the outcome added at the last step
        r = sc.estimate(shaped, "gae").step_reward
        success = np.repeat(ro.outcome == 1.0, ro.step_counts)
        last = np.zeros(ro.n_steps, bool)
        last[ro.episode_offsets[1:] - 1] = True
        if form == "combined":  # every step: success in [0, 1], failure in [-1, 0]
            assert np.all((r[success] >= 0.0) & (r[success] <= 1.0))
            assert np.all((r[~success] >= -1.0) & (r[~success] <= 0.0))
        else:  # p - 1/2 in [-1/2, 1/2] per step; the last step totals p + R - 1
            assert np.all(np.abs(r[~last]) <= 0.5)
            assert np.all(r[last & success] >= 0.0) and np.all(r[last & ~success] <= 0.0)
        episode = sc.apply_transform(ro, "renorm", form=form, target="outcome").rollouts.outcome
        ok = ro.outcome == 1.0
        assert np.all((episode[ok] >= 0) & (episode[ok] <= 1)) and np.all((episode[~ok] >= -1) & (episode[~ok] <= 0))


# ---------------------------------------------------------------------- composition and pipelines
@FEW
@given(records=EXTRA)
def test_clip_then_delta_composes_in_a_pipeline(records):
    recs = copy.deepcopy(records)
    for rec in recs:
        for step in rec["steps"]:
            step["value"] = 0.0
    ro = sc.Rollouts.from_records(recs)
    pipe = sc.Pipeline.build("gae", transforms=[("prm_clip", {"target": "process"}), "prm_delta"])
    result = pipe.run(ro)
    clipped = [[min(s["process"] - 0.5, 0.0) for s in rec["steps"]] for rec in recs]
    want = [r + x for rec, c in zip(recs, clipped)
            for r, x in zip([s.get("reward", 0.0) for s in rec["steps"]], ref.delta_terms(c, "drop"))]
    close(result.rollouts.reward, want, "Clip then Delta rewards")
    # gae with γ = λ = 1, V = 0: the first step's advantage is the whole return R + Σ r'
    first = result.credit.step_advantage[ro.episode_offsets[:-1]]
    totals = [rec["outcome"] + sum(s.get("reward", 0.0) for s in rec["steps"]) +
              (c[0] - c[-1]) for rec, c in zip(recs, clipped)]
    np.testing.assert_allclose(first, totals, rtol=1e-9, atol=1e-9)


def test_pipeline_refuses_step_shaping_with_an_outcome_estimator_but_not_the_outcome_target():
    ro = sc.Rollouts.from_records([ep("a", 1.0, [0.3, 0.9]), ep("b", 0.0, [0.6])])
    with pytest.raises(sc.PipelineError, match="prm_clip"):
        sc.Pipeline.build("grpo", transforms=["prm_clip"]).run(ro)
    out = sc.Pipeline.build("grpo", transforms=[("prm_clip", {"target": "outcome"})]).run(ro)
    np.testing.assert_allclose(out.rollouts.outcome, [1.0 - 0.2, 0.0])  # min(0.3-0.5,0) = -0.2
    for name in ("prm_min", "prm_mean", "prm_last", "renorm"):
        params = {"target": "outcome"} if name == "renorm" else {}
        sc.Pipeline.build("grpo", transforms=[(name, params)]).run(ro)


def test_pipeline_check_names_the_missing_process_field():
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0,
                                    "steps": [{"value": 0.0}]}])
    with pytest.raises(sc.MissingColumnError, match="prm_delta") as err:
        sc.Pipeline.build("gae", transforms=["prm_delta"]).run(ro)
    assert err.value.column == "process"


# ---------------------------------------------------------------------- the reward-hacking demonstration
def test_reward_hacking_demonstration():
    """Padding a trajectory with correct-looking steps pays under raw PRM sums, not under Clip/Delta.

    The "honest" trajectory has four steps with PRM scores [0.8, 0.6, 0.3, 0.7] and outcome 1.
    The "hacking" policy reaches the same outcome but inserts k repeated correct-looking steps,
    each scored 0.9 by the PRM, before its final step. We train with GAE (γ = λ = 1, values 0),
    so the first step's advantage is the trajectory's whole return: what the policy gradient
    pushes the start of the trajectory towards.

    * Raw PRM rewards (r_t = p_t) give the return 1 + Σ p_t, which grows by 0.9 per padded
      step: the policy is paid for padding, the reward hack of Gao et al. (2024).
    * Clip (η = 0.5) gives every padded step min(0.9 − 0.5, 0) = 0: the return stays at
      1 + (−0.2) whatever k; more generally Clip's return can only fall as steps are added.
    * Delta gives the telescoping return p_0 − p_{T−1} (default) or p_0 (``last_step="keep"``),
      independent of k: the padded steps' deltas cancel.
    """
    honest = [0.8, 0.6, 0.3, 0.7]
    ks = [0, 1, 2, 5, 20, 100]
    records = [
        ep(f"k{k}", 1.0, honest[:-1] + [0.9] * k + honest[-1:], group=f"g{k}", value=0.0) for k in ks
    ]
    ro = sc.Rollouts.from_records(records)

    def first_advantage(rollouts):
        adv = sc.estimate(rollouts, "gae", gamma=1.0, lam=1.0).step_advantage
        return adv[rollouts.episode_offsets[:-1]]

    raw = first_advantage(ro.replace_columns(reward=ro.column("process")))
    clip = first_advantage(sc.apply_transform(ro, "prm_clip").rollouts)
    delta = first_advantage(sc.apply_transform(ro, "prm_delta").rollouts)
    delta_keep = first_advantage(sc.apply_transform(ro, "prm_delta", last_step="keep").rollouts)
    clip_delta = sc.Pipeline.build("gae", transforms=[("prm_clip", {"target": "process"}), "prm_delta"]).run(ro)
    both = clip_delta.credit.step_advantage[ro.episode_offsets[:-1]]

    # raw PRM sum: strictly rewarded for padding, by exactly 0.9 per step
    assert np.all(np.diff(raw) > 0)
    np.testing.assert_allclose(raw - raw[0], [0.9 * k for k in ks], rtol=1e-12)
    # Clip: the padded episode's first-step advantage is never above the honest one's
    assert np.all(clip <= clip[0] + 1e-12)
    np.testing.assert_allclose(clip, 1.0 - 0.2, rtol=1e-12)  # only p = 0.3 is below η: 0.3 − 0.5
    # Delta: constant in k (p_0 − p_{T−1} = 0.8 − 0.7, or p_0 = 0.8 with "keep")
    np.testing.assert_allclose(delta, 1.0 + 0.8 - 0.7, rtol=1e-12)
    np.testing.assert_allclose(delta_keep, 1.0 + 0.8, rtol=1e-12)
    assert np.all(both <= both[0] + 1e-12)
    # the process returns tell the same story without an estimator
    for k, padded in zip(ks, (r["steps"] for r in records)):
        ps = [s["process"] for s in padded]
        assert sum(ps) == pytest.approx(sum(honest) + 0.9 * k)
        assert process_return("prm_clip", ps) <= process_return("prm_clip", honest) + 1e-12
        assert process_return("prm_delta", ps, last_step="keep") == pytest.approx(0.8)


# ---------------------------------------------------------------------- errors
RO = sc.Rollouts.from_records([ep("a", 1.0, [0.5, 0.2])])


@pytest.mark.parametrize("name", ["prm_clip", "prm_delta", "prm_min", "prm_mean", "prm_last"])
@pytest.mark.parametrize("weight", [-1.0, -1e-9])
def test_negative_weight_is_refused(name, weight):
    with pytest.raises(sc.ShapingError, match=rf"transform '{name}'.*weight"):
        sc.apply_transform(RO, name, weight=weight)
    with pytest.raises(sc.ShapingError, match=rf"transform '{name}'.*weight"):
        getattr(prm, name)(RO, weight=weight)


@pytest.mark.parametrize(("name", "param", "value"), [
    ("prm_clip", "target", "steps"),
    ("prm_clip", "eta", float("nan")),
    ("prm_clip", "eta", "0.5"),
    ("prm_delta", "target", "value"),
    ("prm_delta", "last_step", "zero"),
    ("prm_delta", "weight", float("inf")),
    ("prm_min", "mode", "sum"),
    ("prm_mean", "mode", "multiply"),
    ("prm_last", "weight", True),
    ("renorm", "form", "sum"),
    ("renorm", "target", "process"),
])
def test_invalid_parameters_name_the_transform_and_the_parameter(name, param, value):
    with pytest.raises(sc.ShapingError, match=rf"transform '{name}'.*{param}"):
        sc.apply_transform(RO, name, **{param: value})


@pytest.mark.parametrize(("name", "param", "value"), [
    ("prm_clip", "target", "steps"),
    ("prm_delta", "last_step", "zero"),
    ("prm_min", "mode", "sum"),
    ("renorm", "form", "sum"),
    ("renorm", "target", "process"),
])
def test_invalid_choices_are_refused_on_direct_calls_too(name, param, value):
    with pytest.raises(sc.ShapingError, match=rf"transform '{name}'.*{param}"):
        getattr(prm, name)(RO, **{param: value})


def test_unknown_parameter_is_refused():
    with pytest.raises(sc.ShapingError, match="transform 'prm_clip' has no parameter 'threshold'"):
        sc.apply_transform(RO, "prm_clip", threshold=0.5)


@pytest.mark.parametrize("name", list(GRIDS))
def test_missing_process_names_the_field_and_the_transform(name):
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"reward": 1.0}]}])
    for call in (lambda: sc.apply_transform(ro, name), lambda: getattr(prm, name)(ro)):
        with pytest.raises(sc.MissingColumnError, match=rf"transform '{name}'") as err:
            call()
        assert err.value.column == "process"


@pytest.mark.parametrize(("outcome", "process", "what"), [
    (1.5, [0.5], "outcome"),
    (-0.1, [0.5], "outcome"),
    (1.0, [0.5, 1.25], "process"),
    (0.0, [-0.5], "process"),
])
def test_renorm_refuses_values_outside_the_unit_interval(outcome, process, what):
    ro = sc.Rollouts.from_records([ep("ok", 1.0, [0.5]), ep("bad", outcome, process)])
    with pytest.raises(sc.ShapingError, match=rf"transform 'renorm'.*{what}.*\[0, 1\].*episode 1"):
        sc.apply_transform(ro, "renorm")
