"""Statistics of one training run's learning curve (the bench summarises them over seeds).

Notation: iteration k of a run has played n_k episodes in total and reached success rate s_k.

* ``episodes_to_target``: the first n_k at which the success rate, averaged over the last
  ``window`` iterations (fewer at the start), reaches the target; ``inf`` when none does;
* ``final_success``: the mean success rate over the last ``window`` iterations;
* ``auc``: the area under the learning curve per episode, Σ_k s_k (n_k − n_{k−1}) / n_K, in
  [0, 1] (1 = success from the first episode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["auc", "episodes_to_target", "final_success"]


def _smoothed(success: Sequence[float], window: int) -> np.ndarray:
    """Trailing means, each summed directly over its own window (a difference of cumulative
    sums could round a mean equal to the target to just below it)."""
    s = np.asarray(success, dtype=np.float64)
    total = s.copy()
    count = np.ones(s.size)
    for j in range(1, min(window, s.size)):
        total[j:] += s[:-j]
        count[j:] += 1
    return total / count


def episodes_to_target(episodes: Sequence[int], success: Sequence[float], target: float, window: int = 3) -> float:
    """The episodes at the first iteration whose trailing-``window`` mean success is >= target,
    or ``math.inf`` when no iteration reaches it.

    Args:
        episodes: [K] cumulative episodes after each iteration (increasing).
        success: [K] success rate of each iteration's episodes.
        target: the success rate to reach, in (0, 1].
        window: iterations averaged (>= 1).
    """
    if len(episodes) != len(success):
        raise ValueError("episodes and success must have the same length")
    if not len(success):
        return math.inf
    hit = np.flatnonzero(_smoothed(success, window) >= target)
    return float(episodes[int(hit[0])]) if hit.size else math.inf


def final_success(success: Sequence[float], window: int = 3) -> float:
    """Mean success rate over the last ``window`` iterations (0 for an empty curve)."""
    s = np.asarray(success, dtype=np.float64)
    return float(s[-window:].mean()) if s.size else 0.0


def auc(episodes: Sequence[int], success: Sequence[float]) -> float:
    """Area under the success curve per episode: Σ_k s_k (n_k − n_{k−1}) / n_K, in [0, 1]."""
    n = np.asarray(episodes, dtype=np.float64)
    s = np.asarray(success, dtype=np.float64)
    if not n.size or n[-1] <= 0:
        return 0.0
    widths = np.diff(np.concatenate([[0.0], n]))
    return float(np.dot(s, widths) / n[-1])
