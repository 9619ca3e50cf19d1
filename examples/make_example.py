"""Generate the example rollout file ``examples/rollouts.jsonl``.

The rollouts come from a tiny combination-lock task, the kind of task where step-level credit
matters: a lock has ``N_DIGITS`` positions, each opened by one of ``N_CHOICES`` buttons. Pressing
the right button advances the lock by one position; a wrong button resets it to the start. The
episode succeeds (outcome 1.0) if the lock opens within ``MAX_STEPS`` presses, else it fails
(outcome 0.0). There is no reward before the end.

Each *group* is one lock (one secret code) and holds ``EPISODES_PER_GROUP`` episodes of the same
noisy policy, so the same states ("lock 3/4: position 0", ...) recur across the episodes of a
group: anchor states for GiGPO-style methods. Every step also carries:

* ``process``: a noisy process-reward-model score of the step (high when the press was right);
* ``value``: a Monte-Carlo style estimate of the chance of opening the lock from that state;
* ``tokens``: the number of tokens of the action text;
* ``node``: the id of the shared prefix (the actions taken so far), as tree rollouts have;
* ``p_answer``: the policy's probability of the whole code given what it has seen before the
  step: each digit it has not yet confirmed is a 1-in-``N_CHOICES`` guess (information gain);
* ``grounding``: 0 when the press changed nothing (a wrong button at position 0), else 1;
* ``importance``: 1 for a press that confirms a digit not confirmed before, else 0.25.

Run it from the repository root (it only needs the standard library)::

    python examples/make_example.py            # writes examples/rollouts.jsonl
    python examples/make_example.py --groups 100 --out /tmp/big.jsonl
"""

from __future__ import annotations

import argparse
import json
import random

N_DIGITS = 4
N_CHOICES = 3
MAX_STEPS = 10
EPISODES_PER_GROUP = 8
P_RIGHT = 0.7  # the policy presses the right button with this probability


def run_episode(code: list[int], rng: random.Random) -> tuple[float, list[dict]]:
    """Play one episode against the lock ``code``; return the outcome and the steps."""
    position, steps, pressed, confirmed = 0, [], [], 0
    for _ in range(MAX_STEPS):
        right = code[position]
        if rng.random() < P_RIGHT:
            button = right
        else:
            button = rng.choice([b for b in range(N_CHOICES) if b != right])
        thought = rng.randint(3, 12)  # length of the reasoning before the action
        correct = button == right
        steps.append(
            {
                "state": f"lock position {position}/{N_DIGITS}",
                "action": f"press {button}",
                "reward": 0.0,
                # PRM score: informative but noisy, rounded like a real model's output
                "process": round(min(1.0, max(0.0, (0.8 if correct else 0.25) + rng.gauss(0, 0.1))), 3),
                # chance that P_RIGHT-policy presses the remaining digits right in a row
                "value": round(P_RIGHT ** (N_DIGITS - position), 4),
                "tokens": thought + 2,
                "node": "/".join(map(str, pressed + [button])),
                "p_answer": round((1 / N_CHOICES) ** (N_DIGITS - confirmed), 6),
                "grounding": 0.0 if (not correct and position == 0) else 1.0,
                "importance": 1.0 if (correct and position == confirmed) else 0.25,
            }
        )
        pressed.append(button)
        position = position + 1 if correct else 0
        confirmed = max(confirmed, position)
        if position == N_DIGITS:
            return 1.0, steps
    return 0.0, steps


def make(groups: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for g in range(groups):
        code = [rng.randrange(N_CHOICES) for _ in range(N_DIGITS)]
        for e in range(EPISODES_PER_GROUP):
            outcome, steps = run_episode(code, rng)
            records.append(
                {
                    "episode_id": f"lock{g}-ep{e}",
                    "group_id": f"lock{g}",
                    "outcome": outcome,
                    "steps": steps,
                    "meta": {"task": "combination lock", "code_length": N_DIGITS, "seed": seed},
                }
            )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4, help="number of locks (groups)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="examples/rollouts.jsonl")
    args = parser.parse_args()
    records = make(args.groups, args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    n_steps = sum(len(r["steps"]) for r in records)
    wins = sum(r["outcome"] for r in records)
    print(f"wrote {args.out}: {args.groups} groups, {len(records)} episodes, {n_steps} steps, {wins:.0f} successes")


if __name__ == "__main__":
    main()
