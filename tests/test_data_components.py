"""Episode reward components (``rewards`` / ``Rollouts.episode_columns``) and the step
``reference`` key field.

Covers: round trips through every route (JSONL fast and precise, Parquet, Arrow, records,
arrays) keep components and references exactly; the JSONL fast path stays fast for valid
components; ``take``, ``equals``, ``replace_episode_columns``, ``has`` / ``require`` /
``column`` / ``episode_column`` and the ``MissingColumnError`` messages; every error path
(records, JSONL fast and precise, Parquet, arrays, the constructor) names source, record and
field: partial presence, non-finite, booleans, non-numbers, bad names; the ``reference`` key is
hashed like the other keys; the example file reads as before; the default hypothesis strategy
draws neither components nor references.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepcredit as sc
import stepcredit.data.io as sio
from stepcredit import Rollouts, RolloutsError, hash_keys
from stepcredit.data import COMPONENT_PREFIX, KEY_COLUMNS, MissingColumnError
from stepcredit.data.io import _read_jsonl_precise
from strategies import COMPONENT_NAMES, REFERENCES, rollout_records

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rollouts.jsonl"


# ---------------------------------------------------------------------- data and helpers
def comp_records() -> list[dict]:
    """Three episodes with two components (ints, -0.0, ±1e6, near-equal) and a reference."""
    ref = '{"name": "search", "parameters": {"query": "Wetter 🙂", "n": 3}}'
    return [
        {"episode_id": "e0", "group_id": "g0", "outcome": 1.0,
         "rewards": {"format": 1.0, "correct": 0.3},
         "steps": [{"action": ref, "reference": ref, "value": 0.5},
                   {"action": "answer[1]", "reference": "answer[2]", "value": 0.25}]},
        {"episode_id": "e1", "group_id": "g0", "outcome": 0.0,
         "rewards": {"correct": 0.3 + 1e-7, "format": -0.0},
         "steps": [{"action": "x", "reference": "任务", "value": -1.0}]},
        {"episode_id": "e2", "group_id": "g1", "outcome": 0.5,
         "rewards": {"format": -1e6, "correct": 1e6},
         "steps": [{"action": "", "reference": "", "value": 0.0}]},
    ]


def write_jsonl(path: Path, recs: list, blank_lines: bool = True) -> None:
    """One JSON value per line, with a blank line before every other record."""
    lines = []
    for i, r in enumerate(recs):
        if blank_lines and i % 2:
            lines.append("")
        lines.append(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def assert_same(a: Rollouts, b: Rollouts, label: str = "") -> None:
    """Exact equality, including the sign of zero and the dtypes of components."""
    assert a.equals(b) and b.equals(a), f"{label}: {a!r} != {b!r}"
    assert list(a.episode_columns) == list(b.episode_columns), label
    for k, v in a.episode_columns.items():
        w = b.episode_columns[k]
        assert v.dtype == w.dtype == np.float64, (label, k)
        assert np.array_equal(np.signbit(v), np.signbit(w)), (label, k)
    for k in a.key_values:
        assert a.key_values[k].type == b.key_values[k].type, (label, k)
        assert a.key_values[k].to_pylist() == b.key_values[k].to_pylist(), (label, k)


def all_routes(ro: Rollouts, tmp: Path) -> dict[str, Rollouts]:
    """The same rollouts through every reader and writer."""
    sc.write_rollouts(ro, tmp / "r.jsonl")
    sc.write_rollouts(ro, tmp / "r.parquet")
    return {
        "jsonl": sc.read_rollouts(tmp / "r.jsonl"),
        "jsonl-precise": _read_jsonl_precise(tmp / "r.jsonl"),
        "parquet": sc.read_rollouts(tmp / "r.parquet"),
        "parquet-rows": Rollouts.from_arrow(pq.read_table(tmp / "r.parquet")),
        "arrow": Rollouts.from_arrow(ro.to_arrow()),
        "records": Rollouts.from_records(ro.to_records()),
        "records-json": Rollouts.from_records(json.loads(json.dumps(ro.to_records()))),
    }


def arrays_of(recs: list[dict], **kw) -> Rollouts:
    """``from_arrays`` on the columns of records (every step field in every step)."""
    steps = [s for r in recs for s in r["steps"]]
    names = sorted({k for s in steps for k in s})
    comps = sorted({k for r in recs for k in r.get("rewards", {})})
    kw.setdefault("episode_columns", {c: [float(r["rewards"][c]) for r in recs] for c in comps})
    return Rollouts.from_arrays(
        outcome=[r["outcome"] for r in recs],
        group_id=[r["group_id"] for r in recs],
        episode_id=[r["episode_id"] for r in recs],
        step_counts=[len(r["steps"]) for r in recs],
        **{n: [s[n] for s in steps] for n in names},
        **kw,
    )


def errors_of(recs: list, tmp: Path) -> dict[str, RolloutsError]:
    """The error of each route: records, JSONL (fast and precise), Parquet rows of the records
    (only when Arrow can build a table from them)."""
    out = {}
    with pytest.raises(RolloutsError) as e:
        Rollouts.from_records(recs)
    out["records"] = e.value
    p = tmp / "bad.jsonl"
    write_jsonl(p, recs)
    with pytest.raises(RolloutsError) as e:
        sc.read_rollouts(p)
    out["jsonl"] = e.value
    with pytest.raises(RolloutsError) as e:
        _read_jsonl_precise(p)
    out["jsonl-precise"] = e.value
    return out


def base(i: int, **kw) -> dict:
    return {"episode_id": f"e{i}", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}], **kw}


# ---------------------------------------------------------------------- round trips
def test_components_in_memory():
    ro = Rollouts.from_records(comp_records())
    assert list(ro.episode_columns) == ["correct", "format"]  # name order
    np.testing.assert_array_equal(ro.episode_columns["format"], [1.0, -0.0, -1e6])
    np.testing.assert_array_equal(ro.episode_columns["correct"], [0.3, 0.3 + 1e-7, 1e6])
    assert np.signbit(ro.episode_columns["format"][1])
    assert ro.episode_fields == ("rewards.correct", "rewards.format")
    assert ro.step_fields == ("action", "reference", "value")  # components are not step fields
    for arr in ro.episode_columns.values():
        assert arr.dtype == np.float64 and not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1.0
    assert "episode_fields=['rewards.correct', 'rewards.format']" in repr(ro)
    assert ro.episode_fields == ("rewards.correct", "rewards.format")


def test_round_trip_every_route(tmp_path):
    recs = comp_records()
    ro = Rollouts.from_records(recs)
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)
    # hand-written JSONL with blank lines, both readers
    write_jsonl(tmp_path / "h.jsonl", recs)
    assert_same(ro, sc.read_rollouts(tmp_path / "h.jsonl"), "hand jsonl")
    assert_same(ro, _read_jsonl_precise(tmp_path / "h.jsonl"), "hand jsonl precise")
    assert_same(ro, arrays_of(recs), "arrays")
    # to_records gives back the input (component key order aside), -0.0 included
    back = ro.to_records()
    assert back == recs
    assert [list(r["rewards"]) for r in back] == [["correct", "format"]] * 3
    assert math_copysign(back[1]["rewards"]["format"]) == -1.0
    # the Parquet column is a struct of float64 fields
    t = pq.read_table(tmp_path / "r.parquet")
    assert t.schema.field("rewards").type == pa.struct([("correct", pa.float64()), ("format", pa.float64())])


def math_copysign(x: float) -> float:
    return float(np.copysign(1.0, x))


def test_integer_components_are_float64(tmp_path):
    recs = [base(0, rewards={"a": 1, "b": 2**53 + 1}), base(1, rewards={"a": -3, "b": 0})]
    ro = Rollouts.from_records(recs)
    np.testing.assert_array_equal(ro.episode_columns["a"], [1.0, -3.0])
    assert ro.episode_columns["b"][0] == float(2**53 + 1)
    write_jsonl(tmp_path / "i.jsonl", recs)
    assert_same(ro, sc.read_rollouts(tmp_path / "i.jsonl"), "fast")
    assert_same(ro, _read_jsonl_precise(tmp_path / "i.jsonl"), "precise")
    # int arrays in from_arrays
    ra = Rollouts.from_arrays(
        outcome=[1.0, 1.0], group_id=["g", "g"], episode_id=["e0", "e1"], step_counts=[1, 1],
        state=["s", "s"], episode_columns={"a": np.array([1, -3]), "b": [2**53 + 1, 0]},
    )
    assert_same(ro, ra, "arrays")


def test_fast_path_is_used_for_valid_components(tmp_path, monkeypatch):
    p = tmp_path / "ok.jsonl"
    write_jsonl(p, comp_records())
    expected = _read_jsonl_precise(p)

    def fail(path):
        raise AssertionError("the precise reader should not be needed")

    monkeypatch.setattr(sio, "_read_jsonl_precise", fail)
    assert_same(expected, sc.read_rollouts(p), "fast only")


def test_no_components_anywhere(tmp_path):
    recs = [base(0), base(1)]
    ro = Rollouts.from_records(recs)
    assert ro.episode_columns == {} and ro.episode_fields == ()
    assert "rewards" not in ro.to_arrow().column_names
    assert all("rewards" not in r for r in ro.to_records())
    assert "episode_fields" not in repr(ro)
    # "rewards": {} or null everywhere, or a component null everywhere: no components
    for variant in ({}, None):
        r2 = Rollouts.from_records([base(0, rewards=variant), base(1, rewards=variant)])
        assert_same(ro, r2, f"rewards={variant!r}")
        write_jsonl(tmp_path / "v.jsonl", [base(0, rewards=variant), base(1, rewards=variant)])
        assert_same(ro, sc.read_rollouts(tmp_path / "v.jsonl"), f"jsonl rewards={variant!r}")
    nulls = [base(0, rewards={"a": None}), base(1, rewards={"a": None})]
    assert_same(ro, Rollouts.from_records(nulls), "component null everywhere")
    assert_same(ro, arrays_of([base(0), base(1)], episode_columns={"a": [None, None]}), "arrays nulls")
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=rollout_records(components=True, max_groups=3, max_group_size=3, max_steps=3, huge=False))
def test_hypothesis_round_trip(recs):
    ro = Rollouts.from_records(recs)
    names = sorted(recs[0]["rewards"])
    assert list(ro.episode_columns) == names
    assert ro.episode_fields == tuple(COMPONENT_PREFIX + n for n in names)
    for n in names:
        np.testing.assert_array_equal(ro.episode_columns[n], [float(r["rewards"][n]) for r in recs])
        assert ro.has(f"rewards.{n}") and ro.episode_column(n) is ro.episode_columns[n]
    if "reference" in recs[0]["steps"][0]:
        refs = [s["reference"] for r in recs for s in r["steps"]]
        assert ro.key_values["reference"].to_pylist() == refs
        np.testing.assert_array_equal(ro.keys["reference"], hash_keys(refs))
    else:
        assert not ro.has("reference")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_jsonl(tmp / "h.jsonl", recs)
        assert_same(ro, sc.read_rollouts(tmp / "h.jsonl"), "hand jsonl")
        assert_same(ro, _read_jsonl_precise(tmp / "h.jsonl"), "hand jsonl precise")
        for route, back in all_routes(ro, tmp).items():
            assert_same(ro, back, route)


@settings(max_examples=50, deadline=None)
@given(recs=rollout_records(components=True, max_groups=3, max_group_size=4, max_steps=3, huge=False),
       data=st.data())
def test_hypothesis_take(recs, data):
    # reward in some steps only: a subset may hold no reward at all, and from_records then has
    # no reward column while take() keeps an all-zero one; give it to every step (absent = 0)
    if any("reward" in s for r in recs for s in r["steps"]):
        for r in recs:
            r["steps"] = [{"reward": 0.0, **s} for s in r["steps"]]
    ro = Rollouts.from_records(recs)
    E = ro.n_episodes
    perm = data.draw(st.permutations(range(E)))
    assert_same(ro.take(perm), Rollouts.from_records([recs[i] for i in perm]), "take(perm)")
    subset = sorted(data.draw(st.sets(st.integers(0, E - 1), min_size=1)))
    t = ro.take(subset)
    assert_same(t, Rollouts.from_records([recs[i] for i in subset]), "take(subset)")
    for n, v in ro.episode_columns.items():
        np.testing.assert_array_equal(t.episode_columns[n], v[subset])


def test_take_hand():
    ro = Rollouts.from_records(comp_records())
    t = ro.take([2, 0])
    # format [1.0, -0.0, -1e6] -> [-1e6, 1.0]; correct [0.3, 0.3+1e-7, 1e6] -> [1e6, 0.3]
    np.testing.assert_array_equal(t.episode_columns["format"], [-1e6, 1.0])
    np.testing.assert_array_equal(t.episode_columns["correct"], [1e6, 0.3])
    assert t.key_values["reference"].to_pylist() == ["", comp_records()[0]["steps"][0]["reference"], "answer[2]"]
    assert_same(t.take([1, 0]), ro.take([0, 2]), "take twice")


@settings(max_examples=50, deadline=None)
@given(recs=rollout_records())
def test_default_strategy_draws_no_components_or_references(recs):
    assert all("rewards" not in r for r in recs)
    assert all("reference" not in s for r in recs for s in r["steps"])


@settings(max_examples=30, deadline=None)
@given(recs=rollout_records(components=False, reference=True, max_groups=2, huge=False))
def test_strategy_reference_flag(recs):
    assert all(s["reference"] in REFERENCES for r in recs for s in r["steps"])
    assert all("rewards" not in r for r in recs)


# ---------------------------------------------------------------------- equals
def test_equals_sees_components():
    ro = Rollouts.from_records(comp_records())
    assert ro.equals(Rollouts.from_records(comp_records()))
    other = comp_records()
    other[2]["rewards"]["format"] = -1e6 + 1e-9  # one value differs
    assert not ro.equals(Rollouts.from_records(other))
    renamed = comp_records()
    for r in renamed:
        r["rewards"]["format_2"] = r["rewards"].pop("format")
    assert not ro.equals(Rollouts.from_records(renamed))
    dropped = ro.replace_episode_columns(format=None)
    assert not ro.equals(dropped) and not dropped.equals(ro)
    none = ro.replace_episode_columns(format=None, correct=None)
    assert none.equals(Rollouts.from_records([{k: v for k, v in r.items() if k != "rewards"} for r in comp_records()]))
    ref = comp_records()
    ref[1]["steps"][0]["reference"] = "other"
    assert not ro.equals(Rollouts.from_records(ref))


# ---------------------------------------------------------------------- field access
def test_has_require_column_episode_column():
    ro = Rollouts.from_records(comp_records())
    assert ro.has("rewards.format") and ro.has("rewards.correct")
    assert not ro.has("rewards.missing") and not ro.has("format") and not ro.has("rewards.")
    assert ro.has("reference") and ro.has("value") and not ro.has("process")
    ro.require(["rewards.format", "value", "reference", "reward"], by="transform 't'")
    fmt = ro.episode_columns["format"]
    assert ro.episode_column("format") is fmt
    assert ro.episode_column("rewards.format") is fmt
    assert ro.column("rewards.format") is fmt  # documented: the [E] array
    assert ro.column("reference").dtype == np.uint64 and ro.column("reference").shape == (ro.n_steps,)


def test_missing_component_messages():
    ro = Rollouts.from_records(comp_records())
    with pytest.raises(MissingColumnError) as e:
        ro.require(["value", "rewards.ref_0"], by="transform 'composite'")
    msg = str(e.value)
    assert msg.startswith(
        "transform 'composite' needs the episode reward component 'rewards.ref_0', which these "
        "rollouts do not have (components present: rewards.correct, rewards.format). Fix: add "
        "'ref_0' to every episode's \"rewards\" object"
    ), msg
    assert e.value.component == "ref_0" and e.value.column == "rewards.ref_0"
    assert e.value.by == "transform 'composite'"
    for call in (lambda: ro.episode_column("ref_0", by="transform 'x'"),
                 lambda: ro.episode_column("rewards.ref_0", by="transform 'x'"),
                 lambda: ro.column("rewards.ref_0", by="transform 'x'")):
        with pytest.raises(MissingColumnError, match=r"^transform 'x' needs the episode reward component 'rewards\.ref_0'"):
            call()
    # a step field: the step message, listing step fields only
    with pytest.raises(MissingColumnError) as e:
        ro.require(["process"], by="estimator 'e'")
    assert "needs the step field 'process'" in str(e.value)
    assert "(step fields present: action, reference, value)" in str(e.value)
    assert e.value.component is None
    # no components at all
    bare = Rollouts.from_records([base(0)])
    with pytest.raises(MissingColumnError, match=r"\(components present: none\)"):
        bare.require(["rewards.format"], by="filter 'f'")
    # the pipeline passes a mixed, sorted `present`: each message keeps its own kind
    err = MissingColumnError("rewards.x", "transform 'a' (stage 1)", ("reward", "rewards.y", "value"))
    assert "(components present: rewards.y)" in str(err)
    err = MissingColumnError("state", "estimator 'b'", ("reward", "rewards.y", "value"))
    assert "(step fields present: reward, value)" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.present == err.present


# ---------------------------------------------------------------------- replace_episode_columns
def test_replace_episode_columns():
    ro = Rollouts.from_records(comp_records())
    new = np.array([0.0, -2.0, 3.5])
    r2 = ro.replace_episode_columns(format=new, extra_1=[1, 2, 3], correct=None, absent=None)
    assert list(r2.episode_columns) == ["extra_1", "format"]
    np.testing.assert_array_equal(r2.episode_columns["format"], new)
    np.testing.assert_array_equal(r2.episode_columns["extra_1"], [1.0, 2.0, 3.0])
    assert r2.episode_columns["extra_1"].dtype == np.float64
    assert not r2.episode_columns["format"].flags.writeable
    new[0] = 99.0  # the rollouts hold their own copy
    assert r2.episode_columns["format"][0] == 0.0
    # the original is unchanged, everything else is shared
    assert list(ro.episode_columns) == ["correct", "format"]
    assert ro.episode_columns["format"][0] == 1.0
    assert r2.columns["value"] is ro.columns["value"] and r2.keys is not None
    assert r2.key_values["reference"].equals(ro.key_values["reference"])
    # replace_columns and with_outcome keep the components
    assert ro.replace_columns(value=None).episode_columns.keys() == ro.episode_columns.keys()
    assert ro.with_outcome(np.zeros(3)).episode_columns["format"] is ro.episode_columns["format"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"format": [1.0, 2.0]}, r"reward component 'format' must have length E=3"),
        ({"format": [[1.0, 2.0, 3.0]]}, r"reward component 'format' must have length E=3"),
        ({"format": [1.0, np.nan, 0.0]}, r"reward component 'format' must hold finite values"),
        ({"format": [1.0, np.inf, 0.0]}, r"reward component 'format' must hold finite values"),
        ({"_9": [1.0, 2.0, 3.0], "9x": [1.0, 2.0, 3.0]}, r"reward component name '9x' must match"),
    ],
)
def test_replace_episode_columns_errors(kwargs, match):
    ro = Rollouts.from_records(comp_records())
    with pytest.raises(ValueError, match=match):
        ro.replace_episode_columns(**kwargs)


@pytest.mark.parametrize("name", ["9x", "a-b", "a.b", "", "é", "a b"])
def test_constructor_refuses_bad_names(name):
    ro = Rollouts.from_records([base(0)])
    with pytest.raises(ValueError, match="must match"):
        Rollouts(ro.episode_id, ro.group_id, ro.outcome, ro.episode_offsets,
                 episode_columns={name: np.zeros(1)})


# ---------------------------------------------------------------------- errors: all readers
# (records, the 0-based index of the offending record, field, words of the problem)
ERROR_CASES = [
    ("missing-key", [base(0, rewards={"a": 1}), base(1, rewards={"a": 1, "b": 2}), base(2, rewards={"a": 2})],
     0, "rewards.b", "is missing here but present in other episodes"),
    ("no-rewards", [base(0, rewards={"a": 1}), base(1), base(2, rewards={"a": 2})],
     1, "rewards.a", "is missing here but present in other episodes"),
    ("null-rewards", [base(0, rewards={"a": 1}), base(1, rewards=None), base(2, rewards={"a": 2})],
     1, "rewards.a", "is missing here but present in other episodes"),
    ("empty-rewards", [base(0, rewards={"a": 1}), base(1, rewards={"a": 1}), base(2, rewards={})],
     2, "rewards.a", "is missing here but present in other episodes"),
    ("null-value", [base(0, rewards={"a": 1}), base(1, rewards={"a": None})],
     1, "rewards.a", "is missing here but present in other episodes"),
    ("bool", [base(0, rewards={"a": 1}), base(1, rewards={"a": True})],
     1, "rewards.a", "is a boolean, not a number"),
    ("bool-everywhere", [base(0, rewards={"a": False}), base(1, rewards={"a": True})],
     0, "rewards.a", "is a boolean, not a number"),
    ("string", [base(0, rewards={"a": 1}), base(1, rewards={"a": "0.5"})],
     1, "rewards.a", "is a string, not a number"),
    ("object", [base(0, rewards={"a": 1}), base(1, rewards={"a": {"b": 1}})],
     1, "rewards.a", "is an object, not a number"),
    ("list-value", [base(0, rewards={"a": [1]}), base(1, rewards={"a": [2]})],
     0, "rewards.a", "is a list, not a number"),
    ("bad-name", [base(0, rewards={"a": 1}), base(1, rewards={"a": 1, "9x": 2})],
     1, "rewards", "has the component name '9x'"),
    ("bad-name-dash", [base(0, rewards={"a-b": 1}), base(1, rewards={"a-b": 1})],
     0, "rewards", "has the component name 'a-b'"),
    ("bad-name-empty", [base(0, rewards={"": 1})], 0, "rewards", "has the component name ''"),
    ("bad-name-dot", [base(0, rewards={"a": 1}), base(1, rewards={"a": 1}), base(2, rewards={"a": 1, "a.b": 1})],
     2, "rewards", "has the component name 'a.b'"),
    ("not-object-list", [base(0, rewards={"a": 1}), base(1, rewards=[1])],
     1, "rewards", "is a list, not an object"),
    ("not-object-number", [base(0, rewards={"a": 1}), base(1, rewards=3)],
     1, "rewards", "is a number, not an object"),
    ("not-object-string", [base(0, rewards="a"), base(1, rewards="b")],
     0, "rewards", "is a string, not an object"),
    # Python reads the 400-digit integer exactly and refuses it; Arrow reads it as inf (the
    # same for outcome and step fields): both name the line and the field
    ("too-large", [base(0, rewards={"a": 1}), base(1, rewards={"a": 10**400})],
     1, "rewards.a", ("is too large for a 64-bit float", "is inf, not a finite number")),
    ("reference-partial", [base(0, steps=[{"reference": "r"}, {}])],
     0, "steps[].reference", "is missing here but present in other steps"),
    ("reference-bool", [base(0, steps=[{"reference": True}])],
     0, "steps[].reference", "is a boolean"),
    ("reference-float", [base(0, steps=[{"reference": "a"}]), base(1, steps=[{"reference": 1.5}])],
     1, "steps[].reference", "is a number"),
    ("reference-mixed", [base(0, steps=[{"reference": "a"}]), base(1, steps=[{"reference": 1}])],
     1, "steps[].reference", "is a number but was a string"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_every_reader(case, tmp_path):
    _, recs, row, fld, problem = case
    errs = errors_of(recs, tmp_path)
    line = row + 1 + (row + 1) // 2  # write_jsonl puts a blank line before records 1, 3, ...
    expected_record = {"records": f"record {row}", "jsonl": f"line {line}", "jsonl-precise": f"line {line}"}
    for route, err in errs.items():
        assert err.record.split(",")[0] == expected_record[route], (route, str(err))
        assert err.field == fld, (route, str(err))
        alternatives = problem if isinstance(problem, tuple) else (problem,)
        assert any(p in err.problem for p in alternatives), (route, str(err))
        assert err.fix
    assert errs["jsonl"].source == str(tmp_path / "bad.jsonl")
    if not isinstance(problem, tuple):
        assert str(errs["jsonl"]) == str(errs["jsonl-precise"])
    assert str(errs["records"]).startswith(f"<records>: record {row}")


@pytest.mark.parametrize("token, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_non_finite_component_jsonl(token, shown, tmp_path):
    good = json.dumps(base(0, rewards={"a": 1.0, "b": 0.0}))
    bad = json.dumps(base(1, rewards={"a": 1.0, "b": 0.0})).replace('"b": 0.0', f'"b": {token}')
    p = tmp_path / "nan.jsonl"
    write_jsonl(p, [good, bad])  # the bad record is on line 3
    for read in (sc.read_rollouts, _read_jsonl_precise):
        with pytest.raises(RolloutsError) as e:
            read(p)
        assert e.value.record == "line 3" and e.value.field == "rewards.b", str(e.value)
        assert e.value.problem == f"is {shown}, not a finite number"
    with pytest.raises(RolloutsError, match=rf"^<records>: record 1: field 'rewards\.b': is {shown}, not a finite number"):
        Rollouts.from_records([base(0, rewards={"a": 1.0, "b": 0.0}), base(1, rewards={"a": 1.0, "b": float(shown)})])


def test_components_across_json_blocks(tmp_path, monkeypatch):
    """Small Arrow blocks: a component first seen in a later block, an int -> float change."""
    monkeypatch.setattr(sio, "_JSON_BLOCK", 256)
    late = [base(i, rewards={"a": 1}) for i in range(30)] + [base(30, rewards={"a": 1, "b": 2.5})]
    late_rewards = [base(i) for i in range(30)] + [base(30, rewards={"a": 1})]
    for recs, fld in ((late, "rewards.b"), (late_rewards, "rewards.a")):
        p = tmp_path / "late.jsonl"
        write_jsonl(p, recs, blank_lines=False)
        for read in (sc.read_rollouts, _read_jsonl_precise):
            with pytest.raises(RolloutsError) as e:
                read(p)
            assert e.value.record == "line 1" and e.value.field == fld, str(e.value)
    ok = [base(i, rewards={"a": i, "b": -0.5 * i}) for i in range(40)] + [base(40, rewards={"a": 1.5, "b": 2})]
    write_jsonl(tmp_path / "ok.jsonl", ok)
    assert_same(Rollouts.from_records(ok), sc.read_rollouts(tmp_path / "ok.jsonl"), "blocks")


def test_duplicate_component_key_jsonl(tmp_path):
    # Arrow refuses an object with a repeated key; Python's json keeps the last value
    p = tmp_path / "dup.jsonl"
    p.write_text(
        '{"episode_id": "e0", "group_id": "g", "outcome": 1, "rewards": {"a": 1, "a": 2}, "steps": [{}]}\n',
        encoding="utf-8",
    )
    assert sc.read_rollouts(p).episode_columns["a"].tolist() == [2.0]


# ---------------------------------------------------------------------- errors: Parquet / Arrow
def _table(rewards: pa.Array | None, n: int) -> pa.Table:
    cols = {
        "episode_id": pa.array([f"e{i}" for i in range(n)]),
        "group_id": pa.array(["g"] * n),
        "outcome": pa.array([1.0] * n),
        "steps": pa.array([[{"value": 0.5}]] * n),
    }
    if rewards is not None:
        cols["rewards"] = rewards
    return pa.table(cols)


PARQUET_CASES = [
    ("partial", pa.array([{"a": 1.0}, {"a": None}, {"a": 2.0}], type=pa.struct([("a", pa.float64())])),
     1, "rewards.a", "is missing here but present in other episodes"),
    ("null-struct", pa.array([{"a": 1.0}, {"a": 1.0}, None], type=pa.struct([("a", pa.float64())])),
     2, "rewards.a", "is missing here but present in other episodes"),
    ("nan", pa.array([{"a": 1.0}, {"a": float("nan")}, {"a": 0.0}], type=pa.struct([("a", pa.float64())])),
     1, "rewards.a", "is nan, not a finite number"),
    ("string-field", pa.array([{"a": "x"}, {"a": "y"}, {"a": "z"}], type=pa.struct([("a", pa.string())])),
     0, "rewards.a", "is a string, not a number"),
    ("bool-field", pa.array([{"a": True}, {"a": False}, {"a": True}], type=pa.struct([("a", pa.bool_())])),
     0, "rewards.a", "is a boolean, not a number"),
    ("bad-name", pa.array([{"x-y": 1.0}] * 3, type=pa.struct([("x-y", pa.float64())])),
     0, "rewards", "has the component name 'x-y'"),
    ("text-column", pa.array(['{"a": 1}'] * 3), 0, "rewards", "is a string, not an object"),
    ("number-column", pa.array([1.0, 2.0, 3.0]), 0, "rewards", "is a number, not an object"),
]


@pytest.mark.parametrize("case", PARQUET_CASES, ids=[c[0] for c in PARQUET_CASES])
def test_errors_parquet_and_arrow(case, tmp_path):
    _, rewards, row, fld, problem = case
    table = _table(rewards, 3)
    p = tmp_path / "bad.parquet"
    pq.write_table(table, p)
    with pytest.raises(RolloutsError) as e:
        sc.read_rollouts(p)
    assert e.value.source == str(p)
    assert e.value.record == f"row {row}" and e.value.field == fld, str(e.value)
    assert problem in e.value.problem, str(e.value)
    with pytest.raises(RolloutsError) as e2:
        Rollouts.from_arrow(table)
    assert e2.value.record == f"row {row}" and e2.value.field == fld


def test_parquet_integer_and_null_typed_components(tmp_path):
    # an int64 field is read as float64; a null-typed field (null everywhere) is absent
    rewards = pa.StructArray.from_arrays(
        [pa.array([1, 2], pa.int64()), pa.nulls(2)], names=["a", "b"]
    )
    pq.write_table(_table(rewards, 2), tmp_path / "i.parquet")
    ro = sc.read_rollouts(tmp_path / "i.parquet")
    assert list(ro.episode_columns) == ["a"]
    np.testing.assert_array_equal(ro.episode_columns["a"], [1.0, 2.0])


# ---------------------------------------------------------------------- errors: arrays
def _arrays(**comps):
    return Rollouts.from_arrays(
        outcome=[1.0, 0.0, 0.5], group_id=["g", "g", "h"], step_counts=[1, 2, 1],
        value=[0.0, 1.0, 2.0, 3.0], episode_columns=comps,
    )


@pytest.mark.parametrize(
    "comps, record, fld, problem",
    [
        ({"a": [1.0, 2.0]}, "", "rewards.a", "has 2 values but there are 3 episodes"),
        ({"a": [1.0, None, 2.0]}, "episode 1", "rewards.a", "is missing here but present in other episodes"),
        ({"a": [1.0, 2.0, np.nan]}, "episode 2", "rewards.a", "is nan, not a finite number"),
        ({"a": np.array([1.0, -np.inf, 0.0])}, "episode 1", "rewards.a", "is -inf, not a finite number"),
        ({"a": [1.0, True, 0.0]}, "episode 1", "rewards.a", "is a boolean, not a number"),
        ({"a": np.array([1.0, 2.0, np.False_], dtype=object)}, "episode 2", "rewards.a", "is a boolean, not a number"),
        ({"a": np.array([True, False, True])}, "", "rewards.a", "has type bool"),
        ({"a": ["x", "y", "z"]}, "", "rewards.a", "has type string"),
        ({"a": [1.0, "y", 2.0]}, "", "rewards.a", "cannot be converted to a column"),
        ({"ok": [1.0, 2.0, 3.0], "a-b": [1.0, 2.0, 3.0]}, "", "rewards", "has the component name 'a-b'"),
        ({"1": [1.0, 2.0, 3.0]}, "", "rewards", "has the component name '1'"),
    ],
)
def test_errors_arrays(comps, record, fld, problem):
    with pytest.raises(RolloutsError) as e:
        _arrays(**comps)
    assert e.value.source == "<arrays>"
    assert e.value.record == record and e.value.field == fld, str(e.value)
    assert problem in e.value.problem, str(e.value)


def test_arrays_components_and_reference():
    ro = _arrays(a=np.array([1.0, -0.0, 1e6]), b=pa.array([0, 1, 2]))
    np.testing.assert_array_equal(ro.episode_columns["a"], [1.0, 0.0, 1e6])
    assert np.signbit(ro.episode_columns["a"][1])
    np.testing.assert_array_equal(ro.episode_columns["b"], [0.0, 1.0, 2.0])
    gen = _arrays(a=(x for x in [1.0, -0.0, 1e6]), b=range(3))  # iterables are read once
    assert_same(ro, gen, "iterables")
    r2 = Rollouts.from_arrays(outcome=[1.0], group_id=["g"], step_counts=[2], reference=[7, -1])
    assert r2.key_values["reference"].to_pylist() == [7, -1]
    np.testing.assert_array_equal(r2.keys["reference"], hash_keys(np.array([7, -1])))


# ---------------------------------------------------------------------- reference key
def test_reference_is_a_key_column(tmp_path):
    assert "reference" in KEY_COLUMNS
    recs = comp_records()
    ro = Rollouts.from_records(recs)
    refs = [s["reference"] for r in recs for s in r["steps"]]
    assert ro.key_values["reference"].to_pylist() == refs
    np.testing.assert_array_equal(ro.keys["reference"], hash_keys(refs))
    # equal text, equal hash; the action and the reference hash alike for equal text
    assert ro.keys["reference"][0] == ro.keys["action"][0]
    assert ro.keys["reference"][1] != ro.keys["action"][1]
    # integer references
    int_recs = [base(0, steps=[{"reference": 5}, {"reference": -(2**63)}]), base(1, steps=[{"reference": 5}])]
    ri = Rollouts.from_records(int_recs)
    assert ri.key_values["reference"].type == pa.int64()
    assert ri.keys["reference"][0] == ri.keys["reference"][2] != hash_keys(["5"])[0]
    for route, back in all_routes(ri, tmp_path).items():
        assert_same(ri, back, route)


# ---------------------------------------------------------------------- example file
def test_example_file_reads_as_before():
    recs = [json.loads(line) for line in EXAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    ro = sc.read_rollouts(EXAMPLE)
    assert ro.episode_columns == {} and ro.episode_fields == ()
    assert ro.step_fields == (
        "state", "action", "node", "reward", "process", "value", "p_answer", "grounding",
        "importance", "tokens",
    )
    assert not ro.has("reference")
    assert ro.to_records() == recs
    assert_same(ro, _read_jsonl_precise(EXAMPLE), "precise")
    assert_same(ro, Rollouts.from_records(recs), "records")
    for k in ("state", "action", "node"):
        np.testing.assert_array_equal(ro.keys[k], hash_keys([s[k] for r in recs for s in r["steps"]]))


# ---------------------------------------------------------------------- concat
@settings(max_examples=60, deadline=None)
@given(records=rollout_records(components=True, extra=True), data=st.data())
def test_concat_of_parts_is_the_whole(records, data):
    ro = sc.Rollouts.from_records(records)
    cut = data.draw(st.integers(0, ro.n_episodes))
    parts = [ro.take(np.arange(cut)), ro.take(np.arange(cut, ro.n_episodes))]
    parts = [p for p in parts if p.n_episodes] or [ro]
    assert sc.Rollouts.concat(parts).equals(ro)


def test_concat_refuses_parts_that_do_not_fit():
    a = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]}])
    b = sc.Rollouts.from_records([{"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"state": 3}]}])
    c = sc.Rollouts.from_records([{"episode_id": "c", "group_id": "g", "outcome": 0.0, "steps": [{"value": 1.0}]}])
    d = sc.Rollouts.from_records([{"episode_id": "a", "group_id": "h", "outcome": 0.0, "steps": [{"state": "t"}],
                                   "meta": {"x": 1}}])
    with pytest.raises(ValueError, match="'state' is int64"):
        sc.Rollouts.concat([a, b])
    with pytest.raises(ValueError, match=r"step columns \[.value.\], part 0 has \[\]"):
        sc.Rollouts.concat([a, c])
    with pytest.raises(ValueError, match="more than one part"):
        sc.Rollouts.concat([a, d])
    e = sc.Rollouts.from_records([{"episode_id": "e", "group_id": "h", "outcome": 0.0, "steps": [{"state": "t"}],
                                   "meta": {"x": 1}}])
    both = sc.Rollouts.concat([a, e])
    assert both.to_records()[0].get("meta") is None and both.to_records()[1]["meta"] == {"x": 1}
