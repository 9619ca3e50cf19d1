"""Rollout throughput per policy: environment steps per second of collection and of training.

Run from the repository root (one core, one torch thread):

    taskset -c 0 .venv/bin/python benchmarks/rollout_throughput.py --markdown

For each environment (``lock_chain`` length 4 and ``keydoor``, default knobs) and each policy
(``tabular``, ``mlp``, ``gru``, ``lm``; the torch ones skipped with the reason when torch or
transformers is missing) it measures, in one process:

* **env alone** (the baseline): the environments stepped with uniformly random valid actions,
  no policy, no recording: 64 episodes per batch, as many batches as fit in ``--seconds``;
* **collect**: ``stepcredit.train.collect`` with the policy (64 episodes = 8 tasks × G = 8),
  initial parameters, repeated for ``--seconds``: env steps / s, and the ratio to env alone;
* **train**: ``stepcredit.train.train`` with GRPO and the default config for that policy, for
  ``--iterations`` iterations (rollouts, credit, 4 PPO epochs, metrics; no checkpoint until the
  end): sampled env steps / training wall time.

The numbers depend on the state of the policy (episode lengths change as it learns): "collect"
uses the initial policy, "train" the first iterations of a run. Wall-clock seconds from
``time.perf_counter``; torch runs with ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import _bench  # noqa: F401,I001  (single-threaded NumPy / Arrow before they load)

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _bench import log, machine_line, render  # noqa: E402
from stepcredit.envs import make_env  # noqa: E402
from stepcredit.train import TrainConfig, collect, train  # noqa: E402

ENVS = {"lock_chain": {"length": 4}, "keydoor": {}}
POLICIES = ("tabular", "mlp", "gru", "lm")
EPISODES = 64


def env_alone(name: str, kw: dict, seconds: float) -> float:
    """Steps/s of the environments with random valid actions (the baseline)."""
    rng = np.random.default_rng(0)
    envs = [make_env(name, **kw) for _ in range(EPISODES)]
    steps, t0, task = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for e in envs:
            e.reset(seed=task % 8)
            done = False
            while not done:
                acts = e.valid_actions()
                _, _, term, trunc, _ = e.step(acts[int(rng.integers(len(acts)))])
                done = term or trunc
                steps += 1
        task += 1
    return steps / (time.perf_counter() - t0)


def make_policy(kind: str):
    cfg = TrainConfig(policy=kind)  # the trainer's default sizes
    if kind == "tabular":
        from stepcredit.policies import TabularPolicy

        return TabularPolicy()
    if kind == "lm":
        from stepcredit.policies.lm_policy import LMPolicy

        return LMPolicy(hidden_size=cfg.hidden_size, seed=0)
    from stepcredit.policies.torch_policies import GRUPolicy, MLPPolicy

    return (MLPPolicy if kind == "mlp" else GRUPolicy)(feature_size=cfg.feature_size, hidden_size=cfg.hidden_size, seed=0)


def collect_rate(name: str, kw: dict, kind: str, seconds: float) -> float:
    policy = make_policy(kind)
    envs = [make_env(name, **kw) for _ in range(EPISODES)]
    rng = np.random.default_rng(0)
    steps, t0, it = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or it == 0:
        b = collect(envs, policy, list(range(8)), 8, rng, iteration=it)
        steps += b.n_sampled_steps
        it += 1
    return steps / (time.perf_counter() - t0)


def train_rate(name: str, kw: dict, kind: str, iterations: int) -> tuple[float, float]:
    cfg = TrainConfig(env=name, env_kwargs=kw, policy=kind, budget=iterations * EPISODES, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, d)
    steps = res.metrics[-1]["env_steps"]
    return steps / res.metrics[-1]["elapsed_s"], res.metrics[-1]["success_rate"]


def available(kind: str) -> str | None:
    if kind in ("mlp", "gru", "lm"):
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            return "torch is not installed"
    if kind == "lm":
        try:
            import transformers  # noqa: F401  (availability check)
        except ImportError:
            return "transformers is not installed"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per collection measurement (default 3)")
    ap.add_argument("--iterations", type=int, default=8, help="training iterations per measurement (default 8)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    rows = []
    for name, kw in ENVS.items():
        base = env_alone(name, kw, args.seconds)
        log(f"{name}: env alone {base:,.0f} steps/s")
        rows.append([name, "(env alone, random actions)", f"{base:,.0f}", "1.00", "-", "-"])
        for kind in POLICIES:
            why = available(kind)
            if why:
                rows.append([name, kind, "skipped", "-", f"skipped: {why}", "-"])
                continue
            c = collect_rate(name, kw, kind, args.seconds)
            t, succ = train_rate(name, kw, kind, args.iterations)
            log(f"{name} {kind}: collect {c:,.0f}/s ({c / base:.3f}x env), train {t:,.0f}/s")
            rows.append([name, kind, f"{c:,.0f}", f"{c / base:.3f}", f"{t:,.0f}", f"{succ:.2f}"])
    cols = ["environment", "policy", "collect steps/s", "vs env alone", f"train steps/s ({args.iterations} iterations)",
            "success after"]
    print(machine_line("taskset" if "taskset" in " ".join(sys.argv) else "one process; torch 1 thread"))
    print(render(cols, rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
