"""``stepcredit bench`` and ``stepcredit report``: the command-line side of the benchmark.

    stepcredit bench [--env E ...] [--env-kwargs [E.]key=value ...] [-e ESTIMATOR|PIPELINE ...]
                     [--pipeline FILE ...] [--seeds N] [--budget EPISODES] [--policy P]
                     [--hidden-size H] [--feature-size F] [--adam-lr LR] [--out DIR] [--workers N]
    stepcredit report RUN_DIR

``bench`` with no arguments runs the default matrix (``BenchConfig()``). Rerunning the same
command on the same ``--out`` skips finished runs and resumes unfinished ones from their last
checkpoint. ``report`` rebuilds the table and plots of a benchmark directory.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from stepcredit._ui import print_table, progress
from stepcredit.bench.matrix import PIPELINES, BenchConfig, BenchError, BenchResult, collect_results, run_bench
from stepcredit.bench.report import write_report
from stepcredit.envs import get_env, parse_env_kwarg

__all__ = ["add_parsers"]

DEFAULT = BenchConfig()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``report`` to the ``stepcredit`` command line."""
    from stepcredit.train import trainer  # --policy choices: the trainer's POLICIES, read now

    pipelines = "; ".join(f"{name}: {what}" for name, (what, _) in sorted(PIPELINES.items()))
    b = sub.add_parser(
        "bench", help="train policies with several credit estimators and compare them",
        description="Run a matrix of training runs (environment x method x seed), write per-run "
        "metrics, a results table with bootstrap 95% confidence intervals and learning curves, "
        "and print the table. Rerun the same command to resume.",
        epilog=f"built-in pipelines (use with -e NAME): {pipelines}. The PRM pipelines need an "
        "environment that gives process scores (lock_chain, keydoor, arith_chain: oracle scores, "
        "prm_noise=Q makes them noisy).",
    )
    b.add_argument("--env", action="append", default=[], metavar="ENV",
                   help=f"environment, repeatable (default: {' '.join(DEFAULT.envs)}); gym:ENV_ID for gymnasium")
    b.add_argument("--env-kwargs", action="append", default=[], metavar="[ENV.]KEY=VALUE",
                   help="environment parameter, repeatable (ENV. may be left out with one environment)")
    b.add_argument("-e", "--estimator", action="append", default=[], metavar="NAME",
                   help="estimator or built-in pipeline to compare, repeatable (built-in pipelines: "
                   f"{', '.join(sorted(PIPELINES))}; default: {' '.join(DEFAULT.methods)})")
    b.add_argument("--pipeline", action="append", default=[], metavar="FILE",
                   help="a pipeline TOML file to compare, repeatable (named by the file's stem)")
    b.add_argument("--seeds", type=int, default=DEFAULT.seeds, help=f"seeds per cell (default {DEFAULT.seeds})")
    b.add_argument("--budget", type=int, default=DEFAULT.budget, help=f"episodes per run (default {DEFAULT.budget})")
    b.add_argument("--policy", default=DEFAULT.policy, choices=trainer.POLICIES,
                   help=f"policy (default {DEFAULT.policy}; mlp and gru need the torch extra, lm the lm extra)")
    b.add_argument("--hidden-size", type=int, default=DEFAULT.hidden_size, metavar="H",
                   help=f"hidden width of the mlp, gru and lm policies (default {DEFAULT.hidden_size})")
    b.add_argument("--feature-size", type=int, default=DEFAULT.feature_size, metavar="F",
                   help=f"hashed text-feature buckets of the torch policies (default {DEFAULT.feature_size})")
    b.add_argument("--adam-lr", type=float, default=DEFAULT.adam_lr, metavar="LR",
                   help=f"Adam step size of the torch policies (default {DEFAULT.adam_lr})")
    b.add_argument("--group-size", type=int, default=DEFAULT.group_size, help=f"episodes per task (default {DEFAULT.group_size})")
    b.add_argument("--branching", type=int, default=0, metavar="K",
                   help="sample each group as a rollout tree, forking K ways (0 = independent episodes; for `tree`)")
    b.add_argument("--branch-every", type=int, default=1, metavar="B", help="with --branching: fork every B steps (default 1)")
    b.add_argument("--target", type=float, default=DEFAULT.target, help=f"target success rate (default {DEFAULT.target})")
    b.add_argument("--workers", type=int, default=None,
                   help="runs in parallel (default: 1 locally; every CPU with --backend ray)")
    b.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where runs execute: local processes, or Ray tasks (pip install 'stepcredit[ray]')")
    b.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (OUT must be a shared path); default with --backend ray: "
                   "start Ray on 127.0.0.1")
    b.add_argument("--out", help="output directory (default runs/<timestamp>)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser(
        "report", help="rebuild the table, plots and HTML report of a benchmark directory",
        description="Read a `stepcredit bench` output directory and write its results table "
        "(results.md/.json/.csv), learning-curve plots and report.html again; print the table.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of `stepcredit bench`")
    r.set_defaults(func=_cmd_report)


def _env_kwargs(envs: tuple[str, ...], assignments: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for a in assignments:
        key = a.split("=", 1)[0]
        if "." in key:
            env, rest = a.split(".", 1)
        elif len(envs) == 1:
            env, rest = envs[0], a
        else:
            raise BenchError(f"--env-kwargs {a!r}: with several environments write ENV.KEY=VALUE (one of {', '.join(envs)})")
        if env not in envs:
            raise BenchError(f"--env-kwargs {a!r}: '{env}' is not one of the environments ({', '.join(envs)})")
        k, v = parse_env_kwarg(env, rest)
        out.setdefault(env, {})[k] = v
    for env, kw in out.items():
        get_env(env).bind(kw)
    return out


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    envs = tuple(args.env) or DEFAULT.envs
    for e in envs:
        get_env(e)
    methods = tuple(args.estimator) + tuple(args.pipeline) or DEFAULT.methods
    cfg = BenchConfig(
        envs=envs, env_kwargs=_env_kwargs(envs, args.env_kwargs), methods=methods, seeds=args.seeds,
        budget=args.budget, policy=args.policy, group_size=args.group_size, target=args.target,
        branching=args.branching, branch_every=args.branch_every, hidden_size=args.hidden_size,
        feature_size=args.feature_size, adam_lr=args.adam_lr,
    )
    cfg.check()
    return cfg


def _print(result: BenchResult, out: Path, elapsed: float | None) -> None:
    cfg = result.config
    title = (f"stepcredit bench: episodes to {cfg.target:.0%} success, final success and AUC, "
             f"each the mean over {cfg.seeds} seeds with its bootstrap 95% CI; budget {cfg.budget:,} episodes")
    print_table(title, BenchResult.HEADER, result.rows())
    tail = f"results: {out / 'results.md'}, report: {out / 'report.html'}"
    if elapsed is not None:
        tail += f"  ({elapsed:.0f} s)"
    if result.missing:
        tail += f"; {result.missing} run(s) unfinished: rerun the same command to finish them"
    print(tail)


def _cmd_bench(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    n_runs = len(cfg.envs) * len(cfg.methods) * cfg.seeds
    t0 = time.perf_counter()
    with progress(f"bench: {n_runs} runs", not args.quiet, total=n_runs) as bar:
        done = [0]

        def on_run(run, status: str) -> None:
            if status in ("done", "skipped"):
                done[0] += 1
                bar.update(done[0], n_runs)

        result = run_bench(cfg, out, workers=args.workers, backend=args.backend, address=args.ray_address, on_run=on_run)
    _print(result, out, time.perf_counter() - t0)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.run_dir)
    path = out / "bench.json"
    if not path.exists():
        raise BenchError(f"{out}: not a benchmark directory (no bench.json); give the --out directory of `stepcredit bench`")
    d = json.loads(path.read_text())
    d["envs"], d["methods"] = tuple(d["envs"]), tuple(d["methods"])
    cfg = BenchConfig(**d)
    result = collect_results(cfg, out)
    result.write(out)
    write_report(result, out)
    _print(result, out, None)
    return 0
