"""The trainer: group rollouts, credit from any pipeline, a clipped policy-gradient update.

>>> from stepcredit.train import TrainConfig, train
>>> result = train(TrainConfig(env="lock_chain", env_kwargs={"length": 4}, estimator="gigpo"), "runs/x")
>>> result.episodes_to_target, result.metrics[-1]["success_rate"]

See ``stepcredit.train.trainer`` for the algorithm and docs/train.md for the details.
"""

from stepcredit.train.ppo import clipped_surrogate_token_coef, old_token_log_prob, ppo_update_tokens
from stepcredit.train.rollout import CollectedBatch, collect, collect_tree
from stepcredit.train.trainer import (
    CHECKPOINT,
    METRICS,
    POLICIES,
    WALL_CLOCK_FIELDS,
    TrainConfig,
    TrainError,
    TrainResult,
    clipped_surrogate_coef,
    episodes_to_target,
    iteration_metrics,
    ppo_update,
    train,
)

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "POLICIES",
    "WALL_CLOCK_FIELDS",
    "CollectedBatch",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "clipped_surrogate_coef",
    "clipped_surrogate_token_coef",
    "collect",
    "collect_tree",
    "episodes_to_target",
    "iteration_metrics",
    "old_token_log_prob",
    "ppo_update",
    "ppo_update_tokens",
    "train",
]
