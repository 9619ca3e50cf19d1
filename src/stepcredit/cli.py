"""The ``stepcredit`` command line.

    stepcredit advantages INPUT -e ESTIMATOR [-p key=value ...] [-o OUTPUT]
    stepcredit estimators [--family F] [--params]

Exit status: 0 on success; 1 for a bad or unreadable input file (the one-line message names
the file, record and field); 2 for bad usage (unknown estimator, bad parameter, unknown output
extension). Nothing is written unless the whole computation succeeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stepcredit import __version__
from stepcredit._ui import print_table, progress
from stepcredit.data import (
    MissingColumnError,
    Rollouts,
    RolloutsError,
    read_rollouts,
    write_credit,
)
from stepcredit.data.io import FORMATS
from stepcredit.estimators import (
    EstimatorError,
    estimate,
    get_estimator,
    list_estimators,
    parse_param,
)

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
        description="Compute per-step advantages with a registered estimator and write one "
        "row per step (episode_id, group_id, step, advantage, episode_advantage).",
    )
    adv.add_argument("input", metavar="INPUT", help="rollouts, .jsonl or .parquet")
    adv.add_argument("-e", "--estimator", required=True, help="estimator name (see `stepcredit estimators`)")
    adv.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="estimator parameter, repeatable (e.g. -p scale=batch -p epsilon=1e-4)",
    )
    adv.add_argument("-o", "--output", help="advantages file to write, .jsonl or .parquet (atomic)")
    adv.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help=f"progress bars on stderr (auto: inputs of {PROGRESS_MIN_STEPS:,}+ steps on a terminal)",
    )
    adv.add_argument("-q", "--quiet", action="store_true", help="print no summary table")
    adv.set_defaults(func=_cmd_advantages)

    est = sub.add_parser(
        "estimators", help="list the registered estimators",
        description="List the registered estimators: name, family, needed step fields, paper.",
    )
    est.add_argument("--family", help="only this family (outcome, value, ...)")
    est.add_argument("--params", action="store_true", help="also list every parameter with its default")
    est.set_defaults(func=_cmd_estimators)
    return parser


def _show_progress(mode: str, n: int) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return n >= PROGRESS_MIN_STEPS and sys.stderr.isatty()


def _cmd_advantages(args: argparse.Namespace) -> int:
    spec = get_estimator(args.estimator)
    params = dict(parse_param(spec.name, a) for a in args.param)
    spec.bind(params)  # validate before reading anything
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() not in FORMATS:
        raise EstimatorError(f"output {out}: unknown extension '{out.suffix}'; name it *.jsonl or *.parquet")
    t0 = time.perf_counter()
    in_path = Path(args.input)
    big_file = in_path.is_file() and in_path.stat().st_size >= 64 << 20
    with progress(f"reading {in_path.name}", _show_progress(args.progress, PROGRESS_MIN_STEPS if big_file else 0)):
        ro = read_rollouts(in_path)
    show = _show_progress(args.progress, ro.n_steps)
    try:
        with progress(f"{spec.name} advantages", show):
            credit = estimate(ro, spec.name, **params)
    except MissingColumnError as exc:
        raise RolloutsError(
            str(in_path), "", f"steps[].{exc.column}", f"{exc.by} needs this step field and no step has it",
            f"add '{exc.column}' to every step, or choose an estimator that does not need it",
        ) from None
    except RolloutsError as exc:  # an estimator's structural check (e.g. tree node ids): name the file
        if exc.source != "<rollouts>":
            raise
        raise RolloutsError(str(in_path), exc.record, exc.field, exc.problem, exc.fix) from None
    t_est = time.perf_counter()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with progress(f"writing {out.name}", show, total=ro.n_steps) as bar:
            write_credit(credit, ro, out, progress=bar.update)
    if not args.quiet:
        _print_summary(args, ro, credit, out, time.perf_counter() - t0, t_est - t0)
    return 0


def _print_summary(args, ro: Rollouts, credit, out: Path | None, elapsed: float, t_est: float) -> None:
    params = ", ".join(f"{k}={v!r}" for k, v in credit.params.items())
    s = credit.summary()
    rows = [
        ("input", f"{args.input}"),
        ("groups / episodes / steps", f"{ro.n_groups:,} / {ro.n_episodes:,} / {ro.n_steps:,}"),
        ("step fields", ", ".join(ro.step_fields) or "none"),
        ("estimator", f"{credit.estimator}({params})"),
        ("step advantage mean / std", f"{s['mean']:.4g} / {s['std']:.4g}"),
        ("step advantage min / max", f"{s['min']:.4g} / {s['max']:.4g}"),
        ("steps with advantage 0", f"{s['zero_fraction']:.1%}"),
    ]
    rows += [
        (k.replace("_", " "), f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in credit.diagnostics.items()
    ]
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
    except EstimatorError as exc:
        print(f"stepcredit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("stepcredit: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
