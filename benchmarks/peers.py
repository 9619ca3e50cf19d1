"""Side-by-side benchmark: stepcredit against verl's advantage estimators.

Builds one synthetic PPO/GRPO batch the way verl sees it (padded ``[batch, T]`` tensors, a
numpy object array of ``uid`` strings as the group index), runs verl's estimators from
``verl.trainer.ppo.core_algos`` and the matching stepcredit estimator on the same input,
checks that the ``[batch, T]`` token advantages agree (max abs difference <= --tol, default
1e-5) and prints the times. The exit status is 1 when any pair disagrees.

Run it in a separate environment (verl pulls in ray, transformers, ...; pin torch, an
unpinned torch pulls several GB of CUDA wheels)::

    python -m venv /tmp/verlenv
    /tmp/verlenv/bin/pip install verl torch==2.13.0 -e .
    /tmp/verlenv/bin/python benchmarks/peers.py --markdown

The batch (``--responses`` x ``--tokens``, groups of ``--group`` consecutive responses):

* ``response_mask``: right padding, each row a random valid length in ``1..T``;
* ``token_level_rewards``: a 0/1 outcome on the last valid token, 0 elsewhere;
* ``values`` (GAE only): standard normal on valid tokens, 0 on padding;
* ``index``: ``uid`` strings (uuid4-like, as verl's trainer makes them), one per group.

How each verl estimator maps to stepcredit (each response is one episode):

=======================================================  ===========================================
verl (``core_algos``)                                    stepcredit
=======================================================  ===========================================
compute_grpo_outcome_advantage                           grpo, scale="group", epsilon=1e-6,
                                                         singleton="raw"
compute_grpo_vectorized_outcome_advantage                same
compute_grpo_outcome_advantage(norm_adv_by_std=False)    drgrpo, singleton="raw"
compute_rloo_outcome_advantage                           rloo, singleton="raw" (singleton: A = R)
compute_rloo_vectorized_outcome_advantage                rloo, singleton="zero" (singleton: A = 0)
compute_reinforce_plus_plus_baseline_outcome_advantage   reinforce_pp, weight="tokens", epsilon=1e-8
compute_gae_advantage_return                             gae, whiten=True, one step per valid token
=======================================================  ===========================================

For the outcome estimators an episode has a single step, outcome = ``token_level_rewards.sum(-1)``
and ``Credit.to_padded(response_mask)`` gives the ``[batch, T]`` array. For GAE every valid
token is a step whose reward is the token's reward (the outcome is already in
``token_level_rewards``, so the episode outcome is given as 0) and whose value is the token's
value; ``Credit.to_padded(mask, rows="tokens")`` puts the step advantages back onto the valid
tokens in row-major order.
verl's GAE whitens over the valid tokens but does not re-apply the mask, so its padded
positions hold ``-mean/std``; the trainer's loss masks them out, and this benchmark compares
the valid tokens only (``verl_advantages * response_mask``). GAE returns are compared too.

Timing: best of ``--repeats`` runs (``time.perf_counter``). The verl time starts from tensors.
The stepcredit "end to end" time starts from the same tensors and includes
``Rollouts.from_arrays``, the estimator, the expansion to ``[batch, T]`` and the conversion
back to a tensor of the input dtype (NumPy on zero-copy views of the tensors, so it does not
depend on torch's thread pool); "estimate only" is ``stepcredit.estimate`` alone, on Rollouts
built fresh (untimed) before each repeat. stepcredit runs single-threaded NumPy in float64;
verl runs torch on its own intra-op thread pool (``--threads N`` sets its size, ``--threads 1``
is a one-core comparison that is much steadier on a busy machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

try:
    import torch
    import verl
    from verl.trainer.ppo import core_algos
except ImportError as exc:  # pragma: no cover - depends on the optional environment
    sys.exit(
        f"benchmarks/peers.py needs verl and torch ({exc}).\n"
        "Install: python -m venv /tmp/verlenv && "
        "/tmp/verlenv/bin/pip install verl torch==2.13.0 -e ."
    )

try:
    import stepcredit as sc
except ImportError as exc:  # pragma: no cover
    sys.exit(f"benchmarks/peers.py needs stepcredit ({exc}); install it with pip install -e .")


# --------------------------------------------------------------------------- input batch
@dataclass
class Batch:
    token_level_rewards: torch.Tensor  # [B, T] float, outcome on the last valid token
    values: torch.Tensor  # [B, T] float, 0 on padding
    response_mask: torch.Tensor  # [B, T] int64 (as verl's attention-mask slice)
    index: np.ndarray  # [B] object array of uid strings


def make_batch(responses: int, tokens: int, group: int, seed: int, dtype: torch.dtype) -> Batch:
    if responses % group:
        raise SystemExit(f"--responses ({responses}) must be a multiple of --group ({group})")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, tokens + 1, size=responses)  # >= 1 valid token per row
    mask = np.arange(tokens)[None, :] < lengths[:, None]
    outcome = rng.integers(0, 2, size=responses).astype(np.float64)
    rewards = np.zeros((responses, tokens))
    rewards[np.arange(responses), lengths - 1] = outcome
    values = rng.standard_normal((responses, tokens)) * mask
    uids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(responses // group)]
    index = np.array([u for u in uids for _ in range(group)], dtype=object)
    return Batch(
        token_level_rewards=torch.from_numpy(rewards).to(dtype),
        values=torch.from_numpy(values).to(dtype),
        response_mask=torch.from_numpy(mask.astype(np.int64)),
        index=index,
    )


# --------------------------------------------------------------------------- stepcredit side
def sc_outcome_rollouts(b: Batch, with_tokens: bool = True) -> tuple[sc.Rollouts, np.ndarray]:
    """One single-step episode per response; tokens = the response's valid length.

    The outcome is ``token_level_rewards.sum(-1)`` in the tensors' dtype, as verl computes it.
    The glue is NumPy on zero-copy views of the tensors (single-threaded, like stepcredit).
    """
    mask = b.response_mask.numpy()
    E = mask.shape[0]
    ro = sc.Rollouts.from_arrays(
        outcome=b.token_level_rewards.numpy().sum(axis=-1).astype(np.float64),
        episode_offsets=np.arange(E + 1, dtype=np.int64),
        group_id=b.index,
        tokens=mask.sum(axis=-1) if with_tokens else None,  # only reinforce_pp weighs by tokens
    )
    return ro, mask


def sc_outcome(b: Batch, name: str, params: dict) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        ro, mask = sc_outcome_rollouts(b, with_tokens=params.get("weight") == "tokens")
        credit = sc.estimate(ro, name, **params)
        dtype = b.token_level_rewards.numpy().dtype
        return torch.from_numpy(credit.to_padded(mask, dtype=dtype))

    return run


def sc_gae_rollouts(b: Batch) -> tuple[sc.Rollouts, np.ndarray]:
    """One step per valid token (row-major order), reward and value of that token."""
    valid = b.response_mask.numpy() != 0
    E = valid.shape[0]
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=-1), out=offsets[1:])
    ro = sc.Rollouts.from_arrays(
        outcome=np.zeros(E),  # the outcome is already in token_level_rewards
        episode_offsets=offsets,
        group_id=b.index,
        reward=b.token_level_rewards.numpy()[valid].astype(np.float64),
        value=b.values.numpy()[valid].astype(np.float64),
    )
    return ro, valid


def sc_gae(b: Batch, params: dict) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        ro, valid = sc_gae_rollouts(b)
        credit = sc.estimate(ro, "gae", **params)
        dtype = b.token_level_rewards.numpy().dtype
        adv = credit.to_padded(valid, rows="tokens", dtype=dtype)
        ret = credit.to_padded(valid, rows="tokens", values="return", dtype=dtype)
        return torch.from_numpy(adv), torch.from_numpy(ret)

    return run


# --------------------------------------------------------------------------- timing
def best_of(fn: Callable[..., object], repeats: int,
            setup: Callable[[], object] | None = None) -> tuple[float, object]:
    """(best wall time in ms, result of the last run) of ``fn()``, or of ``fn(setup())`` with
    ``setup`` run untimed before each repeat (fresh inputs: no cached state is reused)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        arg = () if setup is None else (setup(),)
        t0 = time.perf_counter()
        out = fn(*arg)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@dataclass
class Row:
    estimator: str
    verl_variant: str
    verl_ms: float | None
    sc_ms: float | None
    sc_est_ms: float | None
    diff: float
    tol: float

    @property
    def agree(self) -> bool:
        return bool(self.diff <= self.tol)  # False for NaN too


# --------------------------------------------------------------------------- main
def machine_info() -> list[tuple[str, str]]:
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
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--responses", type=int, default=4096, help="batch size B (default 4096)")
    p.add_argument("--tokens", type=int, default=512, help="padded response length T (default 512)")
    p.add_argument("--group", type=int, default=8, help="responses per uid group (default 8)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs, best is reported (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the verl tensors (default float32, as in verl training)")
    p.add_argument("--gamma", type=float, default=1.0, help="GAE discount (both sides)")
    p.add_argument("--lam", type=float, default=0.95, help="GAE lambda (both sides)")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs difference to agree")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's own default); numpy is single-threaded")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    b = make_batch(args.responses, args.tokens, args.group, args.seed, getattr(torch, args.dtype))
    r, m, idx = b.token_level_rewards, b.response_mask, b.index
    gamma, lam = args.gamma, args.lam

    # (stepcredit name, verl function name, verl call, stepcredit params)
    outcome_cases = [
        ("grpo", "compute_grpo_outcome_advantage",
         lambda: core_algos.compute_grpo_outcome_advantage(r, m, idx, epsilon=1e-6),
         {"scale": "group", "epsilon": 1e-6, "singleton": "raw"}),
        ("grpo", "compute_grpo_vectorized_outcome_advantage",
         lambda: core_algos.compute_grpo_vectorized_outcome_advantage(r, m, idx, epsilon=1e-6),
         {"scale": "group", "epsilon": 1e-6, "singleton": "raw"}),
        ("drgrpo", "compute_grpo_outcome_advantage(norm_adv_by_std_in_grpo=False)",
         lambda: core_algos.compute_grpo_outcome_advantage(r, m, idx, norm_adv_by_std_in_grpo=False),
         {"singleton": "raw"}),
        ("rloo", "compute_rloo_outcome_advantage",
         lambda: core_algos.compute_rloo_outcome_advantage(r, m, idx),
         {"singleton": "raw"}),
        ("rloo", "compute_rloo_vectorized_outcome_advantage",
         lambda: core_algos.compute_rloo_vectorized_outcome_advantage(r, m, idx),
         {"singleton": "zero"}),
        ("reinforce_pp", "compute_reinforce_plus_plus_baseline_outcome_advantage",
         lambda: core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(r, m, idx),
         {"weight": "tokens", "epsilon": 1e-8, "singleton": "raw"}),
    ]

    rows: list[Row] = []
    for name, variant, verl_call, params in outcome_cases:
        verl_ms, (verl_adv, _) = best_of(verl_call, args.repeats)
        sc_ms, sc_adv = best_of(sc_outcome(b, name, params), args.repeats)
        est_ms, _ = best_of(lambda ro: sc.estimate(ro, name, **params), args.repeats,
                            setup=lambda: sc_outcome_rollouts(b)[0])
        rows.append(Row(name, variant, verl_ms, sc_ms, est_ms, max_abs_diff(verl_adv, sc_adv), args.tol))

    gae_params = {"gamma": gamma, "lam": lam, "whiten": True}
    verl_ms, (verl_adv, verl_ret) = best_of(
        lambda: core_algos.compute_gae_advantage_return(r, b.values, m, gamma=gamma, lam=lam),
        args.repeats,
    )
    sc_ms, (sc_adv, sc_ret) = best_of(sc_gae(b, gae_params), args.repeats)
    est_ms, _ = best_of(lambda ro: sc.estimate(ro, "gae", **gae_params), args.repeats,
                        setup=lambda: sc_gae_rollouts(b)[0])
    rows.append(Row("gae", f"compute_gae_advantage_return(gamma={gamma:g}, lam={lam:g}) advantages",
                    verl_ms, sc_ms, est_ms, max_abs_diff(verl_adv * m, sc_adv), args.tol))
    rows.append(Row("gae", "compute_gae_advantage_return returns (same call)",
                    None, None, None, max_abs_diff(verl_ret * m, sc_ret), args.tol))

    print_report(args, rows)
    return 0 if all(row.agree for row in rows) else 1


def print_report(args: argparse.Namespace, rows: list[Row]) -> None:
    def ms(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    def ratio(row: Row) -> str:
        return "" if row.verl_ms is None else f"{row.verl_ms / row.sc_ms:.1f}x"

    header = ["estimator", "verl variant", "verl ms", "stepcredit ms", "stepcredit estimate-only ms",
              "ratio (verl/stepcredit)", "max abs diff", "agree"]
    body = [[row.estimator, row.verl_variant, ms(row.verl_ms), ms(row.sc_ms), ms(row.sc_est_ms),
             ratio(row), f"{row.diff:.1e}", "yes" if row.agree else "NO"] for row in rows]
    setup = (f"{args.responses} responses x {args.tokens} tokens, groups of {args.group}, "
             f"{args.dtype} tensors, seed {args.seed}, best of {args.repeats}, tolerance {args.tol:g}")
    info = machine_info()
    if args.markdown:
        for k, v in info:
            print(f"- {k}: {v}")
        print(f"- batch: {setup}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---:" if i >= 2 and i <= 6 else "---" for i in range(len(header))) + "|")
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
            print("  ".join(c.rjust(w) if 2 <= i <= 6 else c.ljust(w)
                            for i, (c, w) in enumerate(zip(line, widths))))
    bad = [f"{row.estimator} ({row.verl_variant})" for row in rows if not row.agree]
    print("\nall agree" if not bad else "\nDISAGREE: " + "; ".join(bad))


if __name__ == "__main__":
    sys.exit(main())
