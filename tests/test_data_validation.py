"""Every validation error of the data layer, for every input route where it applies.

Routes: a JSONL file read by the fast Arrow path, the same file forced onto the precise
line-by-line path (an ignored extra field whose type changes between lines makes Arrow's reader
fail), a Parquet file, ``Rollouts.from_records`` and ``Rollouts.from_arrays``.

Every error must be a :class:`RolloutsError` whose message names the file (or ``<records>`` /
``<arrays>``), the record (``line N`` 1-based counting blank lines / ``row N`` / ``record N`` /
``episode N``, plus ``step K``), the field, and contains ``Fix:``; the same parts are checked
on the ``.source``, ``.record`` and ``.field`` attributes.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stepcredit as sc
import stepcredit.data.io as sio
from stepcredit import Rollouts, RolloutsError

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------- helpers
def base_records(n: int = 3) -> list[dict]:
    """n valid episodes; ``reward`` is deliberately partial (allowed), meta only in record 0."""
    recs = []
    for i in range(n):
        rec = {
            "episode_id": f"e{i}",
            "group_id": "g0" if i < 2 else "g1",
            "outcome": float(i % 2),
            "steps": [
                {"state": "s0", "action": "a0", "reward": 0.5, "value": 0.25, "tokens": 3},
                {"state": "s1", "action": "a1", "value": 0.75, "tokens": 4},
            ],
        }
        if i == 0:
            rec["meta"] = {"task": "t0"}
        recs.append(rec)
    return recs


# Blank and whitespace-only lines written before record i (cycled), so that line numbers
# differ from record numbers.
_BLANKS = [[""], ["", "   "], ["\t", ""]]


def write_jsonl(path, lines: list[str]) -> list[int]:
    """Write record lines with blank lines in between; return the 1-based line of each record."""
    out, where = [], []
    for i, line in enumerate(lines):
        out.extend(_BLANKS[i % len(_BLANKS)])
        out.append(line)
        where.append(len(out))
    out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return where


def dumps(rec) -> str:
    return json.dumps(rec)  # allow_nan=True: NaN / Infinity / -Infinity tokens


@pytest.fixture
def spy_precise(monkeypatch):
    """Records whether the precise line-by-line JSONL reader was used."""
    calls: list = []
    orig = sio._read_jsonl_precise

    def wrapped(p):
        calls.append(p)
        return orig(p)

    monkeypatch.setattr(sio, "_read_jsonl_precise", wrapped)
    return calls


def check(exc: RolloutsError, source: str, record: str, field: str, problem: str | None = None):
    """The error names source, record and field (attributes and message) and has a fix."""
    assert isinstance(exc, RolloutsError)
    assert isinstance(exc, ValueError)
    msg = str(exc)
    assert exc.source == source, msg
    assert exc.record == record, msg
    assert exc.field == field, msg
    assert msg.startswith(source), msg
    if record:
        assert f": {record}:" in msg, msg
    if field:
        assert f"field '{field}'" in msg, msg
    assert "Fix:" in msg, msg
    assert exc.fix and exc.fix in msg.split("Fix:", 1)[1], msg
    if problem is not None:
        assert problem in exc.problem, msg
    assert "\n" not in msg, "the message is one line"


def where(rec: str, step: int | None) -> str:
    return rec if step is None else f"{rec}, step {step}"


# ---------------------------------------------------------------------- mutations
def drop(name):
    def f(rec):
        del rec[name]
    return f


def setf(name, value):
    def f(rec):
        rec[name] = value
    return f


def step_set(t, name, value):
    def f(rec):
        rec["steps"][t][name] = value
    return f


def all_steps_set(name, value):
    def f(rec):
        for step in rec["steps"]:
            step[name] = value
    return f


def step_drop(t, name):
    def f(rec):
        del rec["steps"][t][name]
    return f


def step_replace(t, value):
    def f(rec):
        rec["steps"][t] = value
    return f


# A case: (id, mutation of record 2, step or None, field, problem substring, value-level?).
# "value-level" cases keep every column's type, so they are representable in Parquet (and
# the fast JSONL path handles them without falling back); the others are type errors.
# "{rec0}" in a problem is replaced by the location of record 0 in that route.
CASES = [
    ("missing-episode_id", drop("episode_id"), None, "episode_id", "is missing", True),
    ("missing-group_id", drop("group_id"), None, "group_id", "is missing", True),
    ("missing-outcome", drop("outcome"), None, "outcome", "is missing", True),
    ("missing-steps", drop("steps"), None, "steps", "is missing", True),
    ("null-episode_id", setf("episode_id", None), None, "episode_id", "is missing", True),
    ("null-outcome", setf("outcome", None), None, "outcome", "is missing", True),
    ("null-steps", setf("steps", None), None, "steps", "is missing", True),
    ("outcome-string", setf("outcome", "1.0"), None, "outcome", "is a string, not a number", False),
    ("outcome-bool", setf("outcome", True), None, "outcome", "is a boolean, not a number", False),
    ("outcome-list", setf("outcome", [1.0]), None, "outcome", "is a list, not a number", False),
    ("episode_id-number", setf("episode_id", 7), None, "episode_id", "is a number, not a string", False),
    ("group_id-number", setf("group_id", 3), None, "group_id", "is a number, not a string", False),
    ("group_id-object", setf("group_id", {"g": 1}), None, "group_id", "is an object, not a string", False),
    ("steps-string", setf("steps", "s0 s1"), None, "steps", "is a string, not a list", False),
    ("steps-object", setf("steps", {"state": "s0"}), None, "steps", "is an object, not a list", False),
    ("step-number", step_replace(1, 5), 1, "steps[]", "the step is a number, not an object", False),
    ("step-string", step_replace(0, "s0"), 0, "steps[]", "the step is a string, not an object", False),
    ("step-list", step_replace(1, ["s1"]), 1, "steps[]", "the step is a list, not an object", False),
    ("step-null", step_replace(1, None), 1, "steps[]", "the step is null, not an object", False),
    ("state-list", step_set(1, "state", ["s", "t"]), 1, "steps[].state", "is a list", False),
    ("state-bool", step_set(1, "state", True), 1, "steps[].state", "is a boolean", False),
    ("state-object", step_set(0, "state", {"x": 1}), 0, "steps[].state", "is an object", False),
    ("state-float", step_set(1, "state", 1.5), 1, "steps[].state", "is a number", False),
    ("action-list", step_set(1, "action", ["a"]), 1, "steps[].action", "is a list", False),
    ("state-int-and-str", step_set(1, "state", 7), 1, "steps[].state",
     "is a number but was a string at {rec0}, step 0", False),
    ("tokens-float", step_set(1, "tokens", 3.5), 1, "steps[].tokens", "not a whole number", False),
    ("tokens-string", all_steps_set("tokens", "3"), 0, "steps[].tokens", "not a whole number", False),
    ("tokens-bool", step_set(0, "tokens", True), 0, "steps[].tokens", "not a whole number", False),
    ("tokens-negative", step_set(1, "tokens", -2), 1, "steps[].tokens", "is -2, a negative count", True),
    ("reward-string", step_set(0, "reward", "0.5"), 0, "steps[].reward", "is a string, not a number", False),
    ("value-bool", step_set(1, "value", False), 1, "steps[].value", "is a boolean, not a number", False),
    ("value-list", step_set(0, "value", [0.5]), 0, "steps[].value", "is a list, not a number", False),
    ("meta-number", setf("meta", 5), None, "meta", "is a number, not an object", False),
    ("meta-list", setf("meta", [1, 2]), None, "meta", "is a list, not an object", False),
    ("outcome-nan", setf("outcome", NAN), None, "outcome", "is nan, not a finite number", True),
    ("outcome-inf", setf("outcome", INF), None, "outcome", "is inf, not a finite number", True),
    ("outcome-neginf", setf("outcome", -INF), None, "outcome", "is -inf, not a finite number", True),
    ("reward-nan", step_set(0, "reward", NAN), 0, "steps[].reward", "is nan, not a finite number", True),
    ("reward-inf", step_set(0, "reward", INF), 0, "steps[].reward", "is inf, not a finite number", True),
    ("reward-neginf-partial", step_set(1, "reward", -INF), 1, "steps[].reward", "is -inf, not a finite number", True),
    ("value-nan", step_set(1, "value", NAN), 1, "steps[].value", "is nan, not a finite number", True),
    ("value-inf", step_set(0, "value", INF), 0, "steps[].value", "is inf, not a finite number", True),
    ("value-neginf", step_set(1, "value", -INF), 1, "steps[].value", "is -inf, not a finite number", True),
    ("steps-empty", setf("steps", []), None, "steps", "is empty", True),
    ("duplicate-episode_id", setf("episode_id", "e0"), None, "episode_id", "'e0' is also the id of {rec0}", True),
    ("partial-value", step_drop(1, "value"), 1, "steps[].value", "is missing here but present in other steps", True),
    ("partial-state", step_drop(0, "state"), 0, "steps[].state", "is missing here but present in other steps", True),
    ("partial-action", step_drop(1, "action"), 1, "steps[].action", "is missing here but present in other steps", True),
    ("partial-tokens", step_drop(1, "tokens"), 1, "steps[].tokens", "is missing here but present in other steps", True),
    ("partial-value-null", step_set(1, "value", None), 1, "steps[].value", "is missing here but present in other steps", True),
]
CASE_IDS = [c[0] for c in CASES]
VALUE_CASES = [c for c in CASES if c[5]]


def mutated(mutation, n: int = 3) -> list[dict]:
    recs = base_records(n)
    rec = copy.deepcopy(recs[2])
    mutation(rec)
    recs[2] = rec
    return recs


# ---------------------------------------------------------------------- JSONL
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jsonl_auto(case, tmp_path, spy_precise):
    """read_rollouts on the natural file (fast Arrow path where Arrow can read it)."""
    name, mutation, step, fld, problem, value_level = case
    recs = mutated(mutation)
    if value_level:  # files with meta always take the precise path (Arrow would merge the objects)
        recs[0].pop("meta", None)
    path = tmp_path / "roll.jsonl"
    lines = write_jsonl(path, [dumps(r) for r in recs])
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), where(f"line {lines[2]}", step), fld,
          problem.replace("{rec0}", f"line {lines[0]}"))
    if value_level and "nan" not in name and "inf" not in name:
        # valid JSON whose types Arrow infers without conflict: no fallback to the precise path
        assert not spy_precise, f"{name}: expected the fast Arrow path"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jsonl_precise(case, tmp_path, spy_precise):
    """The same errors on the precise path, forced by a type conflict in an ignored field."""
    name, mutation, step, fld, problem, _ = case
    recs = mutated(mutation)
    recs[0]["junk"] = 1
    recs[1]["junk"] = "one"
    path = tmp_path / "roll.jsonl"
    lines = write_jsonl(path, [dumps(r) for r in recs])
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    assert spy_precise, "the type conflict should force the precise path"
    check(ei.value, str(path), where(f"line {lines[2]}", step), fld,
          problem.replace("{rec0}", f"line {lines[0]}"))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jsonl_precise_reader_direct(case, tmp_path):
    name, mutation, step, fld, problem, _ = case
    path = tmp_path / "roll.jsonl"
    lines = write_jsonl(path, [dumps(r) for r in mutated(mutation)])
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), where(f"line {lines[2]}", step), fld,
          problem.replace("{rec0}", f"line {lines[0]}"))


# The same wrong type in *every* record: Arrow reads the file without complaint, and the record
# checker running over Arrow's rows must blame the first record (line numbers after blanks).
UNIFORM_TYPE_CASES = [
    ("outcome-string", setf("outcome", "1.0"), None, "outcome"),
    ("outcome-bool", setf("outcome", True), None, "outcome"),
    ("episode_id-number", lambda r: r.update(episode_id=int(r["episode_id"][1:])), None, "episode_id"),
    ("group_id-number", setf("group_id", 3), None, "group_id"),
    ("steps-string", setf("steps", "s0"), None, "steps"),
    ("steps-object", setf("steps", {"state": "s0"}), None, "steps"),
    ("steps-numbers", setf("steps", [1, 2]), 0, "steps[]"),
    ("state-list", all_steps_set("state", ["s"]), 0, "steps[].state"),
    ("state-bool", all_steps_set("state", False), 0, "steps[].state"),
    ("state-object", all_steps_set("state", {"k": "v"}), 0, "steps[].state"),
    ("state-float", all_steps_set("state", 0.5), 0, "steps[].state"),
    ("node-list", all_steps_set("node", [1]), 0, "steps[].node"),
    ("tokens-float", all_steps_set("tokens", 3.5), 0, "steps[].tokens"),
    ("tokens-string", all_steps_set("tokens", "3"), 0, "steps[].tokens"),
    ("reward-string", all_steps_set("reward", "x"), 0, "steps[].reward"),
    ("value-bool", all_steps_set("value", True), 0, "steps[].value"),
    ("meta-number", setf("meta", 1), None, "meta"),
    ("meta-list", setf("meta", ["a"]), None, "meta"),
]


@pytest.mark.parametrize("case", UNIFORM_TYPE_CASES, ids=[c[0] for c in UNIFORM_TYPE_CASES])
def test_jsonl_fast_read_uniform_wrong_type(case, tmp_path, spy_precise):
    name, mutation, step, fld = case
    recs = base_records()
    for r in recs:
        mutation(r)
    path = tmp_path / "roll.jsonl"
    lines = write_jsonl(path, [dumps(r) for r in recs])
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    # Arrow reads the file but with a type the schema does not allow: the precise reader
    # re-reads it so that the first offending line is named
    assert spy_precise
    check(ei.value, str(path), where(f"line {lines[0]}", step), fld)


def test_jsonl_missing_column_everywhere(tmp_path):
    for name in ("episode_id", "group_id", "outcome", "steps"):
        recs = base_records()
        for r in recs:
            del r[name]
        path = tmp_path / f"no-{name}.jsonl"
        lines = write_jsonl(path, [dumps(r) for r in recs])
        with pytest.raises(RolloutsError) as ei:
            sc.read_rollouts(path)
        check(ei.value, str(path), f"line {lines[0]}", name, "is missing")


def test_jsonl_nan_tokens_are_json_tokens(tmp_path):
    """The file really contains the non-standard JSON tokens NaN / Infinity / -Infinity."""
    good = '{"episode_id": "a", "group_id": "g", "outcome": 1, "steps": [{"reward": 0.5}]}'
    for tok, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")):
        path = tmp_path / f"{tok}.jsonl"
        path.write_text(
            "\n" + good + "\n"
            + '{"episode_id": "x", "group_id": "g", "outcome": ' + tok + ', "steps": [{}]}\n'
            + '{"episode_id": "y", "group_id": "g", "outcome": 0, "steps": [{"reward": 1}, {"reward": ' + tok + "}]}\n"
        )
        with pytest.raises(RolloutsError) as ei:
            sc.read_rollouts(path)
        check(ei.value, str(path), "line 3", "outcome", f"is {shown}, not a finite number")
        path.write_text(
            good + "\n\n"
            + '{"episode_id": "y", "group_id": "g", "outcome": 0, "steps": [{"reward": 1}, {"reward": ' + tok + "}]}\n"
        )
        with pytest.raises(RolloutsError) as ei:
            sc.read_rollouts(path)
        check(ei.value, str(path), "line 3, step 1", "steps[].reward", f"is {shown}, not a finite number")
        path.write_text(
            good.replace("0.5}", '0.5, "value": 1}') + "\n"
            + '{"episode_id": "z", "group_id": "g", "outcome": 0, "steps": [{"value": ' + tok + "}]}\n"
        )
        with pytest.raises(RolloutsError) as ei:
            sc.read_rollouts(path)
        check(ei.value, str(path), "line 2, step 0", "steps[].value", f"is {shown}, not a finite number")


def test_jsonl_overflowing_number_is_not_finite(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"episode_id": "a", "group_id": "g", "outcome": 1e400, "steps": [{}]}\n')
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 1", "outcome", "not a finite number")


def test_jsonl_huge_integer_outcome(tmp_path):
    """A 400-digit integer outcome is not a finite float: a RolloutsError, not an OverflowError."""
    path = tmp_path / "bigint.jsonl"
    good = dumps(base_records(1)[0])
    path.write_text(good + "\n" + '{"episode_id": "b", "group_id": "g", "outcome": ' + "9" * 400 + ', "steps": [{}]}\n')
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 2", "outcome")
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 2", "outcome")


def test_jsonl_key_integer_out_of_int64_range(tmp_path):
    """An integer state beyond int64 must be a RolloutsError naming the step (not OverflowError)."""
    path = tmp_path / "bigkey.jsonl"
    recs = [{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": 1}, {"state": 2**64}]}]
    path.write_text("".join(dumps(r) + "\n" for r in recs))
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 1, step 1", "steps[].state")


def test_jsonl_tokens_int_then_float_blames_the_float_line(tmp_path):
    """Line 1 has ``tokens: 3`` (valid), line 3 has ``tokens: 3.5``: the error must name line 3.

    Arrow's reader promotes the whole column to double, and the record check then sees 3.0 on
    line 1.
    """
    path = tmp_path / "tok.jsonl"
    path.write_text(
        '{"episode_id": "a", "group_id": "g", "outcome": 1, "steps": [{"tokens": 3}]}\n\n'
        '{"episode_id": "b", "group_id": "g", "outcome": 1, "steps": [{"tokens": 4}, {"tokens": 3.5}]}\n'
    )
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 3, step 1", "steps[].tokens", "not a whole number")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 3, step 1", "steps[].tokens", "not a whole number")


def test_jsonl_state_int_in_one_episode_str_in_another(tmp_path, spy_precise):
    path = tmp_path / "mix.jsonl"
    path.write_text(
        '{"episode_id": "a", "group_id": "g", "outcome": 1, "steps": [{"state": "s0"}]}\n'
        "\n"
        '{"episode_id": "b", "group_id": "g", "outcome": 1, "steps": [{"state": "s0"}, {"state": 5}]}\n'
    )
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    assert spy_precise
    check(ei.value, str(path), "line 3, step 1", "steps[].state", "is a number but was a string at line 1, step 0")


def test_jsonl_invalid_json_line(tmp_path, spy_precise):
    good = [dumps(r) for r in base_records()]
    path = tmp_path / "bad.jsonl"
    lines = write_jsonl(path, [good[0], good[1], '{"episode_id": "x", "outcome": 1,', good[2]])
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    assert spy_precise
    check(ei.value, str(path), f"line {lines[2]}", "", "is not valid JSON")
    assert f"line {lines[2]}" in str(ei.value)


@pytest.mark.parametrize("text", ["[1, 2]", "5", '"episode"', "null", "true"])
def test_jsonl_record_not_an_object(text, tmp_path):
    good = [dumps(r) for r in base_records(2)]
    path = tmp_path / "notobj.jsonl"
    lines = write_jsonl(path, [good[0], good[1], text])
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), f"line {lines[2]}", "", "not an object")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    if text == "null":
        # Arrow's reader turns a `null` line into a row of nulls: reported as a missing field
        assert ei.value.record == f"line {lines[2]}", str(ei.value)
        assert "Fix:" in str(ei.value)
    else:
        check(ei.value, str(path), f"line {lines[2]}", "", "not an object")


def test_jsonl_not_utf8_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(dumps(base_records(1)[0]).encode() + b"\n\n" + b'{"episode_id": "\xff"}\n')
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 3", "", "is not valid JSON")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    assert ei.value.record == "line 3", str(ei.value)


def test_jsonl_invalid_utf8_inside_strings_is_rejected(tmp_path):
    """A complete record whose strings hold bytes that are not UTF-8 (Latin-1 text).

    The precise path rejects line 2; the fast path must not accept it either: Arrow's reader
    does not validate UTF-8, and the invalid strings later crash ``to_records`` and
    ``write_credit(..jsonl)`` with UnicodeDecodeError (and are copied into Parquet output).
    """
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        dumps(base_records(1)[0]).encode() + b"\n"
        + b'{"episode_id": "caf\xe9", "group_id": "g", "outcome": 1, "steps": [{"state": "s\xe9", '
        + b'"action": "a", "reward": 0, "value": 0.5, "tokens": 1}]}\n'
    )
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 2", "", "is not valid JSON")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    assert ei.value.record == "line 2", str(ei.value)


@pytest.mark.parametrize("content", ["", "\n", "\n\n   \n"], ids=["empty", "newline", "blank-lines"])
def test_jsonl_empty_file(content, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "", "", "holds no episodes")
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "", "", "holds no episodes")


def test_jsonl_two_objects_on_one_line(tmp_path):
    """One record per line: the precise path rejects line 1; the fast path must agree.

    The fast path accepts two objects on one line, which also shifts the record -> line map:
    a later error is then reported as ``record 2`` instead of ``line 2``.
    """
    a, b, c = (dumps(r) for r in base_records())
    path = tmp_path / "two.jsonl"
    path.write_text(a + " " + b + "\n" + c + "\n")
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 1", "", "is not valid JSON")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 1", "", "is not valid JSON")


def test_jsonl_meta_as_json_text_is_treated_alike_by_both_paths(tmp_path):
    """``"meta": "{\\"a\\": 1}"`` (a string) is not an object: the precise path says so;
    the fast path must not silently accept it."""
    rec = base_records(1)[0]
    rec["meta"] = json.dumps({"a": 1})
    path = tmp_path / "metatext.jsonl"
    path.write_text(dumps(rec) + "\n")
    with pytest.raises(RolloutsError) as ei:
        sio._read_jsonl_precise(path)
    check(ei.value, str(path), "line 1", "meta", "is a string, not an object")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "line 1", "meta", "is a string, not an object")


def test_jsonl_partial_reward_is_allowed_and_defaults_to_zero(tmp_path, spy_precise):
    recs = base_records()  # reward only in step 0 of each episode
    recs[0].pop("meta")  # a file with meta takes the precise path
    path = tmp_path / "ok.jsonl"
    write_jsonl(path, [dumps(r) for r in recs])
    ro = sc.read_rollouts(path)
    assert not spy_precise
    np.testing.assert_array_equal(ro.reward, [0.5, 0.0] * 3)
    assert ro.has("reward")
    ro2 = sio._read_jsonl_precise(path)
    np.testing.assert_array_equal(ro2.reward, [0.5, 0.0] * 3)
    # reward absent from every step: reward is 0 everywhere, and not listed as present
    for r in recs:
        for s in r["steps"]:
            s.pop("reward", None)
    write_jsonl(path, [dumps(r) for r in recs])
    ro3 = sc.read_rollouts(path)
    np.testing.assert_array_equal(ro3.reward, np.zeros(6))
    assert "reward" not in ro3.step_fields


def test_jsonl_field_null_everywhere_is_absent(tmp_path):
    recs = base_records()
    for r in recs:
        for s in r["steps"]:
            s["value"] = None
    path = tmp_path / "nulls.jsonl"
    write_jsonl(path, [dumps(r) for r in recs])
    ro = sc.read_rollouts(path)
    assert not ro.has("value")


# ---------------------------------------------------------------------- files in general
@pytest.mark.parametrize("name", ["roll.csv", "roll.json", "roll", "roll.jsonl.gz", "roll.txt"])
def test_unknown_extension(name, tmp_path):
    path = tmp_path / name
    path.write_text(dumps(base_records(1)[0]) + "\n")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "", "", "unknown extension")
    assert "*.jsonl or *.parquet" in ei.value.fix


@pytest.mark.parametrize("name", ["nope.jsonl", "nope.parquet", "sub/dir/nope.jsonl"])
def test_nonexistent_file(name, tmp_path):
    path = tmp_path / name
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "", "", "no such file")


def test_a_directory_is_a_dataset_of_parquet_files(tmp_path):
    path = tmp_path / "dir.jsonl"  # a directory is read as a Parquet dataset, whatever its name
    path.mkdir()
    (path / "a.jsonl").write_text("{}\n")  # JSONL files are not part of a dataset
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "", "", "holds no .parquet file")


@pytest.mark.parametrize(
    "content",
    [b"", b"not parquet at all\n", b"PAR1garbagePAR1", b'{"episode_id": "a"}\n'],
    ids=["empty", "text", "fake-magic", "jsonl-bytes"],
)
def test_non_parquet_bytes(content, tmp_path):
    path = tmp_path / "roll.parquet"
    path.write_bytes(content)
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(path)
    check(ei.value, str(path), "", "", "is not a readable Parquet file")


# ---------------------------------------------------------------------- Parquet
def write_parquet(path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


@pytest.mark.parametrize("case", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_parquet_value_errors(case, tmp_path):
    name, mutation, step, fld, problem, _ = case
    table = pa.Table.from_pylist(mutated(mutation))
    src = write_parquet(tmp_path / "roll.parquet", table)
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(src)
    check(ei.value, src, where("row 2", step), fld, problem.replace("{rec0}", "row 0"))


def test_parquet_missing_column(tmp_path):
    full = pa.Table.from_pylist(base_records())
    for name in ("episode_id", "group_id", "outcome", "steps"):
        src = write_parquet(tmp_path / f"no-{name}.parquet", full.drop_columns([name]))
        with pytest.raises(RolloutsError) as ei:
            sc.read_rollouts(src)
        check(ei.value, src, "row 0", name, "is missing")


def _steps(rows=3, **fields):
    """A list<struct> column: ``rows`` episodes, each one step holding ``fields``."""
    return pa.array([[dict(fields)] for _ in range(rows)])


def _table(**over):
    cols = {
        "episode_id": pa.array(["a", "b", "c"]),
        "group_id": pa.array(["g", "g", "h"]),
        "outcome": pa.array([1.0, 0.0, 1.0]),
        "steps": _steps(state="s", tokens=3),
    }
    cols.update(over)
    return pa.table(cols)


PARQUET_TYPE_CASES = [
    ("outcome-string", dict(outcome=pa.array(["1", "0", "1"])), None, "outcome", "is a string, not a number"),
    ("outcome-bool", dict(outcome=pa.array([True, False, True])), None, "outcome", "is a boolean, not a number"),
    ("episode_id-int", dict(episode_id=pa.array([1, 2, 3])), None, "episode_id", "is a number, not a string"),
    ("group_id-float", dict(group_id=pa.array([1.0, 2.0, 3.0])), None, "group_id", "is a number, not a string"),
    ("steps-string", dict(steps=pa.array(["x", "y", "z"])), None, "steps", "is a string, not a list"),
    ("steps-struct", dict(steps=pa.array([{"state": "s"}] * 3)), None, "steps", "is an object, not a list"),
    ("steps-list-of-int", dict(steps=pa.array([[1, 2]] * 3)), 0, "steps[]", "the step is a number, not an object"),
    ("state-list", dict(steps=_steps(state=["s"])), 0, "steps[].state", "is a list"),
    ("state-bool", dict(steps=_steps(state=True)), 0, "steps[].state", "is a boolean"),
    ("state-float", dict(steps=_steps(state=1.5)), 0, "steps[].state", "is a number"),
    ("state-struct", dict(steps=_steps(state={"k": 1})), 0, "steps[].state", "is an object"),
    ("action-list", dict(steps=_steps(action=[1])), 0, "steps[].action", "is a list"),
    ("tokens-float", dict(steps=_steps(tokens=3.5)), 0, "steps[].tokens", "not a whole number"),
    ("tokens-string", dict(steps=_steps(tokens="3")), 0, "steps[].tokens", "not a whole number"),
    ("reward-string", dict(steps=_steps(reward="0.5")), 0, "steps[].reward", "is a string, not a number"),
    ("value-bool", dict(steps=_steps(value=True)), 0, "steps[].value", "is a boolean, not a number"),
    ("meta-int", dict(meta=pa.array([1, 2, 3])), None, "meta", "not an object"),
    ("meta-not-json-text", dict(meta=pa.array(["{not json", None, None])), None, "meta", "is not valid JSON text"),
    ("meta-json-array-text", dict(meta=pa.array(["[1]", None, None])), None, "meta", "not an object"),
]


@pytest.mark.parametrize("case", PARQUET_TYPE_CASES, ids=[c[0] for c in PARQUET_TYPE_CASES])
def test_parquet_type_errors(case, tmp_path):
    name, over, step, fld, problem = case
    src = write_parquet(tmp_path / "roll.parquet", _table(**over))
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(src)
    check(ei.value, src, where("row 0", step), fld, problem)


def test_parquet_null_step_element(tmp_path):
    steps = pa.array([[{"state": "s"}], [{"state": "s"}], [{"state": "s"}, None]])
    src = write_parquet(tmp_path / "roll.parquet", _table(steps=steps))
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(src)
    check(ei.value, src, "row 2, step 1", "steps[]", "the step is null, not an object")


def test_parquet_zero_rows(tmp_path):
    src = write_parquet(tmp_path / "empty.parquet", _table().slice(0, 0))
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(src)
    check(ei.value, src, "", "", "holds no episodes")


def test_parquet_large_types_accepted(tmp_path):
    """large_string ids and large_list steps are valid Parquet layouts."""
    t = _table(
        episode_id=pa.array(["a", "b", "c"], pa.large_string()),
        group_id=pa.array(["g", "g", "h"], pa.large_string()),
        steps=pa.array([[{"state": "s", "tokens": 3}]] * 3,
                       pa.large_list(pa.struct([("state", pa.large_string()), ("tokens", pa.int32())]))),
    )
    src = write_parquet(tmp_path / "large.parquet", t)
    ro = sc.read_rollouts(src)
    assert ro.n_episodes == 3 and ro.columns["tokens"].tolist() == [3, 3, 3]


# ---------------------------------------------------------------------- records
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_records(case):
    name, mutation, step, fld, problem, _ = case
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records(mutated(mutation))
    check(ei.value, "<records>", where("record 2", step), fld, problem.replace("{rec0}", "record 0"))


def test_records_custom_source_name():
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records(mutated(setf("outcome", NAN)), source="batch-17")
    check(ei.value, "batch-17", "record 2", "outcome", "is nan")


@pytest.mark.parametrize("rec", [5, "episode", [1, 2], None], ids=["number", "string", "list", "null"])
def test_records_record_not_a_mapping(rec):
    recs = base_records(2) + [rec]
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records(recs)
    check(ei.value, "<records>", "record 2", "", "not an object")


def test_records_empty():
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records([])
    check(ei.value, "<records>", "", "", "holds no episodes")


def test_records_generator_accepted():
    ro = Rollouts.from_records(r for r in base_records())
    assert ro.n_episodes == 3


def test_records_huge_integer_outcome():
    recs = base_records(2) + [{"episode_id": "x", "group_id": "g", "outcome": 10**400, "steps": [{}]}]
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records(recs)
    check(ei.value, "<records>", "record 2", "outcome")


def test_records_key_integer_out_of_int64_range():
    recs = [{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": 1}, {"state": 2**64}]}]
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_records(recs)
    check(ei.value, "<records>", "record 0, step 1", "steps[].state")


def test_records_numpy_scalars_and_ints_accepted():
    """Integer outcomes and rewards are numbers; ints in float fields become floats."""
    ro = Rollouts.from_records(
        [{"episode_id": "a", "group_id": "g", "outcome": 1, "steps": [{"reward": 2, "value": 0}]}]
    )
    assert ro.outcome.dtype == np.float64 and ro.outcome[0] == 1.0
    assert ro.reward.tolist() == [2.0] and ro.columns["value"].tolist() == [0.0]


# ---------------------------------------------------------------------- arrays
def arrays(**over):
    """Three episodes with 2, 2, 2 steps (flat columns), as keyword arguments of from_arrays."""
    kw = dict(
        outcome=[1.0, 0.0, 1.0],
        group_id=["g0", "g0", "g1"],
        episode_id=["e0", "e1", "e2"],
        step_counts=[2, 2, 2],
        state=["s0", "s1"] * 3,
        action=["a0", "a1"] * 3,
        reward=[0.5, None] * 3,
        value=[0.25, 0.75] * 3,
        tokens=[3, 4] * 3,
    )
    kw.update(over)
    return kw


def _at(values, i, v):
    values = list(values)
    values[i] = v
    return values


ARRAY_CASES = [
    ("outcome-nan", dict(outcome=[1.0, 0.0, NAN]), "episode 2", "outcome", "is nan, not a finite number"),
    ("outcome-inf", dict(outcome=[1.0, 0.0, INF]), "episode 2", "outcome", "is inf, not a finite number"),
    ("outcome-neginf", dict(outcome=[1.0, 0.0, -INF]), "episode 2", "outcome", "is -inf, not a finite number"),
    ("reward-nan", dict(reward=_at([0.5, None] * 3, 4, NAN)), "episode 2, step 0", "steps[].reward", "is nan"),
    ("value-inf", dict(value=_at([0.25, 0.75] * 3, 5, INF)), "episode 2, step 1", "steps[].value", "is inf"),
    ("value-neginf-numpy", dict(value=np.array(_at([0.25, 0.75] * 3, 5, -INF))), "episode 2, step 1",
     "steps[].value", "is -inf"),
    ("empty-step_counts", dict(step_counts=[2, 4, 0]), "episode 2", "steps", "is empty"),
    ("empty-offsets", dict(step_counts=None, episode_offsets=[0, 2, 6, 6]), "episode 2", "steps", "is empty"),
    ("duplicate-id", dict(episode_id=["e0", "e1", "e0"]), "episode 2", "episode_id", "'e0' is also the id of episode 0"),
    ("missing-episode_id", dict(episode_id=["e0", "e1", None]), "episode 2", "episode_id", "is missing"),
    ("missing-group_id", dict(group_id=["g0", "g0", None]), "episode 2", "group_id", "is missing"),
    ("partial-value", dict(value=_at([0.25, 0.75] * 3, 5, None)), "episode 2, step 1", "steps[].value",
     "is missing here but present in other steps"),
    ("partial-state", dict(state=_at(["s0", "s1"] * 3, 4, None)), "episode 2, step 0", "steps[].state",
     "is missing here but present in other steps"),
    ("partial-tokens", dict(tokens=_at([3, 4] * 3, 5, None)), "episode 2, step 1", "steps[].tokens",
     "is missing here but present in other steps"),
    ("tokens-negative", dict(tokens=_at([3, 4] * 3, 5, -1)), "episode 2, step 1", "steps[].tokens", "negative"),
    ("state-bool", dict(state=np.array([True, False] * 3)), "episode 0, step 0", "steps[].state", "has type bool"),
    ("state-float", dict(state=np.array([0.5, 1.5] * 3)), "episode 0, step 0", "steps[].state", "has type double"),
    ("state-dict", dict(state=[{"k": 1}] * 6), "episode 0, step 0", "steps[].state", "has type struct"),
    ("tokens-float", dict(tokens=np.array([3.0, 4.5] * 3)), "episode 0, step 0", "steps[].tokens", "has type double"),
    ("reward-strings", dict(reward=["0.5", "x"] * 3), "episode 0, step 0", "steps[].reward", "has type string"),
    ("value-bool", dict(value=[True, False] * 3), "episode 0, step 0", "steps[].value", "has type bool"),
    # shapes
    ("offsets-and-counts", dict(episode_offsets=[0, 2, 4, 6]), "", "episode_offsets", "exactly one"),
    ("neither-offsets-nor-counts", dict(step_counts=None), "", "episode_offsets", "exactly one"),
    ("offsets-not-at-0", dict(step_counts=None, episode_offsets=[1, 2, 4, 6]), "", "episode_offsets", "start at 0"),
    ("offsets-decreasing", dict(step_counts=None, episode_offsets=[0, 4, 2, 6]), "", "episode_offsets",
     "non-decreasing"),
    ("offsets-length", dict(step_counts=None, episode_offsets=[0, 2, 6]), "", "episode_offsets", "length E+1 = 4"),
    ("counts-length", dict(step_counts=[2, 4]), "", "step_counts", "must have length E = 3"),
    ("column-length", dict(value=[0.0] * 5), "", "value", "has 5 values but the episodes hold 6 steps"),
    ("unknown-field", dict(colour=["red"] * 6), "", "colour", "unknown step field"),
]


@pytest.mark.parametrize("case", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_arrays(case):
    name, over, record, fld, problem = case
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_arrays(**arrays(**over))
    check(ei.value, "<arrays>", record, fld, problem)


def test_arrays_valid_baseline():
    ro = Rollouts.from_arrays(**arrays())
    assert ro.n_episodes == 3 and ro.n_steps == 6
    np.testing.assert_array_equal(ro.reward, [0.5, 0.0] * 3)


def test_arrays_outcome_strings_rejected():
    """Records reject a string outcome; from_arrays must too (not parse or crash in NumPy)."""
    for outcome in (["1.0", "0.0", "1.0"], ["win", "loss", "win"]):
        with pytest.raises(RolloutsError) as ei:
            Rollouts.from_arrays(**arrays(outcome=outcome))
        check(ei.value, "<arrays>", ei.value.record, "outcome")


def test_arrays_state_int_and_str_mixed_rejected():
    """state 1 (int) and "1" (str) hash differently by design; a mixed column must not be
    silently turned into strings (records reject it as 'is a number but was a string')."""
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_arrays(**arrays(state=["s0", 1] * 3))
    check(ei.value, "<arrays>", ei.value.record, "steps[].state")


def test_arrays_meta_not_an_object_rejected():
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_arrays(**arrays(meta=[{"a": 1}, None, 5]))
    check(ei.value, "<arrays>", "episode 2", "meta", "not an object")


def test_arrays_negative_step_count_message():
    """A negative count must be reported as such, not as a missing ``steps`` field."""
    with pytest.raises(RolloutsError) as ei:
        Rollouts.from_arrays(**arrays(step_counts=[2, 5, -1]))
    assert "missing" not in ei.value.problem, str(ei.value)


def test_arrays_integer_group_ids_become_strings():
    ro = Rollouts.from_arrays(**arrays(group_id=np.array([7, 7, 8]), episode_id=None))
    assert ro.group_id.to_pylist() == ["7", "7", "8"]
    assert ro.episode_id.to_pylist() == ["0", "1", "2"]


# ---------------------------------------------------------------------- message format
def test_message_layout():
    err = RolloutsError("f.jsonl", "line 3, step 1", "steps[].value", "is nan", "give a number")
    assert str(err) == "f.jsonl: line 3, step 1: field 'steps[].value': is nan. Fix: give a number"
    assert (err.source, err.record, err.field, err.problem, err.fix) == (
        "f.jsonl", "line 3, step 1", "steps[].value", "is nan", "give a number")
    assert str(RolloutsError("f.jsonl", "", "", "holds no episodes", "add one")) == (
        "f.jsonl: holds no episodes. Fix: add one")


def test_errors_are_value_errors_and_picklable():
    """Errors raised in worker processes (multiprocessing, Ray tasks) are pickled: the
    attributes and message must survive the round trip."""
    import pickle

    with pytest.raises(ValueError):
        Rollouts.from_records(mutated(setf("outcome", NAN)))
    err = RolloutsError("f.jsonl", "line 2", "outcome", "is nan", "give a number")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, RolloutsError)
    assert str(back) == str(err)
    assert (back.source, back.record, back.field, back.problem, back.fix) == (
        err.source, err.record, err.field, err.problem, err.fix)


def test_missing_column_error_names_column_and_user():
    ro = Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]}])
    with pytest.raises(sc.MissingColumnError) as ei:
        ro.column("value", by="estimator 'gae'")
    msg = str(ei.value)
    assert "estimator 'gae'" in msg and "'value'" in msg and "step fields present: state" in msg
    assert "Fix:" in msg and ei.value.column == "value"
    with pytest.raises(sc.MissingColumnError):
        ro.require(["reward", "state", "tokens"], by="x")
    ro.require(["reward", "state"], by="x")  # reward is always usable (absent = 0)
    assert ro.column("reward").tolist() == [0.0]
