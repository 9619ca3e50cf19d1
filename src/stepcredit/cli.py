"""The ``stepcredit`` command line.

    stepcredit advantages INPUT -e ESTIMATOR [--shape T ...] [--filter F ...] [-p [stage.]key=value ...] [-o OUTPUT]
    stepcredit advantages INPUT --pipeline FILE [-p stage.key=value ...] [--state FILE] [-o OUTPUT]
    stepcredit advantages DATASET_DIR -e ESTIMATOR --backend ray [--ray-address ADDR] -o OUTPUT_DIR
    stepcredit estimators [--family F] [--params]      # estimators, then transforms and filters
    stepcredit transforms [--params]
    stepcredit filters [--params]
    stepcredit bench [--env E ...] [-e ESTIMATOR ...] [--pipeline FILE ...] [--seeds N] [--budget EPISODES] [--out DIR]
    stepcredit report RUN_DIR
    stepcredit prm label|train|score|eval|search ...   # process reward models (docs/prm.md)
    stepcredit distance ...                             # EPIC / STARC reward distances (docs/metrics.md)

Exit status: 0 on success; 1 for a bad or unreadable input file (the one-line message names
the file, record and field); 2 for bad usage (unknown estimator, transform or filter, bad
parameter, bad pipeline file, unknown output extension). Nothing is written unless the whole
computation succeeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stepcredit import __version__
from stepcredit._params import UsageError
from stepcredit._ui import print_table, progress
from stepcredit.data import (
    MissingColumnError,
    Rollouts,
    RolloutsError,
    read_rollouts,
    write_credit,
)
from stepcredit.data.io import FORMATS
from stepcredit.estimators import EstimatorError, list_estimators
from stepcredit.filters import list_filters
from stepcredit.pipeline import Pipeline, PipelineError, PipelineState
from stepcredit.shaping import list_transforms

__all__ = ["main"]

#: Show progress bars for inputs at least this large (steps), when stderr is a terminal.
PROGRESS_MIN_STEPS = 500_000
GROUP_ROWS = 8


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepcredit",
        description="Step-level credit assignment for RL of LLM agents: turn groups of "
        "multi-step rollouts into per-step advantages.",
    )
    parser.add_argument("--version", action="version", version=f"stepcredit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    adv = sub.add_parser(
        "advantages",
        help="compute per-step advantages of a rollout file",
        description="Compute per-step advantages with a credit pipeline (reward transforms -> "
        "estimator -> credit filters) and write one row per step (episode_id, group_id, step, "
        "advantage, episode_advantage; weight when filters ran).",
    )
    adv.add_argument("input", metavar="INPUT", help="rollouts, .jsonl or .parquet, or a directory of .parquet files (a dataset)")
    adv.add_argument("-e", "--estimator", help="estimator name (see `stepcredit estimators`); required without --pipeline")
    adv.add_argument(
        "--shape", action="append", default=[], metavar="TRANSFORM",
        help="reward transform applied before the estimator, repeatable, in order (see `stepcredit transforms`)",
    )
    adv.add_argument(
        "--filter", action="append", default=[], metavar="FILTER", dest="filters",
        help="credit filter applied after the estimator, repeatable, in order (see `stepcredit filters`)",
    )
    adv.add_argument(
        "-p", "--param", action="append", default=[], metavar="[STAGE.]KEY=VALUE",
        help="parameter, repeatable: KEY=VALUE for the estimator, STAGE.KEY=VALUE for a transform, "
        "filter or the estimator by name (e.g. -p scale=batch -p gated.threshold=1)",
    )
    adv.add_argument("--pipeline", metavar="FILE", help="run the pipeline saved in this TOML file (-p overrides its parameters)")
    adv.add_argument("--save-pipeline", metavar="FILE", help="also write the pipeline that ran (all parameters) as TOML")
    adv.add_argument(
        "--state", metavar="FILE",
        help="state of stateful stages (laser_d, composite, replay): read if the file exists, "
        "written back (atomically) after a successful run",
    )
    adv.add_argument(
        "--no-refit", dest="refit", action="store_false", default=None,
        help="when filters drop episodes, keep the estimator's advantages (default: re-run it on the kept episodes)",
    )
    adv.add_argument(
        "-o", "--output",
        help="advantages file to write, .jsonl or .parquet (atomic); with --backend ray a directory (a Parquet dataset)",
    )
    adv.add_argument(
        "--backend", choices=("local", "ray"), default="local",
        help="local: one process, the whole input in memory; ray: Ray tasks over a Parquet dataset, "
        "one partition of whole groups at a time (group-local pipelines only; docs/integrations.md)",
    )
    adv.add_argument("--ray-address", metavar="ADDR", help="with --backend ray: join this Ray cluster (default: start Ray on 127.0.0.1)")
    adv.add_argument("--workers", type=int, metavar="N", help="with --backend ray: CPUs of the local Ray (default: every CPU)")
    adv.add_argument("--partitions", type=int, metavar="P", help="with --backend ray: number of partitions (default: about 64 MiB of input each)")
    adv.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help=f"progress bars on stderr (auto: inputs of {PROGRESS_MIN_STEPS:,}+ steps on a terminal)",
    )
    adv.add_argument("-q", "--quiet", action="store_true", help="print no summary table")
    adv.set_defaults(func=_cmd_advantages)

    est = sub.add_parser(
        "estimators", help="list the registered estimators (then transforms and filters)",
        description="List the registered estimators (name, family, needed step fields, paper), "
        "then the reward transforms and credit filters (without --family).",
    )
    est.add_argument("--family", help="only the estimators of this family (outcome, value, ...)")
    est.add_argument("--params", action="store_true", help="also list every parameter with its default")
    est.set_defaults(func=_cmd_estimators)
    for kind in ("transforms", "filters"):
        cmd = sub.add_parser(
            kind, help=f"list the registered {kind}",
            description=f"List the registered {kind}: name, fields read and written, paper.",
        )
        cmd.add_argument("--params", action="store_true", help="also list every parameter with its default")
        cmd.set_defaults(func=_cmd_transforms if kind == "transforms" else _cmd_filters)
    from stepcredit.bench.cli import add_parsers  # the benchmark's commands

    add_parsers(sub)
    from stepcredit.prm.cli import add_parsers as add_prm_parsers  # process reward models

    add_prm_parsers(sub)
    from stepcredit.metrics.cli import add_distance_parser  # reward distances

    add_distance_parser(sub)
    return parser


def _show_progress(mode: str, n: int) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return n >= PROGRESS_MIN_STEPS and sys.stderr.isatty()


def _pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline of the command line (checked, before anything is read)."""
    if args.pipeline:
        if args.estimator or args.shape or args.filters:
            raise PipelineError("give either --pipeline FILE or -e/--shape/--filter, not both")
        pipe = Pipeline.load(args.pipeline)
    else:
        if not args.estimator:
            raise PipelineError("give an estimator (-e NAME, see `stepcredit estimators`) or --pipeline FILE")
        pipe = Pipeline.build(args.estimator, transforms=args.shape, filters=args.filters)
    if args.refit is not None:
        pipe = Pipeline(pipe.estimator, pipe.transforms, pipe.filters, args.refit)
    return pipe.with_assignments(args.param)


def _cmd_advantages(args: argparse.Namespace) -> int:
    pipe = _pipeline(args)  # validate before reading anything
    if args.backend == "ray":
        return _advantages_ray(args, pipe)
    for flag in ("ray_address", "workers", "partitions"):
        if getattr(args, flag) is not None:
            raise PipelineError(f"--{flag.replace('_', '-')} needs --backend ray")
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in FORMATS:
        raise EstimatorError(f"output {out}: unknown extension '{out.suffix}'; name it *.jsonl or *.parquet")
    state = None
    if args.state and Path(args.state).exists():
        state = PipelineState.load(args.state)
        pipe._states(state)  # a state of another pipeline: refuse before any work
    t0 = time.perf_counter()
    in_path = Path(args.input)
    big_file = in_path.is_file() and in_path.stat().st_size >= 64 << 20
    with progress(f"reading {in_path.name}", _show_progress(args.progress, PROGRESS_MIN_STEPS if big_file else 0)):
        ro = read_rollouts(in_path)
    show = _show_progress(args.progress, ro.n_steps)
    try:
        pipe.check(ro)
        with progress(f"{pipe.estimator.name} advantages", show):
            result = pipe.run(ro, state)
    except MissingColumnError as exc:
        raise exc.in_file(in_path) from None
    except RolloutsError as exc:  # an estimator's structural check (e.g. tree node ids): name the file
        if exc.source != "<rollouts>":
            raise
        raise RolloutsError(str(in_path), exc.record, exc.field, exc.problem, exc.fix) from None
    t_est = time.perf_counter()
    ro, credit = result.rollouts, result.credit
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with progress(f"writing {out.name}", show, total=ro.n_steps) as bar:
            write_credit(credit, ro, out, progress=bar.update)
    if args.save_pipeline:
        pipe.save(args.save_pipeline)
    if args.state:
        result.state.save(args.state)
    if not args.quiet:
        _print_summary(args, ro, credit, out, time.perf_counter() - t0, t_est - t0, pipe, result.diagnostics)
    return 0


def _advantages_ray(args: argparse.Namespace, pipe: Pipeline) -> int:
    """``--backend ray``: a Parquet dataset in, a Parquet dataset out (see integrations.ray_credit)."""
    from stepcredit.integrations.ray_credit import advantages_dataset, check_pipeline

    check_pipeline(pipe)
    if not args.output:
        raise PipelineError("--backend ray needs -o OUTPUT_DIR (the advantages are written as a Parquet dataset)")
    if args.state:
        raise PipelineError(
            "--backend ray runs each partition from the stages' initial state and keeps no state: drop --state, "
            "or use --backend local"
        )
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    with progress("ray tasks (map, then reduce)", show, total=1) as bar:
        run = advantages_dataset(
            args.input, args.output, pipe, address=args.ray_address, workers=args.workers,
            partitions=args.partitions,
            progress=bar.update,
        )
    if args.save_pipeline:
        pipe.save(args.save_pipeline)
    if not args.quiet:
        a = run.advantage or {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "zero_fraction": 0.0}
        rows = [
            ("input", f"{args.input} ({len(run.files)} file{'s' if len(run.files) != 1 else ''})"),
            ("backend", f"ray ({args.ray_address or 'local, 127.0.0.1'}), {run.partitions} partitions"),
            ("groups / episodes / steps", f"{run.n_groups:,} / {run.n_episodes:,} / {run.n_steps:,}"),
            ("pipeline", pipe.describe()),
            ("step advantage mean / std", f"{a['mean']:.4g} / {a['std']:.4g}"),
            ("step advantage min / max", f"{a['min']:.4g} / {a['max']:.4g}"),
            ("steps with advantage 0", f"{a['zero_fraction']:.1%}"),
            ("output", f"{run.output} ({len(run.parts)} part files)"),
            ("time", f"{run.seconds:.2f} s"),
        ]
        print_table("stepcredit advantages", ("", "value"), rows)
    return 0


def _fmt_value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_summary(
    args, ro: Rollouts, credit, out: Path | None, elapsed: float, t_est: float, pipe: Pipeline, diagnostics
) -> None:
    params = ", ".join(f"{k}={v!r}" for k, v in credit.params.items())
    s = credit.summary()
    rows = [
        ("input", f"{args.input}"),
        ("groups / episodes / steps", f"{ro.n_groups:,} / {ro.n_episodes:,} / {ro.n_steps:,}"),
        ("step fields", ", ".join(ro.step_fields) or "none"),
    ]
    if ro.episode_fields:
        rows.append(("reward components", ", ".join(ro.episode_fields)))
    for i, st in enumerate(pipe.transforms):
        ps = ", ".join(f"{k}={v!r}" for k, v in st.params.items())
        rows.append((f"transform {i + 1}", f"{st.name}({ps})"))
        rows += [(f"  {k.replace('_', ' ')}", _fmt_value(v)) for k, v in diagnostics.get(st.label(i), {}).items()]
    rows += [
        ("estimator", f"{credit.estimator}({params})"),
        ("step advantage mean / std", f"{s['mean']:.4g} / {s['std']:.4g}"),
        ("step advantage min / max", f"{s['min']:.4g} / {s['max']:.4g}"),
        ("steps with advantage 0", f"{s['zero_fraction']:.1%}"),
    ]
    rows += [(k.replace("_", " "), _fmt_value(v)) for k, v in credit.diagnostics.items()]
    for i, st in enumerate(pipe.filters):
        ps = ", ".join(f"{k}={v!r}" for k, v in st.params.items())
        rows.append((f"filter {i + 1}", f"{st.name}({ps})"))
        rows += [(f"  {k.replace('_', ' ')}", _fmt_value(v)) for k, v in diagnostics.get(st.label(i), {}).items()]
    if credit.episode_weight is not None:
        w = credit.episode_weight
        rows.append(("episodes kept (weight > 0)", f"{int((w > 0).sum()):,} of {w.size:,}"))
    rows.append(("output", str(out) if out else "(none: give -o FILE to write)"))
    rows.append(("time", f"{elapsed:.2f} s (read + estimate {t_est:.2f} s)"))
    print_table("stepcredit advantages", ("", "value"), rows)

    G = ro.n_groups
    codes = ro.episode_group
    scodes = codes[ro.step_episode]
    n_ep = np.bincount(codes, minlength=G)
    n_st = np.bincount(scodes, minlength=G)
    mean_out = np.bincount(codes, weights=ro.outcome, minlength=G) / n_ep
    lo = np.full(G, np.inf)
    hi = np.full(G, -np.inf)
    np.minimum.at(lo, scodes, credit.step_advantage)
    np.maximum.at(hi, scodes, credit.step_advantage)
    names = ro.group_names.to_pylist()
    shown = range(min(G, GROUP_ROWS))
    group_rows = [
        (names[g], int(n_ep[g]), int(n_st[g]), float(mean_out[g]), float(lo[g]), float(hi[g])) for g in shown
    ]
    title = "per group" + (f" (first {GROUP_ROWS} of {G:,})" if G > GROUP_ROWS else "")
    print_table(title, ("group", "episodes", "steps", "mean outcome", "min advantage", "max advantage"), group_rows)


def _cmd_estimators(args: argparse.Namespace) -> int:
    specs = [s for s in list_estimators() if args.family in (None, s.family)]
    if not specs:
        families = sorted({s.family for s in list_estimators()})
        raise EstimatorError(f"no estimators in family '{args.family}'; families: {', '.join(families)}")
    rows = []
    for s in specs:
        needs = ", ".join(("outcome", "group_id") + s.requires)
        row = [s.name, s.family, needs, s.paper]
        if args.params:
            row.insert(3, "; ".join(f"{p.name}={p.default!r}" for p in s.params.values()) or "-")
        rows.append(row)
    cols = ["name", "family", "needs", "paper"]
    if args.params:
        cols.insert(3, "parameters (defaults)")
    print_table("stepcredit estimators", cols, rows)
    if args.family is None:
        _cmd_transforms(args)
        _cmd_filters(args)
    return 0


def _fields(names) -> str:
    return ", ".join(names) or "-"


def _cmd_transforms(args: argparse.Namespace) -> int:
    rows = []
    for s in list_transforms():
        row = [s.name, _fields(s.requires), _fields(s.writes), "yes" if s.stateful else "", s.paper]
        if args.params:
            row.insert(4, "; ".join(f"{p.name}={p.default!r}" for p in s.params.values()) or "-")
        rows.append(row)
    cols = ["name", "reads", "writes", "state", "paper"]
    if args.params:
        cols.insert(4, "parameters (defaults)")
    print_table("stepcredit transforms (--shape)", cols, rows)
    return 0


def _cmd_filters(args: argparse.Namespace) -> int:
    rows = []
    for s in list_filters():
        row = [s.name, _fields(("outcome", "group_id") + s.requires), "yes" if s.stateful else "", s.paper]
        if args.params:
            row.insert(3, "; ".join(f"{p.name}={p.default!r}" for p in s.params.values()) or "-")
        rows.append(row)
    cols = ["name", "needs", "state", "paper"]
    if args.params:
        cols.insert(3, "parameters (defaults)")
    print_table("stepcredit filters (--filter)", cols, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stepcredit`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RolloutsError as exc:
        print(f"stepcredit: error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"stepcredit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("stepcredit: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
