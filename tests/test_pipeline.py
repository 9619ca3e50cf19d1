"""Pipelines: transforms -> estimator -> filters, their checks, files, state, and the CLI flags.

Filters and stateful transforms used here are registered for the test only (monkeypatched into
the registries), so that these tests check the pipeline mechanism independently of the built-in
methods, which have their own test modules.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stepcredit as sc
from stepcredit.cli import main
from stepcredit.filters import registry as freg
from stepcredit.filters.registry import Filtered
from stepcredit.pipeline import Pipeline, PipelineError, PipelineState, Stage, _toml_value
from stepcredit.shaping import registry as treg
from stepcredit.shaping.registry import Shaped, ShapingError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rollouts.jsonl"


def _rec(eid, gid, outcome, rewards=(0.0,), **step_fields):
    steps = [{"state": f"s{t}", "reward": r, **{k: v[t] for k, v in step_fields.items()}} for t, r in enumerate(rewards)]
    return {"episode_id": eid, "group_id": gid, "outcome": outcome, "steps": steps}


@pytest.fixture
def ro():
    return sc.Rollouts.from_records([
        _rec("a0", "a", 1.0, (0.5, 0.0), value=(0.1, 0.2)),
        _rec("a1", "a", 0.0, (0.5,), value=(0.3,)),
        _rec("a2", "a", 1.0, (0.0, 0.25, 0.0), value=(0.0, 0.1, 0.2)),
        _rec("b0", "b", 0.0, (1.0,), value=(0.5,)),
        _rec("b1", "b", 2.0, (0.0, 0.0), value=(0.5, 0.5)),
    ])


# ------------------------------------------------------------------ test-only registrations
def _drop_first_of_group(ro, credit, *, keep_singletons: bool = True) -> Filtered:
    """Drops the first episode of every group (of two or more)."""
    codes = ro.episode_group
    first = np.zeros(ro.n_episodes, dtype=bool)
    _, idx = np.unique(codes, return_index=True)
    first[idx] = True
    size = np.bincount(codes)[codes]
    w = np.where(first & ((size > 1) | (not keep_singletons)), 0.0, 1.0)
    return Filtered(w, diagnostics={"dropped": int((w == 0).sum())})


def _duplicate_last(ro, credit) -> Filtered:
    """Adds a copy of the last episode under a new id."""
    recs = ro.to_records()
    extra = dict(recs[-1], episode_id=recs[-1]["episode_id"] + "#copy")
    new = sc.Rollouts.from_records(recs + [extra])
    return Filtered(np.ones(new.n_episodes), rollouts=new)


def _count_calls(ro, *, bonus: float = 1.0, state=None) -> Shaped:
    """Adds bonus × (number of earlier calls) to every outcome."""
    n = 0 if state is None else int(state["calls"])
    return Shaped(ro.with_outcome(ro.outcome + bonus * n), {"calls_before": n}, {"calls": n + 1})


@pytest.fixture
def registered(monkeypatch):
    specs = {}
    for name, fn in (("drop_first", _drop_first_of_group), ("duplicate_last", _duplicate_last)):
        monkeypatch.setattr(freg, "_REGISTRY", dict(freg._REGISTRY))
        freg.register_filter(paper="test", name=name)(fn)
        specs[name] = freg.get_filter(name)
    monkeypatch.setattr(treg, "_REGISTRY", dict(treg._REGISTRY))
    treg.register_transform(paper="test", writes=("outcome",), name="count_calls")(_count_calls)
    return specs


# ------------------------------------------------------------------ building and parameters
def test_build_binds_every_default_and_addresses_params_by_stage(ro):
    pipe = Pipeline.build("gae", transforms=["gated"], params={"gated.threshold": 0.5, "gamma": 0.9, "gae.lam": 0.8})
    assert pipe.transforms[0].params == {"threshold": 0.5, "source": "reward", "weight": 1.0, "target": "reward"}
    assert pipe.estimator.params == {"gamma": 0.9, "lam": 0.8, "whiten": False}
    assert pipe.describe().startswith("gated(threshold=0.5")


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"estimator": "nope"}, sc.EstimatorError, "valid estimators"),
        ({"estimator": "gae", "transforms": ["nope"]}, ShapingError, "valid transforms: "),
        ({"estimator": "gae", "filters": ["nope"]}, sc.FilterError, "valid filters"),
        ({"estimator": "gae", "transforms": [("gated", {"colour": 1})]}, ShapingError, "transform 'gated' has no parameter 'colour'"),
        ({"estimator": "gae", "transforms": ["gated"], "params": {"gated.threshold": "high"}}, ShapingError, "transform 'gated': parameter threshold='high'"),
        ({"estimator": "gae", "params": {"gated.threshold": 1.0}}, PipelineError, "not a stage of this pipeline (stages: gae)"),
        ({"estimator": "gae", "transforms": ["gated", "gated"], "params": {"gated.threshold": 1.0}}, PipelineError, "ambiguous"),
        ({"estimator": "gae", "params": {"gamma": 2.0}}, sc.EstimatorError, "must lie in [0, 1]"),
    ],
)
def test_bad_pipelines_are_refused_when_built(kwargs, error, needle):
    with pytest.raises(error) as exc:
        Pipeline.build(**kwargs).run(sc.read_rollouts(EXAMPLE))
    assert needle in str(exc.value)


def test_command_line_assignments_are_parsed_to_the_parameter_types():
    pipe = Pipeline.build("gae", transforms=["gated"]).with_assignments(["gated.threshold=2", "whiten=yes", "gae.gamma=0.5"])
    assert pipe.transforms[0].params["threshold"] == 2.0 and isinstance(pipe.transforms[0].params["threshold"], float)
    assert pipe.estimator.params["whiten"] is True and pipe.estimator.params["gamma"] == 0.5
    with pytest.raises(PipelineError, match="key=value"):
        pipe.with_assignments(["gated.threshold"])


# ------------------------------------------------------------------ checking before work
def test_a_transform_needing_an_absent_field_fails_before_any_work(ro):
    pipe = Pipeline.build("gae", transforms=[("gated", {"source": "process"})])
    with pytest.raises(sc.MissingColumnError) as exc:
        pipe.check(ro)
    assert "transform 'gated' (#1)" in str(exc.value) and "'process'" in str(exc.value)


def test_an_estimator_needing_an_absent_field_names_itself(ro):
    with pytest.raises(sc.MissingColumnError, match="estimator 'tree'.*'node'"):
        Pipeline.build("tree", transforms=[("gated", {"target": "outcome"})]).check(ro)


def test_step_reward_shaping_before_an_outcome_only_estimator_is_refused(ro):
    with pytest.raises(PipelineError, match="reads only the outcome"):
        Pipeline.build("grpo", transforms=["gated"]).check(ro)
    Pipeline.build("grpo", transforms=[("gated", {"target": "outcome"})]).check(ro)  # into the outcome: fine
    Pipeline.build("gigpo", transforms=["gated"]).check(ro)  # gigpo reads step rewards
    # tree reads step rewards only with score="reward"
    example = sc.read_rollouts(EXAMPLE)
    with pytest.raises(PipelineError):
        Pipeline.build("tree", transforms=["gated"]).check(example)
    Pipeline.build("tree", transforms=["gated"], params={"score": "reward"}).check(example)


def test_a_later_transform_that_reads_the_step_rewards_consumes_them(ro):
    # the first gated writes step rewards; the second reads them and moves them into the outcome
    pipe = Pipeline.build("grpo", transforms=[("gated", {"threshold": 0.5}), ("gated", {"target": "outcome"})])
    pipe.check(ro)


# ------------------------------------------------------------------ running
def test_run_equals_the_stages_applied_by_hand(ro):
    pipe = Pipeline.build("gae", transforms=[("gated", {"threshold": 1.0})], params={"gamma": 0.9})
    result = pipe.run(ro)
    shaped = sc.apply_transform(ro, "gated", threshold=1.0)
    want = sc.estimate(shaped.rollouts, "gae", gamma=0.9)
    np.testing.assert_array_equal(result.credit.step_advantage, want.step_advantage)
    assert result.credit.episode_weight is None
    assert result.rollouts.equals(shaped.rollouts)
    assert result.diagnostics["transform 'gated' (#1)"]["gated_fraction"] == pytest.approx(2 / 5)
    assert not ro.equals(shaped.rollouts)  # the input itself is untouched
    assert ro.reward.tolist() == [0.5, 0.0, 0.5, 0.0, 0.25, 0.0, 1.0, 0.0, 0.0]


def test_refit_runs_the_estimator_on_the_kept_episodes(ro, registered):
    result = Pipeline.build("grpo", filters=["drop_first"]).run(ro)
    c = result.credit
    assert c.episode_weight.tolist() == [0, 1, 1, 0, 1]
    kept = sc.estimate(ro.take([1, 2, 4]), "grpo")
    np.testing.assert_array_equal(c.episode_advantage[[1, 2, 4]], kept.episode_advantage)
    assert c.episode_advantage[[0, 3]].tolist() == [0.0, 0.0]
    # a dropped episode's steps get 0, the kept ones their episode advantage
    want_steps = np.repeat(c.episode_advantage, ro.step_counts)
    np.testing.assert_array_equal(c.step_advantage, want_steps)
    assert c.diagnostics["kept_episodes"] == 3
    assert result.diagnostics["filter 'drop_first' (#1)"] == {"dropped": 2}


def test_without_refit_the_advantages_stay_and_only_weights_are_set(ro, registered):
    c = Pipeline.build("grpo", filters=["drop_first"], refit=False).run(ro).credit
    np.testing.assert_array_equal(c.step_advantage, sc.estimate(ro, "grpo").step_advantage)
    assert c.episode_weight.tolist() == [0, 1, 1, 0, 1]


def test_refit_keeps_step_level_fields_aligned(ro, registered):
    c = Pipeline.build("gae", filters=["drop_first"]).run(ro).credit
    sub = sc.estimate(ro.take([1, 2, 4]), "gae")
    steps = np.concatenate([np.arange(ro.episode_offsets[e], ro.episode_offsets[e + 1]) for e in (1, 2, 4)])
    np.testing.assert_array_equal(c.step_return[steps], sub.step_return)
    np.testing.assert_array_equal(c.step_advantage[steps], sub.step_advantage)
    dropped = np.setdiff1d(np.arange(ro.n_steps), steps)
    assert np.all(c.step_advantage[dropped] == 0) and np.all(c.step_return[dropped] == 0)


def test_everything_dropped_gives_zero_credit(registered):
    two = sc.Rollouts.from_records([_rec("x", "g", 1.0), _rec("y", "h", 0.0)])
    c = Pipeline.build("grpo", filters=[("drop_first", {"keep_singletons": False})]).run(two).credit
    assert c.episode_weight.tolist() == [0.0, 0.0] and c.step_advantage.tolist() == [0.0, 0.0]


def test_a_filter_that_adds_episodes_needs_refit(ro, registered):
    result = Pipeline.build("grpo", filters=["duplicate_last"]).run(ro)
    assert result.rollouts.n_episodes == ro.n_episodes + 1
    np.testing.assert_array_equal(result.credit.episode_advantage, sc.estimate(result.rollouts, "grpo").episode_advantage)
    with pytest.raises(PipelineError, match="refit"):
        Pipeline.build("grpo", filters=["duplicate_last"], refit=False).run(ro)


def test_weights_of_several_filters_multiply(ro, registered):
    c = Pipeline.build("grpo", filters=["duplicate_last", "drop_first"]).run(ro).credit
    assert c.episode_weight.tolist() == [0, 1, 1, 0, 1, 1]


# ------------------------------------------------------------------ state
def test_state_is_explicit_and_round_trips_through_json(ro, registered):
    pipe = Pipeline.build("grpo", transforms=["count_calls"], params={"grpo.scale": "none"})
    first = pipe.run(ro)
    assert first.state.stages == ({"kind": "transform", "name": "count_calls", "state": {"calls": 1}},)
    again = PipelineState.from_json(first.state.to_json())
    second = pipe.run(ro, again)
    assert second.diagnostics["transform 'count_calls' (#1)"] == {"calls_before": 1}
    np.testing.assert_array_equal(second.rollouts.outcome, ro.outcome + 1.0)
    # the same input and state give the same result (no hidden state)
    np.testing.assert_array_equal(pipe.run(ro, again).credit.step_advantage, second.credit.step_advantage)


def test_a_state_of_another_pipeline_is_refused(ro, registered):
    state = Pipeline.build("grpo", transforms=["count_calls"]).run(ro).state
    with pytest.raises(PipelineError, match="another pipeline"):
        Pipeline.build("gae").run(ro, state)
    with pytest.raises(ShapingError, match="keeps no state"):
        sc.apply_transform(ro, "gated", state={"x": 1})


@pytest.mark.parametrize("text", ["[]", "{", '{"version": 2, "stages": []}', '{"version": 1, "stages": [{"kind": "x"}]}'])
def test_bad_state_files_are_refused(text):
    with pytest.raises(PipelineError, match="<state>"):
        PipelineState.from_json(text)


# ------------------------------------------------------------------ files
def test_toml_round_trip(tmp_path, registered):
    pipe = Pipeline.build("gigpo", transforms=[("gated", {"threshold": 0.25, "target": "outcome"}), "count_calls"],
                          filters=["drop_first"], params={"omega": 0.5}, refit=False)
    path = tmp_path / "p.toml"
    pipe.save(path)
    assert Pipeline.load(path) == pipe
    data = tomllib.loads(path.read_text())
    assert data["estimator"]["name"] == "gigpo" and data["transforms"][1]["name"] == "count_calls"
    assert data["refit"] is False


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**63, 2**63 - 1), st.booleans()))
def test_every_parameter_value_survives_toml(value):
    parsed = tomllib.loads(f"v = {_toml_value(value)}")["v"]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("estimator = ", "not valid TOML"),
        ("[estimator]\nname = 'nope'", "[estimator]: unknown estimator 'nope'"),
        ("[estimator]\nname = 'gae'\ngamma = 'x'", "[estimator]: estimator 'gae': parameter gamma='x'"),
        ("[estimator]\nname = 'gae'\n[[transforms]]\nname = 'gated'\n[[transforms]]\nname = 'gated'\nthreshold = true",
         "[[transforms]] #2: transform 'gated': parameter threshold=True"),
        ("[[transforms]]\nname = 'gated'", "no [estimator] table"),
        ("colour = 1\n[estimator]\nname = 'gae'", "unknown key 'colour'"),
        ("refit = 1\n[estimator]\nname = 'gae'", "refit = 1"),
        ("transforms = 3\n[estimator]\nname = 'gae'", "array of tables"),
        ("[estimator]\nomega = 1", "[estimator] must be a table with a string 'name'"),
    ],
)
def test_bad_pipeline_files_name_the_file_and_table(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PipelineError) as exc:
        Pipeline.load(path)
    assert str(exc.value).startswith(f"{path}: ") and needle in str(exc.value), str(exc.value)


def test_missing_pipeline_file():
    with pytest.raises(PipelineError, match="cannot read the pipeline file"):
        Pipeline.load("/nonexistent/p.toml")


def test_a_stage_given_as_the_wrong_kind_is_refused():
    with pytest.raises(PipelineError, match="where a filter was expected"):
        Pipeline.build("gae", filters=[Stage("transform", "gated")])


# ------------------------------------------------------------------ command line
def _rows(path: Path):
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_cli_shape_and_filter_flags_equal_the_python_pipeline(tmp_path, registered, ext):
    out = tmp_path / f"adv{ext}"
    argv = ["advantages", str(EXAMPLE), "--shape", "gated", "-p", "gated.threshold=0.5", "-e", "gae",
            "-p", "gamma=0.9", "--filter", "drop_first", "-o", str(out), "-q"]
    assert main(argv) == 0
    pipe = Pipeline.build("gae", transforms=[("gated", {"threshold": 0.5})], filters=["drop_first"], params={"gamma": 0.9})
    want = pipe.run(sc.read_rollouts(EXAMPLE)).credit
    rows = _rows(out)
    assert [r["advantage"] for r in rows] == want.step_advantage.tolist()
    assert [r["weight"] for r in rows] == want.step_weight.tolist()


def test_cli_saves_and_runs_a_pipeline_file_with_overrides(tmp_path):
    saved = tmp_path / "pipe.toml"
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["advantages", str(EXAMPLE), "-e", "gigpo", "-p", "omega=0.5", "--save-pipeline", str(saved), "-o", str(out1), "-q"]) == 0
    assert Pipeline.load(saved).estimator.params["omega"] == 0.5
    assert main(["advantages", str(EXAMPLE), "--pipeline", str(saved), "-o", str(out2), "-q"]) == 0
    assert out1.read_text() == out2.read_text()
    out3 = tmp_path / "c.jsonl"
    assert main(["advantages", str(EXAMPLE), "--pipeline", str(saved), "-p", "gigpo.omega=2", "-o", str(out3), "-q"]) == 0
    want = sc.estimate(sc.read_rollouts(EXAMPLE), "gigpo", omega=2.0).step_advantage
    assert [r["advantage"] for r in _rows(out3)] == pytest.approx(want.tolist(), rel=1e-12, abs=1e-15)


def test_cli_state_file_carries_state_between_runs(tmp_path, registered):
    state = tmp_path / "state.json"
    base = ["advantages", str(EXAMPLE), "--shape", "count_calls", "-p", "count_calls.bonus=0.5", "-e", "grpo",
            "-p", "scale=none", "--state", str(state), "-q"]
    for calls in (1, 2):
        assert main(base + ["-o", str(tmp_path / f"out{calls}.jsonl")]) == 0
        assert json.loads(state.read_text())["stages"][0]["state"] == {"calls": calls}
    first, second = (_rows(tmp_path / f"out{i}.jsonl") for i in (1, 2))
    # grpo with scale=none is invariant to adding 0.5 to every outcome: the same advantages
    assert [r["advantage"] for r in first] == [r["advantage"] for r in second]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--pipeline", "{tmp}/p.toml", "-e", "grpo"], "not both"),
        ([], "give an estimator"),
        (["-e", "gae", "--shape", "nope"], "valid transforms"),
        (["-e", "gae", "--filter", "nope"], "valid filters"),
        (["-e", "gae", "-p", "gated.threshold=1"], "not a stage of this pipeline"),
        (["-e", "gae", "--shape", "gated", "-p", "gated.threshold=high"], "transform 'gated': parameter threshold='high'"),
        (["-e", "grpo", "--shape", "gated"], "reads only the outcome"),
        (["--pipeline", "{tmp}/missing.toml"], "cannot read the pipeline file"),
        (["-e", "grpo", "--state", "{tmp}/bad_state.json"], "not a pipeline state file"),
    ],
)
def test_cli_pipeline_usage_errors_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "p.toml").write_text("[estimator]\nname = 'grpo'\n")
    (tmp_path / "bad_state.json").write_text("[]")
    out = tmp_path / "out.jsonl"
    rc = main(["advantages", str(EXAMPLE), *[a.format(tmp=tmp_path) for a in argv], "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_missing_field_for_a_transform_exits_1_naming_file_field_and_stage(tmp_path, capsys):
    path = tmp_path / "noprocess.jsonl"
    path.write_text(json.dumps(_rec("a", "g", 1.0)) + "\n")
    out = tmp_path / "out.jsonl"
    rc = main(["advantages", str(path), "--shape", "gated", "-p", "gated.source=process", "-e", "gae", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and str(path) in err and "steps[].process" in err and "transform 'gated'" in err, err
    assert not out.exists()


def test_cli_lists_transforms_and_filters(capsys, registered):
    assert main(["transforms", "--params"]) == 0
    out = capsys.readouterr().out
    for spec in sc.list_transforms():
        assert spec.name in out
    assert main(["filters"]) == 0
    assert "drop_first" in capsys.readouterr().out
    assert main(["estimators"]) == 0
    out = capsys.readouterr().out
    assert "gated" in out and "drop_first" in out and "gigpo" in out


def test_cli_runs_a_built_in_stateful_transform_and_filter_with_a_state_file(tmp_path):
    """laser_d (adaptive length targets) and replay (memory of successes) through --state: the
    second run starts from the first run's state, exactly as the Python pipeline does."""
    state = tmp_path / "state.json"
    argv = ["advantages", str(EXAMPLE), "--shape", "laser_d", "-p", "laser_d.update_every=1", "-e", "grpo",
            "--filter", "replay", "--state", str(state), "-q"]
    pipe = Pipeline.build("grpo", transforms=[("laser_d", {"update_every": 1})], filters=["replay"])
    ro = sc.read_rollouts(EXAMPLE)
    want_state = None
    for run in range(2):
        out = tmp_path / f"out{run}.jsonl"
        assert main(argv + ["-o", str(out)]) == 0
        result = pipe.run(ro, want_state)
        want_state = result.state
        assert PipelineState.load(state) == PipelineState.from_json(want_state.to_json())
        assert [r["advantage"] for r in _rows(out)] == result.credit.step_advantage.tolist()
    saved = json.loads(state.read_text())["stages"]
    assert [s["name"] for s in saved] == ["laser_d", "replay"] and saved[0]["state"]["batches"] == 2
