"""``arith_chain``: multi-step arithmetic where every step states an intermediate result.

The task seed draws a start number and a chain of K operations (K = ``length``), each "add n",
"subtract n" or "multiply by n" (n in 1..``max_number``, multipliers in 2..``max_number``), and
asks for the result, e.g. "Start at 7, add 5, multiply by 3, subtract 4." At step t (1-based)
the agent states the value after operation t as a number (the action text, e.g. ``"36"``). The
true intermediate values are v_0 = start, v_t = op_t(v_{t−1}); the agent's values are
a_0 = start and a_t = its t-th stated number.

**The episode always runs to the end of the chain**: a wrong step is not corrected, the next
operation applies to the agent's own (wrong) value, so an early error propagates to the final
answer, as in chain-of-thought arithmetic. After the K-th number the episode ends
(``terminated``) with outcome 1 iff a_K = v_K, else 0; every other step gives reward 0.

Step labels (the process labels a PRM is trained on), in ``info`` after every step:

* ``"step_correct"``: a_t = v_t, the stated number equals the **true** intermediate value. After
  a first error, later steps are correct only if they return to the true value, which takes a
  number that is not among the candidates (any integer is a valid statement; a "right answer,
  wrong process" episode then has outcome 1 and a first error).
* ``"step_consistent"``: a_t = op_t(a_{t−1}), the operation applied correctly to the agent's
  own previous value (a local check: the steps after a first error can be consistent).
* ``"true_value"``: v_t.

* ``"process"``: the oracle process score (a stand-in for a PRM), ``float(step_correct)``; with
  ``prm_noise`` = q > 0 it is flipped (1 − p) on a fixed fraction q of (task seed, state,
  action) triples, the same ones every time: a PRM that makes consistent mistakes
  (``stepcredit.envs.base.oracle_process``). It never changes anything else.

On the last step ``info["first_error"]`` is the 0-based index, among the episode's steps (the
rollout's step index), of the first step with ``step_correct`` False, or −1 when there is none.

Actions: any text that parses as an integer (``int(text)``, surrounding spaces allowed) is a
stated result; anything else is an invalid no-op (``info["valid"] = False``, ``step_correct``
False, the operation is not consumed) that still costs one step of ``max_steps``, after which
the episode is cut (``truncated``, outcome 0). ``valid_actions()`` is a small sorted set of
``n_candidates`` numbers drawn deterministically from the state: the right result
op_t(a_{t−1}) of the operation on the value so far (= v_t on track, when a_{t−1} = v_{t−1})
and plausible slips (off by one or ten, the wrong operation, the operation forgotten, small
offsets). Off track (a_{t−1} ≠ v_{t−1}), v_t is never a candidate, so a policy that picks
candidates succeeds only by getting every step right: a random one with c candidates succeeds
with probability c^−K.

Observation (and ``info["state"]``, which has no history): the question, then
``"Step t/K: the value so far is a_{t−1}; <operation t> gives ?"``.

Why step credit matters here: the outcome rewards the whole chain, but the chain fails at one
step (its first error); states "step t with value a" recur across a group, so an anchor-state
estimator can compare the numbers stated from the same value, and a PRM trained on
``step_correct`` can score each step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, check_prm_noise, oracle_process, register_env

__all__ = ["ArithChain", "arith_chain"]

_OPS = ("add", "subtract", "multiply")


def _apply(op: str, n: int, value: int) -> int:
    """op(value) for one operation of the chain."""
    if op == "add":
        return value + n
    if op == "subtract":
        return value - n
    return value * n


def _op_text(op: str, n: int) -> str:
    return f"multiply by {n}" if op == "multiply" else f"{op} {n}"


def _seed_word(value: int) -> int:
    """A non-negative integer for SeedSequence from a signed one (zigzag encoding)."""
    return 2 * value if value >= 0 else -2 * value - 1


class ArithChain:
    """The environment (see the module docstring)."""

    def __init__(self, length: int, max_number: int, n_candidates: int, max_steps: int, prm_noise: float = 0.0):
        self.length, self.max_number, self.n_candidates, self.max_steps = length, max_number, n_candidates, max_steps
        self.prm_noise = prm_noise
        self._seed: int | None = None
        self.question = ""
        self._ops: list[tuple[str, int]] = []
        self._true: list[int] = []  # v_0..v_K
        self._salt = 0
        self._t = 0  # operations done
        self._value = 0  # a_t
        self._steps = 0  # env steps taken
        self._first_error = -1
        self._candidates: list[str] = []
        self._done = True

    def _obs(self) -> str:
        op, n = self._ops[self._t]
        return f"{self.question}\nStep {self._t + 1}/{self.length}: the value so far is {self._value}; {_op_text(op, n)} gives ?"

    def _final_obs(self) -> str:
        return f"{self.question}\nFinal answer: {self._value}"

    def _draw_candidates(self) -> list[str]:
        """n_candidates numbers holding op_t(a_{t−1}), a function of (task, t, a_{t−1})."""
        op, n = self._ops[self._t]
        prev = self._value
        consistent = _apply(op, n, prev)
        rng = np.random.default_rng([self._salt, self._t, _seed_word(prev)])
        slips = [consistent + 1, consistent - 1, prev, consistent + 10, consistent - 10]
        slips += [_apply(o, n, prev) for o in _OPS if o != op]
        # off track, the true value v_t is never a candidate (op_t is injective, so op_t(a_{t−1}) ≠ v_t
        # there): a policy that picks candidates cannot undo an error by a cancelling slip
        banned = {consistent} if prev == self._true[self._t] else {consistent, self._true[self._t + 1]}
        chosen = [consistent]
        for k in rng.permutation(len(slips)):
            if len(chosen) >= self.n_candidates:
                break
            if slips[k] not in banned:
                chosen.append(slips[k])
                banned.add(slips[k])
        spread = max(3, n)
        while len(chosen) < self.n_candidates:
            c = consistent + int(rng.integers(-spread, spread + 1))
            if c not in banned:
                chosen.append(c)
                banned.add(c)
            spread += 1
        return [str(c) for c in sorted(chosen)]

    @property
    def task(self) -> tuple[int, tuple[tuple[str, int], ...]]:
        """(start, ((op, n), ...)) of the current task; ``reset(options={"start": ..., "ops": ...})``
        plays an explicit one."""
        return self._true[0] if self._true else 0, tuple(self._ops)

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        rng = np.random.default_rng(seed)
        self._seed = seed
        start = int(rng.integers(1, self.max_number + 1))
        self._ops = []
        for _ in range(self.length):
            op = _OPS[int(rng.integers(len(_OPS)))]
            low = 2 if op == "multiply" else 1
            self._ops.append((op, int(rng.integers(low, max(low, self.max_number) + 1))))
        self._salt = int(rng.integers(2**62))
        if options and ("start" in options or "ops" in options):  # an explicit task (contrast sets)
            start = int(options.get("start", start))
            ops = [(str(op), int(n)) for op, n in options.get("ops", self._ops)]
            if len(ops) != self.length or any(op not in _OPS for op, _ in ops):
                raise EnvError(f"environment 'arith_chain': options['ops'] must be {self.length} (op, n) pairs with op in {_OPS}")
            self._ops = ops
        self._true = [start]
        for op, n in self._ops:
            self._true.append(_apply(op, n, self._true[-1]))
        self.question = "Start at " + ", ".join([str(start)] + [_op_text(op, n) for op, n in self._ops]) + "."
        self._t, self._value, self._steps, self._first_error, self._done = 0, start, 0, -1, False
        self._candidates = self._draw_candidates()
        obs = self._obs()
        return obs, {"state": obs}

    def valid_actions(self) -> list[str]:
        return list(self._candidates)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        try:
            stated: int | None = int(action.strip()) if isinstance(action, str) else None
        except ValueError:
            stated = None
        info: dict[str, Any] = {"valid": stated is not None, "true_value": self._true[self._t + 1]}
        if stated is None:
            info["step_correct"] = info["step_consistent"] = False
        else:
            op, n = self._ops[self._t]
            info["step_correct"] = stated == self._true[self._t + 1]
            info["step_consistent"] = stated == _apply(op, n, self._value)
        process = float(info["step_correct"])
        if self.prm_noise:  # keyed by the state the number is stated in (before it advances)
            process = oracle_process(process, self.prm_noise, self._seed, self._obs(), action)
        info["process"] = process
        if stated is not None:
            self._t, self._value = self._t + 1, stated
        if not info["step_correct"] and self._first_error < 0:
            self._first_error = self._steps
        self._steps += 1
        finished = self._t == self.length
        truncated = not finished and self._steps >= self.max_steps
        self._done = finished or truncated
        success = finished and self._value == self._true[-1]
        if finished:
            obs = self._final_obs()
        else:
            if info["valid"]:
                self._candidates = self._draw_candidates()
            obs = self._obs()
        info["state"] = obs
        if self._done:
            info["success"] = success
            info["first_error"] = self._first_error
        return obs, 1.0 if success else 0.0, finished, truncated, info


@register_env()
def arith_chain(
    *, length: int = 4, max_number: int = 9, n_candidates: int = 4, max_steps: int = 0, prm_noise: float = 0.0
) -> ArithChain:
    """Multi-step arithmetic: state each intermediate result of a chain of operations.

    Args:
        length: K, the number of operations (= steps of a clean episode; difficulty knob), >= 1.
        max_number: the start number and operands are drawn from 1..max_number (multipliers
            from 2..max_number), >= 2.
        n_candidates: the number of candidate results in ``valid_actions()``, >= 2.
        max_steps: the step limit (invalid actions use it up), >= length; 0 = 2·K.
        prm_noise: the fraction of steps whose oracle process score ``info["process"]`` is
            flipped, in [0, 0.5]; a deterministic function of (task seed, state, action).
    """
    if length < 1 or max_number < 2 or n_candidates < 2 or max_steps < 0 or 0 < max_steps < length:
        raise EnvError(
            f"environment 'arith_chain': length={length} must be >= 1, max_number={max_number} >= 2, "
            f"n_candidates={n_candidates} >= 2, max_steps={max_steps} 0 (= 2·length) or >= length"
        )
    check_prm_noise("arith_chain", prm_noise)
    return ArithChain(length, max_number, n_candidates, max_steps or 2 * length, prm_noise)
