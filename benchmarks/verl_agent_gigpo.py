"""Side-by-side benchmark: stepcredit's gigpo against verl-agent's official GiGPO.

Builds one synthetic agent batch the way verl-agent's trainer sees it (one row per step of an
episode, padded ``[rows, L]`` tensors, numpy object arrays of group uids, trajectory uids and
observation strings), runs verl-agent's two GiGPO functions from ``gigpo/core_gigpo.py``
(``compute_step_discounted_returns``, then ``compute_gigpo_outcome_advantage``) and
stepcredit's ``gigpo`` with the matching parameters on the same input, checks that the
per-step advantages agree within a float32 rounding bound (below), and prints the times. The
exit status is 1 when any row disagrees, 2 on a usage error.

verl-agent is a fork of verl that is not on PyPI, and this script fetches nothing: it needs a
local checkout, given as ``--verl-agent DIR``. It loads ``DIR/gigpo/core_gigpo.py`` alone (the
package ``__init__`` pulls in the whole trainer); that file imports ``from verl import
DataProto``, so run it in an environment with verl and torch (pin torch, an unpinned torch
pulls several GB of CUDA wheels)::

    git clone https://github.com/langfengQ/verl-agent /tmp/verl-agent
    python -m venv /tmp/verlenv
    /tmp/verlenv/bin/pip install verl torch==2.13.0 -e .
    /tmp/verlenv/bin/python benchmarks/verl_agent_gigpo.py --verl-agent /tmp/verl-agent --markdown

The batch (``--episodes`` in groups of ``--group`` consecutive episodes):

* each episode has a random number of steps in ``1..--steps``; its rows are contiguous and in
  step order (verl-agent gathers a trajectory's steps this way);
* ``anchor_obs``: about a third of the steps are in one of 8 states shared by the group
  (``"task g room k"``), the rest in a state of their own (``"episode e step t"``), as in
  ``benchmarks/anchor_speed.py``;
* ``rewards`` (the environment's per-step reward): 0, or -0.1 (10% of steps, a penalty) or
  +0.5 (10%, a sub-goal), plus a 0/1 outcome on the episode's last step;
* ``token_level_rewards`` ``[rows, --tokens]``, float32: the episode's total reward on the last
  valid token of each of its rows (what verl-agent's episode reward manager writes), 0
  elsewhere; ``response_mask``: right padding, each row a random valid length in ``1..L``;
* ``index`` / ``traj_index``: uuid4-like strings, one per group / per episode.

How verl-agent maps to stepcredit (``sc.estimate(ro, "gigpo", **params)``):

=====================================================  ==========================================
verl-agent (``gigpo/core_gigpo.py``)                   stepcredit ``gigpo``
=====================================================  ==========================================
mode="mean_norm" (the default)                         norm="mean"
mode="mean_std_norm"                                   norm="mean_std"
episode_norm_reward(compute_mean_std_cross_steps=      episode_stats="steps" (statistics over
True), hard-wired                                      step rows: an episode counts once per step)
a one-row group: mean 0, std 1                         singleton="raw"
a one-step step group: mean = the step itself (A = 0)  the same, fixed
step_advantage_w=1.0, epsilon=1e-6                     omega=1.0, epsilon=1e-6
compute_step_discounted_returns(gamma), float32        gamma (float64)
build_step_group(enable_similarity=False)              match="exact"
=====================================================  ==========================================

Written against langfengQ/verl-agent's file as stored in the fork
johnhaofu/verl-agent@c23d5862cc35173a041bc93474ded6c04151cb05:gigpo/core_gigpo.py
(compute_step_discounted_returns #L87, compute_gigpo_outcome_advantage #L138,
episode_norm_reward #L244 with compute_mean_std_cross_steps=True #L250, step_norm_reward #L404).
That fork returns ``(scores, scores, diagnostics)``; upstream and vanzll/verl-agent@3038c3b1
return ``(scores, scores)`` with the same arithmetic. Both are accepted (the first element is
used).

stepcredit starts from the same arrays: episode boundaries where ``traj_index`` changes
(contiguous trajectories, as above), group ids ``index`` at each episode's first row, rewards
``rewards`` (the outcome is already on the last step, so the Rollouts outcome is 0) and states
``anchor_obs``; it returns the ``[rows, L]`` float32 tensor via ``Credit.to_padded(mask,
rows="steps")``. The per-step advantage of a row is read from both ``[rows, L]`` results at the
row's first valid token.

Tolerance: verl-agent computes in float32 (its returns are cast to float32 and accumulated
in float32, and the group means and stds are float32 torch reductions); stepcredit computes in
float64. A row agrees when ``|A_verl-agent - A_stepcredit| <= 32 u (M_E / F_E + M_S / F_S)``,
with u = 2^-23 (float32's machine epsilon), M the largest magnitude among the values of the
row's group (episode totals over the group's rows; step returns over the row's step group),
and F the divisor of that group (std + epsilon for ``mean_std_norm``, 1 for ``mean_norm``; a
one-row episode group divides by 1 + epsilon; a one-step step group contributes 0, both sides
give exactly 0 there). Why: the inputs of a group's statistics carry rounding errors of a few
float32 ulps of M (the return recursion rounds once per step, about 1/(1 - gamma) / 2 ulps in
all at gamma = 0.95; the float32 mean and the centring a few more), and dividing by F
amplifies them by 1/F; 32 ulps covers this with a margin ("diff / bound" reports the worst
row's share of its bound: 0.03-0.05 in our runs).

Ties ("tied rows": rows whose episode group or step group has several members, all equal):
the exact advantage is 0 and stepcredit, which centres on a member of the group, returns
exactly 0. verl-agent's float32 mean of n equal values can miss them by an ulp or two; every
member then has the same centred value d, the float32 std is |d| sqrt(n / (n - 1)), and with
``mean_std_norm`` A = d / (|d| sqrt(n / (n - 1)) + epsilon): -0.056 for three equal returns of
0.735 (three identical 7-step episodes), up to sqrt((n - 1) / n) in size once d >> epsilon
(epsilon = 1e-6 is about 8 float32 ulps at 1). F = epsilon there, so the bound is about 3.8 M
and such rows are checked only loosely; "tied rows (max diff)" shows how many there were and
their largest difference. ``mean_norm`` has no such amplification (differences about 1e-7).

Timing: best of ``--repeats`` runs (``time.perf_counter``), after one untimed warm-up of each
side on a 2-group batch (first-call costs: Arrow kernels, torch dispatch) and two more untimed
stepcredit runs on the batch itself (its first two runs on a new batch size measured 3-7x
slower than the rest, about 13 ms instead of 2 at 512 episodes, as memory is first touched;
verl-agent's first run is within its run-to-run noise, and repeating it costs seconds at the
larger sizes, so it gets no such run: in a trainer both sides run warm). The verl-agent time
covers ``compute_step_discounted_returns`` and ``compute_gigpo_outcome_advantage`` from the
batch (its prints go to a discarded buffer). The stepcredit "end to end" time covers finding
the episode boundaries, ``Rollouts.from_arrays`` (converting the observation strings to Arrow
and hashing them), ``estimate`` and ``to_padded`` to a float32 tensor; "estimate-only" is
``stepcredit.estimate`` on the Rollouts built beforehand. verl-agent's discounted returns take
time quadratic in the rows (for every row and every trajectory it scans all rows with
``np.where``), and its step grouping scans all rows once per group, so the ratio grows with
the batch: ``--sizes 256x16,512x16,1024x16,2048x16`` shows it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import os
import platform
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import stepcredit as sc
from stepcredit.estimators.anchor import step_groups

CORE = Path("gigpo") / "core_gigpo.py"
HOWTO = (
    "verl-agent is not on PyPI; get a local checkout and pass it:\n"
    "    git clone https://github.com/langfengQ/verl-agent /tmp/verl-agent\n"
    "    /tmp/verlenv/bin/python benchmarks/verl_agent_gigpo.py --verl-agent /tmp/verl-agent --markdown\n"
    "(an environment with verl and torch: python -m venv /tmp/verlenv && "
    "/tmp/verlenv/bin/pip install verl torch==2.13.0 -e .)"
)
MODES = {"mean_norm": "mean", "mean_std_norm": "mean_std"}  # verl-agent mode -> stepcredit norm
U32 = float(np.finfo(np.float32).eps)  # 2**-23
BOUND_ULPS = 32


# --------------------------------------------------------------------------- input batch
@dataclass
class Batch:
    """One row per step; episodes contiguous, groups of consecutive episodes."""

    rewards: np.ndarray  # [S] float64, env reward per step, outcome added on the last step
    anchor_obs: np.ndarray  # [S] object array of observation strings
    index: np.ndarray  # [S] object array of group uid strings
    traj_index: np.ndarray  # [S] object array of trajectory uid strings
    token_level_rewards: object  # torch [S, L] float32, episode total on the last valid token
    response_mask: object  # torch [S, L] int64, right padding
    n_episodes: int


def uid_strings(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.array([str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)], dtype=object)


def make_batch(episodes: int, steps: int, group: int, tokens: int, seed: int) -> Batch:
    import torch

    rng = np.random.default_rng(seed)
    E = episodes
    lengths = rng.integers(1, steps + 1, size=E)
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    S = int(offsets[-1])
    e = np.repeat(np.arange(E), lengths)
    t = np.arange(S) - offsets[e]
    g = e // group
    shared = rng.random(S) < 1 / 3
    room = rng.integers(0, 8, size=S)  # 8 shared rooms per group
    obs = np.array(
        [f"task {g[i]} room {room[i]}" if shared[i] else f"episode {e[i]} step {t[i]}" for i in range(S)],
        dtype=object,
    )
    rewards = rng.choice(np.array([0.0, -0.1, 0.5]), p=[0.8, 0.1, 0.1], size=S)
    rewards[offsets[1:] - 1] += rng.integers(0, 2, size=E)
    total = np.add.reduceat(rewards, offsets[:-1])
    valid = rng.integers(1, tokens + 1, size=S)
    mask = np.arange(tokens)[None, :] < valid[:, None]
    tlr = np.zeros((S, tokens), dtype=np.float32)
    tlr[np.arange(S), valid - 1] = total[e]
    return Batch(
        rewards=rewards,
        anchor_obs=obs,
        index=uid_strings(E // group, rng)[g],
        traj_index=uid_strings(E, rng)[e],
        token_level_rewards=torch.from_numpy(tlr),
        response_mask=torch.from_numpy(mask.astype(np.int64)),
        n_episodes=E,
    )


# --------------------------------------------------------------------------- the two sides
def load_core_gigpo(root: Path) -> types.ModuleType:
    """``root/gigpo/core_gigpo.py`` as a module of its own (its package ``__init__`` is skipped)."""
    spec = importlib.util.spec_from_file_location("verl_agent_core_gigpo", root / CORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verl_agent_run(core: types.ModuleType, b: Batch, mode: str, gamma: float,
                   epsilon: float) -> Callable[[], object]:
    import torch

    # compute_step_discounted_returns reads a DataProto's non_tensor_batch and the device of
    # batch['input_ids']; nothing else, so a namespace stands in for it
    proto = types.SimpleNamespace(
        non_tensor_batch={
            "rewards": b.rewards,
            "traj_uid": b.traj_index,
            "active_masks": np.ones(len(b.rewards), dtype=bool),
        },
        batch={"input_ids": torch.zeros((len(b.rewards), 1), dtype=torch.int64)},
    )

    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the mean step-group size
            step_returns = core.compute_step_discounted_returns(proto, gamma)
            out = core.compute_gigpo_outcome_advantage(
                b.token_level_rewards, step_returns, b.response_mask, b.anchor_obs, b.index,
                b.traj_index, epsilon=epsilon, step_advantage_w=1.0, mode=mode,
            )
        return out[0]  # upstream returns (scores, scores); some forks add a diagnostics dict

    return run


def sc_params(mode: str, gamma: float, epsilon: float) -> dict:
    return {"norm": MODES[mode], "episode_stats": "steps", "gamma": gamma, "epsilon": epsilon,
            "omega": 1.0, "singleton": "raw", "match": "exact"}


def sc_rollouts(b: Batch) -> sc.Rollouts:
    """Rollouts from the trainer's row arrays: an episode starts where traj_index changes."""
    traj = b.traj_index
    start = np.empty(len(traj), dtype=bool)
    start[:1] = True
    np.not_equal(traj[1:], traj[:-1], out=start[1:])
    first = np.flatnonzero(start)
    return sc.Rollouts.from_arrays(
        outcome=np.zeros(len(first)),  # the outcome is already in the last step's reward
        episode_offsets=np.append(first, len(traj)),
        group_id=b.index[first],
        reward=b.rewards,
        state=b.anchor_obs,
    )


def sc_run(b: Batch, params: dict) -> Callable[[], object]:
    import torch

    mask = b.response_mask.numpy()

    def run() -> object:
        credit = sc.estimate(sc_rollouts(b), "gigpo", **params)
        return torch.from_numpy(credit.to_padded(mask, rows="steps", dtype=np.float32))

    return run


# --------------------------------------------------------------------------- comparison
def _group_stats(x: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """[n] member count, largest |x|, unbiased std (0 for one member) of each group, and
    whether all its members are equal."""
    count = np.bincount(codes, minlength=n)
    mean = np.bincount(codes, weights=x, minlength=n) / np.maximum(count, 1)
    var = np.bincount(codes, weights=(x - mean[codes]) ** 2, minlength=n) / np.maximum(count - 1, 1)
    largest, high, low = np.zeros(n), np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(largest, codes, np.abs(x))
    np.maximum.at(high, codes, x)
    np.minimum.at(low, codes, x)
    return count, largest, np.sqrt(var), high == low


def float32_bound(ro: sc.Rollouts, credit: sc.Credit, norm: str,
                  epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """[S] per-row bound 32 u (M_E / F_E + M_S / F_S) (see the module docstring), and [S] True
    where the row's episode group or step group has several members, all equal."""
    row_group = ro.episode_group[ro.step_episode]
    total = np.add.reduceat(credit.step_reward, ro.episode_offsets[:-1])[ro.step_episode]
    n_e, m_e, std_e, equal_e = _group_stats(total, row_group, ro.n_groups)
    f_e = np.where(n_e > 1, std_e + epsilon, 1 + epsilon) if norm == "mean_std" else np.ones(ro.n_groups)
    sg, n_sg = step_groups(ro)
    n_s, m_s, std_s, equal_s = _group_stats(credit.step_return, sg, n_sg)
    f_s = std_s + epsilon if norm == "mean_std" else np.ones(n_sg)
    step_term = np.where(n_s > 1, m_s / f_s, 0.0)
    bound = BOUND_ULPS * U32 * (m_e[row_group] / f_e[row_group] + step_term[sg])
    tied = ((n_e > 1) & equal_e)[row_group] | ((n_s > 1) & equal_s)[sg]
    return bound, tied


def first_token_values(padded: object, mask: np.ndarray) -> np.ndarray:
    """[S] float64 value of each row at its first valid token."""
    a = padded.double().numpy()
    return a[np.arange(a.shape[0]), mask.argmax(axis=1)]


# --------------------------------------------------------------------------- timing
def best_of(fn: Callable[..., object], repeats: int,
            setup: Callable[[], object] | None = None) -> tuple[float, object]:
    """(best wall time in ms, result of the last run) of ``fn()``, or of ``fn(setup())`` with
    ``setup`` run untimed before each repeat."""
    best, out = float("inf"), None
    for _ in range(repeats):
        arg = () if setup is None else (setup(),)
        t0 = time.perf_counter()
        out = fn(*arg)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


@dataclass
class Row:
    episodes: int
    steps: int
    rows: int
    mode: str
    va_ms: float
    sc_ms: float
    sc_est_ms: float
    diff: float
    worst: float  # max over rows of diff / bound
    tied_rows: int  # rows in a group of equal values (std 0: with mean_std_norm F = epsilon)
    tied_diff: float

    @property
    def agree(self) -> bool:
        return bool(self.worst <= 1.0)  # False for NaN too


def compare(core: types.ModuleType, b: Batch, steps: int, mode: str, args: argparse.Namespace) -> Row:
    params = sc_params(mode, args.gamma, args.epsilon)
    va_ms, va_adv = best_of(verl_agent_run(core, b, mode, args.gamma, args.epsilon), args.repeats)
    run = sc_run(b, params)
    for _ in range(2):  # untimed: the first two runs on a new batch size are 5-10x slower
        run()
    sc_ms, sc_adv = best_of(run, args.repeats)
    est_ms, credit = best_of(lambda ro: sc.estimate(ro, "gigpo", **params), args.repeats,
                             setup=lambda: sc_rollouts(b))
    mask = b.response_mask.numpy()
    diff = np.abs(first_token_values(va_adv, mask) - first_token_values(sc_adv, mask))
    bound, tied = float32_bound(sc_rollouts(b), credit, params["norm"], args.epsilon)
    # a bound of 0 (every value of the row's groups is 0) leaves no room: both sides give 0
    share = np.divide(diff, bound, out=np.where(diff > 0, np.inf, 0.0), where=bound > 0)
    share[np.isnan(diff)] = np.nan
    return Row(
        episodes=b.n_episodes, steps=steps, rows=len(diff), mode=mode, va_ms=va_ms, sc_ms=sc_ms,
        sc_est_ms=est_ms, diff=float(diff.max()), worst=float(np.max(share)),
        tied_rows=int(tied.sum()), tied_diff=float(diff[tied].max()) if tied.any() else 0.0,
    )


# --------------------------------------------------------------------------- main
def source_info(root: Path) -> str:
    digest = hashlib.sha256((root / CORE).read_bytes()).hexdigest()[:12]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    return f"{root / CORE} (sha256 {digest}…, commit: {commit})"


def machine_info(torch: types.ModuleType, verl: types.ModuleType, root: Path) -> list[tuple[str, str]]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return [
        ("platform", platform.platform()),
        ("processor", platform.processor() or platform.machine()),
        ("cpus", f"{os.cpu_count()} logical, {usable} usable, torch threads {torch.get_num_threads()}"),
        ("load", "1/5/15 min load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("torch", torch.__version__),
        ("verl", getattr(verl, "__version__", "?")),
        ("stepcredit", getattr(sc, "__version__", "?")),
        ("verl-agent", source_info(root)),
    ]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    try:
        sizes = [(int(e), int(t)) for e, t in (part.lower().split("x") for part in text.split(","))]
    except ValueError:
        sizes = []
    if not sizes or min(min(size) for size in sizes) < 1:
        raise argparse.ArgumentTypeError(f"wants EPISODESxSTEPS[,...] (e.g. 256x16,512x16), got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=HOWTO,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verl-agent", metavar="DIR", type=Path,
                   help=f"local checkout of verl-agent containing {CORE} (required)")
    p.add_argument("--episodes", type=int, default=512, help="episodes E (default 512)")
    p.add_argument("--steps", type=int, default=16,
                   help="most steps per episode; lengths are random in 1..steps (default 16)")
    p.add_argument("--group", type=int, default=8, help="episodes per group (default 8)")
    p.add_argument("--tokens", type=int, default=32,
                   help="padded response length L of a step row (default 32)")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="sweep EPISODESxSTEPS[,...] (e.g. 256x16,512x16,1024x16) instead of "
                   "--episodes/--steps")
    p.add_argument("--gamma", type=float, default=0.95, help="discount of the step returns (default 0.95)")
    p.add_argument("--epsilon", type=float, default=1e-6, help="added to the std (default 1e-6)")
    p.add_argument("--mode", choices=("both", *MODES), default="both",
                   help="verl-agent's mode: mean_norm, mean_std_norm or both (default both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs, best is reported (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's own default); numpy is single-threaded")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)

    if args.verl_agent is None:
        p.error(f"--verl-agent DIR is required.\n{HOWTO}")
    small = [f"--{k} ({v})" for k, v in vars(args).items()
             if k in ("episodes", "steps", "group", "tokens", "repeats") and v < 1]
    if small:
        p.error(f"{', '.join(small)} must be at least 1")
    sizes = args.sizes or [(args.episodes, args.steps)]
    if any(episodes % args.group for episodes, _ in sizes):
        p.error(f"the episode counts ({', '.join(str(e) for e, _ in sizes)}) must be multiples of "
                f"--group ({args.group})")
    root = args.verl_agent.expanduser()
    if not (root / CORE).is_file():
        p.error(f"{root / CORE} not found: DIR must be a verl-agent checkout.\n{HOWTO}")
    try:
        import torch
        import verl

        core = load_core_gigpo(root)
    except ImportError as exc:
        p.error(f"loading {root / CORE} needs verl and torch ({exc}).\n{HOWTO}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    modes = list(MODES) if args.mode == "both" else [args.mode]
    warm = make_batch(2 * args.group, 4, args.group, 4, args.seed)
    for mode in modes:  # untimed warm-up of both sides
        verl_agent_run(core, warm, mode, args.gamma, args.epsilon)()
        sc_run(warm, sc_params(mode, args.gamma, args.epsilon))()

    rows: list[Row] = []
    for episodes, steps in sizes:
        b = make_batch(episodes, steps, args.group, args.tokens, args.seed)
        rows.extend(compare(core, b, steps, mode, args) for mode in modes)

    print_report(args, rows, machine_info(torch, verl, root))
    return 0 if all(row.agree for row in rows) else 1


def print_report(args: argparse.Namespace, rows: list[Row], info: list[tuple[str, str]]) -> None:
    header = ["episodes", "steps (max)", "rows", "mode", "verl-agent ms", "stepcredit ms",
              "stepcredit estimate-only ms", "ratio (verl-agent/stepcredit)", "max abs diff",
              "diff / bound", "tied rows (max diff)", "agree"]
    body = [[f"{r.episodes:,}", str(r.steps), f"{r.rows:,}", r.mode, f"{r.va_ms:.1f}", f"{r.sc_ms:.2f}",
             f"{r.sc_est_ms:.2f}", f"{r.va_ms / r.sc_ms:.0f}x", f"{r.diff:.1e}", f"{r.worst:.3f}",
             f"{r.tied_rows} ({r.tied_diff:.1e})", "yes" if r.agree else "NO"] for r in rows]
    setup = (f"groups of {args.group}, {args.tokens} tokens per row, gamma {args.gamma:g}, epsilon "
             f"{args.epsilon:g}, seed {args.seed}, best of {args.repeats}; bound {BOUND_ULPS} float32 "
             "ulps of the group's largest value / the group's divisor")
    numeric = range(4, 10)
    if args.markdown:
        for k, v in info:
            print(f"- {k}: {v}")
        print(f"- batch: {setup}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" if i in numeric or i < 3 else "---" for i in range(len(header))) + "|")
        for line in body:
            print("| " + " | ".join(line) + " |")
    else:
        for k, v in info:
            print(f"{k:11s}{v}")
        print(f"{'batch':11s}{setup}\n")
        widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        print("  ".join("-" * w for w in widths))
        for line in body:
            print("  ".join(c.rjust(w) if i in numeric or i < 3 else c.ljust(w)
                            for i, (c, w) in enumerate(zip(line, widths))))
    bad = [f"{r.episodes}x{r.steps} {r.mode}" for r in rows if not r.agree]
    print("\nall agree" if not bad else "\nDISAGREE: " + "; ".join(bad))


if __name__ == "__main__":
    sys.exit(main())
