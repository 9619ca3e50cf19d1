"""Credit filters prof, zero_variance, replay: vectorised == loop oracle, hand-worked cases,
invariants, pipelines (refit on the kept episodes), state, parameter and field errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import filters as ref
from strategies import LARGE_OFFSET_EXAMPLES, rollout_records

import stepcredit as sc
from stepcredit.filters import FilterError, apply_filter, get_filter

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTRA = rollout_records(extra=True, max_steps=6)


def run(ro, name, credit=None, **params):
    return apply_filter(ro, credit if credit is not None else sc.estimate(ro, "grpo"), name, **params)


def ep(eid, outcome, process=(0.5, 0.5), group="g", **extra):
    return {"episode_id": eid, "group_id": group, "outcome": outcome,
            "steps": [{"process": p, **extra} for p in process]}


def grid_covers(name, grid):
    for p in get_filter(name).params.values():
        if p.choices or p.type is bool:
            choices = set(p.choices or (False, True))
            assert {g.get(p.name, p.default) for g in grid} == choices, f"{name}.{p.name}"


def with_weights(ro, active):
    """The grpo credit of ``ro`` with episode_weight = active (as an earlier filter leaves it)."""
    return dataclasses.replace(sc.estimate(ro, "grpo"), episode_weight=np.asarray(active, dtype=float))


# ====================================================================== PROF
PROF_GRID = [
    {},
    {"score": "paper"},
    {"variant": "correct", "seed": 7},
    {"remove": 2, "min_steps": 1, "max_steps": 3, "length_penalty": 0.25},
    {"remove": 3, "correct_threshold": 0.0, "score": "paper", "min_steps": 3},
    {"remove": 1, "variant": "correct", "seed": 12345678901234567890, "length_penalty": 0.0},
    {"remove": 5, "max_steps": 2, "correct_threshold": 1e6},
]


def check_prof(records, params, active=None):
    ro = sc.Rollouts.from_records(records)
    credit = None if active is None else with_weights(ro, active)
    got = run(ro, "prof", credit, **params)
    want = ref.prof(records, active=active, **params)
    assert got.weight.tolist() == want["weight"]
    assert dict(got.diagnostics) == pytest.approx(want["diagnostics"], rel=1e-12)
    assert got.rollouts is None and got.state is None


@st.composite
def tied_process(draw, max_steps=4):
    """Records whose process scores are 0, 1/4 or 1/2 and outcomes 0 or 1: equal scores (ties),
    and groups of every correct/incorrect mix, are common."""
    records = draw(rollout_records(extra=True, max_steps=max_steps))
    for rec in records:
        rec["outcome"] = float(draw(st.integers(0, 1)))
        for s in rec["steps"]:
            s["process"] = draw(st.sampled_from((0.0, 0.25, 0.5)))
    return records


def test_prof_grid_covers_every_choice():
    grid_covers("prof", PROF_GRID)


@pytest.mark.parametrize("params", PROF_GRID, ids=[str(g) for g in PROF_GRID])
@SETTINGS
@given(records=EXTRA)
def test_prof_equals_oracle(params, records):
    check_prof(records, params)


@pytest.mark.parametrize("params", PROF_GRID, ids=[str(g) for g in PROF_GRID])
@FEW
@given(records=tied_process())
def test_prof_equals_oracle_with_ties(params, records):
    check_prof(records, params)


@pytest.mark.parametrize("params", PROF_GRID[:3], ids=[str(g) for g in PROF_GRID[:3]])
@FEW
@given(records=EXTRA, data=st.data())
def test_prof_ignores_episodes_dropped_earlier(params, records, data):
    active = data.draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
    check_prof(records, params, active=active)
    # ... which is the filter run on the active episodes alone, scattered back
    ro = sc.Rollouts.from_records(records)
    idx = np.flatnonzero(active)
    got = run(ro, "prof", with_weights(ro, active), **params).weight
    if idx.size:
        alone = run(ro.take(idx), "prof", **params).weight
        np.testing.assert_array_equal(got[idx], alone)
    assert np.all(got[~np.asarray(active, dtype=bool)] == 0)


@pytest.mark.parametrize("k", range(len(LARGE_OFFSET_EXAMPLES)))
def test_prof_large_offsets_equal_oracle(k):
    for params in PROF_GRID:
        check_prof(LARGE_OFFSET_EXAMPLES[k], params)


def no_near_ties(want, records, rel=1e-9):
    """Within each group and class, exact scores are equal (and so are the float keys) or apart
    by more than ``rel`` of their size."""
    by_class = {}
    for i, c in want["c"].items():
        by_class.setdefault((records[i]["group_id"], records[i]["outcome"] >= 1.0), []).append(i)
    for members in by_class.values():
        for a in members:
            for b in members:
                ca, cb = want["c"][a], want["c"][b]
                if ca == cb:
                    if want["key"][a] != want["key"][b]:
                        return False
                elif abs(ca - cb) <= rel * (1 + abs(ca) + abs(cb)):
                    return False
    return True


@pytest.mark.parametrize("score", ["code", "paper"])
@SETTINGS
@given(records=st.one_of(EXTRA, tied_process()))
def test_prof_float_key_ranks_like_the_exact_score(score, records):
    # the definition ranks by c exactly; the filter by its float key κ (same order in exact
    # arithmetic: the batch centring and the ×2 cancel within a class)
    want = ref.prof(records, score=score)
    assume(no_near_ties(want, records))
    exact = ref.prof(records, score=score, exact=True)
    got = run(sc.Rollouts.from_records(records), "prof", score=score)
    assert got.weight.tolist() == exact["weight"]


# ---------------------------------------------------------------------- PROF: hand-worked
def test_prof_hand_worked_group_of_eight():
    # 5 correct (e0..e4), 3 wrong (e5..e7), remove 4, two steps each (no length penalty):
    # k = 4, k_+ = min(4, round((5 − 3 + 4)/2)) = round(3) = 3 -> remove 3 correct, 1 wrong.
    # correct means: e0 0.30, e1 0.40, e2 0.35, e3 0.90, e4 0.60 -> lowest three: e0, e2, e1
    # wrong means:   e5 0.20, e6 0.80, e7 0.50; c = −2(v̄ − v̄_B) -> lowest c = highest v̄: e6
    scores = [(0.2, 0.4), (0.3, 0.5), (0.3, 0.4), (0.8, 1.0), (0.6, 0.6), (0.1, 0.3), (0.7, 0.9), (0.5, 0.5)]
    recs = [ep(f"e{i}", 1.0 if i < 5 else 0.0, p) for i, p in enumerate(scores)]
    out = run(sc.Rollouts.from_records(recs), "prof")
    assert out.weight.tolist() == [0, 0, 0, 1, 1, 1, 0, 1]
    assert out.diagnostics == {
        "dropped_fraction": 0.5, "dropped_correct": 3, "dropped_incorrect": 1,
        "kept_correct": 2, "kept_incorrect": 2, "length_penalized": 0, "emptied_groups": 0,
    }


def test_prof_length_penalty_and_the_two_score_forms():
    # λ = 10, H ∈ [2, 30] unpenalised. 2 correct, 2 wrong, remove 2: k_+ = round((0+2)/2) = 1.
    # correct: c0 (1 step, 0.9): flagged; c1 (2 steps, 0.1, 0.1).
    #   code:  κ = v̄ − 5b: c0 0.9 − 5 = −4.1 < c1 0.1 -> remove c0 (paper: 0.9 − 10 < 0.1, same)
    # wrong: w2 (1 step, 0.2): flagged; w3 (2 steps, 0.8, 0.8).
    #   code:  κ = −v̄ − 5b: w2 −0.2 − 5 = −5.2 < w3 −0.8 -> remove w2 (the flagged one)
    #   paper: κ = −(v̄ − 10b): w2 −(0.2 − 10) = 9.8 > w3 −0.8 -> remove w3 (keeps the flagged one)
    recs = [ep("c0", 1.0, (0.9,)), ep("c1", 1.0, (0.1, 0.1)), ep("w2", 0.0, (0.2,)), ep("w3", 0.0, (0.8, 0.8))]
    ro = sc.Rollouts.from_records(recs)
    assert run(ro, "prof", remove=2).weight.tolist() == [0, 1, 0, 1]
    assert run(ro, "prof", remove=2, score="paper").weight.tolist() == [0, 1, 1, 0]
    # without the penalty both forms rank by s·v̄: remove c1 (0.1) and w3 (−0.8)
    for score in ("code", "paper"):
        assert run(ro, "prof", remove=2, length_penalty=0.0, score=score).weight.tolist() == [1, 0, 1, 0]
    assert run(ro, "prof", remove=2).diagnostics["length_penalized"] == 2


def test_prof_code_penalty_is_half_strength_for_correct_episodes():
    # PRM scores spread wider than λ/2 but not λ: λ = 1, correct only (k_+ = k = 1):
    # a: 1 step (flagged), v̄ = 1.0;  b: 2 steps, v̄ = 0.3.
    # code:  κ_a = 1.0 − 0.5 = 0.5 > κ_b = 0.3 -> remove b;  paper: κ_a = 1.0 − 1 = 0 < 0.3 -> remove a
    recs = [ep("a", 1.0, (1.0,)), ep("b", 1.0, (0.3, 0.3))]
    ro = sc.Rollouts.from_records(recs)
    assert run(ro, "prof", remove=1, length_penalty=1.0).weight.tolist() == [1, 0]
    assert run(ro, "prof", remove=1, length_penalty=1.0, score="paper").weight.tolist() == [0, 1]


def test_prof_rounds_half_to_even():
    # 1 correct, 2 wrong, remove 2: (1 − 2 + 2)/2 = 0.5 -> round = 0 (half to even; half up
    # would give 1) -> k_+ = 0: remove the 2 wrong ones, keep the correct one.
    recs = [ep("c", 1.0), ep("w1", 0.0), ep("w2", 0.0)]
    assert run(sc.Rollouts.from_records(recs), "prof", remove=2).weight.tolist() == [1, 0, 0]
    # 3 correct, 2 wrong, remove 4: (3 − 2 + 4)/2 = 2.5 -> 2 (half up: 3) -> remove 2 correct and
    # 2 wrong: keep 1 correct (the best, c2) and no wrong one.
    recs = [ep("c0", 1.0, (0.1, 0.1)), ep("c1", 1.0, (0.2, 0.2)), ep("c2", 1.0, (0.9, 0.9)),
            ep("w0", 0.0, (0.1, 0.1)), ep("w1", 0.0, (0.5, 0.5))]
    assert run(sc.Rollouts.from_records(recs), "prof").weight.tolist() == [0, 0, 1, 0, 0]


def test_prof_ties_are_broken_by_episode_order():
    # 4 correct with equal scores, remove 2 (k_+ = min(2, round(6/2)) = 2): the first two go
    recs = [ep(f"c{i}", 1.0) for i in range(4)]
    ro = sc.Rollouts.from_records(recs)
    assert run(ro, "prof", remove=2).weight.tolist() == [0, 0, 1, 1]
    # the same episodes in another order: again the first two in the new order
    assert run(ro.take([3, 1, 2, 0]), "prof", remove=2).weight.tolist() == [0, 0, 1, 1]
    # the same scores in another step order tie too (sorted summation)
    recs = [ep("a", 1.0, (0.1, 0.7, 0.2)), ep("b", 1.0, (0.7, 0.2, 0.1)), ep("c", 1.0, (0.2, 0.1, 0.7))]
    ro = sc.Rollouts.from_records(recs)
    for perm in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        assert run(ro.take(perm), "prof", remove=1).weight.tolist() == [0, 1, 1]


def test_prof_small_groups_and_all_equal_groups():
    # a group of at most `remove` episodes is removed entirely (k = n)
    recs = [ep("a", 1.0, group="small"), ep("b", 0.0, group="small"), ep("c", 1.0, group="big")] + [
        ep(f"d{i}", 1.0, (0.1 * i, 0.1 * i), group="big") for i in range(5)
    ]
    out = run(sc.Rollouts.from_records(recs), "prof")
    # small: removed; big: 6 correct with v̄ c 0.5, d0..d4 0.0..0.4; remove the 4 lowest,
    # d0..d3 -> keep c and d4
    assert out.weight.tolist() == [0, 0, 1, 0, 0, 0, 0, 1]
    assert out.diagnostics["emptied_groups"] == 1
    # all wrong: k_+ = min(4, round((−6 + 4)/2)) = −1 -> remove the 4 wrong ones with the highest v̄
    recs = [ep(f"w{i}", 0.0, (0.1 * i,) * 2) for i in range(6)]
    assert run(sc.Rollouts.from_records(recs), "prof").weight.tolist() == [1, 1, 0, 0, 0, 0]


def test_prof_correct_variant_is_random_among_the_wrong_and_seeded():
    # the correct ones are still ranked; the wrong ones go by the seeded hash of their ids
    recs = [ep(f"c{i}", 1.0, (0.1 * i,) * 2) for i in range(3)] + [
        ep(f"w{i}", 0.0, (0.1 * i,) * 2) for i in range(5)
    ]
    ro = sc.Rollouts.from_records(recs)
    # k = 4, k_+ = round((3 − 5 + 4)/2) = 1: remove c0 and 3 wrong ones
    outs = {seed: run(ro, "prof", variant="correct", seed=seed).weight for seed in range(20)}
    for seed, w in outs.items():
        assert w[:3].tolist() == [0, 1, 1]
        assert int(w[3:].sum()) == 2
        keys = [ref.random_key(f"w{i}", seed) for i in range(5)]
        removed = sorted(range(5), key=lambda i: keys[i])[:3]
        assert [i for i in range(5) if w[3 + i] == 0] == sorted(removed)
        np.testing.assert_array_equal(run(ro, "prof", variant="correct", seed=seed).weight, w)  # deterministic
    assert len({tuple(w) for w in outs.values()}) > 1  # the seed matters
    # a function of the ids, not of the order: permuting the episodes permutes the weights
    perm = [7, 2, 5, 0, 3, 6, 1, 4]
    np.testing.assert_array_equal(run(ro.take(perm), "prof", variant="correct").weight, outs[0][perm])


# ---------------------------------------------------------------------- PROF: properties
@SETTINGS
@given(records=EXTRA, remove=st.integers(0, 7), threshold=st.sampled_from((0.0, 0.5, 1.0)))
def test_prof_invariants(records, remove, threshold):
    ro = sc.Rollouts.from_records(records)
    out = run(ro, "prof", remove=remove, correct_threshold=threshold)
    w = out.weight
    assert set(np.unique(w)) <= {0.0, 1.0}
    correct = ro.outcome >= threshold
    mean = np.array([np.mean([s["process"] for s in r["steps"]]) for r in records])
    H = ro.step_counts
    key = np.where(correct, mean, -mean) - 5.0 * ((H < 2) | (H > 30))
    for g in range(ro.n_groups):
        m = ro.episode_group == g
        n, n_pos = int(m.sum()), int((m & correct).sum())
        n_neg = n - n_pos
        k = min(remove, n)
        assert int((w[m] == 0).sum()) == k  # exactly k removed per group
        kept_pos, kept_neg = int((w[m & correct] == 1).sum()), int((w[m & ~correct] == 1).sum())
        # balance: the kept difference is the old one moved toward 0 by k, to within one
        assert abs(kept_pos - kept_neg) <= max(1, abs(n_pos - n_neg) - k)
        # the removed are the lowest of their class (up to float near-ties, allow 1e-12)
        for cls in (correct, ~correct):
            mm = m & cls
            if (w[mm] == 0).any() and (w[mm] == 1).any():
                assert key[mm & (w == 0)].max() <= key[mm & (w == 1)].min() + 1e-12
    d = out.diagnostics
    assert d["dropped_correct"] + d["dropped_incorrect"] == int((w == 0).sum())
    assert d["kept_correct"] + d["kept_incorrect"] == int(w.sum())


@SETTINGS
@given(records=EXTRA)
def test_prof_score_forms_agree_without_length_penalty(records):
    ro = sc.Rollouts.from_records(records)
    for params in ({"length_penalty": 0.0}, {"min_steps": 0, "max_steps": 100}):
        a = run(ro, "prof", score="code", **params).weight
        b = run(ro, "prof", score="paper", **params).weight
        np.testing.assert_array_equal(a, b)


@FEW
@given(records=EXTRA)
def test_prof_does_not_modify_its_input_and_is_deterministic(records):
    ro = sc.Rollouts.from_records(records)
    before = ro.to_records()
    w1 = run(ro, "prof").weight
    assert ro.to_records() == before
    np.testing.assert_array_equal(run(ro, "prof").weight, w1)


# ---------------------------------------------------------------------- PROF: pipeline
@FEW
@given(records=EXTRA)
def test_pipeline_prof_trains_grpo_on_the_kept_episodes(records):
    ro = sc.Rollouts.from_records(records)
    res = sc.Pipeline.build("grpo", filters=["prof"]).run(ro)
    w = res.credit.episode_weight
    assert set(np.unique(w)) <= {0.0, 1.0}
    np.testing.assert_array_equal(w, run(ro, "prof").weight)
    kept = np.flatnonzero(w)
    dropped = np.flatnonzero(w == 0)
    assert np.all(res.credit.episode_advantage[dropped] == 0)
    steps_dropped = np.isin(ro.step_episode, dropped)
    assert np.all(res.credit.step_advantage[steps_dropped] == 0)
    if kept.size:
        sub = sc.estimate(ro.take(kept), "grpo")
        np.testing.assert_array_equal(res.credit.episode_advantage[kept], sub.episode_advantage)
        np.testing.assert_array_equal(res.credit.step_advantage[~steps_dropped], sub.step_advantage)
    assert res.diagnostics["filter 'prof' (#1)"]["dropped_fraction"] == pytest.approx((w == 0).mean() if w.size else 0)


# ---------------------------------------------------------------------- PROF: errors
@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"remove": -1}, "remove=-1"),
        ({"length_penalty": -0.5}, "length_penalty=-0.5"),
        ({"min_steps": -1}, "min_steps=-1"),
        ({"min_steps": 5, "max_steps": 4}, "max_steps=4"),
        ({"score": "both"}, "score"),
        ({"variant": "incorrect"}, "variant"),
        ({"remove": 1.5}, "remove"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_prof_parameter_errors(params, fragment):
    ro = sc.Rollouts.from_records([ep("a", 1.0), ep("b", 0.0)])
    with pytest.raises(FilterError, match="'prof'") as exc:
        run(ro, "prof", **params)
    assert fragment in str(exc.value)


def test_prof_needs_process():
    ro = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"value": 0.1}]}])
    with pytest.raises(sc.MissingColumnError, match="filter 'prof'") as exc:
        run(ro, "prof")
    assert exc.value.column == "process"
    with pytest.raises(sc.MissingColumnError, match="'process'"):
        sc.Pipeline.build("grpo", filters=["prof"]).run(ro)


# ====================================================================== zero_variance
ZV_GRID = [
    {},
    {"action": "flag"},
    {"singletons": "collapsed"},
    {"tolerance": 1e-6, "action": "flag", "singletons": "collapsed"},
    {"tolerance": 0.5},
]


def test_zero_variance_grid_covers_every_choice():
    grid_covers("zero_variance", ZV_GRID)


@pytest.mark.parametrize("params", ZV_GRID, ids=[str(g) for g in ZV_GRID])
@SETTINGS
@given(records=rollout_records(), data=st.data())
def test_zero_variance_equals_oracle(params, records, data):
    ro = sc.Rollouts.from_records(records)
    active = data.draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=len(records), max_size=len(records))))
    got = run(ro, "zero_variance", None if active is None else with_weights(ro, active), **params)
    want = ref.zero_variance(records, active=active, **params)
    assert got.weight.tolist() == want["weight"]
    assert dict(got.diagnostics) == pytest.approx(want["diagnostics"], rel=1e-12)


def test_zero_variance_hand_worked():
    recs = [
        ep("a0", 1.0, group="a"), ep("a1", 1.0, group="a"),          # all equal: collapsed
        ep("b0", 1.0, group="b"), ep("b1", 0.0, group="b"),          # spread 1
        ep("c0", 0.3, group="c"),                                     # singleton
        ep("d0", 1e6, group="d"), ep("d1", 1e6 + 1e-7, group="d"),   # spread ~1e-7
    ]
    ro = sc.Rollouts.from_records(recs)
    out = run(ro, "zero_variance")
    assert out.weight.tolist() == [0, 0, 1, 1, 1, 1, 1]
    # 1 of 4 groups, 2 of 7 episodes
    assert out.diagnostics == {
        "collapsed_groups": 1, "collapsed_fraction": 0.25, "collapsed_episodes": 2,
        "collapsed_episode_fraction": 2 / 7, "singleton_groups": 1, "dropped_fraction": 2 / 7,
    }
    assert run(ro, "zero_variance", tolerance=1e-6).weight.tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert run(ro, "zero_variance", singletons="collapsed").weight.tolist() == [0, 0, 1, 1, 0, 1, 1]
    # three outcomes of 0.1: collapsed (np.std of them is 1.4e-17 > 0, which verl's test would keep)
    three = sc.Rollouts.from_records([ep(f"t{i}", 0.1) for i in range(3)])
    assert run(three, "zero_variance").weight.tolist() == [0, 0, 0]
    flag = run(ro, "zero_variance", action="flag", singletons="collapsed")
    assert flag.weight.tolist() == [1] * 7
    assert flag.diagnostics["collapsed_groups"] == 2 and flag.diagnostics["dropped_fraction"] == 0.0


@FEW
@given(records=rollout_records())
def test_pipeline_zero_variance(records):
    ro = sc.Rollouts.from_records(records)
    res = sc.Pipeline.build("grpo", filters=["zero_variance"]).run(ro)
    w = res.credit.episode_weight
    kept = np.flatnonzero(w)
    for g in range(ro.n_groups):
        m = ro.episode_group == g
        collapsed = m.sum() >= 2 and np.ptp(ro.outcome[m]) == 0
        assert np.all(w[m] == (0.0 if collapsed else 1.0))
    if kept.size:
        np.testing.assert_array_equal(
            res.credit.episode_advantage[kept], sc.estimate(ro.take(kept), "grpo").episode_advantage
        )
    # flag changes no weight: the estimator's credit is kept as it is (no refit)
    flag = sc.Pipeline.build("grpo", filters=[("zero_variance", {"action": "flag"})]).run(ro)
    np.testing.assert_array_equal(flag.credit.step_advantage, sc.estimate(ro, "grpo").step_advantage)
    assert np.all(flag.credit.episode_weight == 1)


def test_zero_variance_parameter_errors():
    ro = sc.Rollouts.from_records([ep("a", 1.0)])
    with pytest.raises(FilterError, match="filter 'zero_variance': tolerance=-1.0"):
        run(ro, "zero_variance", tolerance=-1.0)
    with pytest.raises(FilterError, match="'zero_variance'.*action"):
        run(ro, "zero_variance", action="remove")
    with pytest.raises(FilterError, match="'zero_variance'.*singletons"):
        run(ro, "zero_variance", singletons=True)


# ====================================================================== replay
def rec(eid, group, outcome, steps=1, **fields):
    return {"episode_id": eid, "group_id": group, "outcome": outcome,
            "steps": [{"state": f"s{t}", **fields} for t in range(steps)]}


def replay_batches(batches, **params):
    """Run the replay filter over batches, threading the state; one Filtered per batch."""
    state, outs = None, []
    for records in batches:
        ro = sc.Rollouts.from_records(records)
        out = run(ro, "replay", state=state, **params)
        outs.append(out)
        state = out.state
    return outs


def same_rollouts(a, b):
    """Equal, where an absent step reward equals a reward of 0 (a remembered record carries the
    reward column of its own batch)."""
    np.testing.assert_array_equal(a.reward, b.reward)
    return a.replace_columns(reward=None).equals(b.replace_columns(reward=None))


REPLAY_GRID = [
    {},
    {"per_group": 2, "max_groups": 2},
    {"success_threshold": 0.5, "tolerance": 0.5, "replay_weight": 0.25, "max_groups": 1},
]


@st.composite
def batch_sequences(draw):
    """Two or three batches over a small pool of group ids (so that groups recur), binary
    outcomes (so that groups fail entirely and succeed), the same or different step fields."""
    n = draw(st.integers(2, 3))
    same = draw(st.booleans())
    fields = draw(st.fixed_dictionaries({"state": st.booleans(), "value": st.booleans()}))
    batches = []
    for b in range(n):
        records = draw(rollout_records(max_groups=4, max_group_size=3, huge=False, max_steps=3,
                                       value=fields["value"] if same else None,
                                       state=fields["state"] if same else None, tokens=False, action=False))
        gids = draw(st.lists(st.sampled_from(("g0", "g1", "g2", "g3", "任务")), min_size=4, max_size=4, unique=True))
        names = {}
        for r in records:
            if r["group_id"] not in names:
                names[r["group_id"]] = gids[len(names)]
            r["group_id"] = names[r["group_id"]]
            r["outcome"] = float(draw(st.sampled_from((0.0, 0.0, 1.0))))
            r["episode_id"] = f"b{b}-{r['episode_id']}"
        batches.append(records)
    return batches


def test_replay_grid_covers_every_choice():
    grid_covers("replay", REPLAY_GRID)


@pytest.mark.parametrize("params", REPLAY_GRID, ids=[str(g) for g in REPLAY_GRID])
@SETTINGS
@given(batches=batch_sequences())
def test_replay_equals_oracle(params, batches):
    outs = replay_batches(batches, **params)
    wants = ref.replay(batches, **params)
    for records, got, want in zip(batches, outs, wants):
        assert got.weight.tolist() == want["weight"]
        assert dict(got.diagnostics) == want["diagnostics"]
        if want["added"]:
            assert same_rollouts(got.rollouts, sc.Rollouts.from_records(list(records) + want["added"]))
        else:
            assert got.rollouts is None
        memory = {g["group_id"]: [r["episode_id"] for r in g["episodes"]] for g in got.state["groups"]}
        assert memory == {gid: [r["episode_id"] for r in rs] for gid, rs in want["memory"].items()}
        assert [g["group_id"] for g in got.state["groups"]] == want["order"]
        # bounds
        assert len(got.state["groups"]) <= params.get("max_groups", 1000)
        assert all(len(g["episodes"]) <= params.get("per_group", 1) for g in got.state["groups"])
        # the state is plain JSON
        assert json.loads(json.dumps(got.state, allow_nan=False)) == got.state


def test_replay_inserts_only_when_memory_has_a_success():
    b0 = [rec("x0", "t", 0.0), rec("x1", "t", 0.0), rec("y0", "u", 1.0, 2), rec("y1", "u", 0.0)]
    out0 = run(sc.Rollouts.from_records(b0), "replay")
    # t failed entirely but nothing is remembered yet; u's success y0 is remembered
    assert out0.rollouts is None and out0.weight.tolist() == [1, 1, 1, 1]
    assert out0.diagnostics["failed_groups"] == 1 and out0.diagnostics["unrepaired_groups"] == 1
    assert [(g["group_id"], [r["episode_id"] for r in g["episodes"]]) for g in out0.state["groups"]] == [("u", ["y0"])]
    b1 = [rec("z0", "u", 0.0), rec("z1", "t", 0.0), rec("z2", "u", 0.0)]
    out1 = run(sc.Rollouts.from_records(b1), "replay", state=out0.state, replay_weight=0.5)
    # u failed entirely and has y0 in memory: appended as a new episode of u, weight 0.5
    assert out1.rollouts.episode_id.to_pylist() == ["z0", "z1", "z2", "y0#replay1"]
    assert out1.rollouts.group_id.to_pylist() == ["u", "t", "u", "u"]
    assert out1.rollouts.outcome.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert out1.rollouts.step_counts.tolist() == [1, 1, 1, 2]
    assert out1.weight.tolist() == [1, 1, 1, 0.5]
    assert out1.diagnostics["inserted"] == 1 and out1.diagnostics["unrepaired_groups"] == 1
    assert out1.rollouts.take(range(3)).equals(sc.Rollouts.from_records(b1))
    assert out1.state["batch"] == 2


def test_replay_inserts_the_most_recent_success_and_keeps_per_group():
    batches = [
        [rec("a", "t", 1.0), rec("b", "t", 1.0), rec("c", "t", 0.0)],
        [rec("d", "t", 1.0), rec("e", "t", 0.5)],
        [rec("f", "t", 0.0), rec("g", "t", 0.0)],
    ]
    outs = replay_batches(batches, per_group=2)
    assert [r["episode_id"] for r in outs[1].state["groups"][0]["episodes"]] == ["b", "d"]
    assert outs[2].rollouts.episode_id.to_pylist() == ["f", "g", "d#replay2"]
    # a group whose outcomes differ is not collapsed, even if every episode failed
    out = run(sc.Rollouts.from_records([rec("h", "t", 0.0), rec("i", "t", 0.5)]), "replay", state=outs[1].state)
    assert out.rollouts is None and out.diagnostics["failed_groups"] == 0


def test_replay_memory_bounds_evict_the_least_recently_updated_group():
    batches = [
        [rec("a", "g1", 1.0), rec("b", "g2", 1.0)],
        [rec("c", "g3", 1.0), rec("d", "g1", 1.0)],
        [rec("e", "g4", 1.0)],
    ]
    outs = replay_batches(batches, max_groups=2)
    order = [[g["group_id"] for g in o.state["groups"]] for o in outs]
    # after batch 1: g1, g2 updated in batch 0 (g1 first), then g3, g1 in batch 1 -> g2 goes;
    # after batch 2: g4 is the most recent, g3 the least recent -> g3 goes
    assert order == [["g1", "g2"], ["g3", "g1"], ["g1", "g4"]]
    assert [o.diagnostics["forgotten_groups"] for o in outs] == [0, 1, 1]


def test_replay_state_round_trip_and_input_state_untouched():
    b0 = [rec("a", "t", 1.0, 2, value=0.5)]
    b0[0]["meta"] = {"note": "ünï", "n": [1, 2]}
    out0 = run(sc.Rollouts.from_records(b0), "replay")
    text = json.dumps(out0.state, allow_nan=False)
    state = json.loads(text)
    frozen = json.loads(text)
    b1 = [rec("b", "t", 0.0, 1, value=0.1)]
    direct = run(sc.Rollouts.from_records(b1), "replay", state=out0.state)
    again = run(sc.Rollouts.from_records(b1), "replay", state=state)
    assert state == frozen  # the filter copies the state it is given
    assert direct.state == again.state
    assert direct.rollouts.equals(again.rollouts)
    assert json.loads(direct.rollouts.meta[1].as_py()) == {"note": "ünï", "n": [1, 2]}


def test_replay_unique_ids_and_incompatible_memory():
    out0 = run(sc.Rollouts.from_records([rec("a", "t", 1.0)]), "replay")
    # the new id is taken already: a further suffix
    b1 = [rec("a#replay1", "t", 0.0)]
    out1 = run(sc.Rollouts.from_records(b1), "replay", state=out0.state)
    assert out1.rollouts.episode_id.to_pylist() == ["a#replay1", "a#replay1#2"]
    # a batch with other step fields cannot take the remembered record: skipped, counted
    b2 = [rec("c", "t", 0.0, 1, value=0.3)]
    out2 = run(sc.Rollouts.from_records(b2), "replay", state=out0.state)
    assert out2.rollouts is None and out2.diagnostics["incompatible"] == 1
    assert out2.diagnostics["unrepaired_groups"] == 1


def test_replay_through_a_pipeline_gives_the_collapsed_group_advantages():
    pipe = sc.Pipeline.build("grpo", filters=["replay"])
    first = pipe.run(sc.Rollouts.from_records([rec("a", "t", 1.0), rec("b", "t", 0.0)]))
    batch = sc.Rollouts.from_records([rec("c", "t", 0.0), rec("d", "t", 0.0), rec("e", "t", 0.0)])
    assert np.all(sc.estimate(batch, "grpo").episode_advantage == 0)  # collapsed on its own
    res = pipe.run(batch, first.state)
    assert res.rollouts.n_episodes == 4 and res.rollouts.episode_id.to_pylist()[-1] == "a#replay1"
    adv = res.credit.episode_advantage
    assert np.all(adv != 0) and adv[3] > 0 and np.all(adv[:3] < 0)
    np.testing.assert_array_equal(adv, sc.estimate(res.rollouts, "grpo").episode_advantage)
    assert res.credit.episode_weight.tolist() == [1, 1, 1, 1]
    json.loads(res.state.to_json())
    # replay, then zero_variance: repaired groups stay, the rest of the collapsed ones go
    pipe2 = sc.Pipeline.build("grpo", filters=["replay", "zero_variance"])
    st1 = pipe2.run(sc.Rollouts.from_records([rec("a", "t", 1.0), rec("b", "t", 0.0)])).state
    res2 = pipe2.run(sc.Rollouts.from_records(
        [rec("c", "t", 0.0), rec("d", "t", 0.0), rec("x", "u", 0.0), rec("y", "u", 0.0)]), st1)
    assert res2.credit.episode_weight.tolist() == [1, 1, 0, 0, 1]


def test_replay_parameter_and_state_errors():
    ro = sc.Rollouts.from_records([rec("a", "t", 0.0)])
    for params, fragment in [
        ({"per_group": 0}, "per_group=0"),
        ({"max_groups": 0}, "max_groups=0"),
        ({"replay_weight": 0.0}, "replay_weight=0.0"),
        ({"tolerance": -0.1}, "tolerance=-0.1"),
    ]:
        with pytest.raises(FilterError, match="filter 'replay'") as exc:
            run(ro, "replay", **params)
        assert fragment in str(exc.value)
    for bad in ({}, {"version": 2}, {"version": 1, "batch": 0, "tick": 0, "groups": [{"group_id": 1}]},
                {"version": 1, "batch": -1, "tick": 0, "groups": []}, [1]):
        with pytest.raises(FilterError, match="filter 'replay': the state"):
            run(ro, "replay", state=bad)
    broken = {"version": 1, "batch": 1, "tick": 1,
              "groups": [{"group_id": "t", "tick": 0, "episodes": [{"episode_id": "a", "group_id": "t"}]}]}
    with pytest.raises(FilterError, match="filter 'replay': the state holds an invalid remembered episode"):
        run(ro, "replay", state=broken)
    with pytest.raises(FilterError, match="'zero_variance' keeps no state"):
        run(ro, "zero_variance", state={})
