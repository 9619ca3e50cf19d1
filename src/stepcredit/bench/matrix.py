"""The benchmark matrix: (environment, method, seed) training runs, resumable, and their table.

    cfg = BenchConfig(envs=("lock_chain",), methods=("grpo", "gigpo"), seeds=5, budget=1500)
    result = run_bench(cfg, "runs/demo", progress=...)     # skips finished runs, resumes the rest
    print(result.table_markdown())

Layout of the output directory::

    OUT/bench.json                              the BenchConfig (a rerun must use the same one)
    OUT/runs/ENV/METHOD/seedN/                  one training run (stepcredit.train: config.json,
                                                metrics.jsonl, checkpoint.npz, done.json when finished)
    OUT/results.json, results.md, results.csv   the table (per cell: episodes to the target
                                                success rate, final success, AUC, each a mean with
                                                a bootstrap 95% CI over seeds, and the ratio to GRPO)
    OUT/curves_ENV.png                          learning curves (when matplotlib is installed)
    OUT/report.html                             self-contained report: table, curves, per-step credit

A *method* is an estimator name (``grpo``), a built-in pipeline name (``prm_grpo``, see
:data:`PIPELINES`) or a pipeline file (``path/to/pipe.toml``, named by its stem). A method whose
estimator reads an online PRM's step rewards (:data:`ONLINE_PRM`: ``oprl``) runs with that PRM
trained alongside the policy (``TrainConfig.online_prm``), which writes the ``process`` field
itself, so it runs on every environment. Before any
run starts, :meth:`BenchConfig.check` checks every name, the trainer configuration and,
for a method that needs a step field the trainer's rollouts do not always have (``process``
for the PRM pipelines), that each environment gives it (one probe episode per environment). A
run is finished when its ``done.json`` exists; an interrupted run resumes from its last
checkpoint (the trainer guarantees the same final metrics as an uninterrupted run).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stepcredit._params import UsageError
from stepcredit.bench.stats import Summary, auc, episodes_to_target, final_success, summarize
from stepcredit.data import MissingColumnError, Rollouts
from stepcredit.data.io import atomic_path
from stepcredit.estimators import EstimatorError, list_estimators
from stepcredit.pipeline import Pipeline
from stepcredit.train.trainer import TrainConfig

__all__ = [
    "ONLINE_PRM", "PIPELINES", "BenchConfig", "BenchError", "BenchResult", "RunSpec", "check_env_fields", "collect_results",
    "method_name", "method_pipeline", "plan_runs", "run_bench", "run_one", "train_config",
]

#: Built-in pipelines, usable as bench methods by name: name -> (one line of what it is, the
#: pipeline in ``Pipeline.to_dict`` layout). Both fold a process reward model's scores (the
#: step field ``process``; the environments' oracle scores until real PRMs are trained) into
#: the rewards with ``prm_clip`` (r̃_t = min(p_t − η, 0), η = 0.5: only steps the PRM scores
#: below η are penalised, so padding an episode with steps the PRM likes never pays).
PIPELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "prm_grpo": (
        "prm_clip (target=outcome: R' = R + Σ_t min(p_t − 0.5, 0)) then grpo: a PRM folded into an outcome estimator",
        {"estimator": {"name": "grpo"}, "transforms": [{"name": "prm_clip", "eta": 0.5, "target": "outcome"}]},
    ),
    "prm_gigpo": (
        "prm_clip (target=reward: r'_t = r_t + min(p_t − 0.5, 0)) then gigpo: PRM step rewards in anchor-state credit",
        {"estimator": {"name": "gigpo"}, "transforms": [{"name": "prm_clip", "eta": 0.5, "target": "reward"}]},
    ),
}

#: Estimators that read the step rewards of an online PRM trained alongside the policy: a method
#: whose pipeline's estimator is a key here runs with ``TrainConfig.online_prm`` set to the value
#: (``oprl``: OPRL's implicit PRM, its rewards in the step field ``process``).
ONLINE_PRM: dict[str, str] = {"oprl": "oprl"}

#: the trainer's defaults of the policy knobs the bench passes on (one source: ``TrainConfig``)
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
#: BenchConfig fields left out of ``to_dict`` at their defaults, so that the ``bench.json`` of
#: directories written before they existed still matches (resume)
_OPTIONAL_FIELDS = ("hidden_size", "feature_size", "adam_lr")


class BenchError(UsageError):
    """A bad benchmark configuration or an output directory of another benchmark."""


@dataclass(frozen=True)
class BenchConfig:
    """The benchmark matrix: every environment × method × seed is one training run."""

    envs: tuple[str, ...] = ("lock_chain", "keydoor")
    """Environment names (``stepcredit.envs``; ``gym:ENV_ID`` for gymnasium)."""
    env_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per environment name, its keyword parameters (difficulty knobs)."""
    methods: tuple[str, ...] = ("grpo", "rloo", "gigpo", "salt", "prm_grpo")
    """Estimator names, built-in pipeline names (:data:`PIPELINES`), or paths of pipeline TOML
    files (named by their stem)."""
    seeds: int = 5
    """Training seeds per cell (0..seeds-1)."""
    budget: int = 6000
    """Episodes per run."""
    policy: str = "tabular"
    """Policy kind (``stepcredit.train.POLICIES``)."""
    group_size: int = 8
    """Episodes per task instance (G)."""
    target: float = 0.8
    """The success rate a run must reach (episodes-to-target)."""
    window: int = 3
    """Iterations averaged for episodes-to-target and final success."""
    branching: int = 0
    """Rollout trees: fork each group's episodes k ways (0 = independent episodes); see
    ``stepcredit.train.TrainConfig.branching``."""
    branch_every: int = 1
    """With ``branching``: fork at every this many steps."""
    hidden_size: int = _TRAIN_DEFAULTS["hidden_size"]
    """H, the hidden width of the torch policies (``TrainConfig.hidden_size``)."""
    feature_size: int = _TRAIN_DEFAULTS["feature_size"]
    """F, the hashed text-feature buckets of the torch policies (``TrainConfig.feature_size``)."""
    adam_lr: float = _TRAIN_DEFAULTS["adam_lr"]
    """Adam's step size for the torch policies (``TrainConfig.adam_lr``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``bench.json``). Fields that did not exist in earlier versions are
        left out at their defaults (``branching``/``branch_every`` when branching is off, the
        torch policy knobs), so directories written before them still resume."""
        d = asdict(self)
        d["envs"], d["methods"] = list(self.envs), list(self.methods)
        d["env_kwargs"] = {k: dict(v) for k, v in self.env_kwargs.items()}
        if not self.branching:  # as the trainer does: configs without branching keep their old form
            del d["branching"], d["branch_every"]
        for name in _OPTIONAL_FIELDS:
            if d[name] == _TRAIN_DEFAULTS[name]:
                del d[name]
        return d

    def check(self) -> None:
        """Check the whole matrix before any run starts: the counts, every method name or
        pipeline file, the trainer configuration (policy, knobs), and that every
        environment gives the step fields each method needs (:func:`check_env_fields`).

        Raises:
            BenchError, or the ``UsageError`` of the stage, environment or trainer configuration.
        """
        if not self.envs or not self.methods:
            raise BenchError("give at least one environment and one method")
        if self.seeds < 1 or self.budget < 1 or self.group_size < 1:
            raise BenchError(f"seeds={self.seeds}, budget={self.budget} and group_size={self.group_size} must be >= 1")
        if not 0 < self.target <= 1:
            raise BenchError(f"target={self.target} must lie in (0, 1]")
        for m in self.methods:
            method_pipeline(m)  # raises for unknown names or bad pipeline files
        train_config(self, plan_runs(self)[0])  # TrainConfig checks the policy and its knobs
        check_env_fields(self)


def method_name(method: str) -> str:
    """The display name of a method: the estimator or built-in pipeline name, or a pipeline file's stem."""
    return Path(method).stem if method.endswith(".toml") else method


def method_pipeline(method: str) -> Pipeline:
    """The pipeline of a method: a pipeline file (``*.toml``), a built-in pipeline
    (:data:`PIPELINES`) or an estimator with its defaults.

    Raises:
        BenchError: an unknown name (the message lists the estimators and the built-in pipelines).
        PipelineError: a pipeline file that cannot be read or is invalid.
    """
    if method.endswith(".toml"):
        return Pipeline.load(method)
    if method in PIPELINES:
        return Pipeline.from_dict(PIPELINES[method][1], f"built-in pipeline '{method}'")
    try:
        return Pipeline.build(method)
    except EstimatorError:
        names = ", ".join(sorted(s.name for s in list_estimators()))
        raise BenchError(
            f"unknown estimator '{method}' (nor a built-in pipeline); valid estimators: {names}; "
            f"built-in pipelines: {', '.join(sorted(PIPELINES))}; or a pipeline file PATH.toml"
        ) from None


def _probe_rollouts(cfg: BenchConfig, env: str | None) -> Rollouts:
    """The rollouts of one probe group as the trainer collects them, or (``env`` None) one
    episode holding only the step fields the trainer always records."""
    if env is None:
        steps = [{"state": "s", "action": "a", "reward": 0.0, "logp": 0.0, "ref_logp": 0.0, "grounding": 1.0}]
        if cfg.branching:
            steps[0]["node"] = 0
        return Rollouts.from_records([{"episode_id": "e", "group_id": "g", "outcome": 0.0, "steps": steps}])
    from stepcredit.envs import make_env
    from stepcredit.policies import TabularPolicy
    from stepcredit.train import collect, collect_tree

    kwargs = dict(cfg.env_kwargs.get(env, {}))
    rng = np.random.default_rng(0)
    if cfg.branching:
        envs = [make_env(env, **kwargs) for _ in range(cfg.group_size)]
        return collect_tree(envs, TabularPolicy(), [0], cfg.group_size, rng, branching=cfg.branching,
                            branch_every=cfg.branch_every).rollouts
    return collect([make_env(env, **kwargs)], TabularPolicy(), [0], 1, rng).rollouts


def check_env_fields(cfg: BenchConfig) -> None:
    """Check that every environment gives the step fields every method needs.

    A method whose pipeline runs on the fields the trainer always records (state, action,
    reward, logp, ref_logp, grounding; node with branching; ``process`` for a method of
    :data:`ONLINE_PRM`, whose trainer writes it) passes without building anything;
    for the others (e.g. the PRM pipelines, which need ``process``), each environment plays one
    probe episode (task seed 0, a uniform policy) through the trainer's collector and the
    pipeline is checked against it.

    Raises:
        BenchError: naming the method, the environment and the missing field.
    """
    def probe(ro: Rollouts, pipe: Pipeline) -> Rollouts:
        if pipe.estimator.name in ONLINE_PRM:  # the trainer's online PRM writes the process field
            return ro.replace_columns(process=np.zeros(ro.n_steps))
        return ro

    base = _probe_rollouts(cfg, None)
    needy = []
    for m in cfg.methods:
        pipe = method_pipeline(m)
        try:
            pipe.check(probe(base, pipe))
        except MissingColumnError:
            needy.append(m)
    if not needy:
        return
    for env in cfg.envs:
        ro = _probe_rollouts(cfg, env)
        for m in needy:
            pipe = method_pipeline(m)
            try:
                pipe.check(probe(ro, pipe))
            except MissingColumnError as exc:
                hint = " (built-in environments with oracle process scores: lock_chain, keydoor, arith_chain)"
                raise BenchError(
                    f"method '{method_name(m)}' cannot run on environment '{env}': its rollouts have no field "
                    f"'{exc.column}', which {exc.by} needs (fields present: {', '.join(exc.present) or 'none'}). "
                    f"Leave out the method or the environment" + (hint if exc.column == "process" else "")
                ) from None


@dataclass(frozen=True)
class RunSpec:
    """One training run of the matrix."""

    env: str
    method: str
    seed: int

    def directory(self, out: Path) -> Path:
        env_dir = self.env.replace(":", "_").replace("/", "_")
        return out / "runs" / env_dir / method_name(self.method) / f"seed{self.seed}"


def plan_runs(cfg: BenchConfig) -> list[RunSpec]:
    """Every run of the matrix, environments outermost, seeds innermost."""
    return [RunSpec(e, m, s) for e in cfg.envs for m in cfg.methods for s in range(cfg.seeds)]


def train_config(cfg: BenchConfig, run: RunSpec) -> TrainConfig:
    """The trainer's configuration of one run of the matrix."""
    pipe = method_pipeline(run.method)
    return TrainConfig(
        env=run.env,
        env_kwargs=dict(cfg.env_kwargs.get(run.env, {})),
        estimator=pipe.estimator.name,
        pipeline=pipe,
        policy=cfg.policy,
        group_size=cfg.group_size,
        budget=cfg.budget,
        seed=run.seed,
        target=cfg.target,
        branching=cfg.branching,
        branch_every=cfg.branch_every,
        hidden_size=cfg.hidden_size,
        feature_size=cfg.feature_size,
        adam_lr=cfg.adam_lr,
        online_prm=ONLINE_PRM.get(pipe.estimator.name, "none"),
    )


def run_one(cfg: BenchConfig, run: RunSpec, out: Path, progress: Callable[[Mapping[str, Any]], None] | None = None) -> Path:
    """Train one run (resuming from its checkpoint) and mark it done; returns its directory."""
    from stepcredit.train import train

    d = run.directory(out)
    if (d / "done.json").exists():
        return d
    try:
        result = train(train_config(cfg, run), d, progress=progress)
    except MissingColumnError as exc:  # a field the probe of check_env_fields did not catch: name the run
        raise BenchError(f"run {run.env} / {method_name(run.method)} / seed {run.seed}: {exc}") from None
    if result.completed:
        with atomic_path(d / "done.json") as tmp:
            Path(tmp).write_text(json.dumps({"env": run.env, "method": run.method, "seed": run.seed}) + "\n")
    return d


def _write_config(cfg: BenchConfig, out: Path) -> None:
    path = out / "bench.json"
    want = cfg.to_dict()
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise BenchError(
                f"{out} holds a benchmark with another configuration (differs in: {', '.join(diff)}); "
                "use another --out directory, or the same options to resume it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(want, indent=1) + "\n")


def _read_metrics(d: Path) -> list[dict[str, Any]]:
    path = d / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Cell:
    """The summaries of one (environment, method) cell over its seeds."""

    env: str
    method: str
    episodes_to_target: Summary
    final_success: Summary
    auc: Summary
    ratio_to_grpo: float | None


@dataclass(frozen=True, eq=False)
class BenchResult:
    """The table of a benchmark directory (see :func:`collect_results`)."""

    config: BenchConfig
    cells: tuple[Cell, ...]
    curves: Mapping[tuple[str, str], list[tuple[list[int], list[float]]]]
    missing: int

    HEADER = ("env", "method", "episodes to target (mean [95% CI])", "ratio to grpo", "final success", "AUC")

    def rows(self) -> list[list[str]]:
        out = []
        for c in self.cells:
            ratio = "-" if c.ratio_to_grpo is None else f"{c.ratio_to_grpo:.2f}"
            out.append([c.env, method_name(c.method), c.episodes_to_target.format(integer=True), ratio,
                        c.final_success.format(), c.auc.format()])
        return out

    def table_markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines)

    def write(self, out: Path) -> None:
        """results.json / .md / .csv (atomically) and, with matplotlib, curves_ENV.png."""
        data = {
            "config": self.config.to_dict(),
            "missing_runs": self.missing,
            "cells": [
                {"env": c.env, "method": c.method,
                 **{name: asdict(getattr(c, name)) for name in ("episodes_to_target", "final_success", "auc")},
                 "ratio_to_grpo": c.ratio_to_grpo}
                for c in self.cells
            ],
        }
        with atomic_path(out / "results.json") as tmp:
            Path(tmp).write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
        note = (f"\n\n{self.missing} run(s) unfinished: rerun the same command to finish them.\n" if self.missing else "\n")
        with atomic_path(out / "results.md") as tmp:
            Path(tmp).write_text(self.table_markdown() + note)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.HEADER)
        w.writerows(self.rows())
        with atomic_path(out / "results.csv") as tmp:
            Path(tmp).write_text(buf.getvalue())
        plot_curves(self, out)


def collect_results(cfg: BenchConfig, out: Path) -> BenchResult:
    """Summaries of every cell from the runs' metrics files (unfinished runs are left out and
    counted in ``missing``). The ratio to GRPO divides a cell's mean episodes-to-target by
    GRPO's in the same environment (when grpo is one of the methods)."""
    cells: list[Cell] = []
    curves: dict[tuple[str, str], list[tuple[list[int], list[float]]]] = {}
    missing = 0
    for env in cfg.envs:
        stats: dict[str, tuple[Summary, Summary, Summary]] = {}
        for method in cfg.methods:
            ett, fin, area, cv = [], [], [], []
            for seed in range(cfg.seeds):
                d = RunSpec(env, method, seed).directory(out)
                if not (d / "done.json").exists():
                    missing += 1
                    continue
                m = _read_metrics(d)
                eps = [int(r["episodes"]) for r in m]
                succ = [float(r["success_rate"]) for r in m]
                ett.append(episodes_to_target(eps, succ, cfg.target, cfg.window))
                fin.append(final_success(succ, cfg.window))
                area.append(auc(eps, succ))
                cv.append((eps, succ))
            curves[(env, method)] = cv
            stats[method] = (summarize(ett, budget=cfg.budget), summarize(fin), summarize(area))
        base = stats.get("grpo", (None,))[0]
        for method, (s_ett, s_fin, s_auc) in stats.items():
            ratio = None
            if base is not None and base.n and s_ett.n and base.mean > 0:
                ratio = s_ett.mean / base.mean
            cells.append(Cell(env, method, s_ett, s_fin, s_auc, ratio))
    return BenchResult(cfg, tuple(cells), curves, missing)


def plot_curves(result: BenchResult, out: Path) -> list[Path]:
    """One PNG per environment: mean success rate against episodes, one line per method, with
    a band of ± 1.96 standard errors of the mean over seeds (runs interpolated on a common grid
    of episodes). Needs matplotlib; without it, nothing is drawn and an empty list is returned."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return []
    paths = []
    for env in result.config.envs:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        for method in result.config.methods:
            runs = [(e, s) for e, s in result.curves.get((env, method), []) if e]
            if not runs:
                continue
            start = min(e[0] for e, _ in runs)
            grid = np.linspace(start, result.config.budget, 60)
            ys = np.array([np.interp(grid, e, s) for e, s in runs])
            mean = ys.mean(axis=0)
            line, = ax.plot(grid, mean, label=f"{method_name(method)} ({len(runs)} seeds)")
            if len(runs) > 1:
                half = 1.96 * ys.std(axis=0, ddof=1) / np.sqrt(len(runs))
                ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(result.config.target, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="episodes", ylabel="success rate (band: ± 1.96 SE over seeds)", title=env, ylim=(0, 1.02))
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curves_{env.replace(':', '_').replace('/', '_')}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def run_bench(
    cfg: BenchConfig,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    backend: Literal["local", "ray"] = "local",
    address: str | None = None,
    on_run: Callable[[RunSpec, str], None] | None = None,
    progress: Callable[[RunSpec, Mapping[str, Any]], None] | None = None,
) -> BenchResult:
    """Run every unfinished run of the matrix, then write the table and the HTML report.

    ``backend="local"``: ``workers`` processes (default 1: in this process); ``"ray"``: Ray
    tasks (``stepcredit.bench.ray_backend``; a local Ray on 127.0.0.1, or the cluster at
    ``address``). ``on_run(run, status)`` is called with "skipped" (already done), "started"
    and "done"; ``progress(run, metrics)`` after each training iteration (in-process runs only).
    """
    if backend not in ("local", "ray"):
        raise BenchError(f"backend={backend!r} must be 'local' or 'ray'")
    if address is not None and backend != "ray":
        raise BenchError("--ray-address needs --backend ray")
    cfg.check()
    out = Path(out)
    _write_config(cfg, out)
    runs = plan_runs(cfg)
    todo = [r for r in runs if not (r.directory(out) / "done.json").exists()]
    for r in runs:
        if r not in todo and on_run:
            on_run(r, "skipped")
    if backend == "ray":
        from stepcredit.bench.ray_backend import run_ray

        run_ray(cfg, todo, out, workers=workers, address=address, on_run=on_run)
    elif (workers or 1) <= 1:
        for r in todo:
            if on_run:
                on_run(r, "started")
            run_one(cfg, r, out, progress=(lambda m, r=r: progress(r, m)) if progress else None)
            if on_run:
                on_run(r, "done")
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(run_one, cfg, r, out): r for r in todo}
            for r in todo:
                if on_run:
                    on_run(r, "started")
            for fut in as_completed(futures):
                fut.result()
                if on_run:
                    on_run(futures[fut], "done")
    result = collect_results(cfg, out)
    result.write(out)
    from stepcredit.bench.report import write_report  # report imports this module

    write_report(result, out)
    return result
