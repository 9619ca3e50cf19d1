"""The data model: ``Rollouts`` (validated, columnar, ragged) and ``Credit`` (the result).

Shape letters used in every docstring of the package:

* ``G`` groups, ``E`` episodes, ``S`` steps (all episodes' steps concatenated), ``K`` tokens,
  ``T`` padded length of a ``[batch, T]`` trainer tensor.
* Episode ``e`` owns steps ``episode_offsets[e]:episode_offsets[e+1]`` (CSR offsets, [E+1],
  every episode has at least one step).
* ``episode_group`` [E] maps episodes to dense group indices ``0..G-1``; ``step_episode`` [S]
  maps steps to episodes.
* Named per-episode reward components (the records' ``rewards`` object) are
  ``Rollouts.episode_columns``, NAME -> [E] float64; as a field name (``has``, ``require``,
  a transform's ``requires``) component NAME is ``"rewards.NAME"`` (``COMPONENT_PREFIX + NAME``).
"""

from stepcredit.data.credit import Credit
from stepcredit.data.errors import RolloutsError
from stepcredit.data.hashing import hash_keys
from stepcredit.data.io import read_rollouts, write_credit, write_rollouts
from stepcredit.data.rollouts import (
    COMPONENT_PREFIX,
    KEY_COLUMNS,
    NUMERIC_COLUMNS,
    MissingColumnError,
    Rollouts,
)

__all__ = [
    "COMPONENT_PREFIX",
    "KEY_COLUMNS",
    "NUMERIC_COLUMNS",
    "Credit",
    "MissingColumnError",
    "Rollouts",
    "RolloutsError",
    "hash_keys",
    "read_rollouts",
    "write_credit",
    "write_rollouts",
]
