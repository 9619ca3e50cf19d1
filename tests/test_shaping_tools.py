"""tool_call (ToolRL): vectorised == loop oracle, hand-worked rewards, parsing of the accepted
shapes, ranges and invariants, and every parameter and data error."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
from checks import close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import shaping_tools as ref

import stepcredit as sc
from stepcredit.pipeline import Pipeline, PipelineError
from stepcredit.shaping import ShapingError, apply_transform, get_transform
from stepcredit.shaping.tools import _hungarian, _max_assignment, parse_tool_calls, tool_call_scores

SETTINGS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ("search", "calc", "weather", "日本")
KEYS = ("q", "n", "unit", "flag")
VALUES = st.one_of(
    st.sampled_from(("x", "1", "paris", "", "é🙂")), st.sampled_from((1, 1.0, 2, 0, -3)),
    st.booleans(), st.none(), st.lists(st.sampled_from((1, "a")), max_size=2),
    st.dictionaries(st.sampled_from(("k", "j")), st.sampled_from((1, True, "v")), max_size=2),
)
MALFORMED = (
    "not json", "{bad", '{"name": 3}', '"search"', "42", "null", '{"arguments": {}}',
    '[{"name": "calc", "arguments": "[1]"}]', '{"name": "calc", "arguments": "{oops"}',
    '<tool_call>\n{"name": "calc"}\n', "<tool_call></tool_call>x</tool_call>", "<tool_call>\nnope\n</tool_call>",
    '[{"name": "calc"}, 3]', "",
)


@st.composite
def calls(draw, max_calls=3):
    n = draw(st.integers(0, max_calls))
    return [
        (draw(st.sampled_from(NAMES)), draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)))
        for _ in range(n)
    ]


@st.composite
def mutated(draw, base):
    """A prediction near the reference: some calls renamed, dropped, re-valued, added, shuffled."""
    out = [(n, dict(a)) for n, a in base]
    for i in range(len(out)):
        op = draw(st.sampled_from(("keep", "keep", "rename", "drop_key", "value", "add_key")))
        n, a = out[i]
        if op == "rename":
            n = draw(st.sampled_from(NAMES))
        elif op == "drop_key" and a:
            a.pop(draw(st.sampled_from(sorted(a))))
        elif op == "value" and a:
            a[draw(st.sampled_from(sorted(a)))] = draw(VALUES)
        elif op == "add_key":
            a[draw(st.sampled_from(KEYS))] = draw(VALUES)
        out[i] = (n, a)
    if out and draw(st.booleans()):
        out.pop(draw(st.integers(0, len(out) - 1)))
    if draw(st.booleans()):
        out.extend(draw(calls(max_calls=2)))
    return draw(st.permutations(out))


@st.composite
def render(draw, cs):
    """Calls as text in one of the accepted shapes."""
    def one(c, key=None):
        key = key or draw(st.sampled_from(("arguments", "parameters", "args")))
        args = json.dumps(c[1]) if draw(st.integers(0, 3)) == 0 else c[1]
        if not c[1] and draw(st.booleans()):
            return {"name": c[0]}  # no arguments field
        return {"name": c[0], key: args}

    shape = draw(st.sampled_from(("object", "list", "openai", "tagged", "tagged_list")))
    if shape == "object" and len(cs) == 1:
        return json.dumps(one(cs[0]), ensure_ascii=draw(st.booleans()))
    if shape == "openai":
        items = [{"type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for n, a in cs]
        return json.dumps({"role": "assistant", "tool_calls": items})
    if shape == "tagged" and cs:
        lines = "\n".join(json.dumps(one(c, "parameters")) for c in cs)
        return f"<think>let me see</think>\n<tool_call>\n{lines}\n</tool_call>"
    if shape == "tagged_list":
        return f"<tool_call>{json.dumps([one(c) for c in cs])}</tool_call>\n<response>ok</response>"
    return json.dumps([one(c) for c in cs])


@st.composite
def tool_records(draw):
    records = []
    for e in range(draw(st.integers(1, 5))):
        steps = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(("call", "call", "call", "none", "empty")))
            if kind == "none":
                reference, gt = draw(st.sampled_from(("", "  ", "null"))), None
            elif kind == "empty":
                reference, gt = draw(st.sampled_from(("[]", "<tool_call>\n</tool_call>"))), []
            else:
                gt = draw(calls().filter(bool))
                reference = draw(render(gt))
            choice = draw(st.sampled_from(("near", "near", "same", "other", "malformed", "nocall")))
            if choice == "malformed":
                action = draw(st.sampled_from(MALFORMED))
            elif choice == "nocall":
                action = "[]"
            elif choice == "other" or gt is None:
                action = draw(render(draw(calls())))
            elif choice == "same":
                action = draw(render(gt))
            else:
                action = draw(render(draw(mutated(gt))))
            step = {"action": action, "reference": reference}
            if draw(st.booleans()):
                step["reward"] = draw(st.sampled_from((0.0, 1.0, -0.5)))
            steps.append(step)
        records.append({"episode_id": f"ep{e}", "group_id": f"g{e % 2}", "outcome": draw(st.sampled_from((0.0, 1.0, 1e6))), "steps": steps})
    return records


GRID = [
    {},
    {"matching": "greedy", "name_match": "multiset"},
    {"empty_reference": "match", "target": "outcome", "format_max": 0.5, "format_min": -1.0},
    {"correct_max": 1.0, "correct_min": -1.0, "matching": "greedy"},
]


def rec(*steps, outcome=0.0, eid="e0"):
    return {"episode_id": eid, "group_id": "g", "outcome": outcome,
            "steps": [{"action": a, "reference": r} for a, r in steps]}


def added(records, **params):
    ro = sc.Rollouts.from_records(records)
    return apply_transform(ro, "tool_call", **params).rollouts.reward - ro.reward


def call(name, **args):
    return json.dumps({"name": name, "arguments": args})


@pytest.mark.parametrize("params", GRID, ids=[str(g) for g in GRID])
@SETTINGS
@given(records=tool_records())
def test_vectorised_equals_oracle(params, records):
    out = apply_transform(sc.Rollouts.from_records(records), "tool_call", **params)
    outcomes, rewards = ref.tool_call(records, **params)
    close(out.rollouts.outcome, outcomes, "outcome")
    close(out.rollouts.reward, rewards, "reward")


def test_grid_covers_every_choice():
    for p in get_transform("tool_call").params.values():
        if p.choices:
            assert {g.get(p.name, p.default) for g in GRID} == set(p.choices), p.name


# ---------------------------------------------------------------------- hand-worked cases
def test_hand_worked_one_wrong_value():
    # reference search(q="x", n=3), action search(q="x", n=4):
    #   r_name = 1; keys {q,n} vs {q,n}: 1; values: q equal, n not: 1 -> R_max = 3
    #   S_max = 1 + |G| + |keys| = 1 + 1 + 2 = 4; R_correct = 6·3/4 − 3 = 1.5; + format 1 = 2.5
    assert added([rec((call("search", q="x", n=4), call("search", q="x", n=3)))]).tolist() == [2.5]


def test_hand_worked_missing_call_and_extra_key():
    # reference [search(q="x"), calc(expr="1+1")], action [calc(expr="1+1", extra=1)]:
    #   r_name = |{calc}| / |{search, calc}| = 1/2; calc pair: keys {expr}/{expr, extra} = 1/2,
    #   value expr equal = 1; search unmatched: 0 -> R_max = 2; S_max = 1 + 2 + 2 = 5
    #   R_correct = 6·2/5 − 3 = −0.6; + format 1 = 0.4
    reference = json.dumps([{"name": "search", "arguments": {"q": "x"}}, {"name": "calc", "arguments": {"expr": "1+1"}}])
    action = json.dumps([{"name": "calc", "parameters": {"expr": "1+1", "extra": 1}}])
    np.testing.assert_allclose(added([rec((action, reference))]), [0.4], rtol=1e-15)


def test_hand_worked_optimal_versus_greedy_matching():
    # reference [f(a=1), f(a=1, b=2)], action [f(a=1, b=2), f(a=9)]; S_max = 1 + 2 + 3 = 6, r_name = 1
    #   pair scores: G0·P0 = 1/2 + 1 = 1.5, G0·P1 = 1 + 0 = 1, G1·P0 = 1 + 2 = 3, G1·P1 = 1/2 + 0 = 0.5
    #   optimal: G0–P1 + G1–P0 = 4 -> R_max = 5 -> 6·5/6 − 3 = 2 (+1 format = 3)
    #   greedy (code): G0 takes P0 (1.5), G1 gets P1 (0.5) -> R_max = 3 -> 0 (+1 = 1)
    reference = json.dumps([{"name": "f", "arguments": {"a": 1}}, {"name": "f", "arguments": {"a": 1, "b": 2}}])
    action = json.dumps([{"name": "f", "arguments": {"a": 1, "b": 2}}, {"name": "f", "arguments": {"a": 9}}])
    assert added([rec((action, reference))]).tolist() == [3.0]
    assert added([rec((action, reference))], matching="greedy").tolist() == [1.0]


def test_hand_worked_set_versus_multiset_names():
    # reference [f(), f()], action [f()]: S_max = 1 + 2 + 0 = 3; one pair matched, empty key
    #   sets on both sides: 1 -> set names: r_name = 1, R_max = 2, 6·2/3 − 3 = 1 (+1 = 2)
    #   multiset names (code): r_name = 1/(2 + 1 − 1) = 1/2, R_max = 1.5 -> 0 (+1 = 1)
    reference, action = '[{"name": "f", "arguments": {}}, {"name": "f"}]', '{"name": "f", "parameters": {}}'
    assert added([rec((action, reference))]).tolist() == [2.0]
    assert added([rec((action, reference))], name_match="multiset").tolist() == [1.0]


def test_hand_worked_format_failures_and_references_without_calls():
    ok = call("search", q="x")
    steps = [
        ("I will search for x", ok),   # malformed: format 0 + correctness −3 = −3
        (ok, ""),                      # no reference: nothing
        ("[]", "[]"),                  # reference without a call, zero rule: format only = 1
        ("no json", "[]"),             # ... malformed: 0
        (ok, "[]"),                    # ... a call where none was due: format 1
        (ok, ok),                      # exact: 1 + 3 = 4
    ]
    assert added([rec(*steps)]).tolist() == [-3.0, 0.0, 1.0, 0.0, 1.0, 4.0]
    # "match": declining to call when no call is due earns correct_max, calling earns correct_min
    assert added([rec(*steps)], empty_reference="match").tolist() == [-3.0, 0.0, 4.0, -3.0, -2.0, 4.0]


def test_value_equality_is_json_equality():
    # 1 == 1.0, but true != 1 and "1" != 1: each mismatch costs one value point of S_max = 3
    def r(value):
        return added([rec((call("f", a=value), call("f", a=1)))])[0]
    assert r(1.0) == r(1) == 4.0
    assert r(True) == r("1") == 1.0 + 6 * 2 / 3 - 3


def test_scales_are_parameters():
    ok = call("f", a=1)
    got = added([rec((ok, ok), ("x", ok))], format_max=0.5, format_min=-0.5, correct_max=1.0, correct_min=-1.0)
    assert got.tolist() == [1.5, -1.5]


def test_target_outcome_sums_into_the_outcome_and_keeps_step_rewards():
    ok = call("f", a=1)
    records = [rec((ok, ok), ("x", ok), outcome=1.0, eid="a"), rec((ok, ""), outcome=0.0, eid="b")]
    records[0]["steps"][0]["reward"] = 0.25
    records[0]["steps"][1]["reward"] = 0.0
    records[1]["steps"][0]["reward"] = 0.0
    ro = sc.Rollouts.from_records(records)
    out = apply_transform(ro, "tool_call", target="outcome")
    assert out.rollouts.outcome.tolist() == [1.0 + 4.0 - 3.0, 0.0]
    np.testing.assert_array_equal(out.rollouts.reward, ro.reward)
    step = apply_transform(ro, "tool_call")
    assert step.rollouts.reward.tolist() == [4.25, -3.0, 0.0]
    assert step.diagnostics == {"referenced_steps": 2, "malformed_actions": 1, "format_rate": 0.5,
                                "mean_correct": 0.0, "exact_rate": 0.5, "added": 1.0}


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, want",
    [
        ('{"name": "s", "arguments": {"q": 1}}', [("s", {"q": 1})]),
        ('{"name": "s", "parameters": {"q": 1}}', [("s", {"q": 1})]),
        ('{"name": "s", "args": {"q": 1}}', [("s", {"q": 1})]),
        ('{"name": "s"}', [("s", {})]),
        ('{"name": "s", "arguments": "{\\"q\\": 1}"}', [("s", {"q": 1})]),
        ('{"type": "function", "function": {"name": "s", "arguments": "{}"}}', [("s", {})]),
        ('{"function_call": {"name": "s", "arguments": "{\\"q\\": 2}"}}', [("s", {"q": 2})]),
        ('{"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}, {"name": "b"}]}',
         [("a", {}), ("b", {})]),
        ("[]", []),
        ('  [{"name": "a"}, {"name": "b", "arguments": {"x": [1, 2]}}]\n', [("a", {}), ("b", {"x": [1, 2]})]),
        ('<think>t</think>\n<tool_call>\n{"name": "a", "parameters": {"x": 1}}\n{"name": "b", "parameters": {}}\n</tool_call>',
         [("a", {"x": 1}), ("b", {})]),
        ('<tool_call>[{"name": "a"}]</tool_call> then <tool_call>{"name": "b"}</tool_call>', [("a", {}), ("b", {})]),
        ("<tool_call>\n\n</tool_call>", []),
        ('<tool_call>\n{\n  "name": "a",\n  "arguments": {"x": 1}\n}\n{"name": "b"} [{"name": "c"}]\n</tool_call>',
         [("a", {"x": 1}), ("b", {}), ("c", {})]),
    ],
)
def test_accepted_shapes(text, want):
    assert parse_tool_calls(text) == want
    assert ref.parse(text) == want


@pytest.mark.parametrize("text", [*MALFORMED, None, 7, "{" * 5000])
def test_malformed_text_is_none(text):
    assert parse_tool_calls(text) is None


def test_scores_helper():
    gt = [("f", {"a": 1})]
    assert tool_call_scores(gt, [("f", {"a": 1})]) == (True, 1.0)
    assert tool_call_scores(gt, None) == (False, 0.0)
    ok, frac = tool_call_scores([], [])
    assert ok and frac != frac  # NaN: no correctness reward under "zero"


# ---------------------------------------------------------------------- invariants
@FEW
@given(records=tool_records())
def test_rewards_in_range_exact_match_is_maximal_and_order_free(records):
    ro = sc.Rollouts.from_records(records)
    got = apply_transform(ro, "tool_call").rollouts.reward - ro.reward
    assert np.all(got >= -3.0 - 1e-12) and np.all(got <= 4.0 + 1e-12)
    same = copy.deepcopy(records)
    shuffled = copy.deepcopy(records)
    for r_same, r_shuf in zip(same, shuffled):
        for s_same, s_shuf in zip(r_same["steps"], r_shuf["steps"]):
            s_same["action"] = s_same["reference"]
            calls_ = parse_tool_calls(s_shuf["action"])
            if calls_ is not None:  # the same calls in reverse order: optimal matching ignores order
                s_shuf["action"] = json.dumps([{"name": n, "arguments": a} for n, a in reversed(calls_)])
    exact = added(same)
    refs = [s["reference"] for r in records for s in r["steps"]]
    for x, reference in zip(exact, refs):
        gt = ref.parse(reference)
        assert x == (0.0 if gt is None else 1.0 if gt == [] else 4.0)
    np.testing.assert_allclose(added(shuffled), got, rtol=1e-12, atol=1e-12)


@FEW
@given(records=tool_records())
def test_inputs_unmodified_and_deterministic(records):
    before = copy.deepcopy(records)
    ro = sc.Rollouts.from_records(records)
    a = apply_transform(ro, "tool_call")
    b = apply_transform(ro, "tool_call")
    np.testing.assert_array_equal(a.rollouts.reward, b.rollouts.reward)
    assert a.diagnostics == b.diagnostics and records == before
    assert ro.equals(sc.Rollouts.from_records(records))


# ---------------------------------------------------------------------- errors
def test_bad_reference_is_a_data_error_naming_episode_and_step():
    ok = call("f")
    with pytest.raises(sc.RolloutsError) as err:
        added([rec((ok, ok), (ok, "{not a call"), eid="ép")])
    assert err.value.record == "episode 'ép', step 1" and err.value.field == "steps[].reference"
    assert "transform 'tool_call'" in err.value.problem


@pytest.mark.parametrize("missing", ["action", "reference"])
def test_missing_field_names_it_and_the_transform(missing):
    records = [rec((call("f"), call("f")))]
    del records[0]["steps"][0][missing]
    with pytest.raises(sc.MissingColumnError, match=rf"transform 'tool_call' needs the step field '{missing}'"):
        added(records)


@pytest.mark.parametrize(
    "params, where",
    [
        ({"format_min": 2.0}, "format_min"),
        ({"correct_min": 4.0}, "correct_min"),
        ({"correct_max": -4.0}, "correct_min"),
        ({"matching": "hungarian"}, "matching"),
        ({"name_match": "bag"}, "name_match"),
        ({"empty_reference": "skip"}, "empty_reference"),
        ({"target": "process"}, "target"),
        ({"format_max": float("inf")}, "format_max"),
    ],
)
def test_parameter_errors_name_the_transform_and_parameter(params, where):
    with pytest.raises(ShapingError, match=rf"transform 'tool_call'.*{where}"):
        added([rec((call("f"), call("f")))], **params)


def test_pipeline_checks_fields_and_target():
    ro = sc.Rollouts.from_records([rec((call("f"), call("f")))])
    with pytest.raises(PipelineError, match="tool_call"):  # step rewards shaped for an outcome-only estimator
        Pipeline.build("grpo", transforms=["tool_call"]).check(ro)
    Pipeline.build("grpo", transforms=[("tool_call", {"target": "outcome"})]).check(ro)
    Pipeline.build("gae", transforms=["tool_call"], params={}).check(ro.replace_columns(value=np.zeros(1)))
    plain = sc.Rollouts.from_records([{"episode_id": "e", "group_id": "g", "outcome": 0.0, "steps": [{"action": "a"}]}])
    with pytest.raises(sc.MissingColumnError, match=r"transform 'tool_call' \(#1\).*'reference'"):
        Pipeline.build("grpo", transforms=[("tool_call", {"target": "outcome"})]).check(plain)


@FEW
@given(w=st.integers(1, 6).flatmap(lambda r: st.lists(
    st.lists(st.one_of(st.sampled_from((0.0, 1.0, 1.5, 2.0)), st.floats(0, 4)), min_size=r, max_size=r),
    min_size=1, max_size=6)))
def test_assignment_is_the_exhaustive_maximum(w):
    # many same-name calls: the Hungarian algorithm (and the small exhaustive path) against brute force
    rows, cols = len(w), len(w[0])
    k = min(rows, cols)
    best = max(
        sum(w[i][j] for i, j in zip(rs, cs))
        for rs in itertools.combinations(range(rows), k) for cs in itertools.permutations(range(cols), k)
    )
    assert abs(_hungarian(np.array(w)) - best) <= 1e-9 * max(1.0, best)
    assert abs(_max_assignment(w) - best) <= 1e-9 * max(1.0, best)
