"""Credit estimators: registered pure functions ``(Rollouts, **params) -> Credit``.

Importing this package registers every built-in estimator.
"""

from stepcredit.estimators import (  # noqa: F401  (registers the estimators)
    anchor,
    attribution,
    graph,
    information,
    outcome,
    progress,
    tree,
    turning,
    value,
)
from stepcredit.estimators.anchor import gigpo, step_groups
from stepcredit.estimators.outcome import drgrpo, grpo, reinforce_pp, rloo
from stepcredit.estimators.registry import (
    EstimatorError,
    EstimatorSpec,
    Param,
    estimate,
    get_estimator,
    list_estimators,
    parse_param,
    register,
)
from stepcredit.estimators.value import gae

__all__ = [
    "EstimatorError",
    "EstimatorSpec",
    "Param",
    "drgrpo",
    "estimate",
    "gae",
    "gigpo",
    "get_estimator",
    "grpo",
    "list_estimators",
    "parse_param",
    "register",
    "reinforce_pp",
    "rloo",
    "step_groups",
]
