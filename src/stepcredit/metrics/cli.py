"""``stepcredit distance``: EPIC and STARC distances between two reward functions.

    stepcredit distance --env ENV [--env-kwargs K=V ...] [--seed N] --a SPEC --b SPEC [--gamma G]
                        [--coverage uniform|transitions] [--canonicalisation value|minimal] [--norm 2]
    stepcredit distance INPUT --a SPEC --b SPEC [--gamma G] [--samples M] [--seed N]
    ... [--json] [-o FILE.json] [-q]

With ``--env`` (``gym:FrozenLake-v1``, ``lock_chain``, ...) the MDP is enumerated and both
distances are exact. A SPEC is ``module:function``, a reward R(s, a, s') called on every
transition (gymnasium states and actions are integers, a built-in environment's are its state
key and action text), or the name of a reward the environment records: ``reward`` (its own
reward) or ``process`` (its oracle process score, where it has one).

With a rollouts file (JSONL or Parquet with ``state`` and ``action`` step fields) the
transitions are the steps: (state_t, action_t, state_{t+1}), the last step of an episode a
terminal transition. A SPEC is a numeric step field (``reward``, ``process``, ``value``, ...)
or ``module:function``, called with s' = None on a terminal transition. STARC (minimal
canonicalisation of the empirical MDP, Φ(end) = 0) works from logged values. EPIC's sample
estimator needs both SPECs to be functions, because it evaluates them on transitions that are
not in the data: R(y, a_j, x_j) for every state y of the batch and M (action, state) pairs
drawn independently from the file's actions and states (``--samples``, ``--seed``); the
batch is every transition, and None (the end of an episode) is a state like the others there,
so the function is also called with s = None: a shaped reward written R + γΦ(s') − Φ(s) with
Φ(None) = 0 is at EPIC distance 0.

Exit status (set by ``stepcredit.cli.main``): 1 for bad data (the message names the file,
record and field), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stepcredit._ui import print_table, progress
from stepcredit.data import MissingColumnError, RolloutsError, read_rollouts
from stepcredit.metrics.epic import epic_distance, epic_distance_sampled
from stepcredit.metrics.starc import starc_distance, starc_distance_transitions
from stepcredit.metrics.tabular import (
    MetricsError,
    TabularMDP,
    mdp_from_env,
    mdp_from_gym,
    rollout_transitions,
    tabulate_reward,
)

__all__ = ["add_distance_parser", "run_distance"]

GYM_ADAPTER_PARAMS = ("max_steps", "reward", "success_rule")
CMD = "stepcredit distance"


def add_distance_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``distance`` to the ``stepcredit`` command line (``func=run_distance``)."""
    p = subparsers.add_parser(
        "distance", help="EPIC and STARC distances between two reward functions",
        description="Compare two reward functions with EPIC (Gleave et al. 2021) and STARC (Skalse et "
        "al. 2024): 0 when they differ only by potential shaping and positive rescaling, 1 for "
        "opposite rewards. Exact on an enumerated environment (--env), estimated from the "
        "transitions of a rollouts file (INPUT).",
    )
    p.add_argument("input", nargs="?", metavar="INPUT", help="rollouts, .jsonl or .parquet (or give --env)")
    p.add_argument("--env", help="enumerate this environment instead: gym:ENV_ID (toy-text) or a built-in one (lock_chain)")
    p.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE", help="environment parameter, repeatable")
    p.add_argument("--a", required=True, metavar="SPEC",
                   help="reward A: module:function R(s, a, s'); a step field (INPUT); reward or process (--env)")
    p.add_argument("--b", required=True, metavar="SPEC", help="reward B, as --a")
    p.add_argument("--gamma", type=float, default=0.99, help="discount γ (default 0.99)")
    p.add_argument("--seed", type=int, default=0,
                   help="--env: the task seed of a built-in environment; INPUT: seed of EPIC's samples (default 0)")
    p.add_argument("--coverage", choices=("uniform", "transitions"), default="uniform",
                   help="--env, EPIC: correlate over all (s, a, s') uniformly (default, as the paper's code) "
                   "or over the transitions the dynamics produce (uniform (s, a) times T)")
    p.add_argument("--canonicalisation", choices=("value", "minimal"), default="value",
                   help="--env, STARC: value-adjusted levelling with the uniform policy (default) or minimal")
    p.add_argument("--norm", choices=("1", "2", "inf"), default="2", help="--env, STARC: L^p norm (default 2)")
    p.add_argument("--samples", type=int, default=512, metavar="M",
                   help="INPUT, EPIC: (action, state) samples of the canonicalisation (default 512)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("-o", "--output", metavar="FILE.json", help="also write the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing (with -o)")
    p.set_defaults(func=run_distance)
    return p


def run_distance(args: argparse.Namespace) -> int:
    """Run ``stepcredit distance``; returns the exit status (0). Errors are raised:
    RolloutsError (bad data, status 1) and UsageError subclasses (bad usage, status 2)."""
    if (args.input is None) == (args.env is None):
        raise MetricsError(f"{CMD}: give either a rollouts file (INPUT) or --env ENV, not {'both' if args.input else 'neither'}")
    if not 0.0 <= args.gamma <= 1.0:
        raise MetricsError(f"{CMD}: --gamma {args.gamma} must lie in [0, 1]")
    if args.canonicalisation == "minimal" and args.norm != "2":
        raise MetricsError(f"{CMD}: --canonicalisation minimal is defined for --norm 2 only")
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() != ".json":
        raise MetricsError(f"{CMD}: -o {out}: name the output *.json")
    show = not (args.quiet or args.json) and sys.stderr.isatty()
    result = _run_env(args, show) if args.env else _run_file(args, show)
    text = json.dumps(result, indent=2, allow_nan=False, default=str)
    if out is not None:
        from stepcredit.data.io import atomic_path

        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
    elif not args.quiet:
        _print(result)
    return 0


# --------------------------------------------------------------------------- specs
def _load(spec: str, flag: str) -> Callable[..., Any]:
    module_name, _, attr = (x.strip() for x in spec.partition(":"))
    if not module_name or not attr:
        raise MetricsError(f"{CMD}: {flag} {spec!r}: write a function as 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise MetricsError(f"{CMD}: {flag} {spec!r}: cannot import module '{module_name}' ({exc}); "
                           "install it or put its directory on PYTHONPATH") from None
    except Exception as exc:
        raise MetricsError(f"{CMD}: {flag} {spec!r}: importing '{module_name}' raised {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MetricsError(f"{CMD}: {flag} {spec!r}: module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MetricsError(f"{CMD}: {flag} {spec!r}: '{attr}' is a {type(obj).__name__}, not a function")
    return obj


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


UNDEFINED = ("undefined: a reward is constant after canonicalisation (it orders all policies "
             "alike), so the Pearson correlation has no direction")


# --------------------------------------------------------------------------- --env
def _env_kwargs(name: str, assignments: list[str]) -> dict[str, Any]:
    from stepcredit.envs import parse_env_kwarg

    kw: dict[str, Any] = {}
    for a in assignments:
        k, v = parse_env_kwarg(name, a)
        if name.startswith("gym:") and k in GYM_ADAPTER_PARAMS:
            raise MetricsError(f"{CMD}: --env-kwargs {a!r}: '{k}' belongs to the text adapter, not to "
                               "gymnasium; the tabular MDP does not use it")
        kw[k] = v
    return kw


def _build_mdp(args: argparse.Namespace, kw: dict[str, Any]) -> TabularMDP:
    if args.env.startswith("gym:"):
        return mdp_from_gym(args.env[4:], gamma=args.gamma, **kw)
    return mdp_from_env(args.env, seed=args.seed, gamma=args.gamma, **kw)


def _table(mdp: TabularMDP, spec: str, flag: str) -> np.ndarray:
    if ":" in spec:
        return tabulate_reward(mdp, _load(spec, flag), name=f"{flag} {spec}")
    if spec not in mdp.rewards:
        have = ", ".join(mdp.rewards)
        raise MetricsError(f"{CMD}: {flag} {spec!r}: {mdp.name} records the rewards {have}; "
                           "or give a function as module:function")
    return mdp.reward(spec)


def _run_env(args: argparse.Namespace, show: bool) -> dict[str, Any]:
    kw = _env_kwargs(args.env, args.env_kwargs)
    with progress(f"enumerating {args.env}", show):
        mdp = _build_mdp(args, kw)
    with progress("tabulating the rewards", show):
        Ra, Rb = _table(mdp, args.a, "--a"), _table(mdp, args.b, "--b")
    nS, nA, g = mdp.n_states, mdp.n_actions, mdp.gamma
    if args.coverage == "transitions":
        cover, cover_text = mdp.transitions / (nS * nA), "uniform (s, a) times T(s' | s, a)"
    else:
        cover, cover_text = None, f"uniform over all {nS}x{nA}x{nS} (s, a, s')"
    epic = epic_distance(Ra, Rb, gamma=g, coverage=cover)
    p = math.inf if args.norm == "inf" else float(args.norm)
    result: dict[str, Any] = {
        "env": args.env, "env_kwargs": kw, "seed": args.seed,
        "gamma": g, "a": args.a, "b": args.b, "states": nS, "actions": nA,
        "terminal_states": int(mdp.terminal.sum()),
        "epic": {"distance": _nan_to_none(epic), "method": "exact", "coverage": args.coverage,
                 "note": (UNDEFINED if math.isnan(epic) else f"D_S, D_A uniform; coverage {cover_text}")},
    }
    if g >= 1.0 and args.canonicalisation == "value":
        result["starc"] = {"distance": None, "method": "exact", "canonicalisation": "value", "norm": args.norm,
                           "note": "undefined at gamma=1 for value-adjusted levelling; use --canonicalisation minimal"}
        return result
    starc = starc_distance(Ra, Rb, mdp.transitions, gamma=g, canonicalisation=args.canonicalisation, p=p)
    canon = "value-adjusted levelling, uniform policy" if args.canonicalisation == "value" else "minimal"
    result["starc"] = {"distance": starc, "method": "exact", "canonicalisation": args.canonicalisation,
                       "norm": args.norm, "note": f"{canon}; L{args.norm} norm weighted by uniform (s, a) times T"}
    return result


# --------------------------------------------------------------------------- rollouts file
def _values(ro, tr, spec: str, flag: str, path: Path, show: bool) -> tuple[np.ndarray, Callable | None]:
    """The [N] reward values of a SPEC on the file's transitions, and the function if it is one."""
    if ":" in spec:
        fn = _load(spec, flag)
        s, a, s2 = _labels(tr)
        out = np.empty(len(s))
        with progress(f"evaluating {flag} {spec}", show):
            for i in range(len(s)):  # user code is scalar
                try:
                    out[i] = _finite(fn(s[i], a[i], s2[i]))
                except Exception as exc:  # the user's function: report where it failed
                    e = int(ro.step_episode[i])
                    raise RolloutsError(
                        str(path), f"episode '{ro.episode_id[e].as_py()}', step {int(ro.step_index[i])}", flag,
                        f"the reward function {spec} failed: {type(exc).__name__}: {exc}",
                        "fix the function, or the step it fails on",
                    ) from exc
        return out, fn
    if spec.startswith("rewards."):
        raise MetricsError(f"{CMD}: {flag} {spec!r} is an episode reward component; name a step field "
                           "(reward, process, value, ...) or a function module:function")
    if spec in ro.keys:
        raise MetricsError(f"{CMD}: {flag} {spec!r} is a key field (text or ids), not a numeric step field")
    try:
        return np.asarray(ro.column(spec, by=f"{CMD} {flag}"), dtype=np.float64), None
    except MissingColumnError as exc:
        raise RolloutsError(str(path), "", f"steps[].{spec}", f"{flag} names this step field and the input does not have it",
                            f"add '{spec}' to every step, or name another field ({', '.join(ro.step_fields) or 'none present'})"
                            ) from exc


def _labels(tr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[N] state, action and next-state labels (object arrays; None for a terminal next state)."""
    s2 = np.empty(len(tr.state), dtype=object)
    nt = ~tr.terminal
    s2[nt] = tr.state_labels[tr.next_state[nt]]
    return tr.state_labels[tr.state], tr.action_labels[tr.action], s2


def _finite(v: Any) -> float:
    if isinstance(v, (str, bytes)):
        raise TypeError(f"returned {v!r}, not a number")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"returned {x!r}, not a finite number")
    return x


def _vectorised(fn: Callable, spec: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def f(s, a, s2):
        out = np.empty(len(s))
        for i in range(len(s)):
            try:
                out[i] = _finite(fn(s[i], a[i], s2[i]))
            except Exception as exc:
                raise MetricsError(f"{CMD}: the reward function {spec} failed at (s, a, s') = "
                                   f"({s[i]!r}, {a[i]!r}, {s2[i]!r}): {type(exc).__name__}: {exc}") from exc
        return out
    return f


def _run_file(args: argparse.Namespace, show: bool) -> dict[str, Any]:
    path = Path(args.input)
    if args.samples < 1:
        raise MetricsError(f"{CMD}: --samples {args.samples} must be >= 1")
    with progress(f"reading {path.name}", show):
        ro = read_rollouts(path)
    try:
        tr = rollout_transitions(ro, by=CMD)
    except MissingColumnError as exc:
        raise RolloutsError(str(path), "", f"steps[].{exc.column}", f"{CMD} needs '{exc.column}' in every step "
                            "(the transitions are (state, action, next state))", f"add '{exc.column}' to every step") from exc
    va, fa = _values(ro, tr, args.a, "--a", path, show)
    vb, fb = _values(ro, tr, args.b, "--b", path, show)
    N = len(va)
    pairs = np.unique(tr.state * len(tr.action_labels) + tr.action).size
    result: dict[str, Any] = {
        "input": str(path), "gamma": args.gamma, "a": args.a, "b": args.b,
        "transitions": N, "terminal_transitions": int(tr.terminal.sum()),
        "states": len(tr.state_labels), "actions": len(tr.action_labels), "state_action_pairs": int(pairs),
    }
    if fa is None or fb is None:
        result["epic"] = {"distance": None, "method": "sampled",
                          "note": "needs both rewards as functions (module:function): EPIC evaluates them on "
                          "(state, action, next state) combinations that are not in the data"}
    else:
        rng = np.random.default_rng(args.seed)
        xs = tr.state_labels[tr.state[rng.integers(0, N, args.samples)]]
        acts = tr.action_labels[tr.action[rng.integers(0, N, args.samples)]]
        with progress("EPIC sample estimate", show):
            epic = epic_distance_sampled(
                _vectorised(fa, args.a), _vectorised(fb, args.b), *_labels(tr), acts, xs, gamma=args.gamma,
            )
        result["epic"] = {"distance": _nan_to_none(epic), "method": "sampled", "samples": args.samples, "seed": args.seed,
                          "note": UNDEFINED if math.isnan(epic) else
                          "all transitions (terminal: s' = None, also a state); D_S, D_A the file's state and "
                          f"action frequencies, {args.samples} pairs"}
    with progress("STARC (minimal canonicalisation)", show):
        starc = starc_distance_transitions(tr.state, tr.action, tr.next_state, va, vb, gamma=args.gamma)
    result["starc"] = {"distance": starc, "method": "empirical", "canonicalisation": "minimal", "norm": "2",
                       "note": "minimal canonicalisation of the empirical MDP; terminal transitions end with Φ = 0"}
    return result


# --------------------------------------------------------------------------- output
def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.4f}"


def _print(result: dict[str, Any]) -> None:
    where = result.get("env") or result.get("input")
    if "env" in result:
        size = f"{result['states']} states, {result['actions']} actions"
    else:
        size = (f"{result['transitions']:,} transitions ({result['terminal_transitions']:,} terminal), "
                f"{result['states']:,} states, {result['state_action_pairs']:,} state-action pairs")
    title = f"{CMD}: {result['a']} vs {result['b']} on {where} (γ = {result['gamma']}; {size})"
    rows = [(name, _fmt(result[key]["distance"]), result[key]["method"], result[key]["note"])
            for name, key in (("EPIC", "epic"), ("STARC", "starc"))]
    print_table(title, ("metric", "distance", "method", "details"), rows)
