"""Credit estimators: registered pure functions ``(Rollouts, **params) -> Credit``.

Importing this package registers every built-in estimator.
"""

from stepcredit.estimators import (  # noqa: F401  (registers the estimators)
    anchor,
    attribution,
    graph,
    information,
    oprl,
    outcome,
    progress,
    redistribution,
    trees,
    turning,
    value,
)
from stepcredit.estimators.anchor import gigpo, step_groups
from stepcredit.estimators.attribution import LeastSquaresProgress, ProgressModel, spa, spa_credit
from stepcredit.estimators.graph import graph_nodes, salt
from stepcredit.estimators.information import igpo
from stepcredit.estimators.outcome import base_advantage, drgrpo, grpo, reinforce_pp, rloo
from stepcredit.estimators.progress import pav, potential, with_potential
from stepcredit.estimators.redistribution import redistribute, redistribution_weights
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
from stepcredit.estimators.trees import node_parents, tree
from stepcredit.estimators.turning import turning_point, turning_points
from stepcredit.estimators.value import gae

__all__ = [
    "EstimatorError",
    "EstimatorSpec",
    "LeastSquaresProgress",
    "Param",
    "ProgressModel",
    "base_advantage",
    "drgrpo",
    "estimate",
    "gae",
    "get_estimator",
    "gigpo",
    "graph_nodes",
    "grpo",
    "igpo",
    "list_estimators",
    "node_parents",
    "parse_param",
    "pav",
    "potential",
    "redistribute",
    "redistribution_weights",
    "register",
    "reinforce_pp",
    "rloo",
    "salt",
    "spa",
    "spa_credit",
    "step_groups",
    "tree",
    "turning_point",
    "turning_points",
    "with_potential",
]
