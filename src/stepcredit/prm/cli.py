"""``stepcredit prm``: label steps, train, score with and evaluate process reward models.

    stepcredit prm label --env arith_chain --tasks 200 -o labels.parquet          # Monte-Carlo labels
    stepcredit prm label --env arith_chain --tasks 200 --truth -o truth.parquet   # ground-truth labels
    stepcredit prm train labels.parquet -o prm/                                   # feature PRM
    stepcredit prm train labels.parquet -o lm/ --model torch --epochs 3            # LM step PRM (tiny Qwen2)
    stepcredit prm train rollouts.parquet -o imp/ --model implicit                 # implicit PRM, outcomes only
    stepcredit prm score prm/ rollouts.jsonl -o scored.jsonl                      # process = PRM score
    stepcredit prm eval prm/ truth.parquet                                        # first-error F1, ...
    stepcredit prm search prm/ --env arith_chain --tasks 100 -n 8                 # best-of-N, beam search

Inputs and outputs are rollout files (``.jsonl`` or ``.parquet``); models are directories
(``config.json`` + ``model.safetensors``). Usage errors exit 2, data and model errors exit 1,
and every output is written to a temporary file and renamed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stepcredit._params import UsageError
from stepcredit._ui import print_table, progress
from stepcredit.data import Rollouts
from stepcredit.data.io import atomic_path, read_rollouts, write_rollouts

__all__ = ["add_parsers"]

_CHUNK = 32  # tasks per collection call (the progress bar's unit)
FEATURE_OBJECTIVES = ("logistic", "ridge")
TORCH_OBJECTIVES = ("classification", "regression", "bt")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``prm`` (with its subcommands) to the ``stepcredit`` command line."""
    p = sub.add_parser("prm", help="process reward models: label, train, score, eval, search",
                       description="Label steps, train process reward models, score rollouts with them, "
                       "evaluate them (first-error F1, best-of-N) and search with them.")
    ps = p.add_subparsers(dest="prm_command", required=True, metavar="SUBCOMMAND")

    lab = ps.add_parser("label", help="play tasks and label every step (Monte-Carlo or ground truth)",
                        description="Sample episodes on an environment with the uniform policy and label each step "
                        "with the fraction of N completions from it that succeed (Math-Shepherd's soft estimation; "
                        "the hard label and N go to meta.info), or with --truth the environment's ground-truth step "
                        "correctness (info['step_correct'], e.g. arith_chain).")
    lab.add_argument("--env", required=True, help="environment name (stepcredit.envs)")
    lab.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE", help="environment parameter, repeatable")
    lab.add_argument("--tasks", type=int, default=100, help="task instances (groups) to play (default 100)")
    lab.add_argument("--first-task", type=int, default=0, help="task seeds are FIRST..FIRST+TASKS-1 (default 0)")
    lab.add_argument("--episodes-per-task", type=int, default=4, help="episodes sampled per task (default 4)")
    lab.add_argument("--continuations", type=int, default=8, help="completions per step, N (default 8)")
    lab.add_argument("--hard", action="store_true",
                     help="label 1 where any continuation succeeded (Math-Shepherd's hard estimation) instead of the fraction")
    lab.add_argument("--truth", action="store_true", help="label with the environment's step_correct instead")
    lab.add_argument("--seed", type=int, default=0, help="seed of the policy's draws (default 0)")
    lab.add_argument("-o", "--output", required=True, help="output rollouts (.jsonl or .parquet)")
    lab.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    lab.set_defaults(func=_guarded(_cmd_label))

    tr = ps.add_parser("train", help="train a PRM (feature, torch LM or implicit) on labelled rollouts",
                       description="Train a process reward model and save it as a directory. --model feature (default): "
                       "logistic or ridge regression on hashed state/action features, fitted to a step field. --model torch: "
                       "a causal LM (the tiny random Qwen2, or --base-model PATH) with a scalar head on each step's last "
                       "token, trained on a step field (classification, regression on soft labels, or Bradley-Terry pairs). "
                       "--model implicit: the implicit PRM of 'Free Process Rewards without Process Labels', trained on "
                       "the episodes' outcomes only (success = outcome >= --outcome-threshold).")
    tr.add_argument("input", help="labelled rollouts (.jsonl or .parquet)")
    tr.add_argument("-o", "--output", required=True, help="model directory to write")
    tr.add_argument("--model", choices=("feature", "torch", "implicit"), default="feature",
                    help="the kind of model (default feature; torch and implicit need the lm extra)")
    tr.add_argument("--label", default="label", help="the step field to fit (default label; not read by --model implicit)")
    tr.add_argument("--objective", choices=FEATURE_OBJECTIVES + TORCH_OBJECTIVES, default=None,
                    help="feature: logistic (default) or ridge; torch: classification (default), regression or bt")
    tr.add_argument("--feature-size", type=int, default=1024, help="feature: hashed buckets of the state and action families (default 1024)")
    tr.add_argument("--pair-size", type=int, default=65536, help="feature: hashed buckets of the pair and local families (default 65536)")
    tr.add_argument("--families", default="state,action,pair,local",
                    help="feature: feature families, comma-separated (default state,action,pair,local)")
    tr.add_argument("--l2", type=float, default=0.1, help="feature: L2 penalty (default 0.1)")
    tr.add_argument("--epochs", type=int, default=3, help="torch/implicit: passes over the data (default 3)")
    tr.add_argument("--batch-size", type=int, default=32,
                    help="torch/implicit: steps (pairs for bt; episodes for implicit) per Adam step (default 32)")
    tr.add_argument("--lr", type=float, default=1e-3, help="torch/implicit: Adam step size (default 1e-3)")
    tr.add_argument("--hidden-size", type=int, default=64, help="torch/implicit: width of the tiny Qwen2 (default 64)")
    tr.add_argument("--layers", type=int, default=2, help="torch/implicit: layers of the tiny Qwen2 (default 2)")
    tr.add_argument("--base-model", metavar="PATH", default=None,
                    help="torch/implicit: a local transformers causal-LM directory instead of the tiny random model")
    tr.add_argument("--beta", type=float, default=0.05, help="implicit: beta of the log-likelihood ratio (default 0.05)")
    tr.add_argument("--outcome-threshold", type=float, default=1.0,
                    help="implicit: an episode with outcome >= this is a success (default 1.0)")
    tr.add_argument("--score", choices=("accumulative", "single"), default="accumulative",
                    help="implicit: step score sigma(q_t), the running sum of step rewards (default), or sigma(r_t)")
    tr.add_argument("--seed", type=int, default=0, help="torch/implicit: seed of the initial weights and the shuffling (default 0)")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_guarded(_cmd_train))

    sc = ps.add_parser("score", help="write a PRM's step scores into the process field",
                       description="Score every step of a rollout file with a PRM and write the rollouts with the "
                       "scores in the `process` step field (what the PRM transforms, PROF and ReNorm read).")
    sc.add_argument("model", help="model directory")
    sc.add_argument("input", help="rollouts (.jsonl or .parquet)")
    sc.add_argument("-o", "--output", required=True, help="output rollouts (.jsonl or .parquet)")
    sc.set_defaults(func=_guarded(_cmd_score))

    ev = ps.add_parser("eval", help="evaluate a PRM: first-error F1 (ProcessBench), step accuracy, best-of-N",
                       description="Evaluate a PRM on rollouts with ground-truth step correctness: predict each "
                       "episode's first erroneous step (the first step scored below --threshold) and report "
                       "ProcessBench's accuracies on erroneous and correct episodes and their harmonic mean (F1); "
                       "step accuracy; and best-of-N over each group's episodes against random choice.")
    ev.add_argument("model", help="model directory")
    ev.add_argument("input", help="rollouts with ground truth (.jsonl or .parquet)")
    ev.add_argument("--truth", default="label", metavar="FIELD",
                    help="step correctness: a step field (>= 0.5 = correct; default label) or meta.info.KEY")
    ev.add_argument("--threshold", type=float, default=0.5, help="a step scored below this is an error (default 0.5)")
    ev.add_argument("--aggregate", default="min", choices=("min", "prod", "last", "mean"), help="episode score for best-of-N")
    ev.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ev.set_defaults(func=_guarded(_cmd_eval))

    se = ps.add_parser("search", help="best-of-N and beam search guided by a PRM vs unguided sampling",
                       description="On fresh tasks of an environment, compare unguided sampling (one episode), "
                       "PRM-guided best-of-N, pass@N and PRM-guided step-level beam search, with their compute.")
    se.add_argument("model", help="model directory")
    se.add_argument("--env", required=True)
    se.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE")
    se.add_argument("--tasks", type=int, default=100)
    se.add_argument("--first-task", type=int, default=0)
    se.add_argument("-n", type=int, default=8, help="N of best-of-N (default 8)")
    se.add_argument("--beam", type=int, default=4, help="beam width B (default 4; 0 = no beam search)")
    se.add_argument("--candidates", type=int, default=4, help="proposals per beam and step K (default 4)")
    se.add_argument("--aggregate", default="min", choices=("min", "prod", "last", "mean"))
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    se.set_defaults(func=_guarded(_cmd_search))


# ---------------------------------------------------------------------- helpers
def _guarded(cmd: Any) -> Any:
    """Run ``cmd``; a missing field or a PRM error (bad labels, a bad model file) exits 1 with its message."""

    def run(args: argparse.Namespace) -> int:
        from stepcredit.data.rollouts import MissingColumnError
        from stepcredit.prm.feature_model import PRMError

        try:
            return cmd(args)
        except (MissingColumnError, PRMError) as exc:
            where = getattr(args, "input", None)
            return _prm_error(f"{where}: {exc}" if where and where not in str(exc) else exc)

    return run


def _env_kwargs(env: str, items: list[str]) -> dict[str, Any]:
    from stepcredit.envs import get_env, parse_env_kwarg

    get_env(env)  # unknown names: a usage error listing the environments
    return dict(parse_env_kwarg(env, item) for item in items)


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise UsageError(f"{name}={value} must be >= {minimum}")


def _prm_error(exc: Exception) -> int:
    print(f"stepcredit: error: {exc}", file=sys.stderr)
    return 1


def _load(path: str) -> Any:
    from stepcredit.prm.models import load_model

    return load_model(path)


def _meta_info(ro: Rollouts) -> list[dict[str, Any]]:
    metas = [None] * ro.n_episodes if ro.meta is None else ro.meta.to_pylist()
    return [dict((json.loads(m) if m else {}).get("info") or {}) for m in metas]


def _truth(ro: Rollouts, spec: str, source: str) -> np.ndarray:
    """[S] bool step correctness from a step field (>= 0.5) or meta.info.KEY."""
    if spec.startswith("meta.info."):
        key = spec[len("meta.info."):]
        out = np.zeros(ro.n_steps, dtype=bool)
        off = ro.episode_offsets
        for e, info in enumerate(_meta_info(ro)):
            vals = info.get(key)
            if not isinstance(vals, list) or len(vals) != off[e + 1] - off[e] or any(v is None for v in vals):
                raise UsageError(f"{source}: episode {e}: meta.info.{key} is not a list with one value per step")
            out[off[e]:off[e + 1]] = np.asarray(vals, dtype=float) >= 0.5
        return out
    ro.require((spec,), by="stepcredit prm eval (--truth)")
    return ro.column(spec) >= 0.5


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------- commands
def _cmd_label(args: argparse.Namespace) -> int:
    from stepcredit.envs import make_env
    from stepcredit.policies import TabularPolicy
    from stepcredit.prm.feature_model import PRMError
    from stepcredit.prm.mc_labels import mc_label_rollouts
    from stepcredit.train.rollout import collect

    kw = _env_kwargs(args.env, args.env_kwargs)
    if args.truth and args.hard:
        raise UsageError("give --truth or --hard, not both")
    _positive("--tasks", args.tasks)
    _positive("--episodes-per-task", args.episodes_per_task)
    _positive("--continuations", args.continuations)
    seeds = list(range(args.first_task, args.first_task + args.tasks))
    policy = TabularPolicy()  # the uniform completer
    rng = np.random.default_rng(args.seed)
    parts: list[Rollouts] = []
    try:
        with progress(f"labelling {args.env}", enabled=not args.quiet and sys.stderr.isatty(), total=len(seeds)) as bar:
            for i in range(0, len(seeds), _CHUNK):
                chunk = seeds[i:i + _CHUNK]
                if args.truth:
                    envs = [make_env(args.env, **kw) for _ in range(len(chunk) * args.episodes_per_task)]
                    ro = collect(envs, policy, chunk, args.episodes_per_task, rng, iteration=i // _CHUNK).rollouts
                    parts.append(_truth_labels(ro, args.env))
                else:
                    part = mc_label_rollouts(args.env, policy, chunk, continuations=args.continuations,
                                             episodes_per_task=args.episodes_per_task, env_kwargs=kw,
                                             seed=int(rng.integers(2**31)), iteration=i // _CHUNK)
                    if args.hard:
                        part = part.replace_columns(label=(part.column("label") > 0).astype(np.float64))
                    parts.append(part)
                bar.update(min(i + _CHUNK, len(seeds)), len(seeds))
    except PRMError as exc:
        return _prm_error(exc)
    ro = Rollouts.concat(parts)
    write_rollouts(ro, args.output)
    kind = "hard (HE)" if args.hard else "soft (SE)"
    label = ro.column("label")
    print(f"wrote {args.output}: {ro.n_episodes} episodes, {ro.n_steps} steps, mean label {label.mean():.3f}"
          f" ({'ground truth' if args.truth else f'Monte-Carlo {kind}, {args.continuations} completions per step'})")
    return 0


def _truth_labels(ro: Rollouts, env: str) -> Rollouts:
    infos = _meta_info(ro)
    off = ro.episode_offsets
    label = np.zeros(ro.n_steps)
    for e, info in enumerate(infos):
        vals = info.get("step_correct")
        if not isinstance(vals, list) or len(vals) != off[e + 1] - off[e] or any(v is None for v in vals):
            raise UsageError(f"environment '{env}' gives no info['step_correct'] on every step: --truth needs it (e.g. arith_chain)")
        label[off[e]:off[e + 1]] = np.asarray(vals, dtype=float)
    return ro.replace_columns(label=label)


def _cmd_train(args: argparse.Namespace) -> int:
    if args.model == "feature":
        return _train_feature(args)
    return _train_torch(args)


def _train_feature(args: argparse.Namespace) -> int:
    from stepcredit.prm.feature_model import FeaturePRM, PRMError
    from stepcredit.prm.models import save_model

    objective = args.objective or "logistic"
    if objective not in FEATURE_OBJECTIVES:
        raise UsageError(f"--objective {objective} is for --model torch; --model feature takes {' or '.join(FEATURE_OBJECTIVES)}")
    try:
        model = FeaturePRM(feature_size=args.feature_size, pair_size=args.pair_size, families=tuple(f for f in args.families.split(",") if f),
                           objective=objective, l2=args.l2)
    except PRMError as exc:
        raise UsageError(str(exc)) from None
    ro = read_rollouts(args.input)
    ro.require(("state", "action", args.label), by="stepcredit prm train")
    try:
        model.fit(ro, labels=ro.column(args.label))
    except PRMError as exc:
        return _prm_error(f"{args.input}: {exc}")
    save_model(model, args.output)
    s = model.score_steps(ro)
    y = ro.column(args.label)
    print(f"wrote {args.output}: feature PRM ({objective}, D={model.dim}) on {ro.n_steps} steps of {args.input}; "
          f"training loss {model.history[-1]:.4g}, mean |score - label| {np.abs(s - y).mean():.3f}")
    return 0


def _train_torch(args: argparse.Namespace) -> int:
    """``--model torch`` (LMStepPRM) and ``--model implicit`` (ImplicitPRM)."""
    from stepcredit.prm.feature_model import PRMError
    from stepcredit.prm.models import save_model

    implicit = args.model == "implicit"
    if args.objective is not None and (implicit or args.objective not in TORCH_OBJECTIVES):
        takes = "no --objective (it trains on outcomes with the implicit-PRM cross-entropy)" if implicit \
            else f"--objective {' or '.join(TORCH_OBJECTIVES)}"
        raise UsageError(f"--objective {args.objective} does not apply: --model {args.model} takes {takes}")
    _positive("--epochs", args.epochs)
    _positive("--batch-size", args.batch_size)
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr={args.lr} must be a finite number > 0")
    try:
        from stepcredit.prm.torch_models import ImplicitPRM, LMStepPRM
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    common = {"base_model": args.base_model, "hidden_size": args.hidden_size, "n_layers": args.layers, "seed": args.seed}
    try:
        if implicit:
            model: Any = ImplicitPRM(beta=args.beta, score=args.score, outcome_threshold=args.outcome_threshold, **common)
        else:
            model = LMStepPRM(args.objective or "classification", **common)
    except PRMError as exc:
        raise UsageError(str(exc)) from None
    ro = read_rollouts(args.input)
    ro.require(("state", "action") if implicit else ("state", "action", args.label), by="stepcredit prm train")
    labels = None if implicit else ro.column(args.label)
    what = "episodes" if implicit else "steps"
    with progress(f"training {args.model} PRM ({what})", enabled=not args.quiet and sys.stderr.isatty()) as bar:
        try:
            model.fit(ro, labels=labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      progress=bar.update)
        except PRMError as exc:
            return _prm_error(f"{args.input}: {exc}")
    save_model(model, args.output)
    loss = model.history[-1]
    if implicit:
        r = model.episode_rewards(ro)
        win = ro.outcome >= args.outcome_threshold
        mean = {k: (float(r[m].mean()) if m.any() else float("nan")) for k, m in (("success", win), ("failure", ~win))}
        print(f"wrote {args.output}: implicit PRM (beta {args.beta}, {args.epochs} epochs) on {ro.n_episodes} episodes "
              f"({int(win.sum())} successes) of {args.input}; training loss {loss:.4g}, mean episode reward "
              f"{mean['success']:.3f} (successes) vs {mean['failure']:.3f} (failures)")
    else:
        s = model.score_steps(ro)
        y = ro.column(args.label)
        print(f"wrote {args.output}: torch PRM ({model.objective}, {args.epochs} epochs) on {ro.n_steps} steps of {args.input}; "
              f"training loss {loss:.4g}, mean |score - label| {np.abs(s - y).mean():.3f}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from stepcredit.prm.feature_model import PRMError

    try:
        model = _load(args.model)
    except PRMError as exc:
        return _prm_error(exc)
    ro = read_rollouts(args.input)
    s = np.asarray(model.score_steps(ro), dtype=np.float64)
    write_rollouts(ro.replace_columns(process=s), args.output)
    print(f"wrote {args.output}: {ro.n_steps} steps scored (process: mean {s.mean():.3f}, min {s.min():.3f}, max {s.max():.3f})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from stepcredit.prm.evaluation import best_of_n, predict_first_error, processbench_f1
    from stepcredit.prm.feature_model import PRMError
    from stepcredit.prm.labels import first_error
    from stepcredit.prm.search import aggregate_scores

    try:
        model = _load(args.model)
    except PRMError as exc:
        return _prm_error(exc)
    ro = read_rollouts(args.input)
    correct = _truth(ro, args.truth, args.input)
    s = np.asarray(model.score_steps(ro), dtype=np.float64)
    true_fe = first_error(correct, ro.episode_offsets)
    pred_fe = predict_first_error(s, ro.episode_offsets, args.threshold)
    pb = processbench_f1(pred_fe, true_fe)
    path = aggregate_scores(s, ro.episode_offsets, args.aggregate)
    bon = best_of_n(path, ro.episode_group, ro.outcome >= 1.0)
    res = {
        "model": args.model, "input": args.input, "threshold": args.threshold, "episodes": ro.n_episodes,
        "steps": ro.n_steps, "erroneous_episodes": int((true_fe >= 0).sum()),
        **{k: float(v) for k, v in pb.items() if isinstance(v, (int, float))},
        "step_accuracy": float(np.mean((s >= args.threshold) == correct)),
        "best_of_n": bon["best_of_n"], "random_choice": bon["random"], "pass_at_n": bon["oracle"],
    }
    rows = [[k, v] for k, v in res.items() if k not in ("model", "input")]
    print_table(f"stepcredit prm eval {args.model} on {args.input}", ["metric", "value"], rows)
    _write_json(args.json, res)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from stepcredit.policies import TabularPolicy
    from stepcredit.prm.feature_model import PRMError
    from stepcredit.prm.search import beam_search, best_of_n_search

    kw = _env_kwargs(args.env, args.env_kwargs)
    _positive("--tasks", args.tasks)
    _positive("-n", args.n)
    _positive("--beam", args.beam, 0)
    _positive("--candidates", args.candidates)
    try:
        model = _load(args.model)
        seeds = list(range(args.first_task, args.first_task + args.tasks))
        bon = best_of_n_search(args.env, TabularPolicy(), model, seeds, args.n, aggregate=args.aggregate, env_kwargs=kw, seed=args.seed)
        beam = None
        if args.beam:
            beam = beam_search(args.env, TabularPolicy(), model, seeds, beam_width=args.beam, candidates=args.candidates,
                               aggregate=args.aggregate, env_kwargs=kw, seed=args.seed)
    except PRMError as exc:
        return _prm_error(exc)
    n, s = args.tasks, bon.summary()
    rows = [
        ["unguided (1 episode)", s["unguided_success"], s["generated_steps_per_task"] / args.n],
        [f"best-of-{args.n}, PRM ({args.aggregate})", s["success"], s["generated_steps_per_task"]],
        [f"pass@{args.n} (perfect verifier)", s["pass_at_n"], s["generated_steps_per_task"]],
    ]
    if beam is not None:
        rows.append([f"beam search B={args.beam} K={args.candidates}", float(beam.success.mean()), beam.generated_steps / n])
    print_table(f"PRM-guided search on {args.env} ({n} tasks, uniform policy)", ["method", "success", "generated steps per task"], rows)
    _write_json(args.json, {"env": args.env, "tasks": n, "rows": [
        {"method": r[0], "success": r[1], "generated_steps_per_task": r[2]} for r in rows]})
    return 0

