"""par (Preference As Reward): vectorised == loop oracle, hand-worked cases, invariants, errors."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from checks import close
from reference import shaping_preference as ref
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.data import MissingColumnError
from stepcredit.shaping import ShapingError, apply_transform, get_transform
from stepcredit.shaping.preference import par, sigmoid

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GROUP_GRID = [
    {},
    {"maxref": 1},
    {"maxref": 3, "k": 2.5},
    {"reference": "group_mean"},
    {"reference": "group_mean", "k": 0.3},
]
RECORDS = rollout_records(max_steps=2)


@st.composite
def records_with_components(draw: st.DrawFn):
    """Records with a "rewards" object of 1..4 components on the scale of each episode's outcome."""
    records = draw(RECORDS)
    n = draw(st.integers(1, 4))
    spread = draw(st.sampled_from((1e-7, 1.0, 10.0)))
    for rec in records:
        rec["rewards"] = {
            f"ref_{m}": rec["outcome"] + draw(st.sampled_from((0.0, spread, -spread)) | st.floats(-5, 5))
            for m in range(n)
        }
    return records, n


def ep(eid, outcome, group="g", **rewards):
    rec = {"episode_id": eid, "group_id": group, "outcome": outcome, "steps": [{"tokens": 3}]}
    if rewards:
        rec["rewards"] = rewards
    return rec


def shaped(records, **params):
    return apply_transform(sc.Rollouts.from_records(records), "par", **params)


def check_against_oracle(records, params):
    out = shaped(records, **params)
    want, counts = ref.par(records, **params)
    close(out.rollouts.outcome, want, "shaped outcome")
    assert out.diagnostics["no_reference"] == sum(1 for c in counts if c == 0)
    assert math.isclose(out.diagnostics["references"], sum(counts) / len(counts), rel_tol=1e-12)


# ---------------------------------------------------------------------- vectorised == oracle
@pytest.mark.parametrize("params", GROUP_GRID, ids=[str(g) for g in GROUP_GRID])
@SETTINGS
@given(records=RECORDS)
def test_group_references_equal_oracle(params, records):
    check_against_oracle(records, params)


@pytest.mark.parametrize("maxref", [10, 2, 1])
@FEW
@given(drawn=records_with_components())
def test_component_references_equal_oracle(maxref, drawn):
    records, n = drawn
    names = ",".join(f"ref_{m}" for m in range(n))
    check_against_oracle(records, {"reference": "components", "components": names, "maxref": maxref, "k": 1.5})


@pytest.mark.parametrize("params", GROUP_GRID, ids=[str(g) for g in GROUP_GRID])
@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_large_offsets_equal_oracle(params, k):
    check_against_oracle(LARGE_OFFSET_EXAMPLES[k], params)


# ---------------------------------------------------------------------- hand-worked cases
def test_hand_worked_leave_one_out():
    # group [2, 0, 1], k = 1, every other member a reference (M = 2):
    # R'_0 = (σ(2 − 0) + σ(2 − 1)) / 2 = (σ(2) + σ(1)) / 2
    # R'_1 = (σ(0 − 2) + σ(0 − 1)) / 2 = (σ(−2) + σ(−1)) / 2 = 1 − R'_0
    # R'_2 = (σ(1 − 2) + σ(1 − 0)) / 2 = (σ(−1) + σ(1)) / 2 = 1/2
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = shaped([ep("a", 2.0), ep("b", 0.0), ep("c", 1.0)])
    np.testing.assert_allclose(out.rollouts.outcome, [(s(2) + s(1)) / 2, (s(-2) + s(-1)) / 2, 0.5], rtol=1e-15)
    assert out.diagnostics["references"] == 2.0 and out.diagnostics["no_reference"] == 0


def test_hand_worked_maxref_takes_the_first_references_in_input_order():
    # group [2, 0, 1] with maxref = 1: each episode's reference is the first other member:
    # a -> b: σ(2 − 0) = σ(2);  b -> a: σ(0 − 2) = σ(−2);  c -> a: σ(1 − 2) = σ(−1)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = shaped([ep("a", 2.0), ep("b", 0.0), ep("c", 1.0)], maxref=1)
    np.testing.assert_allclose(out.rollouts.outcome, [s(2), s(-2), s(-1)], rtol=1e-15)


def test_hand_worked_group_mean_and_slope():
    # group [3, 1]: mean 2; k = 2: R' = σ(2·(3 − 2)) = σ(2) and σ(2·(1 − 2)) = σ(−2)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    out = shaped([ep("a", 3.0), ep("b", 1.0)], reference="group_mean", k=2.0)
    np.testing.assert_allclose(out.rollouts.outcome, [s(2), s(-2)], rtol=1e-15)


def test_hand_worked_components():
    # R = 1 with references [1, 3]: (σ(0) + σ(−2)) / 2 = (1/2 + σ(−2)) / 2;
    # R = 0.5 with references [0, 0.5]: (σ(0.5) + σ(0)) / 2
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    recs = [ep("a", 1.0, ref_0=1.0, ref_1=3.0), ep("b", 0.5, group="h", ref_0=0.0, ref_1=0.5)]
    out = shaped(recs, reference="components", components="ref_0, ref_1")
    np.testing.assert_allclose(out.rollouts.outcome, [(0.5 + s(-2)) / 2, (s(0.5) + 0.5) / 2], rtol=1e-15)
    # only the first name with maxref = 1: σ(1 − 1) = 1/2 and σ(0.5 − 0) = σ(0.5)
    out1 = shaped(recs, reference="components", components="ref_0,ref_1", maxref=1)
    np.testing.assert_allclose(out1.rollouts.outcome, [0.5, s(0.5)], rtol=1e-15)


def test_one_reference_equal_to_the_reward_gives_one_half_exactly():
    recs = [ep(f"e{i}", v, group=f"g{i}", ref_0=v) for i, v in enumerate([0.0, 1.0, -3.5, 1e6 + 1e-7, 1e300])]
    out = shaped(recs, reference="components", components="ref_0")
    assert out.rollouts.outcome.tolist() == [0.5] * 5
    # the same through a two-member group (each is the other's only reference)
    assert shaped([ep("a", 7.25), ep("b", 7.25)]).rollouts.outcome.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("reference", ["group", "group_mean"])
def test_singleton_group_gets_one_half(reference):
    # a singleton has no other member (group) or is its own mean (group_mean): σ(0) = 1/2
    out = shaped([ep("a", 5.0, group="alone"), ep("b", 1.0), ep("c", 0.0)], reference=reference)
    assert out.rollouts.outcome[0] == 0.5
    assert out.diagnostics["no_reference"] == (1 if reference == "group" else 0)


# ---------------------------------------------------------------------- invariants
@SETTINGS
@given(records=RECORDS, params=st.sampled_from(GROUP_GRID))
def test_bounded_and_only_the_outcome_changes(records, params):
    ro = sc.Rollouts.from_records(records)
    before = copy.deepcopy(records)
    out = apply_transform(ro, "par", **params)
    r = out.rollouts.outcome
    assert np.all((r >= 0.0) & (r <= 1.0))
    # strictly inside (0, 1) wherever every |k (R − r)| keeps σ away from rounding to 0 or 1
    k = params.get("k", 1.0)
    spread = np.array(
        [max(abs(o - p) for p in ro.outcome[ro.episode_group == g]) for o, g in zip(ro.outcome, ro.episode_group)]
    )
    inner = k * spread < 30
    assert np.all((r[inner] > 0) & (r[inner] < 1))
    assert records == before  # the records, hence the input, are not modified
    assert out.rollouts.to_records() == [{**rec, "outcome": o} for rec, o in zip(ro.to_records(), r.tolist())]
    again = apply_transform(ro, "par", **params)
    assert np.array_equal(again.rollouts.outcome, r)  # deterministic


@SETTINGS
@given(records=RECORDS)
def test_order_within_a_group_is_kept_and_the_group_mean_is_one_half(records):
    # with every other member a reference (G − 1 <= maxref): R_i > R_j => R'_i >= R'_j, and
    # Σ_i Σ_{j≠i} σ(R_i − R_j) = G(G − 1)/2 (σ(x) + σ(−x) = 1), so each group's mean R' is 1/2
    ro = sc.Rollouts.from_records(records)
    G = int(np.bincount(ro.episode_group).max())
    r = apply_transform(ro, "par", maxref=max(G - 1, 1)).rollouts.outcome
    for g in range(ro.n_groups):
        idx = np.flatnonzero(ro.episode_group == g)
        order = np.argsort(ro.outcome[idx], kind="stable")
        assert np.all(np.diff(r[idx][order]) >= -1e-15)
        if idx.size > 1:
            assert abs(r[idx].mean() - 0.5) < 1e-12


@FEW
@given(
    drawn=records_with_components(),
    bump=st.floats(1e-3, 100.0),
    k=st.sampled_from((0.1, 1.0, 4.0)),
)
def test_monotone_in_the_reward_for_fixed_references(drawn, bump, k):
    records, n = drawn
    names = ",".join(f"ref_{m}" for m in range(n))
    ro = sc.Rollouts.from_records(records)
    low = apply_transform(ro, "par", reference="components", components=names, k=k).rollouts.outcome
    high = apply_transform(ro.with_outcome(ro.outcome + bump), "par", reference="components", components=names, k=k)
    assert np.all(high.rollouts.outcome >= low)


def test_sigmoid_is_stable_at_huge_arguments():
    x = np.array([-1e6, -800.0, -745.5, -40.0, 0.0, 40.0, 800.0, 1e6, np.inf, -np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = sigmoid(x)
    assert y[0] == 0.0 and y[-3] == 1.0 and y[4] == 0.5 and y[-2] == 1.0 and y[-1] == 0.0
    assert np.all(np.diff(y[:-2]) >= 0)
    assert 0 < y[3] < 1e-17 and y[5] == 1.0


@pytest.mark.parametrize("k", [1.0, 1e300])
def test_par_at_plus_minus_1e6_has_no_overflow_warning(k):
    # R − r = ±2e6 (and k(R − r) overflows to ±inf for k = 1e300): exactly 1 and 0, no warning
    recs = [ep("a", 1e6), ep("b", -1e6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = shaped(recs, k=k).rollouts.outcome
        mean = shaped(recs, reference="group_mean", k=k).rollouts.outcome
        comp = shaped(
            [ep("c", 1e6, ref_0=-1e6), ep("d", -1e6, ref_0=1e6)], reference="components", components="ref_0", k=k
        ).rollouts.outcome
    for r in (group, mean, comp):
        assert r.tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------- fields and errors
def test_requires_names_the_components():
    spec = get_transform("par")
    assert spec.requires == () and spec.writes == ("outcome",)
    full = spec.bind({"reference": "components", "components": "ref_0, ref_1,ref_2", "maxref": 2})
    assert spec.requires_for(full) == ("rewards.ref_0", "rewards.ref_1")


def test_missing_component_names_the_field_and_the_transform():
    recs = [ep("a", 1.0, ref_0=0.5), ep("b", 0.0, ref_0=0.5)]
    ro = sc.Rollouts.from_records(recs)
    with pytest.raises(MissingColumnError) as info:
        apply_transform(ro, "par", reference="components", components="ref_0,ref_9")
    assert "rewards.ref_9" in str(info.value) and "'par'" in str(info.value)
    with pytest.raises(MissingColumnError) as info:  # called directly, without the registry
        par(ro, reference="components", components="ref_9")
    assert "rewards.ref_9" in str(info.value) and "'par'" in str(info.value)


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"k": 0.0}, "k=0.0"),
        ({"k": -1.0}, "k=-1.0"),
        ({"k": math.inf}, "k=inf"),
        ({"maxref": 0}, "maxref=0"),
        ({"maxref": 2.5}, "maxref=2.5"),
        ({"reference": "prompt"}, "reference='prompt'"),
        ({"components": "ref_0"}, "components='ref_0'"),
        ({"reference": "components"}, "components is empty"),
        ({"reference": "components", "components": " , "}, "invalid component name ''"),
        ({"reference": "components", "components": "ref_0,,ref_1"}, "invalid component name ''"),
        ({"reference": "components", "components": "1st"}, "invalid component name '1st'"),
        ({"reference": "components", "components": "rewards.ref_0"}, "invalid component name 'rewards.ref_0'"),
        ({"reference": "components", "components": "a b"}, "invalid component name 'a b'"),
        ({"reference": "components", "components": "ref_0,ref_0"}, "names 'ref_0' twice"),
    ],
)
def test_invalid_parameters_name_the_transform_and_parameter(params, needle):
    ro = sc.Rollouts.from_records([ep("a", 1.0, ref_0=0.0), ep("b", 0.0, ref_0=0.0)])
    with pytest.raises(ShapingError) as info:
        apply_transform(ro, "par", **params)
    assert "'par'" in str(info.value) and needle in str(info.value)
    with pytest.raises(ShapingError) as info:  # the function validates on its own too
        par(ro, **params)
    assert "'par'" in str(info.value) and needle in str(info.value)


def test_a_state_is_refused():
    ro = sc.Rollouts.from_records([ep("a", 1.0)])
    with pytest.raises(ShapingError, match="keeps no state"):
        apply_transform(ro, "par", state={})


def test_in_a_pipeline_before_grpo():
    recs = [ep("a", 2.0, ref_0=0.0), ep("b", 0.0, ref_0=0.0), ep("c", 1.0, group="h", ref_0=0.0)]
    pipe = sc.Pipeline.build("grpo", transforms=[("par", {"reference": "components", "components": "ref_0"})])
    result = pipe.run(sc.Rollouts.from_records(recs))
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(result.rollouts.outcome, [s(2), 0.5, s(1)], rtol=1e-15)
    with pytest.raises(MissingColumnError, match="rewards.ref_0"):
        pipe.check(sc.Rollouts.from_records([ep("a", 1.0)]))
