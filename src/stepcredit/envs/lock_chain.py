"""``lock_chain``: a combination lock where one wrong press sends the agent back to the start.

The lock has N positions; position i opens with one digit c_i of {0..K−1}, the combination
(c_0..c_{N−1}) drawn from the task seed. At position i the agent presses a digit: the right one
advances to i + 1, a wrong one sends it back to position 0. Reaching position N opens the lock:
the episode ends with outcome 1 (``terminated``). After ``max_steps`` presses without opening,
it is cut with outcome 0 (``truncated``). Every other step gives 0.

Why step credit matters here: the outcome says only whether the whole sequence worked. The
states "position i" recur across the episodes of a group and within an episode (after a reset),
so the steps taken at position i by different episodes can be compared directly (GiGPO's anchor
states), which tells which press was right at each position; an outcome-only estimator has to
find that out from whole-episode successes, which are rare at the start.

Observation: ``"lock position i/N"``; actions: ``"press d"`` for d in 0..K−1 (anything else is
an invalid no-op, ``info["valid"] = False``, that still costs a step).

Oracle process score (a stand-in for a PRM), ``info["process"]`` on every step: 1.0 when the
press was the right digit c_i for the position it was made at, else 0.0 (a wrong digit or an
invalid action). With ``prm_noise`` = q > 0 the score is flipped (1 − p) on a fixed fraction q
of (task seed, state, action) triples, the same ones every time: a PRM that makes consistent
mistakes (``stepcredit.envs.base.oracle_process``). The score never changes the observations,
rewards or states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, check_prm_noise, oracle_process, register_env

__all__ = ["LockChain", "lock_chain"]


class LockChain:
    """The environment (see the module docstring)."""

    def __init__(self, length: int, n_actions: int, max_steps: int, prm_noise: float = 0.0):
        self.length, self.n_actions, self.max_steps, self.prm_noise = length, n_actions, max_steps, prm_noise
        self._seed: int | None = None
        self._actions = [f"press {d}" for d in range(n_actions)]
        self._combination = np.zeros(length, dtype=np.int64)
        self._pos = 0
        self._t = 0
        self._done = True

    def _obs(self) -> str:
        return f"lock position {self._pos}/{self.length}"

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        rng = np.random.default_rng(seed)
        self._seed = seed
        self._combination = rng.integers(0, self.n_actions, size=self.length)
        self._pos, self._t, self._done = 0, 0, False
        return self._obs(), {"state": self._obs()}

    def valid_actions(self) -> list[str]:
        return list(self._actions)

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        valid = action in self._actions
        right = valid and int(action.split()[1]) == self._combination[self._pos]
        process = 1.0 if right else 0.0
        if self.prm_noise:  # the key of the state the press is made in (before it moves the lock)
            process = oracle_process(process, self.prm_noise, self._seed, self._obs(), action)
        if valid:
            self._pos = self._pos + 1 if right else 0
        opened = self._pos == self.length
        truncated = not opened and self._t >= self.max_steps
        self._done = opened or truncated
        info: dict[str, Any] = {"state": self._obs(), "valid": valid, "process": process}
        if self._done:
            info["success"] = opened
        return self._obs(), 1.0 if opened else 0.0, opened, truncated, info


@register_env()
def lock_chain(*, length: int = 4, n_actions: int = 3, max_steps: int = 0, prm_noise: float = 0.0) -> LockChain:
    """Combination lock of ``length`` positions; a wrong press sends the agent back to the start.

    Args:
        length: N, the number of positions (difficulty knob), >= 1.
        n_actions: K, the digits per position, >= 2.
        max_steps: the step limit; 0 = 4·N.
        prm_noise: the fraction of steps whose oracle process score ``info["process"]`` is
            flipped, in [0, 0.5]; a deterministic function of (task seed, state, action).
    """
    if length < 1 or n_actions < 2 or max_steps < 0:
        raise EnvError(f"environment 'lock_chain': length={length} must be >= 1, n_actions={n_actions} >= 2, max_steps={max_steps} >= 0")
    check_prm_noise("lock_chain", prm_noise)
    return LockChain(length, n_actions, max_steps or 4 * length, prm_noise)
