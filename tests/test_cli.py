"""The command line: `stepcredit advantages` and `stepcredit estimators`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import stepcredit as sc
from reference import anchor as ref_anchor
from reference import attribution as ref_attribution
from reference import graph as ref_graph
from reference import information as ref_information
from reference import progress as ref_progress
from reference import redistribution as ref_redistribution
from reference import tree as ref_tree
from reference import turning as ref_turning
from reference import oprl as ref_oprl
from reference import outcome as ref_outcome
from reference import value as ref_value
from stepcredit.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rollouts.jsonl"


def _good(eid="a", **over):
    rec = {"episode_id": eid, "group_id": "g", "outcome": 1.0, "steps": [{"state": "s0", "value": 0.5}]}
    rec.update(over)
    return rec


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _read_output(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------- happy paths
@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
@pytest.mark.parametrize("name", [s.name for s in sc.list_estimators()])
def test_advantages_writes_one_row_per_step_equal_to_the_library(tmp_path, capsys, name, ext):
    out = tmp_path / f"adv{ext}"
    assert main(["advantages", str(EXAMPLE), "-e", name, "-o", str(out)]) == 0
    rows = _read_output(out)
    ro = sc.read_rollouts(EXAMPLE)
    credit = sc.estimate(ro, name)
    assert len(rows) == ro.n_steps
    assert {"episode_id", "group_id", "step", "advantage", "episode_advantage"} <= set(rows[0])
    assert [r["advantage"] for r in rows] == credit.step_advantage.tolist()
    assert [r["step"] for r in rows] == ro.step_index.tolist()
    eids = ro.episode_id.to_pylist()
    assert [r["episode_id"] for r in rows] == [eids[e] for e in ro.step_episode]
    printed = capsys.readouterr().out
    assert "stepcredit advantages" in printed and name in printed


ORACLES = {
    "grpo": ref_outcome.grpo,
    "drgrpo": ref_outcome.drgrpo,
    "rloo": ref_outcome.rloo,
    "reinforce_pp": ref_outcome.reinforce_pp,
    "gae": ref_value.gae,
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
EXAMPLE_RUNS = [
    ("grpo", []), ("grpo", ["scale=batch"]), ("grpo", ["scale=none", "singleton=zero"]),
    ("drgrpo", []), ("rloo", []), ("reinforce_pp", []), ("reinforce_pp", ["weight=tokens"]),
    ("gae", []), ("gae", ["gamma=0.95", "lam=0.9", "whiten=true"]),
    ("gigpo", []), ("gigpo", ["norm=mean", "omega=0.5", "episode_stats=steps"]),
    ("salt", []), ("salt", ["merge=state_action", "base=rloo", "count=step"]),
    ("tree", []), ("tree", ["weight=1", "score=process"]),
    ("pav", []), ("pav", ["alpha=0.5", "base=grpo"]),
    ("igpo", []), ("igpo", ["norm=separate", "gain=log_prob", "zero_gain=drop"]),
    ("turning_point", []), ("turning_point", ["indicator=sign_flip", "balanced=false"]),
    # spa's oracle solves the normal equations densely; the CLI's conjugate gradient is run to a
    # tight tolerance here (its default tol=1e-8 is within residual/ridge of the exact solution,
    # which tests/test_estimators_attribution.py checks, not within rel 1e-9 of it)
    ("spa", ["tol=1e-13", "iterations=1000"]),
    ("spa", ["features=state_action", "beta=0", "tol=1e-13", "iterations=1000"]),
    ("redistribute", []), ("redistribute", ["weights=importance", "base=rloo"]),
    ("potential", []), ("potential", ["gamma=0.9", "baseline=none"]),
    ("oprl", []), ("oprl", ["w=0.5", "baseline=first_steps"]),
]


def test_every_estimator_has_an_example_run():
    assert {name for name, _ in EXAMPLE_RUNS} == {s.name for s in sc.list_estimators()} == set(ORACLES)


@pytest.mark.parametrize("name, params", EXAMPLE_RUNS, ids=[f"{n}-{'-'.join(p)}" for n, p in EXAMPLE_RUNS])
def test_cli_on_the_example_file_gives_the_loop_reference(tmp_path, name, params):
    """The issue's done-when: `stepcredit advantages` on the example file = the loop reference."""
    out = tmp_path / "adv.jsonl"
    argv = ["advantages", str(EXAMPLE), "-e", name, "-o", str(out), "-q"]
    for p in params:
        argv += ["-p", p]
    assert main(argv) == 0
    kwargs = {k: v for k, v in (sc.estimators.parse_param(name, p) for p in params)}
    records = [json.loads(line) for line in EXAMPLE.read_text().splitlines() if line.strip()]
    want = ORACLES[name](records, **kwargs)
    rows = _read_output(out)
    got = [r["advantage"] for r in rows]
    assert got == pytest.approx(want.step_advantage, rel=1e-9, abs=1e-12)
    got_ep = {r["episode_id"]: r["episode_advantage"] for r in rows}
    assert [got_ep[r["episode_id"]] for r in records] == pytest.approx(want.episode_advantage, rel=1e-9, abs=1e-12)
    if want.step_return is not None:
        assert [r["return"] for r in rows] == pytest.approx(want.step_return, rel=1e-9, abs=1e-12)


def test_parameters_are_parsed_and_used(tmp_path):
    out = tmp_path / "a.jsonl"
    argv = ["advantages", str(EXAMPLE), "-e", "gae", "-p", "gamma=0.9", "-p", "lam=0.5", "-p", "whiten=true", "-o", str(out), "-q"]
    assert main(argv) == 0
    credit = sc.estimate(sc.read_rollouts(EXAMPLE), "gae", gamma=0.9, lam=0.5, whiten=True)
    assert [r["advantage"] for r in _read_output(out)] == credit.step_advantage.tolist()
    assert [r["return"] for r in _read_output(out)] == credit.step_return.tolist()


def test_estimators_lists_every_estimator_with_its_needs(capsys):
    assert main(["estimators", "--params"]) == 0
    out = capsys.readouterr().out
    for spec in sc.list_estimators():
        assert spec.name in out
    assert "value" in out  # gae needs it
    assert "epsilon" in out


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "stepcredit.cli", "estimators"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "grpo" in proc.stdout


# ---------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-e", "nope"], "valid estimators: drgrpo"),
        (["-e", "grpo", "-p", "scale=grp"], "'group', 'batch', 'none'"),
        (["-e", "grpo", "-p", "colour=red"], "has no parameter 'colour'"),
        (["-e", "gae", "-p", "gamma=fast"], "gamma: float"),
        (["-e", "gae", "-p", "gamma=1.5"], "must lie in [0, 1]"),
        (["-e", "grpo", "-p", "scale"], "key=value"),
        (["-e", "grpo", "-o", "out.csv"], "*.jsonl or *.parquet"),
    ],
)
def test_usage_errors_exit_2_with_the_valid_choices(tmp_path, capsys, argv, expected):
    argv = [a if a != "out.csv" else str(tmp_path / "out.csv") for a in argv]
    rc = main(["advantages", str(EXAMPLE), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- bad input files
def _bad_files(d: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, text the message must contain, the record it must name)."""
    g = _good
    cases = {
        "missing outcome": ([json.dumps(g("a")), json.dumps({k: v for k, v in g("b").items() if k != "outcome"})], "outcome", "line 2"),
        "missing steps": ([json.dumps({k: v for k, v in g("a").items() if k != "steps"})], "steps", "line 1"),
        "missing episode_id": ([json.dumps({k: v for k, v in g("a").items() if k != "episode_id"})], "episode_id", "line 1"),
        "missing group_id": ([json.dumps(g("a")), "", json.dumps({k: v for k, v in g("b").items() if k != "group_id"})], "group_id", "line 3"),
        "wrong type outcome": ([json.dumps(g("a")), json.dumps(g("b", outcome="high"))], "outcome", "line 2"),
        "wrong type id": ([json.dumps(g("a", episode_id=7))], "episode_id", "line 1"),
        "wrong type state": ([json.dumps(g("a")), json.dumps(g("b", steps=[{"state": [1, 2], "value": 1}]))], "state", "line 2"),
        "nan outcome": ([json.dumps(g("a")), '{"episode_id": "b", "group_id": "g", "outcome": NaN, "steps": [{"state": "s", "value": 1}]}'], "outcome", "line 2"),
        "inf value": (['{"episode_id": "b", "group_id": "g", "outcome": 1, "steps": [{"state": "s", "value": Infinity}]}'], "value", "line 1, step 0"),
        "empty steps": ([json.dumps(g("a")), json.dumps(g("b", steps=[]))], "steps", "line 2"),
        "duplicate id": ([json.dumps(g("a")), json.dumps(g("a"))], "episode_id", "line 2"),
        "partial column": ([json.dumps(g("a", steps=[{"state": "s", "value": 1}, {"state": "t"}]))], "value", "line 1, step 1"),
        "invalid json": ([json.dumps(g("a")), '{"episode_id": "b", '], "not valid JSON", "line 2"),
        "empty file": ([], "no episodes", ""),
    }
    out = {}
    for i, (name, (lines, field, record)) in enumerate(cases.items()):
        out[name] = (_jsonl(d / f"bad{i}.jsonl", lines), field, record)
    bad_parquet = d / "bad.parquet"
    bad_parquet.write_bytes(b"this is not parquet")
    out["not parquet"] = (bad_parquet, "Parquet", "")
    out["no such file"] = (d / "missing.jsonl", "no such file", "")
    return out


BAD_NAMES = [
    "missing outcome", "missing steps", "missing episode_id", "missing group_id", "wrong type outcome",
    "wrong type id", "wrong type state", "nan outcome", "inf value", "empty steps", "duplicate id",
    "partial column", "invalid json", "empty file", "not parquet", "no such file",
]


@pytest.mark.parametrize("case", BAD_NAMES)
@pytest.mark.parametrize("ext", [".parquet", ".jsonl"])
def test_bad_input_gives_one_line_exit_1_and_no_output(tmp_path, capsys, case, ext):
    path, field, record = _bad_files(tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"adv{ext}"
    rc = main(["advantages", str(path), "-e", "gae", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("stepcredit: error: ") and err.count("\n") == 1
    assert str(path) in err
    assert field in err
    assert record in err
    assert list(out_dir.iterdir()) == []  # nothing written, no temporary left behind


def test_missing_column_names_the_file_and_field(tmp_path, capsys):
    path = _jsonl(tmp_path / "novalue.jsonl", [json.dumps({"episode_id": "a", "group_id": "g", "outcome": 1, "steps": [{"state": "s"}]})])
    out = tmp_path / "adv.parquet"
    assert main(["advantages", str(path), "-e", "gae", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "steps[].value" in err and "gae" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "params", "steps_b", "needles"),
    [
        # episode b's node "n1" hangs from "x", but in episode a from "n0": not a tree
        ("tree", [], [{"node": "x"}, {"node": "n1"}], ["episode 1 ('b'), step 1", "steps[].node", "'x'"]),
        # a negative importance weight
        ("redistribute", ["-p", "weights=importance"], [{"importance": 1.0}, {"importance": -2.0}],
         ["episode 1", "step 1", "steps[].importance"]),
    ],
    ids=["tree-not-a-tree", "redistribute-negative-weight"],
)
def test_structural_errors_found_by_an_estimator_name_the_file(tmp_path, capsys, name, params, steps_b, needles):
    steps_a = [{"node": "n0", "importance": 1.0}, {"node": "n1", "importance": 1.0}]
    steps_a = [{k: v for k, v in s.items() if k in steps_b[0]} for s in steps_a]
    lines = [
        json.dumps({"episode_id": "a", "group_id": "g", "outcome": 1.0, "steps": steps_a}),
        json.dumps({"episode_id": "b", "group_id": "g", "outcome": 0.0, "steps": steps_b}),
    ]
    path = _jsonl(tmp_path / "bad.jsonl", lines)
    out = tmp_path / "adv.parquet"
    assert main(["advantages", str(path), "-e", name, *params, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"stepcredit: error: {path}: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Fix:" in err and not out.exists()


def test_failed_run_keeps_an_existing_output_intact(tmp_path):
    out = tmp_path / "adv.jsonl"
    out.write_text("old\n")
    bad = _jsonl(tmp_path / "bad.jsonl", ['{"episode_id": 1}'])
    assert main(["advantages", str(bad), "-e", "grpo", "-o", str(out)]) == 1
    assert out.read_text() == "old\n"


def test_example_file_summary_is_sane():
    ro = sc.read_rollouts(EXAMPLE)
    assert ro.n_groups >= 3 and ro.n_episodes >= 24
    assert set(ro.step_fields) >= {"state", "action", "process", "value", "tokens", "node"}
    # states repeat inside groups (anchor states exist)
    keys = ro.keys["state"]
    assert len(set(keys.tolist())) < ro.n_steps / 4
    assert 0 < ro.outcome.mean() < 1
    assert all(math.isfinite(x) for x in sc.estimate(ro, "grpo").step_advantage)


def test_progress_bars_can_be_forced_on_and_off(tmp_path, capsys):
    for mode in ("always", "never"):
        out = tmp_path / f"adv-{mode}.parquet"
        assert main(["advantages", str(EXAMPLE), "-e", "rloo", "-o", str(out), "--progress", mode, "-q"]) == 0
        assert pq.read_table(out).num_rows == sc.read_rollouts(EXAMPLE).n_steps
    assert capsys.readouterr().out == ""  # -q: no summary table


def test_without_output_only_the_summary_is_printed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["advantages", str(EXAMPLE), "-e", "grpo"]) == 0
    assert "give -o FILE to write" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_shipped_example_is_what_the_example_script_makes(tmp_path):
    out = tmp_path / "rollouts.jsonl"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_example.py"), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == EXAMPLE.read_text()
