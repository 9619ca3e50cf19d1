"""The multi-step text environment protocol and the environment registry.

A :class:`TextEnv` follows gymnasium's API with text observations and text actions:

    obs, info = env.reset(seed=task_seed)              # the seed picks the task instance
    obs, reward, terminated, truncated, info = env.step(action_text)
    env.valid_actions()                                 # the admissible actions now (small policies)

* The seed given to ``reset`` chooses the **task instance** (a lock's combination, a Sokoban
  level, a question): the G episodes of a group are G resets with the same seed. Everything the
  environment does after ``reset`` is deterministic given the actions (the policy holds the only
  randomness), so two episodes of a group that take the same actions visit the same states.
* Rewards are sparse by default: 0 on every step, the outcome on the step that ends the
  episode (``terminated``), and 0 when the episode is cut at ``max_steps`` (``truncated``).
  Environments document any other reward (e.g. Sokoban's −0.1 per invalid move).
* ``info`` always holds ``"state"``: a canonical text key of the state in which the *next*
  action will be taken (no history, so that equal states of a group are anchor states for
  GiGPO / SALT), and after the last step ``"success"`` (bool). Environments may add more
  (``"step_correct"`` for arith_chain, ``"gold_answer"`` for search_qa, ...), each documented.
* An action that is not admissible is never an exception: it is a no-op (or whatever the
  environment documents) and ``info["valid"]`` is False.
* Environments with an **oracle process score** (``lock_chain``, ``keydoor``, ``arith_chain``)
  put ``info["process"]`` in [0, 1] on every step: a perfect stand-in for a process reward
  model (PRM), or a deliberately noisy one with ``prm_noise`` (:func:`oracle_process`).

Environments are registered factories ``(*, difficulty knobs..., max_steps) -> TextEnv``
whose keyword parameters are read from the signature, as for estimators; ``make_env(name,
**kwargs)`` builds one and ``list_envs()`` lists them. ``gym:ENV_ID`` names a gymnasium
environment wrapped as text (``stepcredit.envs.gym_adapter``, needs the ``envs`` extra).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from stepcredit._params import Param, UsageError, bind_params, parse_assignment, signature_params

__all__ = [
    "EnvError",
    "EnvSpec",
    "StepResult",
    "TextEnv",
    "get_env",
    "list_envs",
    "check_prm_noise",
    "make_env",
    "oracle_process",
    "parse_env_kwarg",
    "process_flip_draw",
    "register_env",
]


class EnvError(UsageError):
    """An unknown environment name or an invalid environment parameter."""


StepResult = tuple[str, float, bool, bool, dict[str, Any]]


@runtime_checkable
class TextEnv(Protocol):
    """A multi-step text environment (see the module docstring)."""

    max_steps: int

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode of the task instance ``seed``: (observation, info)."""
        ...

    def step(self, action: str) -> StepResult:
        """Take ``action``: (observation, reward, terminated, truncated, info)."""
        ...

    def valid_actions(self) -> list[str]:
        """The admissible actions in the current state (non-empty, in a fixed order)."""
        ...


@dataclass(frozen=True)
class EnvSpec:
    """What the registry knows of an environment factory."""

    name: str
    params: Mapping[str, Param]
    summary: str
    fn: Callable[..., TextEnv]
    source: str  # "built-in" or the adapter, e.g. "gymnasium"

    def bind(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return bind_params(self.params, params, f"environment '{self.name}'", EnvError)


_REGISTRY: dict[str, EnvSpec] = {}


def register_env(*, name: str | None = None, source: str = "built-in") -> Callable[[Callable[..., TextEnv]], Callable[..., TextEnv]]:
    """Register an environment factory (keyword-only parameters with defaults)."""

    def deco(fn: Callable[..., TextEnv]) -> Callable[..., TextEnv]:
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise EnvError(f"environment '{reg_name}' is already registered")
        params = signature_params(fn, f"environment '{reg_name}'", EnvError, positional=0)
        doc = (fn.__doc__ or "").strip()
        _REGISTRY[reg_name] = EnvSpec(reg_name, params, doc.splitlines()[0] if doc else "", fn, source)
        return fn

    return deco


def get_env(name: str) -> EnvSpec:
    """The registered environment ``name`` (``gym:ENV_ID`` is built on demand)."""
    if name.startswith("gym:"):
        from stepcredit.envs.gym_adapter import gym_spec  # needs gymnasium: imported only here

        return gym_spec(name[4:])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EnvError(
            f"unknown environment '{name}'; valid environments: {', '.join(sorted(_REGISTRY))}, "
            "or gym:ENV_ID for a gymnasium environment with discrete spaces"
        ) from None


def list_envs() -> list[EnvSpec]:
    """Every registered (built-in) environment, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def make_env(name: str, /, **kwargs: Any) -> TextEnv:
    """Build environment ``name`` with checked keyword parameters."""
    spec = get_env(name)
    return spec.fn(**spec.bind(kwargs))


def parse_env_kwarg(name: str, assignment: str) -> tuple[str, Any]:
    """A command-line ``key=value`` for environment ``name``, parsed to the parameter's type."""
    return parse_assignment(get_env(name).params, assignment, f"environment '{name}'", EnvError)


def check_prm_noise(env_name: str, prm_noise: float) -> None:
    """Raise :class:`EnvError` unless ``prm_noise`` lies in [0, 0.5] (a flip rate above 1/2
    would make the oracle's complement the better PRM)."""
    if not 0.0 <= prm_noise <= 0.5:
        raise EnvError(f"environment '{env_name}': prm_noise={prm_noise} must lie in [0, 0.5]")


def process_flip_draw(seed: Any, state: str, action: Any) -> float:
    """A uniform number in [0, 1) that is a fixed function of (task seed, state, action).

    u = (blake2b-64(UTF-8 of ``f"{seed}\\x1f{state}\\x1f{action}"``) >> 11) · 2⁻⁵³: the same
    triple gives the same number in every process and on every machine (unlike Python's
    salted ``hash``), and distinct triples give numbers that behave as independent uniforms.
    blake2b from the standard library costs about 0.5 µs a call, where the vectorised
    ``stepcredit.data.hashing.hash_keys`` costs about 300 µs for a single key (Arrow set-up),
    too slow for once per environment step.

    Args:
        seed: the task seed given to ``reset`` (None when unseeded).
        state: the canonical state key in which the action is taken (``info["state"]`` before the step).
        action: the action text as given to ``step``.

    Returns:
        u in [0, 1).
    """
    key = f"{seed}\x1f{state}\x1f{action}".encode("utf-8", "surrogatepass")
    word = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return (word >> 11) * 2.0**-53


def oracle_process(score: float, prm_noise: float, seed: Any, state: str, action: Any) -> float:
    """The (possibly noisy) oracle process score of one step.

        p = 1 − score   if u(seed, state, action) < prm_noise   (a consistent mistake)
        p = score       otherwise

    with u from :func:`process_flip_draw`. The flip is a deterministic function of the task
    seed, the state and the action, not a fresh coin: like a real PRM, the noisy oracle makes
    the same mistake every time it sees the same step (so a policy can learn to exploit it, as
    it could a real PRM's blind spots), and runs stay deterministic without extra random state.
    Over many distinct steps the flipped fraction is ``prm_noise``.

    Args:
        score: the exact score, 0.0 or 1.0.
        prm_noise: the flip probability, in [0, 0.5]; 0 returns ``score`` (no hashing).
        seed, state, action: see :func:`process_flip_draw`.

    Returns:
        The score, flipped or not.
    """
    if prm_noise > 0.0 and process_flip_draw(seed, state, action) < prm_noise:
        return 1.0 - score
    return score
