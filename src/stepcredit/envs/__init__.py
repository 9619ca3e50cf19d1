"""Multi-step text environments (gymnasium-style, text in, text out) for the benchmark.

Importing this package registers the built-in environments; ``make_env("gym:ENV_ID")`` wraps
a gymnasium environment (the ``envs`` extra). See ``stepcredit.envs.base`` for the protocol.
"""

from stepcredit.envs import (  # noqa: F401  (registers the environments)
    arith_chain,
    household,
    keydoor,
    lock_chain,
    search_qa,
    sokoban,
)
from stepcredit.envs.base import (
    EnvError,
    EnvSpec,
    TextEnv,
    get_env,
    list_envs,
    make_env,
    parse_env_kwarg,
    register_env,
)

__all__ = ["EnvError", "EnvSpec", "TextEnv", "get_env", "list_envs", "make_env", "parse_env_kwarg", "register_env"]
