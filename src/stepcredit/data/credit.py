"""``Credit``: the result of an estimator, and its expansion to tokens for trainers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stepcredit.data.schema import _readonly

__all__ = ["Credit"]


def _check_per_row(found: np.ndarray, counts: np.ndarray, what: str, rule: str) -> None:
    """Raise naming the first mask row whose count of ``what`` differs from its episode's steps."""
    bad = found != counts
    if bad.any():
        e = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"row {e} of response_mask has {int(found[e])} {what} but episode {e} has "
            f"{int(counts[e])} steps: {rule}"
        )


@dataclass(frozen=True, eq=False)
class Credit:
    """Per-step and per-episode advantages produced by an estimator.

    Attributes:
        step_advantage: [S] advantage of every step.
        episode_advantage: [E] one advantage per episode (for outcome estimators every step of
            the episode has this value; step-level estimators say in their docstring what it is).
        episode_offsets: [E+1] the CSR offsets of the rollouts the credit was computed on.
        step_return: [S] return targets where the estimator defines them (GAE: A + V), or None.
        step_reward: [S] the per-step rewards the estimator used, or None.
        estimator: registry name of the estimator.
        params: every parameter value used, defaults included.
        diagnostics: estimator-specific counts (e.g. singleton groups found).
        episode_weight: [E] loss weight of every episode set by credit filters (0 = dropped:
            no gradient; the advantages of a dropped episode are 0), or None (every episode 1).
    """

    step_advantage: np.ndarray
    episode_advantage: np.ndarray
    episode_offsets: np.ndarray
    step_return: np.ndarray | None = None
    step_reward: np.ndarray | None = None
    estimator: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    episode_weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.step_advantage is None or self.episode_advantage is None:
            raise ValueError("Credit needs step_advantage [S] and episode_advantage [E]")
        for name in ("step_advantage", "episode_advantage", "step_return", "step_reward", "episode_weight"):
            a = getattr(self, name)
            set_(self, name, None if a is None else _readonly(a, np.float64))
        off = np.ascontiguousarray(self.episode_offsets, dtype=np.int64)
        if off.ndim != 1 or off.shape[0] < 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise ValueError("episode_offsets must be [E+1] non-decreasing offsets starting at 0")
        set_(self, "episode_offsets", off)
        E, S = off.shape[0] - 1, int(off[-1])
        if self.episode_advantage.shape != (E,):
            raise ValueError(f"episode_advantage must have shape [E]=({E},)")
        w = self.episode_weight
        if w is not None and (w.shape != (E,) or not np.all(np.isfinite(w)) or np.any(w < 0)):
            raise ValueError(f"episode_weight must have shape [E]=({E},) with finite values >= 0")
        for name in ("step_advantage", "step_return", "step_reward"):
            a = getattr(self, name)
            if a is not None and a.shape != (S,):
                raise ValueError(f"{name} must have shape [S]=({S},)")
        set_(self, "params", dict(self.params))
        set_(self, "diagnostics", dict(self.diagnostics))

    @property
    def n_episodes(self) -> int:
        return int(self.episode_offsets.shape[0] - 1)

    @property
    def n_steps(self) -> int:
        return int(self.episode_offsets[-1])

    def to_tokens(self, token_counts: np.ndarray) -> np.ndarray:
        """Expand step advantages to a flat token array.

        Args:
            token_counts: [S] non-negative number of tokens of each step (e.g. the rollouts'
                ``tokens`` column).

        Returns:
            [K] float64 with K = sum(token_counts): step s's advantage repeated
            ``token_counts[s]`` times, steps in order.
        """
        counts = np.asarray(token_counts)
        if counts.shape != (self.n_steps,):
            raise ValueError(
                f"token_counts must have one entry per step: shape ({self.n_steps},), got {counts.shape}"
            )
        if counts.dtype.kind not in "iu" or (counts.size and counts.min() < 0):
            raise ValueError("token_counts must be non-negative integers")
        return np.repeat(self.step_advantage, counts)

    def to_padded(
        self,
        response_mask: np.ndarray,
        rows: Literal["auto", "steps", "episodes", "tokens"] = "auto",
        values: Literal["advantage", "return"] = "advantage",
        dtype: np.dtype | type = np.float64,
    ) -> np.ndarray:
        """Expand step advantages to a padded ``[batch, T]`` array, 0 where the mask is 0.

        Three layouts are supported:

        * ``rows="steps"``: one row per step (B = S), as agent trainers that train on each turn
          separately use; every valid token of row s gets step s's value.
        * ``rows="episodes"``: one row per episode (B = E) holding a multi-turn response in
          which observation/tool tokens are masked out; the contiguous runs of 1s of row e are
          its steps in order, so row e must have exactly as many runs as episode e has steps.
        * ``rows="tokens"``: one row per episode in which every valid token is one step (token-
          level estimators such as per-token GAE); row e must have as many valid tokens as
          episode e has steps. Never chosen by ``"auto"``.

        ``"auto"`` picks ``steps`` when B = S and ``episodes`` when B = E (B = S = E, single-
        step episodes, uses ``steps``).

        Args:
            response_mask: [B, T] mask of the generated tokens, bool or 0/1 numbers (with
                ``rows="steps"`` it multiplies the values, so it must hold only 0 and 1).
            rows: the layout, see above.
            values: ``"advantage"`` (default) or ``"return"`` (needs ``step_return``).
            dtype: of the result (e.g. ``np.float32`` to hand to a trainer without a copy).

        Returns:
            [B, T] array of ``dtype``.
        """
        mask = np.asarray(response_mask)
        if mask.ndim != 2:
            raise ValueError(f"response_mask must be 2-D [batch, T], got shape {mask.shape}")
        src = self.step_advantage if values == "advantage" else self.step_return
        if src is None:
            raise ValueError(f"this credit ({self.estimator}) has no step_return")
        B = mask.shape[0]
        E, S = self.n_episodes, self.n_steps
        if rows == "auto":
            rows = "steps" if B == S else "episodes" if B == E else "auto"
            if rows == "auto":
                raise ValueError(
                    f"response_mask has {B} rows, but the credit has {S} steps and {E} episodes: "
                    "give one row per step or one row per episode"
                )
        if rows == "steps":
            if B != S:
                raise ValueError(f"rows='steps' needs one mask row per step ({S}), got {B}")
            # the 0/1 mask cast to the output type, times the values (as verl does): two streaming
            # passes; copyto(where=mask) branches per element and was 20x slower on a random mask
            out = mask.astype(dtype)
            out *= src.astype(dtype, copy=False)[:, None]
            return out
        mask = mask.astype(bool, copy=False)
        out = np.zeros(mask.shape, dtype=dtype)
        if B != E:
            raise ValueError(f"rows='{rows}' needs one mask row per episode ({E}), got {B}")
        counts = np.diff(self.episode_offsets)
        if rows == "tokens":
            _check_per_row(mask.sum(axis=1), counts, "valid tokens", "with rows='tokens' each valid token is one step")
            out[mask] = src  # row-major order of the valid tokens = step order
            return out
        starts = mask.copy()
        starts[:, 1:] &= ~mask[:, :-1]
        run_no = np.cumsum(starts, axis=1)
        n_runs = run_no[:, -1] if mask.shape[1] else np.zeros(B, dtype=np.int64)
        _check_per_row(n_runs, counts, "runs of response tokens", "each step must be one contiguous run")
        step_of_token = self.episode_offsets[:-1, None] + run_no - 1
        out[mask] = src[step_of_token[mask]]
        return out

    @property
    def step_weight(self) -> np.ndarray | None:
        """[S] the episode weight repeated over each episode's steps, or None (all 1)."""
        if self.episode_weight is None:
            return None
        return np.repeat(self.episode_weight, np.diff(self.episode_offsets))

    def summary(self) -> dict[str, float]:
        """Statistics of the step advantages, for tables and logs."""
        a = self.step_advantage
        return {
            "episodes": self.n_episodes,
            "steps": self.n_steps,
            "mean": float(a.mean()) if a.size else 0.0,
            "std": float(a.std()) if a.size else 0.0,
            "min": float(a.min()) if a.size else 0.0,
            "max": float(a.max()) if a.size else 0.0,
            "zero_fraction": float(np.mean(a == 0.0)) if a.size else 0.0,
        }
