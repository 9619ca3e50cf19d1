"""Helpers shared by the trainer integrations: trainer tensors and ids as NumPy, and the step
values that go back to a trainer.

Private to :mod:`stepcredit.integrations`; each integration documents its own layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stepcredit.data import Credit

__all__ = ["as_numpy", "ids_array", "weighted_step_advantage"]


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A tensor or array-like as a NumPy array on the CPU.

    Args:
        x: a torch tensor (detached and moved to the CPU), an array or a sequence.
        dtype: None (keep), ``np.float64`` or an integer type (tensors become int64).

    Returns:
        The array.
    """
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu()
        if dtype is not None:
            import torch

            x = x.to(torch.float64 if dtype == np.float64 else torch.int64)
        return x.numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def ids_array(values: np.ndarray) -> np.ndarray:
    """Ids (strings, integers or other objects) as an array Arrow can take: integers and
    strings stay (an object array of Python or NumPy integers becomes int64), everything else
    becomes its ``str``."""
    if values.dtype.kind in "iuU":
        return values
    if values.dtype.kind == "O" and values.size and all(type(v) in (int, np.int64) for v in values.flat):
        return values.astype(np.int64)
    return values.astype(str)


def weighted_step_advantage(credit: Credit) -> np.ndarray:
    """[S] the step advantages times the credit filters' episode weight (a dropped episode
    gets 0); trainers without a per-sample loss weight take the weight this way."""
    weight = credit.step_weight
    return credit.step_advantage if weight is None else credit.step_advantage * weight
