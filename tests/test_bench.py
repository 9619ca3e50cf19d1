"""`stepcredit bench` / `report`: the matrix runs, resumes, refuses another config, writes the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepcredit.bench.matrix import BenchConfig, BenchError, RunSpec, collect_results, run_bench, run_one
from stepcredit.cli import main

SMALL = BenchConfig(envs=("lock_chain",), env_kwargs={"lock_chain": {"length": 2}}, methods=("grpo", "gigpo"),
                    seeds=2, budget=96, group_size=4)


def _metrics(d: Path) -> list[dict]:
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("wall_time", None)
        r.pop("wall_s", None)
        r.pop("elapsed_s", None)
    return rows


def test_bench_runs_every_cell_and_a_rerun_skips_them(tmp_path):
    seen = []
    result = run_bench(SMALL, tmp_path, on_run=lambda r, s: seen.append((r, s)))
    assert [s for _, s in seen].count("done") == 4
    assert {c.method for c in result.cells} == {"grpo", "gigpo"} and result.missing == 0
    for name in ("results.json", "results.md", "results.csv", "curves_lock_chain.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    grpo = next(c for c in result.cells if c.method == "grpo")
    assert grpo.ratio_to_grpo == pytest.approx(1.0) and grpo.final_success.n == 2
    first = (tmp_path / "results.json").read_text()
    seen.clear()
    run_bench(SMALL, tmp_path, on_run=lambda r, s: seen.append((r, s)))
    assert [s for _, s in seen] == ["skipped"] * 4
    assert (tmp_path / "results.json").read_text() == first


def test_an_interrupted_run_resumes_to_the_same_metrics(tmp_path):
    run = RunSpec("lock_chain", "gigpo", 1)
    whole = run_one(SMALL, run, tmp_path / "whole")

    class Stop(Exception):
        pass

    calls = []

    def stop_after_two(metrics):
        calls.append(metrics)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        run_one(SMALL, run, tmp_path / "cut", progress=stop_after_two)
    cut = run.directory(tmp_path / "cut")
    assert not (cut / "done.json").exists()
    resumed = run_one(SMALL, run, tmp_path / "cut")
    assert (resumed / "done.json").exists()
    assert _metrics(resumed) == _metrics(whole)


def test_a_directory_of_another_benchmark_is_refused(tmp_path):
    run_bench(SMALL, tmp_path)
    other = BenchConfig(**{**SMALL.to_dict(), "envs": ("lock_chain",), "methods": ("grpo",), "seeds": 2, "budget": 200})
    with pytest.raises(BenchError, match="differs in: budget, methods"):
        run_bench(other, tmp_path)


def test_unfinished_runs_are_counted_as_missing(tmp_path):
    run_bench(SMALL, tmp_path)
    (RunSpec("lock_chain", "grpo", 0).directory(tmp_path) / "done.json").unlink()
    result = collect_results(SMALL, tmp_path)
    assert result.missing == 1
    assert next(c for c in result.cells if c.method == "grpo").final_success.n == 1


def test_cli_bench_prints_the_table_and_report_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["bench", "--env", "lock_chain", "--env-kwargs", "length=2", "-e", "grpo", "-e", "rloo",
            "--seeds", "2", "--budget", "64", "--group-size", "4", "--out", str(out), "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stepcredit bench" in printed and "rloo" in printed and "results.md" in printed
    table = (out / "results.md").read_text()
    (out / "results.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "results.md").read_text() == table
    assert "rloo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--env", "nope"], "unknown environment 'nope'"),
        (["--env", "lock_chain", "-e", "nope"], "unknown estimator 'nope' (nor a built-in pipeline)"),
        (["--env", "lock_chain", "--env-kwargs", "colour=1"], "has no parameter 'colour'"),
        (["--env", "lock_chain", "--env", "gym:FrozenLake-v1", "--env-kwargs", "length=3"], "ENV.KEY=VALUE"),
        (["--env", "lock_chain", "--seeds", "0"], "must be >= 1"),
        (["--env", "lock_chain", "--pipeline", "/nonexistent.toml"], "cannot read the pipeline file"),
    ],
)
def test_cli_bench_usage_errors_exit_2(tmp_path, capsys, argv, needle):
    assert main(["bench", *argv, "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_report_on_a_directory_that_is_not_a_benchmark(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a benchmark directory" in capsys.readouterr().err


def test_bench_passes_branching_to_the_trainer(tmp_path):
    cfg = BenchConfig(**{**SMALL.to_dict(), "envs": ("lock_chain",), "methods": ("tree",), "branching": 2})
    assert cfg.to_dict()["branching"] == 2 and "branching" not in SMALL.to_dict()
    run_bench(cfg, tmp_path)
    run_dir = RunSpec("lock_chain", "tree", 0).directory(tmp_path)
    assert json.loads((run_dir / "config.json").read_text())["branching"] == 2
