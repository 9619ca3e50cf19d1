"""stepcredit: step-level credit assignment for RL of LLM agents and reasoning models.

>>> import stepcredit as sc
>>> ro = sc.read_rollouts("rollouts.jsonl")            # or .parquet; sc.Rollouts.from_records(dicts)
>>> credit = sc.estimate(ro, "grpo", scale="group")    # any registered estimator
>>> credit.step_advantage, credit.episode_advantage    # NumPy arrays [S], [E]
>>> sc.write_credit(credit, ro, "advantages.parquet")  # the table the CLI writes
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

__version__ = "0.1.0"

__all__ = [
    "Credit",
    "EstimatorError",
    "EstimatorSpec",
    "LeastSquaresProgress",
    "MissingColumnError",
    "ProgressModel",
    "Rollouts",
    "RolloutsError",
    "__version__",
    "estimate",
    "get_estimator",
    "hash_keys",
    "list_estimators",
    "read_rollouts",
    "register",
    "spa_credit",
    "with_potential",
    "write_credit",
    "write_rollouts",
]
