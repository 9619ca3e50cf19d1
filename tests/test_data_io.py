"""Round trips of rollouts between JSONL, Parquet, records and Arrow; credit writing.

Covers: every route gives ``Rollouts.equals``-identical data (meta, unicode, int and string
keys, all optional step fields), hypothesis-generated rollouts, ``take``, ``from_arrays`` vs
``from_records``, key hashes across routes, the fast vs the precise JSONL reader, the
advantages table written by ``write_credit`` (columns, exact floats, chunking, progress,
atomicity), ``Credit`` shape validation and ``credit_table`` refusing other rollouts.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
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
from stepcredit import Credit, Rollouts, RolloutsError, hash_keys
from stepcredit.data.hashing import splitmix64
from stepcredit.data.io import _read_jsonl_precise, credit_table

FLOAT_FIELDS = ("reward", "process", "value", "p_answer", "grounding", "importance", "logp", "ref_logp")


# ---------------------------------------------------------------------- data
def rich_records(int_keys: bool = False) -> list[dict]:
    """Every optional step field in every step, unicode, nested meta with the same keys."""
    key = (lambda s: s) if not int_keys else (lambda s: {"s0": 0, "s1": -7, "s2": 2**62, "n": 5}.get(s, 11))
    recs = []
    steps_per_ep = [1, 3, 2, 4]
    for e, n in enumerate(steps_per_ep):
        steps = []
        for t in range(n):
            steps.append({
                "state": key(f"s{t % 3}") if not int_keys else [0, -7, 2**62][t % 3],
                "action": f"aktion «{t}» 😀\n\"quoted\"" if not int_keys else t - 1,
                "node": f"n{e}-{t}" if not int_keys else e * 10 + t,
                "reward": [0.0, 1.0, -0.5, 1 / 3][t],
                "process": 0.1 * t,
                "value": 1e-300 if t == 0 else 1e22,
                "p_answer": 0.5 ** (t + 1),
                "grounding": float(t % 2),
                "importance": 0.25 * t,
                "logp": -1.25 * (t + 1),
                "ref_logp": -1.5 * (t + 1),
                "tokens": [0, 17, 2**40, 3][t],
            })
        recs.append({
            "episode_id": ["épisode-0", "эпизод-1", "エピソード-2", "ep 3 \t tab"][e],
            "group_id": ["群-A", "群-A", "grp-B", "grp-B"][e],
            "outcome": [1.0, 0.0, -0.0, 2.5e-8][e],
            "steps": steps,
            "meta": {"task": {"id": e, "tags": ["x", "ÿ"], "deep": {"k": [1, 2], "z": None}}, "score": 0.25 * e},
        })
    return recs


def write_records_jsonl(path: Path, recs: list[dict], blank_lines: bool = True) -> None:
    lines = []
    for i, r in enumerate(recs):
        if blank_lines and i % 2:
            lines.append("")
        lines.append(json.dumps(r, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def all_routes(ro: Rollouts, tmp: Path, stem: str = "r") -> dict[str, Rollouts]:
    """The same rollouts through every route."""
    out = {}
    sc.write_rollouts(ro, tmp / f"{stem}.jsonl")
    sc.write_rollouts(ro, tmp / f"{stem}.parquet")
    out["jsonl"] = sc.read_rollouts(tmp / f"{stem}.jsonl")
    out["jsonl-precise"] = _read_jsonl_precise(tmp / f"{stem}.jsonl")
    out["parquet"] = sc.read_rollouts(tmp / f"{stem}.parquet")
    out["arrow"] = Rollouts.from_arrow(ro.to_arrow())
    out["records"] = Rollouts.from_records(ro.to_records())
    out["parquet->records->jsonl"] = _via(Rollouts.from_records(out["parquet"].to_records()), tmp, f"{stem}2.jsonl")
    out["jsonl->arrow->parquet"] = _via(Rollouts.from_arrow(out["jsonl"].to_arrow()), tmp, f"{stem}2.parquet")
    return out


def _via(ro: Rollouts, tmp: Path, name: str) -> Rollouts:
    sc.write_rollouts(ro, tmp / name)
    return sc.read_rollouts(tmp / name)


def strict_meta(ro: Rollouts) -> list:
    """Meta as canonical JSON text: distinguishes 1 from 1.0 and absent keys from null."""
    if ro.meta is None:
        return [None] * ro.n_episodes
    return [None if m is None else json.dumps(json.loads(m), sort_keys=True) for m in ro.meta.to_pylist()]


def assert_same(a: Rollouts, b: Rollouts, label: str = "") -> None:
    assert a.equals(b), f"{label}: {a!r} != {b!r}"
    assert b.equals(a), label
    for k in a.key_values:
        assert a.key_values[k].type == b.key_values[k].type, (label, k)
    for k in a.columns:
        assert a.columns[k].dtype == b.columns[k].dtype, (label, k)
        # exact, including the sign of zero
        assert np.array_equal(np.signbit(a.columns[k]), np.signbit(b.columns[k])), (label, k)
    assert np.array_equal(np.signbit(a.outcome), np.signbit(b.outcome)), label
    assert strict_meta(a) == strict_meta(b), label


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("int_keys", [False, True], ids=["str-keys", "int-keys"])
def test_round_trip_every_route(int_keys, tmp_path):
    recs = rich_records(int_keys)
    ro = Rollouts.from_records(recs)
    assert ro.step_fields == ("state", "action", "node", *FLOAT_FIELDS, "tokens")
    assert ro.n_episodes == 4 and ro.n_steps == 10
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)
    # to_records gives back exactly the input records (reward given in every step here)
    assert ro.to_records() == recs
    assert json.dumps(ro.to_records(), sort_keys=True) == json.dumps(recs, sort_keys=True)


def test_round_trip_from_jsonl_file(tmp_path):
    """Start from a hand-written JSONL file (ints in float fields, blank lines)."""
    recs = rich_records()
    recs[0]["outcome"] = 1  # an int outcome is a number
    recs[1]["steps"][0]["reward"] = 2
    p = tmp_path / "in.jsonl"
    write_records_jsonl(p, recs)
    ro = sc.read_rollouts(p)
    assert ro.outcome[0] == 1.0 and ro.reward[1] == 2.0
    assert_same(ro, Rollouts.from_records(recs), "file vs records")
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)


def test_round_trip_partial_reward(tmp_path):
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"reward": 0.5}, {}, {"state": None}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{}]},
    ]
    ro = Rollouts.from_records(recs)
    np.testing.assert_array_equal(ro.reward, [0.5, 0.0, 0.0, 0.0])
    assert not ro.has("state")
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)


def test_round_trip_minimal_fields(tmp_path):
    """Steps with only one field (the smallest non-empty step schema)."""
    ro = Rollouts.from_records([{"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"tokens": 2}]}])
    for route, back in all_routes(ro, tmp_path).items():
        assert_same(ro, back, route)


def test_round_trip_steps_without_known_fields(tmp_path):
    """``"steps": [{}]`` is valid (every step field is optional): writing it as Parquet
    must work and read back the same rollouts."""
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{}, {"note": "ignored"}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{}]},
    ]
    ro = Rollouts.from_records(recs)
    assert ro.step_fields == () and ro.n_steps == 3
    assert_same(ro, Rollouts.from_arrow(ro.to_arrow()), "arrow")
    assert_same(ro, _via(ro, tmp_path, "x.jsonl"), "jsonl")
    sc.write_rollouts(ro, tmp_path / "x.parquet")
    assert_same(ro, sc.read_rollouts(tmp_path / "x.parquet"), "parquet")


@pytest.mark.parametrize("name", ["r.ndjson", "r.pq", "R.JSONL", "R.Parquet"])
def test_other_extensions(name, tmp_path):
    ro = Rollouts.from_records(rich_records())
    sc.write_rollouts(ro, tmp_path / name)
    assert_same(ro, sc.read_rollouts(tmp_path / name), name)


def test_write_rollouts_unknown_extension(tmp_path):
    ro = Rollouts.from_records(rich_records())
    with pytest.raises(RolloutsError) as ei:
        sc.write_rollouts(ro, tmp_path / "out.csv")
    assert "unknown extension '.csv'" in str(ei.value) and "Fix:" in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_write_rollouts_overwrites(tmp_path):
    a = Rollouts.from_records(rich_records())
    b = a.take([2, 0])
    for ext in ("jsonl", "parquet"):
        p = tmp_path / f"o.{ext}"
        sc.write_rollouts(a, p)
        sc.write_rollouts(b, p)
        assert_same(b, sc.read_rollouts(p), ext)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.jsonl", "o.parquet"]


def test_jsonl_written_is_one_valid_object_per_line(tmp_path):
    ro = Rollouts.from_records(rich_records())
    p = tmp_path / "o.jsonl"
    sc.write_rollouts(ro, p)
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == ro.n_episodes + 1
    for line in lines[:-1]:
        assert isinstance(json.loads(line), dict)
    assert "épisode-0" in text  # unicode is written as is, not escaped


# ---------------------------------------------------------------------- meta
META_CASES = {
    "nested-same-keys": [{"a": {"b": [1, 2], "c": "d"}, "n": 1}, {"a": {"b": [], "c": "e"}, "n": 2},
                         {"a": {"b": [3], "c": ""}, "n": 3}],
    "absent-in-some": [{"k": "v"}, None, {"k": "w"}],
    "heterogeneous-keys": [{"a": 1}, {"b": [1, 2]}, {"c": {"d": "x"}}],
    "nested-heterogeneous-keys": [{"a": {"b": 1}}, {"a": {"c": "x"}}, None],
    "mixed-list": [{"a": [1, "two", None, {"b": {}}]}, {"a": []}, {"a": [True]}],
    "int-and-float-values": [{"x": 1}, {"x": 1.5}, {"x": -0.0}],
    "null-values-and-empty": [{"a": None}, {}, {"a": "x"}],
    "unicode": [{"ключ": "значение 😀"}, {"ключ": "\u2028line sep"}, {"ключ": ""}],
    "date-like-strings": [{"when": "2024-01-01"}, {"when": "2024-01-02T10:20:30"}, None],
}
META_ROUTES = ["records", "arrow", "parquet", "jsonl", "jsonl-precise", "from_arrays"]


def _meta_rollouts(metas) -> list[dict]:
    recs = []
    for i, m in enumerate(metas):
        r = {"episode_id": f"e{i}", "group_id": "g", "outcome": float(i), "steps": [{"state": "s"}]}
        if m is not None:
            r["meta"] = m
        recs.append(r)
    return recs


@pytest.mark.parametrize("route", META_ROUTES)
@pytest.mark.parametrize("case", list(META_CASES), ids=list(META_CASES))
def test_meta_carried_unchanged(case, route, tmp_path):
    metas = META_CASES[case]
    recs = _meta_rollouts(metas)
    expected = [None if m is None else json.dumps(m, sort_keys=True) for m in metas]
    if route == "records":
        ro = Rollouts.from_records(recs)
    elif route == "arrow":
        ro = Rollouts.from_arrow(Rollouts.from_records(recs).to_arrow())
    elif route == "parquet":
        sc.write_rollouts(Rollouts.from_records(recs), tmp_path / "m.parquet")
        ro = sc.read_rollouts(tmp_path / "m.parquet")
    elif route == "from_arrays":
        ro = Rollouts.from_arrays(
            outcome=[r["outcome"] for r in recs], group_id=["g"] * len(recs),
            episode_id=[r["episode_id"] for r in recs], step_counts=[1] * len(recs),
            state=["s"] * len(recs), meta=metas,
        )
    else:
        p = tmp_path / "m.jsonl"
        write_records_jsonl(p, recs)
        ro = sc.read_rollouts(p) if route == "jsonl" else _read_jsonl_precise(p)
    assert strict_meta(ro) == expected
    back = [r.get("meta") for r in ro.to_records()]
    assert json.dumps(back, sort_keys=True) == json.dumps(metas, sort_keys=True)


def test_meta_absent_everywhere_is_none(tmp_path):
    recs = _meta_rollouts([None, None])
    ro = Rollouts.from_records(recs)
    assert ro.meta is None
    for route, back in all_routes(ro, tmp_path).items():
        assert back.meta is None, route
        assert "meta" not in back.to_records()[0], route


def test_meta_struct_column_in_parquet(tmp_path):
    """A Parquet file written by other tools may hold meta as a struct column."""
    t = pa.table({
        "episode_id": ["a", "b"], "group_id": ["g", "g"], "outcome": [1.0, 0.0],
        "steps": pa.array([[{"state": "s"}], [{"state": "t"}]]),
        "meta": pa.array([{"task": "x", "n": 1}, None]),
    })
    pq.write_table(t, tmp_path / "s.parquet")
    ro = sc.read_rollouts(tmp_path / "s.parquet")
    assert [r.get("meta") for r in ro.to_records()] == [{"task": "x", "n": 1}, None]


# ---------------------------------------------------------------------- unicode and keys
def test_unicode_and_date_like_ids_and_keys(tmp_path):
    """Strings that look like dates are still strings (ids, group ids, states, actions)."""
    recs = [
        {"episode_id": "2024-01-01", "group_id": "2024-01-01", "outcome": 1.0,
         "steps": [{"state": "2024-01-02", "action": "2024-01-02 10:00:00"}]},
        {"episode_id": "2024-01-02T03:04:05", "group_id": "2024-01-01", "outcome": 0.0,
         "steps": [{"state": "1970-01-01", "action": "x"}]},
    ]
    ro = Rollouts.from_records(recs)
    p = tmp_path / "dates.jsonl"
    write_records_jsonl(p, recs)
    assert_same(ro, _read_jsonl_precise(p), "precise")
    assert_same(ro, sc.read_rollouts(p), "fast")
    sc.write_rollouts(ro, tmp_path / "dates.parquet")
    assert_same(ro, sc.read_rollouts(tmp_path / "dates.parquet"), "parquet")


def test_hash_equal_across_routes(tmp_path):
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s1", "node": 5}, {"state": "s2", "node": 6}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"state": "s1", "node": 5}]},
    ]
    ro_rec = Rollouts.from_records(recs)
    p = tmp_path / "k.jsonl"
    write_records_jsonl(p, recs)
    ro_json = sc.read_rollouts(p)
    ro_precise = _read_jsonl_precise(p)
    sc.write_rollouts(ro_rec, tmp_path / "k.parquet")
    ro_pq = sc.read_rollouts(tmp_path / "k.parquet")
    ro_arr = Rollouts.from_arrays(outcome=[1.0, 0.0], group_id=["g", "g"], episode_id=["a", "b"],
                                  step_counts=[2, 1], state=["s1", "s2", "s1"],
                                  node=np.array([5, 6, 5], dtype=np.int32))
    h_s1 = hash_keys(["s1"])[0]
    h_5 = hash_keys(np.array([5]))[0]
    for name, ro in [("records", ro_rec), ("jsonl", ro_json), ("precise", ro_precise), ("parquet", ro_pq), ("arrays", ro_arr)]:
        st_ = ro.keys["state"]
        assert st_.dtype == np.uint64, name
        assert st_[0] == st_[2] == h_s1, name
        assert st_[1] != h_s1, name
        assert ro.keys["node"][0] == ro.keys["node"][2] == h_5, name
        np.testing.assert_array_equal(ro.keys["state"], ro_rec.keys["state"])
        np.testing.assert_array_equal(ro.keys["node"], ro_rec.keys["node"])


def test_hash_keys_inputs_agree():
    strs = ["s1", "", "état", "😀", "s1", "a" * 300]
    ref = hash_keys(strs)
    assert ref[0] == ref[4] and len(set(ref.tolist())) == 5
    np.testing.assert_array_equal(hash_keys(pa.array(strs)), ref)
    np.testing.assert_array_equal(hash_keys(pa.array(strs, pa.large_string())), ref)
    np.testing.assert_array_equal(hash_keys(pa.chunked_array([strs[:2], strs[2:]])), ref)
    np.testing.assert_array_equal(hash_keys(pa.array(strs).slice(2)), ref[2:])
    ints = [5, -1, 0, 2**63 - 1, -(2**63)]
    iref = hash_keys(np.array(ints, dtype=np.int64))
    np.testing.assert_array_equal(hash_keys(ints), iref)
    np.testing.assert_array_equal(hash_keys(pa.array(ints)), iref)
    np.testing.assert_array_equal(hash_keys(np.array([5, -1, 0], dtype=np.int32)), iref[:3])
    # the integer 5 and the string "5" differ
    assert hash_keys(["5"])[0] != hash_keys([5])[0]
    with pytest.raises(ValueError):
        hash_keys(pa.array(["a", None]))
    with pytest.raises(TypeError):
        hash_keys(pa.array([1.5]))


def _fnv1a_splitmix_reference(s: str) -> int:
    m = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & m
    z = h
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & m
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & m
    z ^= z >> 31
    return z


def test_hash_matches_documented_algorithm():
    strs = ["", "a", "s1", "état 😀", "x" * 70]
    got = hash_keys(strs)
    assert [int(v) for v in got] == [_fnv1a_splitmix_reference(s) for s in strs]
    ints = np.array([0, 5, -3], dtype=np.int64)
    exp = splitmix64(ints.view(np.uint64) ^ np.uint64(0x9E3779B97F4A7C15))
    np.testing.assert_array_equal(hash_keys(ints), exp)


def test_hash_stable_across_processes():
    code = ("import stepcredit as sc, numpy as np; "
            "print(list(map(int, sc.hash_keys(['s1', 'état']))), list(map(int, sc.hash_keys(np.array([5, -2])))))")
    here = f"{list(map(int, hash_keys(['s1', 'état'])))} {list(map(int, hash_keys(np.array([5, -2]))))}"
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        assert out == here


# ---------------------------------------------------------------------- fast vs precise
def test_fast_and_precise_jsonl_readers_agree(tmp_path, monkeypatch):
    recs = rich_records()
    recs[0]["steps"][0]["reward"] = 1  # int in a float column
    del recs[2]["steps"][1]["reward"]  # partial reward
    recs[3]["extra_top_level"] = {"ignored": True}
    recs[1]["steps"][0]["extra_step_field"] = [1, 2]
    for r in recs:  # a file with meta takes the precise path (Arrow would merge the objects)
        r.pop("meta", None)
    p = tmp_path / "v.jsonl"
    write_records_jsonl(p, recs)
    calls = []
    orig = sio._read_jsonl_precise
    monkeypatch.setattr(sio, "_read_jsonl_precise", lambda q: calls.append(q) or orig(q))
    fast = sc.read_rollouts(p)
    assert not calls, "a valid, consistently typed file should be read by the fast path"
    precise = _read_jsonl_precise(p)
    assert_same(fast, precise, "fast vs precise")
    assert_same(fast, Rollouts.from_records(recs), "fast vs records")


@pytest.mark.parametrize("int_keys", [False, True])
def test_fast_and_precise_agree_int_keys_and_crlf(int_keys, tmp_path):
    recs = rich_records(int_keys)
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(b"".join(json.dumps(r).encode() + b"\r\n" for r in recs))
    assert_same(sc.read_rollouts(p), _read_jsonl_precise(p), "crlf")


# ---------------------------------------------------------------------- hypothesis
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="-:"),
    min_size=0, max_size=8,
)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_KEYS = ("state", "action", "node")


@st.composite
def rollout_records(draw, partial_meta: bool = True, partial_reward_ok: bool = True):
    """Random valid records. ``partial_meta=False``: meta in every episode or in none;
    ``partial_reward_ok=False``: reward in every step or in none."""
    n_eps = draw(st.integers(1, 6))
    ids = draw(st.lists(_text, min_size=n_eps, max_size=n_eps, unique=True))
    groups = draw(st.lists(_text, min_size=1, max_size=3))
    fields = draw(st.sets(st.sampled_from(_KEYS + FLOAT_FIELDS + ("tokens",)), min_size=1))
    key_kind = {k: draw(st.sampled_from(["str", "int"])) for k in _KEYS}
    partial_reward = partial_reward_ok and draw(st.booleans())
    with_meta = draw(st.booleans())
    recs = []
    for i in range(n_eps):
        steps = []
        for _ in range(draw(st.integers(1, 4))):
            step = {}
            for f in sorted(fields):
                if f in _KEYS:
                    step[f] = draw(_text if key_kind[f] == "str" else st.integers(-(2**63), 2**63 - 1))
                elif f == "tokens":
                    step[f] = draw(st.integers(0, 2**63 - 1))
                elif f == "reward" and partial_reward and draw(st.booleans()):
                    continue
                else:
                    step[f] = draw(_floats)
            steps.append(step)
        rec = {"episode_id": ids[i], "group_id": draw(st.sampled_from(groups)),
               "outcome": draw(_floats), "steps": steps}
        if with_meta and (not partial_meta or draw(st.booleans())):
            rec["meta"] = {"k": draw(_text), "n": draw(st.integers(-1000, 1000)),
                           "l": draw(st.lists(st.integers(0, 9), max_size=3))}
        recs.append(rec)
    return recs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=rollout_records())
def test_hypothesis_round_trip(recs):
    ro = Rollouts.from_records(recs)
    assert ro.n_episodes == len(recs)
    assert ro.n_steps == sum(len(r["steps"]) for r in recs)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        p = tmp / "h.jsonl"
        write_records_jsonl(p, recs)
        assert_same(ro, sc.read_rollouts(p), "hand-written jsonl, fast")
        assert_same(ro, _read_jsonl_precise(p), "hand-written jsonl, precise")
        for route, back in all_routes(ro, tmp).items():
            assert_same(ro, back, route)


@settings(max_examples=60, deadline=None)
@given(recs=rollout_records(partial_meta=False, partial_reward_ok=False), data=st.data())
def test_hypothesis_take(recs, data):
    # meta in some episodes only: see test_take_subset_without_meta_equals_rollouts_built_from_it.
    # reward in some steps only: a subset may hold no reward at all, and from_records then has
    # no reward column while take() keeps an all-zero one (equal values, different presence).
    ro = Rollouts.from_records(recs)
    E = ro.n_episodes
    perm = data.draw(st.permutations(range(E)))
    assert_same(ro.take(perm), Rollouts.from_records([recs[i] for i in perm]), "take(perm)")
    subset = sorted(data.draw(st.sets(st.integers(0, E - 1), min_size=1)))
    assert_same(ro.take(subset), Rollouts.from_records([recs[i] for i in subset]), "take(subset)")


# ---------------------------------------------------------------------- take
def test_take_permutation_and_inverse():
    recs = rich_records()
    ro = Rollouts.from_records(recs)
    perm = np.array([2, 0, 3, 1])
    t = ro.take(perm)
    assert t.episode_id.to_pylist() == [recs[i]["episode_id"] for i in perm]
    np.testing.assert_array_equal(t.step_counts, ro.step_counts[perm])
    assert_same(t.take(np.argsort(perm)), ro, "inverse")
    assert_same(ro.take(np.arange(4)), ro, "identity")
    assert_same(t, Rollouts.from_records([recs[i] for i in perm]), "vs records")
    # per-step arrays follow their episodes
    for new_e, old_e in enumerate(perm):
        a, b = t.episode_offsets[new_e], t.episode_offsets[new_e + 1]
        c, d = ro.episode_offsets[old_e], ro.episode_offsets[old_e + 1]
        for k in ro.columns:
            np.testing.assert_array_equal(t.columns[k][a:b], ro.columns[k][c:d])
        for k in ro.keys:
            np.testing.assert_array_equal(t.keys[k][a:b], ro.keys[k][c:d])
    # group indices are renumbered by first appearance
    assert t.group_names.to_pylist() == ["grp-B", "群-A"]
    assert t.episode_group.tolist() == [0, 1, 0, 1]


def test_take_subset_and_meta():
    recs = rich_records()
    recs[1].pop("meta")
    ro = Rollouts.from_records(recs)
    sub = ro.take([3, 1])
    assert_same(sub, Rollouts.from_records([recs[3], recs[1]]), "subset")
    assert [r.get("meta") for r in sub.to_records()] == [recs[3]["meta"], None]
    assert sub.n_steps == 4 + 3
    assert sub.step_index.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert sub.step_episode.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_take_subset_without_meta_equals_rollouts_built_from_it(tmp_path):
    """Episode 0 has no meta, episode 1 has one: ``take([0])`` holds no meta at all, so it
    must equal the rollouts built from record 0 alone, and survive a write/read round trip."""
    recs = [
        {"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": [{"state": "s"}]},
        {"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": [{"state": "s"}], "meta": {"k": 1}},
    ]
    sub = Rollouts.from_records(recs).take([0])
    assert_same(sub, Rollouts.from_records(recs[:1]), "take vs records")
    for ext in ("jsonl", "parquet"):
        sc.write_rollouts(sub, tmp_path / f"sub.{ext}")
        assert_same(sub, sc.read_rollouts(tmp_path / f"sub.{ext}"), ext)


def test_rollouts_arrays_are_read_only():
    ro = Rollouts.from_records(rich_records())
    for arr in [ro.outcome, ro.episode_offsets, ro.reward, *ro.columns.values(), *ro.keys.values(),
                ro.step_index, ro.step_episode, ro.step_counts, ro.episode_group]:
        with pytest.raises(ValueError):
            arr[0] = arr[0]


# ---------------------------------------------------------------------- from_arrays
def test_from_arrays_equals_from_records():
    recs = rich_records()
    ro = Rollouts.from_records(recs)
    steps = [s for r in recs for s in r["steps"]]
    kw = {f: [s[f] for s in steps] for f in ("state", "action", "node", *FLOAT_FIELDS, "tokens")}
    a = Rollouts.from_arrays(
        outcome=np.array([r["outcome"] for r in recs]),
        group_id=[r["group_id"] for r in recs],
        episode_id=[r["episode_id"] for r in recs],
        step_counts=[len(r["steps"]) for r in recs],
        meta=[r["meta"] for r in recs],
        **kw,
    )
    assert_same(a, ro, "step_counts")
    b = Rollouts.from_arrays(
        outcome=[r["outcome"] for r in recs],
        group_id=pa.array([r["group_id"] for r in recs]),
        episode_id=pa.array([r["episode_id"] for r in recs]),
        episode_offsets=np.concatenate([[0], np.cumsum([len(r["steps"]) for r in recs])]),
        meta=[r["meta"] for r in recs],
        **{k: (np.asarray(v) if k != "state" else pa.array(v)) for k, v in kw.items()},
    )
    assert_same(b, ro, "offsets + numpy/arrow columns")


def test_from_arrays_defaults_partial_reward_int_keys():
    recs = [
        {"episode_id": "0", "group_id": "3", "outcome": 1.0, "steps": [{"state": 4, "reward": 0.5}, {"state": -1}]},
        {"episode_id": "1", "group_id": "3", "outcome": 0.0, "steps": [{"state": 4}]},
    ]
    ro = Rollouts.from_records(recs)
    a = Rollouts.from_arrays(outcome=[1, 0], group_id=np.array([3, 3]), step_counts=[2, 1],
                             state=np.array([4, -1, 4], dtype=np.int16), reward=[0.5, None, None])
    assert_same(a, ro, "arrays")
    assert a.key_values["state"].type == pa.int64()


# ---------------------------------------------------------------------- credit writing
def make_ro(counts=(2, 3, 1, 4)) -> Rollouts:
    recs = []
    for e, n in enumerate(counts):
        recs.append({"episode_id": f"ép-{e}", "group_id": ["α", "β"][e % 2], "outcome": float(e % 2),
                     "steps": [{"state": f"s{t}", "value": 0.1 * t} for t in range(n)]})
    return Rollouts.from_records(recs)


SPECIAL = np.array([1 / 3, 1e-300, 1e22, -0.0, 5e-324, 1.7976931348623157e308, -2.5, 0.1, 1e16, 123456789.125])


def special_credit(ro: Rollouts, with_extra: bool = True) -> Credit:
    S, E = ro.n_steps, ro.n_episodes
    adv = np.resize(SPECIAL, S)
    return Credit(
        step_advantage=adv,
        episode_advantage=np.resize(SPECIAL[::-1], E),
        episode_offsets=ro.episode_offsets,
        step_return=(-adv if with_extra else None),
        step_reward=(np.roll(adv, 1) if with_extra else None),
        estimator="test",
    )


def expected_rows(credit: Credit, ro: Rollouts) -> list[dict]:
    rows = []
    for s in range(ro.n_steps):
        e = int(ro.step_episode[s])
        row = {
            "episode_id": ro.episode_id[e].as_py(),
            "group_id": ro.group_id[e].as_py(),
            "step": int(ro.step_index[s]),
            "advantage": float(credit.step_advantage[s]),
            "episode_advantage": float(credit.episode_advantage[e]),
        }
        if credit.step_return is not None:
            row["return"] = float(credit.step_return[s])
        if credit.step_reward is not None:
            row["reward"] = float(credit.step_reward[s])
        rows.append(row)
    return rows


def read_jsonl_rows(p: Path) -> list[dict]:
    text = p.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_write_credit_parquet_exact(tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    p = tmp_path / "adv.parquet"
    sc.write_credit(cr, ro, p)
    t = pq.read_table(p)
    assert t.column_names == ["episode_id", "group_id", "step", "advantage", "episode_advantage", "return", "reward"]
    assert t.num_rows == ro.n_steps
    assert pa.types.is_string(t.schema.field("episode_id").type) or pa.types.is_large_string(t.schema.field("episode_id").type)
    assert pa.types.is_integer(t.schema.field("step").type)
    for c in ("advantage", "episode_advantage", "return", "reward"):
        assert t.schema.field(c).type == pa.float64()
    rows = t.to_pylist()
    exp = expected_rows(cr, ro)
    assert rows == exp
    got = t.column("advantage").to_numpy()
    assert np.array_equal(got, cr.step_advantage)
    assert np.array_equal(np.signbit(got), np.signbit(cr.step_advantage))  # -0.0 stays -0.0
    assert t.column("step").to_pylist() == [0, 1, 0, 1, 2, 0, 0, 1, 2, 3]


def test_write_credit_jsonl_exact(tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    p = tmp_path / "adv.jsonl"
    sc.write_credit(cr, ro, p)
    rows = read_jsonl_rows(p)
    exp = expected_rows(cr, ro)
    assert len(rows) == ro.n_steps
    for got, want in zip(rows, exp):
        assert list(got) == list(want)  # same columns, same order
        assert got["episode_id"] == want["episode_id"] and got["group_id"] == want["group_id"]
        assert got["step"] == want["step"] and isinstance(got["step"], int)
        for c in ("advantage", "episode_advantage", "return", "reward"):
            assert got[c] == want[c], (c, got[c], want[c])
    assert "ép-0" in p.read_text(encoding="utf-8")


def test_write_credit_without_optional_columns(tmp_path):
    ro = make_ro()
    cr = special_credit(ro, with_extra=False)
    sc.write_credit(cr, ro, tmp_path / "a.parquet")
    sc.write_credit(cr, ro, tmp_path / "a.jsonl")
    cols = ["episode_id", "group_id", "step", "advantage", "episode_advantage"]
    assert pq.read_table(tmp_path / "a.parquet").column_names == cols
    assert all(list(r) == cols for r in read_jsonl_rows(tmp_path / "a.jsonl"))


def test_write_credit_gae_and_grpo(tmp_path):
    ro = make_ro()
    gae = sc.estimate(ro, "gae", gamma=0.9, lam=0.8)
    grpo = sc.estimate(ro, "grpo")
    for name, cr in (("gae", gae), ("grpo", grpo)):
        sc.write_credit(cr, ro, tmp_path / f"{name}.parquet")
        sc.write_credit(cr, ro, tmp_path / f"{name}.jsonl")
        t = pq.read_table(tmp_path / f"{name}.parquet")
        rows = read_jsonl_rows(tmp_path / f"{name}.jsonl")
        base = ["episode_id", "group_id", "step", "advantage", "episode_advantage"]
        extra = ["return", "reward"] if name == "gae" else []
        assert t.column_names == base + extra
        assert t.num_rows == len(rows) == ro.n_steps
        assert t.to_pylist() == expected_rows(cr, ro)
        assert [{k: float(v) if isinstance(v, int) and k != "step" else v for k, v in r.items()} for r in rows] \
            == expected_rows(cr, ro)


def test_write_credit_chunked_equals_single_chunk(tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    S = ro.n_steps
    for ext in ("jsonl", "parquet"):
        one, many = tmp_path / f"one.{ext}", tmp_path / f"many.{ext}"
        calls_one, calls_many = [], []
        sc.write_credit(cr, ro, one, progress=lambda d, t: calls_one.append((d, t)))
        sc.write_credit(cr, ro, many, chunk_steps=3, progress=lambda d, t: calls_many.append((d, t)))
        assert calls_one == [(S, S)]
        assert calls_many == [(3, S), (6, S), (9, S), (10, S)]
        if ext == "jsonl":
            assert one.read_bytes() == many.read_bytes()
        else:
            a, b = pq.read_table(one), pq.read_table(many)
            assert a.equals(b)
            assert pq.ParquetFile(many).metadata.num_row_groups == 4
        # chunk sizes dividing S exactly, and larger than S
        for k in (1, 5, 10, 11):
            other = tmp_path / f"k{k}.{ext}"
            sc.write_credit(cr, ro, other, chunk_steps=k)
            if ext == "jsonl":
                assert other.read_bytes() == one.read_bytes(), k
            else:
                assert pq.read_table(other).equals(pq.read_table(one)), k


@pytest.mark.parametrize("chunk", [0, -1])
def test_write_credit_bad_chunk_size(chunk, tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    for ext in ("jsonl", "parquet"):
        p = tmp_path / f"c.{ext}"
        with pytest.raises(ValueError):
            sc.write_credit(cr, ro, p, chunk_steps=chunk)
        assert not p.exists()
        assert list(tmp_path.iterdir()) == []


def test_write_credit_non_finite_values_make_valid_jsonl_or_are_refused(tmp_path):
    """A JSONL output line must be JSON: ``nan`` / ``inf`` are not (not even for Python)."""
    ro = make_ro((2,))
    cr = Credit(step_advantage=np.array([np.nan, np.inf]), episode_advantage=np.array([-np.inf]),
                episode_offsets=ro.episode_offsets)
    p = tmp_path / "nan.jsonl"
    try:
        sc.write_credit(cr, ro, p)
    except ValueError:
        assert not p.exists()
        return
    for line in p.read_text().splitlines():
        json.loads(line)


def test_write_credit_unknown_extension_and_mismatch(tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    with pytest.raises(RolloutsError) as ei:
        sc.write_credit(cr, ro, tmp_path / "adv.txt")
    assert "unknown extension '.txt'" in str(ei.value)
    other = make_ro((3, 2, 1, 4))
    for ext in ("jsonl", "parquet"):
        with pytest.raises(ValueError, match="other rollouts"):
            sc.write_credit(cr, other, tmp_path / f"adv.{ext}")
    assert list(tmp_path.iterdir()) == []


def _listing(d: Path) -> list[str]:
    return sorted(x.name for x in d.iterdir())


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
@pytest.mark.parametrize("preexisting", [False, True], ids=["fresh", "overwrite"])
def test_write_credit_atomic_on_failure_after_first_chunk(ext, preexisting, tmp_path, monkeypatch):
    ro = make_ro()
    cr = special_credit(ro)
    target = tmp_path / f"adv.{ext}"
    old = b"old content\n"
    if preexisting:
        target.write_bytes(old)
    seen_tmp = []
    orig = sio.credit_table
    n = {"calls": 0}

    def failing(credit, rollouts, start=0, stop=None):
        n["calls"] += 1
        if n["calls"] == 2:
            seen_tmp.extend(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
            raise RuntimeError("disk full (simulated)")
        return orig(credit, rollouts, start, stop)

    monkeypatch.setattr(sio, "credit_table", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        sc.write_credit(cr, ro, target, chunk_steps=3)
    # the first chunk had really been written to a temporary file beside the target
    assert len(seen_tmp) == 1 and seen_tmp[0].startswith(f".adv.{ext}.")
    if preexisting:
        assert target.read_bytes() == old
        assert _listing(tmp_path) == [target.name]
    else:
        assert not target.exists()
        assert _listing(tmp_path) == []


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_write_credit_atomic_when_progress_raises(ext, tmp_path):
    ro = make_ro()
    cr = special_credit(ro)
    target = tmp_path / f"adv.{ext}"

    def progress(done, total):
        if done > 3:
            raise KeyboardInterrupt  # BaseException: e.g. Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        sc.write_credit(cr, ro, target, chunk_steps=3, progress=progress)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_write_rollouts_atomic_on_failure(ext, tmp_path, monkeypatch):
    ro = Rollouts.from_records(rich_records())
    target = tmp_path / f"r.{ext}"
    sc.write_rollouts(ro.take([0]), target)
    before = target.read_bytes()
    if ext == "jsonl":
        orig = Rollouts.to_records

        def failing(self):
            recs = orig(self)

            def gen():
                yield recs[0]
                raise RuntimeError("simulated")
            return gen()

        monkeypatch.setattr(Rollouts, "to_records", failing)
    else:
        orig_write = pq.write_table

        def failing(table, where, **kw):
            orig_write(table.slice(0, 1), where, **kw)
            raise RuntimeError("simulated")

        monkeypatch.setattr(sio.pq, "write_table", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        sc.write_rollouts(ro, target)
    assert target.read_bytes() == before
    assert _listing(tmp_path) == [target.name]


def test_credit_table_slices():
    ro = make_ro()
    cr = special_credit(ro)
    full = credit_table(cr, ro)
    assert full.num_rows == ro.n_steps
    parts = [credit_table(cr, ro, s, min(ro.n_steps, s + 4)) for s in range(0, ro.n_steps, 4)]
    assert pa.concat_tables(parts).equals(full)
    assert credit_table(cr, ro, 2, 5).equals(full.slice(2, 3))


def test_credit_table_refuses_other_rollouts():
    ro = make_ro()
    cr = special_credit(ro)
    for other in (make_ro((2, 3, 1)), make_ro((3, 2, 1, 4)), make_ro((2, 3, 1, 4, 1))):
        with pytest.raises(ValueError, match="other rollouts"):
            credit_table(cr, other)
    # same shape, other data: accepted (only the layout can be checked)
    assert credit_table(cr, make_ro()).num_rows == ro.n_steps


# ---------------------------------------------------------------------- Credit
def test_credit_validates_shapes():
    off = np.array([0, 2, 5])
    ok = dict(step_advantage=np.zeros(5), episode_advantage=np.zeros(2), episode_offsets=off)
    c = Credit(**ok)
    assert c.n_episodes == 2 and c.n_steps == 5
    bad = [
        dict(episode_advantage=np.zeros(3)),
        dict(episode_advantage=np.zeros((2, 1))),
        dict(step_advantage=np.zeros(4)),
        dict(step_advantage=np.zeros((5, 1))),
        dict(step_return=np.zeros(6)),
        dict(step_reward=np.zeros(2)),
    ]
    for over in bad:
        with pytest.raises(ValueError, match="must have shape"):
            Credit(**{**ok, **over})
    with pytest.raises(ValueError, match=r"\[S\]=\(5,\)"):
        Credit(**{**ok, "step_return": np.zeros(4)})


def test_credit_arrays_read_only_and_float64():
    adv = np.arange(5)
    c = Credit(step_advantage=adv, episode_advantage=[1, 2], episode_offsets=[0, 2, 5],
               step_return=np.ones(5, dtype=np.float32), params={"a": 1}, diagnostics={"n": 2})
    assert c.step_advantage.dtype == np.float64 and c.step_return.dtype == np.float64
    assert c.episode_offsets.dtype == np.int64
    for a in (c.step_advantage, c.episode_advantage, c.step_return):
        with pytest.raises(ValueError):
            a[0] = 1.0
    adv[0] = 99  # the caller's array is not aliased in a way that changes the credit
    assert c.step_advantage[0] == 0.0
    assert isinstance(c.params, dict) and c.params == {"a": 1}
    assert c.step_reward is None


def test_credit_summary():
    c = Credit(step_advantage=[1.0, -1.0, 0.0, 0.0], episode_advantage=[0.0, 1.0], episode_offsets=[0, 2, 4])
    s = c.summary()
    assert s["steps"] == 4 and s["episodes"] == 2 and s["mean"] == 0.0
    assert s["min"] == -1.0 and s["max"] == 1.0 and s["zero_fraction"] == 0.5
    assert math.isclose(s["std"], math.sqrt(0.5))


def test_read_after_write_credit_is_not_rollouts(tmp_path):
    """An advantages file is not a rollout file: reading it as one names the missing field."""
    ro = make_ro()
    sc.write_credit(special_credit(ro), ro, tmp_path / "adv.jsonl")
    with pytest.raises(RolloutsError) as ei:
        sc.read_rollouts(tmp_path / "adv.jsonl")
    assert ei.value.field in ("outcome", "steps") and ei.value.record == "line 1"


def test_deepcopy_records_untouched():
    recs = rich_records()
    snapshot = copy.deepcopy(recs)
    Rollouts.from_records(recs)
    assert recs == snapshot
