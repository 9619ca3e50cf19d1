"""The self-contained HTML report of a benchmark directory (``stepcredit report RUN_DIR``).

    result = run_bench(cfg, out)            # or collect_results(cfg, out)
    path = write_report(result, out)        # out/report.html

``report.html`` is one file that opens anywhere, offline: plain HTML with inline CSS, no
JavaScript, no external resources (the learning-curve PNGs are embedded as base64 ``data:``
URIs). Every text that comes from the configuration, the environments or the rollouts is
escaped (``html.escape``), so an environment parameter, a method path or an action text holding
markup is shown as text, never interpreted. It holds:

1. the configuration (the fields of ``BenchConfig``);
2. the results table, with the same columns as ``results.md``; a censored episodes-to-target
   cell (some runs never reached the target, so the mean is a lower bound) is shaded and says so
   on hover;
3. the learning curves (``curves_ENV.png``, drawn by ``matrix.plot_curves`` when absent);
4. a **per-step credit view** of sample trajectories for each environment: the episodes of one
   group, one row per episode and one cell per step (the action text; hovering shows the step's
   state, action and advantage), coloured by the step advantage under each method of the
   matrix, one block of rows per method. The colour scale is diverging, red (negative) - white
   (0) - green (positive), shared by all methods of an environment (so colours compare across
   methods), with a legend. A reader sees GRPO paint every step of an episode the same colour,
   while step-level methods (GiGPO, SALT, ...) tell the steps of one episode apart.

Which trajectories the credit view shows (deterministic, re-collected, nothing is stored by the
trainer for this):

* the policy: the final checkpoint of seed 0 of the first method (``checkpoint.npz`` of that
  run); when its run has no checkpoint, the initial (uniform) policy;
* the tasks: that run's task pool (the seeds the trainer derives from its training seed), one
  batch of ``tasks_per_iter`` groups of G episodes, played with action draws from
  ``np.random.default_rng(seed)`` (``seed`` = 0 by default);
* the group: the one whose outcomes vary most (largest standard deviation; the first of ties).
  A group whose episodes all have the same outcome gets zero credit from every group baseline,
  so when no group of the trained policy's batch varies (a policy that always succeeds, or
  never), the batch of the initial uniform policy is tried next; when neither varies, the first
  group is shown with a note;
* the credit: each method's pipeline (an estimator alone is a one-stage pipeline, i.e.
  ``stepcredit.estimate``) run on that whole batch, the shown group's steps read from it. A
  method that cannot run on the batch (e.g. it needs a process-reward column the environment
  does not give) shows its error message instead of its rows.

The credit view is a best-effort appendix: an environment whose view cannot be built (an
unfinished run directory, an environment that fails to start) shows the reason in the report
instead of failing the whole report.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stepcredit._params import UsageError
from stepcredit.bench.matrix import BenchResult, RunSpec, method_name, method_pipeline, plot_curves
from stepcredit.data.io import atomic_path

__all__ = ["CreditView", "MethodCredit", "credit_colour", "credit_view", "write_report"]

REPORT = "report.html"
#: the diverging scale's ends and middle: negative advantage, zero, positive advantage
NEGATIVE = (215, 48, 39)
ZERO = (255, 255, 255)
POSITIVE = (26, 152, 80)
_ACTION_CHARS = 24  # action texts longer than this are cut in the cell (the hover shows them whole)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1150px; color: #1d1d1f; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin-bottom: 0.3em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0; }
table.config td, table.results td, table.results th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
table.results th { background: #f0f0f0; }
table.config td:first-child { font-weight: 600; background: #f7f7f7; }
td.censored { background: #fff4d6; }
.note { color: #555; font-size: 0.92em; }
.warn { color: #8a4b00; font-size: 0.92em; }
img.curve { max-width: 100%; border: 1px solid #eee; }
.scroll { overflow-x: auto; max-width: 100%; }
table.credit td { border: 1px solid #d8d8d8; padding: 2px 4px; font-size: 11px; font-family: ui-monospace, Menlo, monospace;
                  white-space: nowrap; max-width: 11em; overflow: hidden; text-overflow: ellipsis; }
table.credit td.ep { background: #fafafa; font-family: system-ui, sans-serif; color: #333; }
table.credit tr.method td { background: #eef1f6; font-family: system-ui, sans-serif; font-weight: 600; font-size: 12px;
                            border-top: 2px solid #9aa; }
table.credit td.dark { color: #fff; }
.legend { display: flex; align-items: center; gap: 8px; font-size: 12px; margin: 6px 0 10px; }
.legend .bar { display: flex; border: 1px solid #bbb; }
.legend .bar span { display: block; width: 18px; height: 14px; }
"""


@dataclass(frozen=True)
class MethodCredit:
    """One method's credit of the shown group.

    Attributes:
        method: the method as configured (estimator name or pipeline path).
        advantage: per shown episode, its [T_i] step advantages (empty when ``error``).
        weight: per shown episode, its episode weight (1 unless a filter dropped it).
        error: why the method could not run on the batch, or None.
    """

    method: str
    advantage: tuple[np.ndarray, ...]
    weight: tuple[float, ...]
    error: str | None = None


@dataclass(frozen=True)
class CreditView:
    """The sample trajectories of one environment and their credit under each method.

    Attributes:
        env: the environment name.
        source: which policy played the episodes (text for the report).
        group: the shown group's id.
        episode_ids: [n] the shown episodes' ids.
        outcome: [n] their outcomes.
        success: [n] their ``info["success"]``.
        states: per episode, its [T_i] state keys.
        actions: per episode, its [T_i] action texts.
        credits: one :class:`MethodCredit` per method of the matrix, in order.
        scale: the advantage mapped to full colour (max |A| over the shown steps, >= 1e-12).
        note: a remark for the reader (e.g. every outcome of the group is equal), or None.
    """

    env: str
    source: str
    group: str
    episode_ids: tuple[str, ...]
    outcome: tuple[float, ...]
    success: tuple[bool, ...]
    states: tuple[tuple[str, ...], ...]
    actions: tuple[tuple[str, ...], ...]
    credits: tuple[MethodCredit, ...]
    scale: float
    note: str | None = None


def credit_colour(advantage: float, scale: float) -> str:
    """The colour of a step advantage on the diverging red-white-green scale.

    t = clip(A / scale, −1, 1); the colour is white mixed with red (t < 0) or green (t > 0) in
    proportion |t| (linear in sRGB), so A = 0 is white and |A| >= scale is the full colour.

    Args:
        advantage: A, a finite number (a non-finite one is drawn grey).
        scale: > 0, the |A| drawn at full colour.

    Returns:
        ``"#rrggbb"``.
    """
    if not math.isfinite(advantage):
        return "#bbbbbb"
    t = max(-1.0, min(1.0, advantage / scale))
    end = POSITIVE if t > 0 else NEGATIVE
    rgb = [round(z + abs(t) * (e - z)) for z, e in zip(ZERO, end)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# ---------------------------------------------------------------------- the credit view
def _task_seeds(tc: Any, seed: int) -> list[int]:
    """The task seeds of one batch of the run: its pool as ``stepcredit.train.train`` derives it."""
    from stepcredit.train.trainer import task_pool_seeds

    if tc.task_pool == 0:
        return np.random.default_rng(seed).integers(0, 2**31 - 1, size=tc.tasks_per_iter).tolist()
    pool = task_pool_seeds(tc)
    return [int(pool[k % pool.size]) for k in range(tc.tasks_per_iter)]


def _initial_policy(tc: Any) -> Any:
    """A fresh policy of the run's kind, as the trainer builds it (its initial policy)."""
    from stepcredit.train.trainer import initial_policy

    return initial_policy(tc)


def _load_policy(run_dir: Path, tc: Any):
    policy = _initial_policy(tc)
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        return policy, False
    with np.load(path, allow_pickle=False) as z:
        policy.load_state_dict({k[len("policy_"):]: z[k] for k in z.files if k.startswith("policy_")})
    return policy, True


def _group_spread(ro) -> np.ndarray:
    """[G] standard deviation of the outcomes of each group."""
    g = ro.episode_group
    n = np.bincount(g, minlength=ro.n_groups)
    mean = np.bincount(g, weights=ro.outcome, minlength=ro.n_groups) / n
    return np.sqrt(np.bincount(g, weights=(ro.outcome - mean[g]) ** 2, minlength=ro.n_groups) / n)


def credit_view(result: BenchResult, out: Path, env: str, *, episodes: int = 8, seed: int = 0) -> CreditView:
    """Re-collect one batch for ``env`` and compute every method's credit on it.

    See the module docstring for which policy, tasks, group and credit are used.

    Args:
        result: the benchmark's result (its config names the methods and the environment's
            parameters).
        out: the benchmark directory (the checkpoint of seed 0 of the first method is read).
        env: one of ``result.config.envs``.
        episodes: at most this many episodes of the group are shown (>= 1).
        seed: seeds the action draws of the re-collected batch.

    Returns:
        :class:`CreditView`.

    Raises:
        UsageError, ValueError, OSError: the environment or the checkpoint cannot be loaded.
    """
    from stepcredit.bench.matrix import train_config
    from stepcredit.envs import make_env
    from stepcredit.train import collect

    cfg = result.config
    first = RunSpec(env, cfg.methods[0], 0)
    tc = train_config(cfg, first)
    envs = [make_env(env, **tc.env_kwargs) for _ in range(tc.episodes_per_iter)]
    seeds = _task_seeds(tc, seed)
    trained, found = _load_policy(first.directory(out), tc)
    candidates = []
    if found:
        candidates.append((trained, f"the final policy of {method_name(cfg.methods[0])}, seed 0"))
    candidates.append((_initial_policy(tc), "the initial (uniform) policy" if tc.policy != "lm" else "the initial policy"))
    note = None
    batch = None
    for policy, source in candidates:
        b = collect(envs, policy, seeds, tc.group_size, np.random.default_rng(seed))
        spread = _group_spread(b.rollouts)
        if batch is None or spread.max() > 0:
            batch, chosen, src = b, int(np.argmax(spread)), source
        if spread.max() > 0:
            break
    else:
        note = ("every group's episodes have the same outcome, so group baselines give every step "
                "zero credit here")
    ro = batch.rollouts
    if found and src != candidates[0][1]:
        note = (f"no group of {candidates[0][1]} had differing outcomes (its episodes all succeed or all fail), "
                "so the episodes below were played by the initial policy")
    members = np.flatnonzero(ro.episode_group == chosen)[:episodes]
    off = ro.episode_offsets
    states_all = [str(s) for s in ro.key_values["state"].to_pylist()]
    actions_all = [str(a) for a in ro.key_values["action"].to_pylist()]
    spans = [(int(off[e]), int(off[e + 1])) for e in members]

    credits = []
    peak = 0.0
    for m in cfg.methods:
        try:
            res = method_pipeline(m).run(ro)
        except (UsageError, ValueError) as exc:
            credits.append(MethodCredit(m, (), (), error=str(exc)))
            continue
        adv = np.asarray(res.credit.step_advantage, dtype=np.float64)[: ro.n_steps]
        w = res.credit.episode_weight
        per = tuple(adv[a:b].copy() for a, b in spans)
        weights = tuple(1.0 if w is None else float(w[e]) for e in members)
        for a in per:
            finite = a[np.isfinite(a)]
            if finite.size:
                peak = max(peak, float(np.abs(finite).max()))
        credits.append(MethodCredit(m, per, weights))
    ids = ro.episode_id.to_pylist()
    return CreditView(
        env=env,
        source=src,
        group=str(ro.group_names.to_pylist()[chosen]),
        episode_ids=tuple(str(ids[e]) for e in members),
        outcome=tuple(float(ro.outcome[e]) for e in members),
        success=tuple(bool(batch.success[e]) for e in members),
        states=tuple(tuple(states_all[a:b]) for a, b in spans),
        actions=tuple(tuple(actions_all[a:b]) for a, b in spans),
        credits=tuple(credits),
        scale=max(peak, 1e-12),
        note=note,
    )


# ---------------------------------------------------------------------- HTML pieces
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _config_html(result: BenchResult) -> str:
    rows = []
    for key, value in result.config.to_dict().items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(f"<tr><td>{_e(key)}</td><td>{_e(text)}</td></tr>")
    return '<table class="config">' + "".join(rows) + "</table>"


def _results_html(result: BenchResult) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in result.HEADER)
    body = []
    for cell, row in zip(result.cells, result.rows()):
        tds = []
        for k, text in enumerate(row):
            if k == 2 and cell.episodes_to_target.censored:
                s = cell.episodes_to_target
                why = (f"censored: {s.reached}/{s.n} runs reached the target; unreached runs count at the budget, "
                       "so the mean is a lower bound")
                tds.append(f'<td class="censored" title="{_e(why)}">{_e(text)}</td>')
            else:
                tds.append(f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    note = ""
    if result.missing:
        note = f'<p class="warn">{result.missing} run(s) unfinished: rerun the same bench command to finish them.</p>'
    return (f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="note">Means over seeds with bootstrap 95% confidence intervals. Shaded cells are censored: '
            "some runs never reached the target success rate and count at the budget (≥: a lower bound).</p>" + note)


def _curve_path(out: Path, env: str) -> Path:
    return out / f"curves_{env.replace(':', '_').replace('/', '_')}.png"


def _curves_html(result: BenchResult, out: Path) -> str:
    envs = result.config.envs
    if not all(_curve_path(out, env).exists() for env in envs):
        plot_curves(result, out)
    parts = []
    for env in envs:
        path = _curve_path(out, env)
        if not path.exists():
            parts.append(f'<p class="warn">{_e(env)}: no learning-curve plot (matplotlib is not installed).</p>')
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<h3>{_e(env)}</h3><img class="curve" alt="{_e("learning curves of " + env)}" '
                     f'src="data:image/png;base64,{data}">')
    return "".join(parts)


def _legend_html(scale: float) -> str:
    stops = np.linspace(-1.0, 1.0, 11)
    bar = "".join(f'<span style="background:{credit_colour(t * scale, scale)}"></span>' for t in stops)
    return (f'<div class="legend"><span>step advantage</span><span>{-scale:+.3g}</span>'
            f'<span class="bar">{bar}</span><span>{scale:+.3g}</span>'
            "<span>(red: negative, white: 0, green: positive)</span></div>")


def _view_html(view: CreditView) -> str:
    parts = [f"<h3>{_e(view.env)}</h3>",
             f'<p class="note">Group {_e(view.group)}: {len(view.episode_ids)} episodes played by '
             f"{_e(view.source)}. One row per episode, one cell per step (the action; hover for the state and "
             "the advantage); one block of rows per method.</p>"]
    if view.note:
        parts.append(f'<p class="warn">{_e(view.note)}</p>')
    parts.append(_legend_html(view.scale))
    rows = []
    for mc in view.credits:
        width = 1 + max((len(a) for a in view.actions), default=0)
        rows.append(f'<tr class="method"><td colspan="{width}">{_e(method_name(mc.method))}</td></tr>')
        if mc.error is not None:
            rows.append(f'<tr><td class="ep warn" colspan="{width}">cannot run on this batch: {_e(mc.error)}</td></tr>')
            continue
        for i, adv in enumerate(mc.advantage):
            mark = "✓" if view.success[i] else "✗"
            label = f"e{i} {mark} outcome {view.outcome[i]:g}"
            if mc.weight[i] == 0:
                label += " · dropped"
            hover = f"episode {view.episode_ids[i]}\noutcome {view.outcome[i]:g}, success {view.success[i]}, weight {mc.weight[i]:g}"
            cells = [f'<td class="ep" title="{_e(hover)}">{_e(label)}</td>']
            for t, a in enumerate(adv):
                action, state = view.actions[i][t], view.states[i][t]
                shown = action if len(action) <= _ACTION_CHARS else action[: _ACTION_CHARS - 1] + "…"
                title = f"step {t}\nstate: {state}\naction: {action}\nadvantage: {a:+.4g}"
                dark = ' class="dark"' if math.isfinite(a) and abs(a) / view.scale > 0.6 else ""
                cells.append(f'<td{dark} style="background:{credit_colour(float(a), view.scale)}" '
                             f'title="{_e(title)}">{_e(shown)}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
    parts.append('<div class="scroll"><table class="credit">' + "".join(rows) + "</table></div>")
    return "".join(parts)


def _views_html(result: BenchResult, out: Path, episodes: int, seed: int) -> str:
    parts = ['<p class="note">Each environment: the episodes of one group, re-collected deterministically with the '
             "final policy of seed 0 of the first method (or the initial policy when no group of that policy has "
             "differing outcomes), and each method's step advantages on that batch, on one colour scale per "
             "environment. An outcome-only method (GRPO, RLOO) gives every step of an episode the same colour; "
             "step-level methods tell the steps apart.</p>"]
    for env in result.config.envs:
        try:
            parts.append(_view_html(credit_view(result, out, env, episodes=episodes, seed=seed)))
        except (UsageError, ValueError, OSError, KeyError) as exc:
            parts.append(f'<h3>{_e(env)}</h3><p class="warn">no credit view: {_e(exc)}</p>')
    return "".join(parts)


def write_report(result: BenchResult, out: str | Path, *, episodes: int = 8, seed: int = 0) -> Path:
    """Write ``out/report.html``: configuration, results table, learning curves, credit view.

    One self-contained file (inline CSS, images as data URIs, no scripts, no network), written
    atomically. See the module docstring for its sections and for how the sample trajectories
    of the credit view are chosen.

    Args:
        result: the benchmark's result (``run_bench`` or ``collect_results``).
        out: the benchmark directory (holds ``runs/`` and the ``curves_ENV.png`` plots; plots
            that are missing are drawn there first).
        episodes: episodes shown per environment in the credit view (>= 1).
        seed: seeds the action draws of the credit view's re-collected batch.

    Returns:
        The path of ``report.html``.
    """
    if episodes < 1:
        raise ValueError(f"write_report: episodes={episodes} must be >= 1")
    out = Path(out)
    cfg = result.config
    methods = ", ".join(method_name(m) for m in cfg.methods)
    doc = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('stepcredit bench report: ' + out.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>stepcredit bench report</h1>",
        f'<p class="sub">{_e(out.name)} · {_e(", ".join(cfg.envs))} × {_e(methods)} × {cfg.seeds} seeds · '
        f"budget {cfg.budget:,} episodes</p>",
        "<h2>Configuration</h2>",
        _config_html(result),
        "<h2>Results</h2>",
        f'<p class="note">Episodes to reach {cfg.target:.0%} success (trailing mean over {cfg.window} iterations), '
        "final success and area under the learning curve.</p>",
        _results_html(result),
        "<h2>Learning curves</h2>",
        _curves_html(result, out),
        "<h2>Per-step credit of sample trajectories</h2>",
        _views_html(result, out, episodes, seed),
        "</body></html>",
    ]
    path = out / REPORT
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(doc) + "\n", encoding="utf-8")
    return path
