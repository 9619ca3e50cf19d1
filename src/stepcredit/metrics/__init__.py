"""Distances between reward functions: EPIC and STARC, exact on tabular MDPs and from samples.

>>> from stepcredit.metrics import mdp_from_gym, epic_distance, starc_distance, potential_shaping
>>> mdp = mdp_from_gym("FrozenLake-v1", gamma=0.9, is_slippery=False)
>>> R = mdp.reward("reward")
>>> shaped = potential_shaping(R, phi, mdp.gamma)                 # phi: [nS] any potential
>>> epic_distance(R, shaped, gamma=mdp.gamma)                     # 0.0 (to rounding)
>>> starc_distance(R, -R, mdp.transitions, gamma=mdp.gamma)       # 1.0

Modules: ``tabular`` (``TabularMDP``, builders from gymnasium and the built-in text
environments, logged transitions of rollouts), ``epic`` (EPIC, exact and the sample-based
estimator), ``starc`` (STARC, exact, and the minimal STARC distance of logged transitions),
``cli`` (``stepcredit distance``). NumPy only; gymnasium is imported by ``mdp_from_gym`` alone.
"""

from stepcredit.metrics.epic import (
    ZERO_TOL,
    epic_canonical,
    epic_canonical_sampled,
    epic_distance,
    epic_distance_sampled,
    pearson_distance,
)
from stepcredit.metrics.starc import (
    minimal_canonical,
    starc_distance,
    starc_distance_transitions,
    value_adjusted_levelling,
)
from stepcredit.metrics.tabular import (
    MetricsError,
    TabularMDP,
    Transitions,
    mdp_from_env,
    mdp_from_gym,
    potential_shaping,
    rollout_transitions,
    tabulate_reward,
)

__all__ = [
    "MetricsError",
    "TabularMDP",
    "Transitions",
    "ZERO_TOL",
    "epic_canonical",
    "epic_canonical_sampled",
    "epic_distance",
    "epic_distance_sampled",
    "mdp_from_env",
    "mdp_from_gym",
    "minimal_canonical",
    "pearson_distance",
    "potential_shaping",
    "rollout_transitions",
    "starc_distance",
    "starc_distance_transitions",
    "tabulate_reward",
    "value_adjusted_levelling",
]
