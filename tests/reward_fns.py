"""Reward functions for the ``reward_fn`` transform's tests (importable as ``reward_fns``:
pytest puts tests/ on sys.path). Each reads the episode record dict of ``Rollouts.to_records()``."""

from __future__ import annotations

import math

import numpy as np

NOT_CALLABLE = 3.0


def n_steps(episode):
    """Episode level: the number of steps."""
    return len(episode["steps"])


def outcome_plus_bonus(episode):
    """Episode level: outcome + 0.5 when the first step's action is 'left' (bool-free float)."""
    first = episode["steps"][0].get("action")
    return episode["outcome"] + (0.5 if first == "left" else 0.0)


def component_sum(episode):
    """Episode level: the sum of the record's reward components (0 without any)."""
    return float(sum(episode.get("rewards", {}).values()))


def is_success(episode):
    """Episode level: a bool (True counts as 1)."""
    return episode["outcome"] > 0


def numpy_scalar(episode):
    """Episode level: a NumPy scalar."""
    return np.float32(0.25) * len(episode["steps"])


def step_index(episode, t):
    """Step level: the step's 0-based index."""
    return t


def step_reward_doubled(episode, t):
    """Step level: twice the step's own reward (0 when absent), read from the record."""
    return 2.0 * (episode["steps"][t].get("reward") or 0.0)


def last_step_outcome(episode, t):
    """Step level: the outcome on the last step, 0 elsewhere (looks at the whole episode)."""
    return episode["outcome"] if t == len(episode["steps"]) - 1 else 0.0


def fails_on_second_step(episode, t):
    """Step level: raises on step 1."""
    if t == 1:
        raise KeyError("no such thing")
    return 0.0


def raises(episode):
    raise ValueError("boom")


def returns_nan(episode):
    return math.nan


def returns_inf_at_step(episode, t):
    return math.inf if t == 0 else 0.0


def returns_text(episode):
    return "1.0"


def returns_none(episode):
    return None


class Scorer:
    """A dotted attribute: ``reward_fns:Scorer.score``."""

    @staticmethod
    def score(episode):
        return 2.0
