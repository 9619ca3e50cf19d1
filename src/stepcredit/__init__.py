"""stepcredit: step-level credit assignment for RL of LLM agents and reasoning models.

>>> import stepcredit as sc
>>> ro = sc.read_rollouts("rollouts.jsonl")            # or .parquet; sc.Rollouts.from_records(dicts)
>>> credit = sc.estimate(ro, "grpo", scale="group")    # any registered estimator
>>> credit.step_advantage, credit.episode_advantage    # NumPy arrays [S], [E]
>>> sc.write_credit(credit, ro, "advantages.parquet")  # the table the CLI writes
>>> pipe = sc.Pipeline.build("gigpo", transforms=["prm_delta"], filters=["prof"])
>>> result = pipe.run(ro)                               # .rollouts, .credit, .state, .diagnostics
"""

from stepcredit.data import (
    Credit,
    MissingColumnError,
    Rollouts,
    RolloutsError,
    hash_keys,
    read_rollouts,
    write_credit,
    write_rollouts,
)
from stepcredit.filters import (
    FilterError,
    Filtered,
    FilterSpec,
    apply_filter,
    get_filter,
    list_filters,
    register_filter,
)
from stepcredit.estimators import (
    EstimatorError,
    EstimatorSpec,
    LeastSquaresProgress,
    ProgressModel,
    estimate,
    get_estimator,
    list_estimators,
    register,
    spa_credit,
    with_potential,
)
from stepcredit.pipeline import Pipeline, PipelineError, PipelineResult, PipelineState, Stage
from stepcredit.shaping import (
    Shaped,
    ShapingError,
    TransformSpec,
    apply_transform,
    get_transform,
    list_transforms,
    register_transform,
)

__version__ = "0.1.0"

__all__ = [
    "Credit",
    "EstimatorError",
    "EstimatorSpec",
    "FilterError",
    "FilterSpec",
    "Filtered",
    "LeastSquaresProgress",
    "MissingColumnError",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "PipelineState",
    "ProgressModel",
    "Rollouts",
    "RolloutsError",
    "Shaped",
    "ShapingError",
    "Stage",
    "TransformSpec",
    "__version__",
    "apply_filter",
    "apply_transform",
    "estimate",
    "get_estimator",
    "get_filter",
    "get_transform",
    "hash_keys",
    "list_estimators",
    "list_filters",
    "list_transforms",
    "read_rollouts",
    "register",
    "register_filter",
    "register_transform",
    "spa_credit",
    "with_potential",
    "write_credit",
    "write_rollouts",
]
