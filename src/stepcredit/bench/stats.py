"""Statistics of a benchmark matrix: per-run summaries and their bootstrap confidence intervals.

Notation: a *run* is one (environment, method, seed) training run; its learning curve is the
success rate s_k of iteration k after n_k episodes in total. Over the seeds of one (environment,
method) cell the values x_1..x_m of a per-run statistic are summarised by their mean and a
percentile bootstrap 95% confidence interval: B resamples of m values drawn with replacement,
the 2.5% and 97.5% quantiles of their means (Efron & Tibshirani 1993). The resampling uses a
fixed seed, so a table is reproducible.

Per-run statistics (``stepcredit.train.curves``): episodes to the target success rate,
final success, area under the learning curve. A run that never reaches the target is
*censored* at its budget: its value is the budget and the cell says how many runs reached the
target ("a lower bound" when some did not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stepcredit.train.curves import auc, episodes_to_target, final_success

__all__ = ["Summary", "auc", "bootstrap_ci", "episodes_to_target", "final_success", "summarize"]


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (finite).

    One value gives (v, v): there is no spread to resample.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci needs finite values (censor unreached runs first)")
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Summary:
    """A statistic over the seeds of one cell.

    Attributes:
        mean: mean over the runs (censored runs counted at the budget).
        ci_low, ci_high: bootstrap 95% interval of the mean.
        n: runs.
        reached: runs that reached the target (``episodes_to_target`` only; else n).
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int
    reached: int

    @property
    def censored(self) -> bool:
        """Some runs never reached the target: the mean is a lower bound."""
        return self.reached < self.n

    def format(self, digits: int = 3, integer: bool = False) -> str:
        if self.n == 0:
            return "-"
        f = (lambda v: f"{v:,.0f}") if integer else (lambda v: f"{v:.{digits}g}")
        text = f"{f(self.mean)} [{f(self.ci_low)}, {f(self.ci_high)}]"
        if self.censored:
            text = f"≥{text} ({self.reached}/{self.n} reached)"
        return text


def summarize(values: Sequence[float], budget: float | None = None, seed: int = 0) -> Summary:
    """Mean and bootstrap CI of per-run values; ``inf`` values (target never reached) are
    censored at ``budget`` (required when any value is infinite)."""
    x = np.asarray(values, dtype=np.float64)
    unreached = ~np.isfinite(x)
    if unreached.any():
        if budget is None:
            raise ValueError("summarize: give the budget to censor runs that never reached the target")
        x = np.where(unreached, float(budget), x)
    if x.size == 0:
        return Summary(math.nan, math.nan, math.nan, 0, 0)
    lo, hi = bootstrap_ci(x, seed=seed)
    return Summary(float(x.mean()), lo, hi, int(x.size), int(x.size - unreached.sum()))
