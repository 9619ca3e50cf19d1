"""`stepcredit bench` with PRM pipelines and torch policy knobs: the built-in pipelines resolve and
run, an environment without process scores is refused before any run, the new flags reach the
trainer, and the configuration of existing directories is unchanged."""

from __future__ import annotations

import argparse
import json

import pytest

from stepcredit.bench.cli import add_parsers, config_from_args
from stepcredit.bench.matrix import (
    PIPELINES,
    BenchConfig,
    BenchError,
    RunSpec,
    check_env_fields,
    method_name,
    method_pipeline,
    run_bench,
    run_one,
    train_config,
)
from stepcredit.cli import main
from stepcredit.estimators import list_estimators
from stepcredit.train import trainer

TINY = BenchConfig(envs=("lock_chain", "keydoor"), env_kwargs={"lock_chain": {"length": 2}, "keydoor": {"size": 3}},
                   methods=("grpo", "prm_grpo", "prm_gigpo"), seeds=1, budget=64, group_size=4)
#: the keys of bench.json before the PRM pipelines and torch knobs (a directory written then must resume)
OLD_KEYS = {"envs", "env_kwargs", "methods", "seeds", "budget", "policy", "group_size", "target", "window"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepcredit")
    add_parsers(p.add_subparsers(dest="command"))
    return p


def test_the_built_in_pipelines_resolve_by_name():
    grpo, gigpo = method_pipeline("prm_grpo"), method_pipeline("prm_gigpo")
    assert grpo.estimator.name == "grpo" and gigpo.estimator.name == "gigpo"
    assert [(t.name, t.params["target"], t.params["eta"]) for t in grpo.transforms] == [("prm_clip", "outcome", 0.5)]
    assert [(t.name, t.params["target"], t.params["eta"]) for t in gigpo.transforms] == [("prm_clip", "reward", 0.5)]
    assert method_name("prm_grpo") == "prm_grpo"
    assert not set(PIPELINES) & {s.name for s in list_estimators()}  # a name means one thing
    assert "prm_grpo" in BenchConfig().methods and {"grpo", "rloo", "gigpo", "salt"} <= set(BenchConfig().methods)


def test_the_default_matrix_passes_its_checks_and_its_envs_give_process():
    BenchConfig().check()
    check_env_fields(BenchConfig(methods=tuple(PIPELINES)))


def test_a_tiny_bench_of_the_prm_pipelines_runs(tmp_path):
    result = run_bench(TINY, tmp_path)
    assert result.missing == 0
    assert {(c.env, c.method) for c in result.cells} == {(e, m) for e in TINY.envs for m in TINY.methods}
    cfg = json.loads((RunSpec("keydoor", "prm_gigpo", 0).directory(tmp_path) / "config.json").read_text())
    assert cfg["pipeline"]["transforms"] == [{"name": "prm_clip", "eta": 0.5, "weight": 1.0, "target": "reward"}]
    assert cfg["pipeline"]["estimator"]["name"] == "gigpo"
    assert "prm_gigpo" in (tmp_path / "results.md").read_text()
    assert "prm_grpo" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("env", ["sokoban", "household"])
def test_a_prm_pipeline_on_an_env_without_process_is_refused_before_any_run(tmp_path, env):
    cfg = BenchConfig(envs=("lock_chain", env), methods=("grpo", "prm_grpo"), seeds=1, budget=64, group_size=4)
    with pytest.raises(BenchError) as exc:
        run_bench(cfg, tmp_path / "o")
    msg = str(exc.value)
    assert f"method 'prm_grpo' cannot run on environment '{env}'" in msg
    assert "no field 'process', which transform 'prm_clip' (#1) needs" in msg and "lock_chain, keydoor, arith_chain" in msg
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


def test_the_cli_names_the_env_and_the_field_and_exits_2(tmp_path, capsys):
    argv = ["bench", "--env", "sokoban", "-e", "prm_gigpo", "--seeds", "1", "--budget", "8", "--out", str(tmp_path / "o"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "environment 'sokoban'" in err and "'process'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_run_started_without_the_check_names_the_run(tmp_path):
    cfg = BenchConfig(envs=("sokoban",), methods=("prm_grpo",), seeds=1, budget=8, group_size=2)
    with pytest.raises(BenchError, match=r"run sokoban / prm_grpo / seed 0: transform 'prm_clip' .* step field 'process'"):
        run_one(cfg, RunSpec("sokoban", "prm_grpo", 0), tmp_path)


def test_plain_estimators_need_no_env_probe(monkeypatch):
    import stepcredit.bench.matrix as matrix

    def no_probe(cfg, env):
        assert env is None, "an environment was built for methods that need no extra field"
        return real(cfg, env)

    real = matrix._probe_rollouts
    monkeypatch.setattr(matrix, "_probe_rollouts", no_probe)
    BenchConfig(envs=("sokoban", "household"), methods=("grpo", "gigpo", "salt")).check()


def test_an_unknown_name_lists_estimators_and_built_in_pipelines():
    with pytest.raises(BenchError) as exc:
        BenchConfig(methods=("prm_nope",)).check()
    msg = str(exc.value)
    assert "unknown estimator 'prm_nope'" in msg and "grpo, igpo" in msg and "built-in pipelines: prm_gigpo, prm_grpo" in msg


def test_the_torch_knobs_reach_the_trainer_and_bench_json(tmp_path):
    args = _parser().parse_args(["bench", "--env", "lock_chain", "--policy", "mlp", "--hidden-size", "16",
                                 "--feature-size", "32", "--adam-lr", "0.05"])
    cfg = config_from_args(args)
    assert (cfg.hidden_size, cfg.feature_size, cfg.adam_lr, cfg.policy) == (16, 32, 0.05, "mlp")
    tc = train_config(cfg, RunSpec("lock_chain", "grpo", 0))
    assert (tc.hidden_size, tc.feature_size, tc.adam_lr, tc.policy) == (16, 32, 0.05, "mlp")
    d = cfg.to_dict()
    assert (d["hidden_size"], d["feature_size"], d["adam_lr"]) == (16, 32, 0.05)
    assert BenchConfig(**{**d, "envs": tuple(d["envs"]), "methods": tuple(d["methods"])}) == cfg  # bench.json round trip


def test_a_tiny_mlp_bench_run_uses_the_knobs(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "o"
    argv = ["bench", "--env", "lock_chain", "--env-kwargs", "length=2", "-e", "prm_grpo", "--policy", "mlp",
            "--hidden-size", "8", "--feature-size", "16", "--adam-lr", "0.03", "--seeds", "1", "--budget", "32",
            "--group-size", "4", "--out", str(out), "-q"]
    assert main(argv) == 0
    run_cfg = json.loads((RunSpec("lock_chain", "prm_grpo", 0).directory(out) / "config.json").read_text())
    assert (run_cfg["hidden_size"], run_cfg["feature_size"], run_cfg["adam_lr"], run_cfg["policy"]) == (8, 16, 0.03, "mlp")
    assert json.loads((out / "bench.json").read_text())["hidden_size"] == 8


def test_bad_knobs_are_usage_errors(tmp_path, capsys):
    for flag, value, needle in [("--hidden-size", "0", "hidden_size=0"), ("--adam-lr", "-1", "adam_lr=-1.0"),
                                ("--feature-size", "4", "feature_size=4")]:
        assert main(["bench", "--env", "lock_chain", flag, value, "--out", str(tmp_path / "o"), "-q"]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_to_dict_is_unchanged_for_configs_at_the_defaults():
    d = BenchConfig().to_dict()
    assert set(d) == OLD_KEYS
    old = {"envs": ["lock_chain"], "env_kwargs": {}, "methods": ["grpo", "gigpo"], "seeds": 2, "budget": 96,
           "policy": "tabular", "group_size": 4, "target": 0.8, "window": 3}  # a bench.json written before
    cfg = BenchConfig(**{**old, "envs": tuple(old["envs"]), "methods": tuple(old["methods"])})
    assert cfg.to_dict() == old
    # a knob given at its default value is the default: the same bench.json, so the directory resumes
    same = BenchConfig(**{**old, "envs": ("lock_chain",), "methods": ("grpo", "gigpo"), "hidden_size": 64,
                          "feature_size": 256, "adam_lr": 0.01})
    assert same.to_dict() == old
    assert BenchConfig(hidden_size=32).to_dict()["hidden_size"] == 32


def test_a_directory_of_an_older_default_resumes_with_the_same_options(tmp_path):
    """A bench.json without the new keys (written before them) is the config of the same options now."""
    cfg = BenchConfig(envs=("lock_chain",), env_kwargs={"lock_chain": {"length": 2}}, methods=("grpo",), seeds=1,
                      budget=32, group_size=4)
    run_bench(cfg, tmp_path)
    assert set(json.loads((tmp_path / "bench.json").read_text())) == OLD_KEYS
    seen = []
    run_bench(cfg, tmp_path, on_run=lambda r, s: seen.append(s))
    assert seen == ["skipped"]


def test_policy_choices_come_from_the_trainer(monkeypatch):
    def choices(parser):
        bench = next(a for a in parser._subparsers._group_actions[0].choices["bench"]._actions if a.dest == "policy")
        return tuple(bench.choices)

    assert choices(_parser()) == trainer.POLICIES
    monkeypatch.setattr(trainer, "POLICIES", (*trainer.POLICIES, "lm"))
    assert "lm" in choices(_parser())  # a policy the trainer gains appears without touching the bench
    assert "lm" in _parser().parse_args(["bench", "--policy", "lm"]).policy
