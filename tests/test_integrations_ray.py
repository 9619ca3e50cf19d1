"""`stepcredit advantages DIR --backend ray`: the same advantages as the local backend on
multi-file datasets (exactly), groups never split, atomic output, errors that name the file.

Ray runs on the session's 2-CPU loopback instance (tests/conftest.py `local_ray`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stepcredit as sc
from stepcredit.cli import _build_parser, _pipeline, main
from stepcredit.integrations.ray_credit import MANIFEST, advantages_dataset, partition_of

pytestmark = pytest.mark.xdist_group("ray")  # one worker, one Ray (the session fixture local_ray)

SORT = [("episode_id", "ascending"), ("step", "ascending")]


def make_records(seed: int, n_groups: int = 40, group_size: int = 4) -> list[dict]:
    """Episodes with anchor states, process scores, values and tree-free ragged lengths,
    shuffled so that every group is spread over several files."""
    rng = np.random.default_rng(seed)
    recs = []
    for g in range(n_groups):
        for i in range(int(rng.integers(1, group_size + 1))):
            n = int(rng.integers(1, 7))
            recs.append({
                "episode_id": f"g{g}-e{i}", "group_id": f"task-{g}", "outcome": float(rng.integers(0, 2)),
                "steps": [{"state": f"s{int(rng.integers(0, 3))}-{t}", "action": f"a{int(rng.integers(0, 2))}",
                           "reward": float(rng.normal()),
                           "process": float(rng.uniform()), "value": float(rng.normal())} for t in range(n)],
            })
    order = rng.permutation(len(recs))
    return [recs[i] for i in order]


def write_dataset(root: Path, records: list[dict], n_files: int = 4) -> Path:
    """``records`` dealt into ``n_files`` Parquet files (the last one in a subdirectory), plus a
    ``_metadata``-style file the reader must skip."""
    root.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(records)), n_files)
    for k, idx in enumerate(chunks):
        path = root / (f"sub/part-{k}.parquet" if k == n_files - 1 else f"part-{k}.parquet")
        path.parent.mkdir(exist_ok=True)
        sc.write_rollouts(sc.Rollouts.from_records([records[i] for i in idx]), path)
    (root / "_ignored.parquet").write_bytes(b"not parquet: skipped like Arrow's dataset reader skips it")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "rollouts", make_records(0))


def local_table(dataset: Path, tmp_path: Path, args: list[str]) -> pa.Table:
    out = tmp_path / "local.parquet"
    assert main(["advantages", str(dataset), *args, "-o", str(out), "-q"]) == 0
    return pq.read_table(out).sort_by(SORT)


PIPELINES = [
    ["-e", "grpo"],
    ["-e", "gigpo", "-p", "omega=0.5"],
    ["-e", "rloo", "--filter", "zero_variance"],
    ["-e", "salt"],
    ["-e", "grpo", "--shape", "prm_min", "--filter", "prof", "-p", "prof.remove=1"],
    ["-e", "gae", "-p", "gamma=0.9"],
    ["-e", "pav"],
]


@pytest.mark.parametrize("args", PIPELINES, ids=[" ".join(a) for a in PIPELINES])
@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_ray_backend_equals_the_local_backend(local_ray, dataset, tmp_path, args, partitions):
    want = local_table(dataset, tmp_path, args)
    out = tmp_path / "ray"
    code = main(["advantages", str(dataset), *args, "--backend", "ray", "--partitions", str(partitions), "-o", str(out), "-q"])
    assert code == 0
    got = pq.read_table(out).sort_by(SORT)  # the directory, read as a Parquet dataset
    assert got.schema.equals(want.schema)
    assert got.num_rows == want.num_rows > 0
    assert got.equals(want), "the ray backend's advantages differ from the local backend's"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["partitions"] == partitions and manifest["steps"] == want.num_rows
    assert sorted(manifest["parts"]) == sorted(p.name for p in out.glob("part-*.parquet"))
    assert not list(tmp_path.glob(".ray.*")), "a temporary directory was left behind"


def write_batches(root: Path, records: list[dict], n_files: int = 3) -> Path:
    """Whole groups per file, as a trainer writing one file per batch leaves them."""
    root.mkdir(parents=True, exist_ok=True)
    groups = sorted({r["group_id"] for r in records})
    for k, chunk in enumerate(np.array_split(np.arange(len(groups)), n_files)):
        mine = {groups[i] for i in chunk}
        sc.write_rollouts(sc.Rollouts.from_records([r for r in records if r["group_id"] in mine]), root / f"b{k}.parquet")
    return root


@pytest.mark.parametrize("args", PIPELINES[:3], ids=[" ".join(a) for a in PIPELINES[:3]])
def test_files_of_whole_groups_skip_the_shuffle_and_equal_the_local_backend(local_ray, tmp_path, args):
    ds = write_batches(tmp_path / "ds", make_records(5))
    want = local_table(ds, tmp_path, args)
    pipe = _pipeline(_build_parser().parse_args(["advantages", str(ds), *args]))
    ticks: list[tuple[int, int]] = []
    run = advantages_dataset(ds, tmp_path / "ray", pipe, progress=lambda done, total: ticks.append((done, total)))
    assert not run.shuffled and run.partitions == 3
    assert ticks == [(k, 6) for k in range(1, 7)]  # 3 scan tasks, then 3 tasks of one file each
    assert [p.name for p in run.parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert pq.read_table(tmp_path / "ray").sort_by(SORT).equals(want)
    assert json.loads((tmp_path / "ray" / MANIFEST).read_text())["shuffled"] is False
    # the same dataset through the shuffle gives the same advantages
    run = advantages_dataset(ds, tmp_path / "ray", pipe, partitions=2)
    assert run.shuffled and pq.read_table(tmp_path / "ray").sort_by(SORT).equals(want)


def test_a_bad_file_of_whole_groups_is_named(local_ray, tmp_path):
    ds = write_batches(tmp_path / "ds", make_records(6, n_groups=9))
    t = pq.read_table(ds / "b1.parquet")
    steps = t.column("steps").to_pylist()
    steps[2][0]["reward"] = None  # a present-but-null step reward in row 2
    steps[2][0]["state"] = None
    pq.write_table(t.set_column(t.schema.get_field_index("steps"), "steps", pa.array(steps)), ds / "b1.parquet")
    with pytest.raises(sc.RolloutsError) as err:
        advantages_dataset(ds, tmp_path / "out", sc.Pipeline.build("gigpo"))
    assert err.value.source == str(ds / "b1.parquet") and err.value.record.startswith("row 2")
    assert not (tmp_path / "out").exists()


def test_groups_are_never_split_and_rows_keep_input_order(local_ray, dataset, tmp_path):
    ticks: list[tuple[int, int]] = []
    run = advantages_dataset(dataset, tmp_path / "out", sc.Pipeline.build("grpo"), partitions=5,
                             progress=lambda done, total: ticks.append((done, total)))
    assert ticks == [(k, 9) for k in range(1, 10)]  # 4 map tasks (one per file), then 5 reduce tasks
    ro = sc.read_rollouts(dataset)
    where: dict[str, int] = {}
    for k, part in enumerate(run.parts):
        t = pq.read_table(part)
        for g in set(t.column("group_id").to_pylist()):
            assert where.setdefault(g, k) == k, f"group {g} is in two parts"
        # within a part, episodes in input order (files in path order, rows in file order)
        eids = list(dict.fromkeys(t.column("episode_id").to_pylist()))
        pos = {e: i for i, e in enumerate(ro.episode_id.to_pylist())}
        assert [pos[e] for e in eids] == sorted(pos[e] for e in eids)
    assert len(where) == ro.n_groups
    assert run.n_groups == ro.n_groups and run.n_episodes == ro.n_episodes and run.n_steps == ro.n_steps
    # the partition is hash(group_id) mod P, the same in every process
    want = partition_of(pa.array(["task-1", "task-2"]), 5)
    assert np.array_equal(want, partition_of(pa.array(["task-1", "task-2"]), 5))


def test_summary_matches_the_written_advantages(local_ray, dataset, tmp_path):
    run = advantages_dataset(dataset, tmp_path / "out", sc.Pipeline.build("gigpo"), partitions=3)
    a = pq.read_table(tmp_path / "out").column("advantage").to_numpy()
    assert run.advantage["mean"] == pytest.approx(a.mean(), abs=1e-12)
    assert run.advantage["std"] == pytest.approx(a.std(), rel=1e-9)
    assert (run.advantage["min"], run.advantage["max"]) == (a.min(), a.max())
    assert run.advantage["zero_fraction"] == pytest.approx(np.mean(a == 0))


def test_a_second_run_replaces_the_output_and_a_failed_one_keeps_it(local_ray, tmp_path):
    ds = write_dataset(tmp_path / "ds", make_records(1, n_groups=12))
    out = tmp_path / "out"
    advantages_dataset(ds, out, sc.Pipeline.build("grpo"), partitions=4)
    advantages_dataset(ds, out, sc.Pipeline.build("rloo"), partitions=2)  # replaces it
    assert len(list(out.glob("part-*.parquet"))) <= 2
    assert json.loads((out / MANIFEST).read_text())["pipeline"]["estimator"]["name"] == "rloo"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a later file with a bad outcome: the run fails, naming the file and row; out is untouched
    bad = sc.Rollouts.from_records(make_records(2, n_groups=2)).to_arrow()
    outcome = bad.column("outcome").to_pylist()
    outcome[1] = float("nan")
    pq.write_table(bad.set_column(bad.schema.get_field_index("outcome"), "outcome", pa.array(outcome)), ds / "zz.parquet")
    with pytest.raises(sc.RolloutsError) as err:
        advantages_dataset(ds, out, sc.Pipeline.build("grpo"), partitions=3)
    assert err.value.source == str(ds / "zz.parquet") and err.value.record == "row 1" and err.value.field == "outcome"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_episode_id_in_two_files_is_refused_naming_both(local_ray, tmp_path):
    recs = make_records(3, n_groups=10)
    ds = write_dataset(tmp_path / "ds", recs, n_files=2)
    dup = dict(recs[0], group_id="another-task")  # same id, another group: another partition
    sc.write_rollouts(sc.Rollouts.from_records([dup]), ds / "part-9.parquet")
    for backend in (["--backend", "ray", "--partitions", "4"], []):
        out = tmp_path / ("o" if backend else "o.parquet")
        with pytest.raises(sc.RolloutsError, match="is also an episode of") as err:
            args = _build_parser().parse_args(["advantages", str(ds), "-e", "grpo", *backend, "-o", str(out), "-q"])
            args.func(args)
        assert err.value.field == "episode_id" and err.value.source.endswith(".parquet")
        assert not out.exists()


def test_files_with_other_fields_are_refused(local_ray, tmp_path):
    ds = write_dataset(tmp_path / "ds", make_records(4, n_groups=6), n_files=2)
    other = [{"episode_id": "x", "group_id": "task-0", "outcome": 1.0, "steps": [{"state": "a"}]}]
    sc.write_rollouts(sc.Rollouts.from_records(other), ds / "part-5.parquet")
    with pytest.raises(sc.RolloutsError, match="has step fields") as err:
        advantages_dataset(ds, tmp_path / "out", sc.Pipeline.build("grpo"), partitions=1)
    assert err.value.source == str(ds / "part-5.parquet")
    with pytest.raises(sc.RolloutsError, match="has step fields"):
        sc.read_rollouts(ds)  # the local backend refuses it the same way


@pytest.mark.parametrize("shuffle", [False, True])
def test_files_with_other_fields_are_refused_even_in_separate_partitions(local_ray, tmp_path, shuffle):
    # whole groups per file: no partition holds both files, yet the dataset is refused as a whole
    ds = tmp_path / "ds"
    ds.mkdir()
    with_value = [{"episode_id": f"a{i}", "group_id": "ga", "outcome": float(i), "steps": [{"value": 0.5}]} for i in range(3)]
    without = [{"episode_id": f"b{i}", "group_id": "gb", "outcome": float(i), "steps": [{"reward": 1.0}]} for i in range(3)]
    sc.write_rollouts(sc.Rollouts.from_records(with_value), ds / "a.parquet")
    sc.write_rollouts(sc.Rollouts.from_records(without), ds / "b.parquet")
    with pytest.raises(sc.RolloutsError, match=r"has step fields \[\], a.parquet has \['value'\]") as err:
        advantages_dataset(ds, tmp_path / "out", sc.Pipeline.build("grpo"), shuffle=shuffle, partitions=64 if shuffle else None)
    assert err.value.source == str(ds / "b.parquet")
    assert not (tmp_path / "out").exists()


def test_a_missing_field_names_the_file(local_ray, tmp_path):
    recs = [{"episode_id": f"e{i}", "group_id": "g", "outcome": 1.0, "steps": [{"reward": 0.0}]} for i in range(3)]
    ds = tmp_path / "ds"
    ds.mkdir()
    sc.write_rollouts(sc.Rollouts.from_records(recs), ds / "a.parquet")
    with pytest.raises(sc.RolloutsError, match="needs this field") as err:
        advantages_dataset(ds, tmp_path / "out", sc.Pipeline.build("gigpo"))
    assert err.value.source == str(ds / "a.parquet") and err.value.field == "steps[].state"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["-e", "reinforce_pp"], "REINFORCE++ normalises"),
        (["-e", "grpo", "-p", "scale=batch"], "scale='batch'"),
        (["-e", "spa"], "scope='group'"),
        (["-e", "grpo", "--shape", "laser_d"], "length targets"),
        (["-e", "grpo", "--state", "s.json"], "drop --state"),
        (["-e", "grpo"], "needs -o OUTPUT_DIR"),
    ],
)
def test_usage_errors_write_nothing(dataset, tmp_path, capsys, extra, fragment):
    out = [] if fragment.startswith("needs -o") else ["-o", str(tmp_path / "out")]
    assert main(["advantages", str(dataset), *extra, "--backend", "ray", *out, "-q"]) == 2
    assert fragment in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_paths_that_are_not_replaceable(dataset, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["advantages", str(dataset), "-e", "grpo", "--backend", "ray", "-o", str(foreign), "-q"]) == 2
    assert "stepcredit did not write" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(["advantages", str(dataset), "-e", "grpo", "--backend", "ray", "-o", str(tmp_path / "a.parquet"), "-q"]) == 2
    assert "writes a directory" in capsys.readouterr().err


def test_ray_only_flags_need_the_ray_backend(dataset, tmp_path, capsys):
    assert main(["advantages", str(dataset), "-e", "grpo", "--partitions", "2", "-o", str(tmp_path / "a.parquet")]) == 2
    assert "--partitions needs --backend ray" in capsys.readouterr().err


def test_jsonl_input_is_refused_by_the_ray_backend(tmp_path, capsys):
    src = Path(sc.__file__).parents[2] / "examples" / "rollouts.jsonl"
    assert main(["advantages", str(src), "-e", "grpo", "--backend", "ray", "-o", str(tmp_path / "o")]) == 1
    assert "reads Parquet only" in capsys.readouterr().err


def test_an_empty_directory_is_a_data_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for backend in (["--backend", "ray", "-o", str(tmp_path / "o")], []):
        assert main(["advantages", str(tmp_path / "empty"), "-e", "grpo", *backend]) == 1
        assert "holds no .parquet file" in capsys.readouterr().err


def test_local_backend_reads_a_dataset_as_its_files_concatenated(dataset, tmp_path):
    files = sc.data.io.dataset_files(dataset)
    assert [f.relative_to(dataset).as_posix() for f in files] == [
        "part-0.parquet", "part-1.parquet", "part-2.parquet", "sub/part-3.parquet"]
    whole = sc.Rollouts.concat([sc.read_rollouts(f) for f in files])
    assert sc.read_rollouts(dataset).equals(whole)


def test_without_ray_the_error_names_the_extra(dataset, tmp_path, monkeypatch, capsys):
    from stepcredit._ray import LOOPBACK_ENV

    for k in LOOPBACK_ENV:
        monkeypatch.delenv(k, raising=False)  # restored afterwards
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["advantages", str(dataset), "-e", "grpo", "--backend", "ray", "-o", str(tmp_path / "o")]) == 2
    assert "pip install 'stepcredit[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_integer_group_ids_get_the_readers_error(local_ray, tmp_path):
    # the scan hashes string ids only; other types go to the validating path, which names them
    ds = write_batches(tmp_path / "ds", make_records(7, n_groups=6), n_files=2)
    t = pq.read_table(ds / "b0.parquet")
    t = t.set_column(t.schema.get_field_index("group_id"), "group_id", pa.array(range(t.num_rows), pa.int64()))
    pq.write_table(t, ds / "b0.parquet")
    with pytest.raises(sc.RolloutsError) as local_err:
        sc.read_rollouts(ds)
    with pytest.raises(sc.RolloutsError) as ray_err:
        advantages_dataset(ds, tmp_path / "out", sc.Pipeline.build("grpo"))
    assert str(ray_err.value) == str(local_err.value)
    assert ray_err.value.source == str(ds / "b0.parquet") and ray_err.value.field == "group_id"


def test_ray_address_joins_a_running_cluster(local_ray, dataset, tmp_path):
    # a second process joins the session's Ray by its address (as on a cluster: --ray-address)
    # and leaves it running; the output equals the local backend's
    import subprocess

    address = local_ray.get_runtime_context().gcs_address
    out = tmp_path / "joined"
    proc = subprocess.run(
        [sys.executable, "-m", "stepcredit.cli", "advantages", str(dataset), "-e", "gigpo", "--backend", "ray",
         "--ray-address", address, "-o", str(out), "--partitions", "3"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ray (" + address in proc.stdout.replace("\n", "")  # the summary names the cluster it joined
    assert pq.read_table(out).sort_by(SORT).equals(local_table(dataset, tmp_path, ["-e", "gigpo"]))
    assert local_ray.is_initialized()
    alive = [n for n in local_ray.nodes() if n["Alive"]]
    assert len(alive) == 1  # the joining driver started no node of its own


def _estimator_cases() -> list[tuple[str, dict]]:
    """Every group-local (estimator, one non-default choice) of the registry."""
    from stepcredit.locality import stage_dependence

    cases = []
    for spec in sc.list_estimators():
        choices = [{}] + [{p.name: c} for p in spec.params.values() if p.choices for c in p.choices if c != p.default]
        cases += [(spec.name, c) for c in choices if stage_dependence("estimator", spec.name, spec.bind(c)) is None]
    return cases


@pytest.fixture(scope="module")
def full_dataset(tmp_path_factory) -> Path:
    """Every step field an estimator reads; tree nodes are action prefixes (a valid tree)."""
    rng = np.random.default_rng(11)
    recs = []
    for g in range(30):
        for i in range(int(rng.integers(1, 6))):
            n = int(rng.integers(1, 6))
            actions = [f"a{int(rng.integers(0, 2))}" for _ in range(n)]
            recs.append({
                "episode_id": f"g{g}-e{i}", "group_id": f"task-{g}", "outcome": float(rng.normal(5, 3)),
                "steps": [{"state": f"s{int(rng.integers(0, 3))}-{t}", "action": actions[t],
                           "node": f"{g}:" + "".join(actions[: t + 1]), "reward": float(rng.normal()),
                           "process": float(rng.uniform()), "value": float(rng.normal()),
                           "p_answer": float(rng.uniform()), "grounding": float(rng.integers(0, 2)),
                           "importance": float(rng.uniform()), "tokens": int(rng.integers(1, 50))} for t in range(n)],
            })
    recs = [recs[i] for i in rng.permutation(len(recs))]
    return write_dataset(tmp_path_factory.mktemp("full") / "rollouts", recs, n_files=3)


@pytest.mark.parametrize(("name", "params"), _estimator_cases(), ids=[f"{n}-{p}" for n, p in _estimator_cases()])
def test_every_group_local_estimator_is_exact_under_the_shuffle(local_ray, full_dataset, tmp_path, name, params):
    pipe = sc.Pipeline.build(name, params=params)
    ro = sc.read_rollouts(full_dataset)
    result = pipe.run(ro)
    sc.write_credit(result.credit, result.rollouts, tmp_path / "local.parquet")
    advantages_dataset(full_dataset, tmp_path / "ray", pipe, partitions=3)
    want = pq.read_table(tmp_path / "local.parquet").sort_by(SORT)
    assert pq.read_table(tmp_path / "ray").sort_by(SORT).equals(want)
