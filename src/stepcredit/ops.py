"""Segment primitives every estimator is built from.

Shapes use the letters of ``stepcredit.data``. Groups are given by a dense code array
(``codes[i]`` in ``0..G-1``) that need not be sorted or contiguous; episodes by CSR offsets.

Conventions defined here once and stated in each estimator's docstring:

* **std** is the unbiased (Bessel-corrected, ddof=1) standard deviation, as in verl, TRL and
  GiGPO.
* **singleton groups** (one member): ``singleton="raw"`` (default; verl's convention) takes the
  group mean as 0 and the std as 1, so the raw score passes through (scaled by 1/(1+ε) where an
  ε is added to the std); ``singleton="zero"`` gives the member an advantage of 0 (TRL, whose
  NaN std is replaced by 0).
* **centring** is computed as ``(x_i - x_ref) - mean_g(x - x_ref)`` with ``x_ref`` the first
  member of the group, so that values with a large common offset (1e6 + 1e-7 noise) keep their
  small differences exactly instead of losing them to the rounding of the mean.
  ``group_centered_sum`` centres a sum x + w·y the same way from the differences of x and of y,
  so that small differences of x are not rounded away by a large w·y before the centring.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "dense_codes",
    "first_occurrence",
    "Singleton",
    "group_centered",
    "group_centered_sum",
    "group_count",
    "group_scale",
    "group_std",
    "reverse_discounted_cumsum",
    "weighted_whiten",
]

Singleton = Literal["raw", "zero"]


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense int64 codes 0..n-1 of integer keys, numbered by first appearance, and n.

    Arrow's hash table: O(N), no sort. Combine two code arrays into one key with
    ``a * n_b + b`` before encoding (both < N, so the product stays far below 2**63).
    """
    enc = pc.dictionary_encode(pa.array(values))
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(enc.dictionary)


def first_occurrence(codes: np.ndarray) -> np.ndarray:
    """[N] bool: position i holds the first occurrence of its code.

    ``codes`` must be numbered by first appearance (as :func:`dense_codes` numbers them), so the
    first occurrence of code c is the first position where the running maximum reaches c.
    """
    seen = np.empty_like(codes)
    if codes.size:
        seen[0] = -1
        np.maximum.accumulate(codes[:-1], out=seen[1:])
    return codes > seen


def group_count(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """[G] number of members of each group."""
    return np.bincount(codes, minlength=n_groups)


def group_centered(
    x: np.ndarray, codes: np.ndarray, n_groups: int, singleton: Singleton = "raw"
) -> np.ndarray:
    """Centre values on their group mean: c_i = x_i − mean_{j in g(i)} x_j.

    Args:
        x: [N] values.
        codes: [N] dense group index of each value.
        n_groups: G.
        singleton: a one-member group's mean is taken as 0 (``"raw"``: c_i = x_i) or as the
            member itself (``"zero"``: c_i = 0).

    Returns:
        [N] centred values.
    """
    count = np.bincount(codes, minlength=n_groups)
    ref = np.zeros(n_groups, dtype=np.float64)
    present, first = np.unique(codes, return_index=True)
    ref[present] = x[first]  # one member of each group: x - ref is exact for close values
    d = x - ref[codes]
    mean_d = np.bincount(codes, weights=d, minlength=n_groups) / np.maximum(count, 1)
    c = d - mean_d[codes]
    if singleton == "raw":
        single = count[codes] == 1
        c[single] = x[single]
    return c


def group_centered_sum(
    x: np.ndarray,
    y: np.ndarray,
    weight: float,
    codes: np.ndarray,
    n_groups: int,
    singleton: Singleton = "raw",
) -> np.ndarray:
    """Centre s = x + w·y on its group mean without forming s: c_i = s_i − mean_{j in g(i)} s_j.

    s_i − s_ref is computed as (x_i − x_ref) + w·(y_i − y_ref), with ref the first member of the
    group (as in :func:`group_centered`), then the mean of these differences is subtracted. Forming
    s first would round x to the spacing of w·y: x 1e-7 apart next to w·y = 0.5 would keep only
    ulp(0.5) = 1.1e-16 of each difference, a relative error of 1e-9 of the spread, which a later
    division by the group std turns into an error of the normalised value (and a flip of that
    rounding from a last-bit change of x turns into a permutation dependence). Here the
    differences of x and of y are each as exact as in :func:`group_centered`.

    Args:
        x: [N] values.
        y: [N] values added with weight w.
        weight: w.
        codes: [N] dense group index of each value.
        n_groups: G.
        singleton: a one-member group's mean is taken as 0 (``"raw"``: c_i = x_i + w·y_i,
            rounded once) or as the member itself (``"zero"``: c_i = 0).

    Returns:
        [N] centred values of x + w·y.
    """
    count = np.bincount(codes, minlength=n_groups)
    present, first = np.unique(codes, return_index=True)
    ref_x = np.zeros(n_groups, dtype=np.float64)
    ref_y = np.zeros(n_groups, dtype=np.float64)
    ref_x[present] = x[first]
    ref_y[present] = y[first]
    d = x - ref_x[codes]
    d += weight * (y - ref_y[codes])
    mean_d = np.bincount(codes, weights=d, minlength=n_groups) / np.maximum(count, 1)
    c = d - mean_d[codes]
    single = count[codes] == 1
    if singleton == "raw":
        c[single] = x[single] + weight * y[single]
    else:
        c[single] = 0.0
    return c


def group_std(centered: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """[G] unbiased std of each group from already centred values (NaN for one-member groups)."""
    count = np.bincount(codes, minlength=n_groups)
    ss = np.bincount(codes, weights=centered * centered, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(ss / (count - 1))


def group_scale(centered: np.ndarray, codes: np.ndarray, n_groups: int, epsilon: float) -> np.ndarray:
    """[G] the denominator std_g + ε of a group normalisation, with std := 1 for one member."""
    count = np.bincount(codes, minlength=n_groups)
    return np.where(count == 1, 1.0, group_std(centered, codes, n_groups)) + epsilon


def weighted_whiten(x: np.ndarray, weight: np.ndarray, epsilon: float) -> np.ndarray:
    """Whiten values over the batch with non-negative weights (verl's ``masked_whiten``).

    μ = Σ w x / Σ w,  σ² = (Σ w (x − μ)² / Σ w) · N/(N − 1) with N = Σ w,
    result (x − μ) / sqrt(σ² + ε). x − μ is computed as (x − x_r) − Σ w (x − x_r) / Σ w with x_r the first value of positive
    weight. With N <= 1 the variance is undefined and the result is
    x − μ (that is, 0 for a single unit of weight).

    Args:
        x: [N] values.
        weight: [N] weights (e.g. token counts), N = Σ w.
        epsilon: added to the variance.
    """
    w = weight.astype(np.float64)
    total = w.sum()
    if total <= 0:
        return np.zeros_like(x)
    # centre on a weighted member first, as group_centered does (keeps 1e-7 noise on 1e6)
    shifted = x - x[np.flatnonzero(w > 0)[0]]
    d = shifted - np.dot(w, shifted) / total
    if total <= 1:
        return d
    var = np.dot(w, d * d) / total * (total / (total - 1))
    return d / np.sqrt(var + epsilon)


def reverse_discounted_cumsum(
    x: np.ndarray, offsets: np.ndarray, discount: float, block_steps: int = 1 << 18
) -> np.ndarray:
    """Discounted reverse cumulative sum within each episode.

    y_t = x_t + discount · y_{t+1}, with y after the episode's last step = 0; for example
    x = [1, 2, 3], discount 0.5 gives y = [1 + 0.5·(2 + 0.5·3), 2 + 0.5·3, 3] = [2.75, 3.5, 3].

    The loop runs over the time axis (from the end, at most the longest episode's length),
    vectorised across every episode at least that long, so the cost is O(S) plus one small
    NumPy call per time position. Episodes are processed in blocks of about ``block_steps``
    steps so that each pass over a block stays in the CPU cache (measured 2x faster at 10M
    steps; the result is bit-identical).

    Args:
        x: [S] per-step values.
        offsets: [E+1] episode offsets (every episode >= 1 step).
        discount: the factor (γ, or γλ for GAE).
        block_steps: steps per cache block (whole episodes; a longer episode is its own block).

    Returns:
        [S] float64.
    """
    y = np.array(x, dtype=np.float64, copy=True)
    E = offsets.shape[0] - 1
    if E == 0 or discount == 0.0:
        return y
    # episode boundaries of the blocks: the first episode starting at or after each multiple
    cuts = np.searchsorted(offsets, np.arange(0, offsets[-1], block_steps), side="left")
    cuts = np.unique(np.append(cuts, E))
    for b0, b1 in zip(cuts[:-1], cuts[1:]):
        _reverse_discounted_cumsum_block(y, offsets[b0 : b1 + 1], discount)
    return y


def _reverse_discounted_cumsum_block(y: np.ndarray, offsets: np.ndarray, discount: float) -> None:
    """In-place y_t += discount · y_{t+1} for the episodes of ``offsets`` (a slice of [E+1])."""
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    ends = offsets[1:][order] - 1  # last step of each episode, longest episodes first
    sorted_len = lengths[order]
    max_len = int(sorted_len[0])
    # active[k] = number of episodes with more than k steps
    active = np.searchsorted(-sorted_len, -np.arange(max_len), side="left")
    for k in range(1, max_len):
        idx = ends[: active[k]] - k
        y[idx] += discount * y[idx + 1]
