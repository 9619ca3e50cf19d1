"""The Ray backend of `stepcredit bench`: same results as the local backend, resume, loopback only.

Ray is started once for the test session (the `local_ray` fixture of conftest.py: a 2-CPU local instance,
127.0.0.1 only) and shut down at its end.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest

from stepcredit.bench.matrix import BenchConfig, BenchError, RunSpec, collect_results, plan_runs, run_bench
from stepcredit.bench.ray_backend import LOOPBACK_ENV, run_ray
from stepcredit.train.trainer import WALL_CLOCK_FIELDS

NO_RAY = "the Ray backend needs ray (pip install 'stepcredit[ray]')"

# tests/test_bench.py SMALL: 1 env x 2 methods x 2 seeds of 96 episodes (about 0.5 s locally)
SMALL = BenchConfig(envs=("lock_chain",), env_kwargs={"lock_chain": {"length": 2}}, methods=("grpo", "gigpo"),
                    seeds=2, budget=96, group_size=4)


pytestmark = pytest.mark.xdist_group("ray")  # one worker, one Ray (the session fixture local_ray)


@pytest.fixture(scope="module")
def local_result(tmp_path_factory):
    """The local backend's benchmark directory of SMALL (the reference)."""
    out = tmp_path_factory.mktemp("local")
    run_bench(SMALL, out)
    return out


def _ray_bench(cfg: BenchConfig, out: Path, **kw) -> list[tuple[RunSpec, str]]:
    """What run_bench does with the ray backend: write the config, run the unfinished runs, the table."""
    seen: list[tuple[RunSpec, str]] = []
    from stepcredit.bench.matrix import _write_config

    _write_config(cfg, out)
    todo = [r for r in plan_runs(cfg) if not (r.directory(out) / "done.json").exists()]
    run_ray(cfg, todo, out, workers=2, on_run=lambda r, s: seen.append((r, s)), **kw)
    collect_results(cfg, out).write(out)
    return seen


def _metrics(d: Path) -> list[dict]:
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for k in WALL_CLOCK_FIELDS:
            r.pop(k, None)
    return rows


def _policy(d: Path) -> dict[str, np.ndarray]:
    with np.load(d / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}  # meta holds elapsed_s


def _assert_same_results(a: Path, b: Path) -> None:
    assert (a / "results.json").read_text() == (b / "results.json").read_text()
    assert (a / "results.md").read_text() == (b / "results.md").read_text()
    for run in plan_runs(SMALL):
        da, db = run.directory(a), run.directory(b)
        assert _metrics(da) == _metrics(db), run
        for name in ("config.json", "done.json"):
            assert (da / name).read_text() == (db / name).read_text(), (run, name)
        pa, pb = _policy(da), _policy(db)
        assert pa.keys() == pb.keys()
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_ray_bench_equals_the_local_backend(local_ray, local_result, tmp_path):
    seen = _ray_bench(SMALL, tmp_path)
    runs = plan_runs(SMALL)
    assert [s for _, s in seen].count("started") == [s for _, s in seen].count("done") == len(runs)
    assert {r for r, s in seen if s == "started"} == {r for r, s in seen if s == "done"} == set(runs)
    _assert_same_results(local_result, tmp_path)
    assert local_ray.is_initialized()  # an instance it did not start is left running


def test_ray_bench_resumes_a_partial_run(local_ray, local_result, tmp_path):
    # a partial benchmark: one run finished, one interrupted after 2 iterations, two not started
    from stepcredit.bench.matrix import _write_config, run_one

    _write_config(SMALL, tmp_path)
    finished, cut = RunSpec("lock_chain", "grpo", 0), RunSpec("lock_chain", "gigpo", 1)
    run_one(SMALL, finished, tmp_path)

    class Stop(Exception):
        pass

    def stop_after_two(metrics, calls=[]):  # noqa: B006 - a counter local to this test
        calls.append(metrics)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        run_one(SMALL, cut, tmp_path, progress=stop_after_two)
    assert not (cut.directory(tmp_path) / "done.json").exists()
    before = (finished.directory(tmp_path) / "metrics.jsonl").read_text()

    seen = _ray_bench(SMALL, tmp_path)
    assert [s for _, s in seen].count("done") == 3
    assert {r for r, s in seen if s == "done"} == set(plan_runs(SMALL)) - {finished}
    assert (finished.directory(tmp_path) / "metrics.jsonl").read_text() == before  # skipped, untouched
    _assert_same_results(local_result, tmp_path)


def test_a_failing_run_raises_its_own_error(local_ray, tmp_path):
    from stepcredit.envs import EnvError

    bad = BenchConfig(**{**SMALL.to_dict(), "env_kwargs": {"lock_chain": {"length": -1}}, "methods": ("grpo",),
                         "seeds": 1})
    with pytest.raises(EnvError, match="lock_chain"):
        run_ray(bad, plan_runs(bad), tmp_path, workers=1)
    assert not (plan_runs(bad)[0].directory(tmp_path) / "done.json").exists()


def test_workers_below_one_is_a_usage_error(tmp_path):
    with pytest.raises(BenchError, match="workers=0"):
        run_ray(SMALL, plan_runs(SMALL), tmp_path, workers=0)


@pytest.mark.skipif("backend" not in inspect.signature(run_bench).parameters,
                    reason="run_bench has no backend parameter yet (the lead wires --backend ray)")
def test_run_bench_dispatches_to_ray(local_ray, local_result, tmp_path):
    run_bench(SMALL, tmp_path, workers=2, backend="ray")
    _assert_same_results(local_result, tmp_path)


# -- loopback: every socket a Ray process listens on is bound to 127.0.0.1 / ::1 -----------------------


def _ray_pids() -> set[int]:
    """This process's descendants (gcs_server, raylet, agents and workers: Ray starts them all)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, stack = set(), [os.getpid()]
    while stack:
        for c in children.get(stack.pop(), []):
            out.add(c)
            stack.append(c)
    return out


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def _listening(proto: str) -> list[tuple[str, str]]:
    """(local address hex, inode) of the sockets in LISTEN (tcp) or bound (udp) state."""
    path = Path(f"/proc/net/{proto}")
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()[1:]]
    state = "0A" if proto.startswith("tcp") else "07"
    return [(r[1].rsplit(":", 1)[0], r[9]) for r in rows if r[3] == state]


def _is_loopback(addr: str) -> bool:
    if len(addr) == 8:  # IPv4, little-endian bytes: 127.x.x.x has 7F as the last byte
        return addr[6:8] == "7F"
    words = [addr[i:i + 8] for i in range(0, 32, 8)]  # IPv6: four little-endian 32-bit words
    if words == ["00000000"] * 3 + ["01000000"]:
        return True  # ::1
    return words[:2] == ["00000000"] * 2 and words[2] == "FFFF0000" and words[3][6:8] == "7F"  # ::ffff:127.x


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to list listening sockets")
def test_local_ray_listens_on_loopback_only(local_ray):
    ray = local_ray

    @ray.remote(num_cpus=1)
    def pid() -> int:
        return os.getpid()

    ray.get([pid.remote() for _ in range(2)])  # workers up, so their servers exist too
    inodes = _socket_inodes(_ray_pids())
    mine = [(proto, addr) for proto in ("tcp", "tcp6", "udp", "udp6") for addr, ino in _listening(proto)
            if ino in inodes]
    assert any(proto.startswith("tcp") for proto, _ in mine), "found no Ray listener to check"
    exposed = [(proto, addr) for proto, addr in mine if not _is_loopback(addr)]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def test_is_loopback_reads_proc_net_addresses():
    assert _is_loopback("0100007F")  # 127.0.0.1
    assert not _is_loopback("00000000") and not _is_loopback("0F02000A")  # 0.0.0.0, 10.0.2.15
    assert _is_loopback("00000000000000000000000001000000")  # ::1
    assert _is_loopback("0000000000000000FFFF00000100007F")  # ::ffff:127.0.0.1
    assert not _is_loopback("00000000000000000000000000000000")  # ::
    assert not _is_loopback("0000000000000000FFFF00000F02000A")  # ::ffff:10.0.2.15


_SELF_STARTED = """
import json, sys
from pathlib import Path
from stepcredit.bench.matrix import BenchConfig, collect_results, plan_runs, _write_config
from stepcredit.bench.ray_backend import run_ray
cfg, out = BenchConfig(**json.loads(sys.argv[1])), Path(sys.argv[2])
_write_config(cfg, out)
run_ray(cfg, plan_runs(cfg), out, workers=2)
collect_results(cfg, out).write(out)
import ray
print(json.dumps({"initialized": ray.is_initialized()}))
"""


def test_run_ray_starts_and_stops_its_own_ray(local_result, tmp_path):
    """In a fresh process (as `stepcredit bench --backend ray`): Ray started on loopback, then shut down."""
    import subprocess
    import sys

    pytest.importorskip("ray", reason=NO_RAY)
    d = SMALL.to_dict()
    proc = subprocess.run([sys.executable, "-c", _SELF_STARTED, json.dumps(d), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {"initialized": False}
    _assert_same_results(local_result, tmp_path)


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch):
    import sys

    for k in LOOPBACK_ENV:
        monkeypatch.delenv(k, raising=False)  # restored afterwards: run_ray sets them before importing ray
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(BenchError, match=r"pip install 'stepcredit\[ray\]'"):
        run_ray(SMALL, plan_runs(SMALL), tmp_path, workers=1)
