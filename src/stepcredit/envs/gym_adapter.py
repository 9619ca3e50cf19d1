"""``gym:ENV_ID``: any gymnasium environment with discrete spaces, rendered as a text environment.

``make_env("gym:FrozenLake-v1", is_slippery=False)`` wraps ``gymnasium.make("FrozenLake-v1",
is_slippery=False)`` in the :class:`~stepcredit.envs.base.TextEnv` protocol, so the benchmark also
runs on tasks this project did not write. It needs the ``envs`` extra (gymnasium >= 1.0).

Spaces: the action space must be ``Discrete``; the observation space ``Discrete``,
``MultiDiscrete``, ``MultiBinary`` or a ``Tuple`` of ``Discrete`` (Blackjack), or minigrid's
``Dict`` (below). Any other space (CartPole's ``Box``, ...) is an :class:`EnvError` naming the
space and the environment id.

Observation text (also ``info["state"]``, the anchor key): ``"<ENV_ID> state <obs>"``, plus a
decoded description for the toy-text environments, e.g.
``"FrozenLake-v1 state 5: row 1, col 1"``, ``"CliffWalking-v1 state 36: row 3, col 0"``,
``"Taxi-v4 state 328: taxi at row 3, col 1; passenger at Yellow; destination Red"``,
``"Blackjack-v1 state (14, 10, 0): player sum 14, dealer shows 10, usable ace no"``.
The text is a function of the gymnasium observation only, so equal observations are equal
states. The raw observation is in ``info["gym_obs"]`` (an int or a tuple of ints).

Actions: ``valid_actions()`` is every action, ``"action k"`` followed by its meaning when known
(``"action 0 (left)"``; FrozenLake left/down/right/up, CliffWalking up/right/down/left, Taxi
south/north/east/west/pickup/dropoff, Blackjack stick/hit, minigrid turn left/turn right/
forward/pickup/drop/toggle/done). ``step`` also accepts ``"action k"`` alone or the meaning
alone (``"left"``, any case). Anything else is an invalid no-op (``info["valid"] = False``,
reward 0, gymnasium is not stepped) that still costs a step.

Seeds: ``reset(seed=task_seed)`` passes the seed to gymnasium's ``reset``, which picks the task
instance (Taxi's start, destination and passenger) and reseeds the environment's random
generator. The G episodes of a group therefore start the same task, and everything after is
deterministic given the actions, also in stochastic variants (slippery FrozenLake or
CliffWalking, rainy Taxi): there the slips come from the generator reseeded at ``reset``, so
the episodes of a group share the same random stream (one draw per valid step), and a group
does not sample the environment's noise; vary the task seed across groups to sample it.
FrozenLake with ``map_name=None`` and no ``desc`` draws its map from an unseeded generator:
pass ``desc`` to fix a custom map.

Rewards: gymnasium's per-step rewards are kept as step rewards (``reward="env"``, the default),
so these tasks are not only sparse: CliffWalking gives −1 per step and −100 at the cliff, Taxi
−1 per step, −10 per illegal pickup/dropoff and +20 on delivery, FrozenLake and Blackjack only
at the end. ``reward="outcome"`` replaces them by the built-in environments' convention: 0 on
every step and 1.0/0.0 (success) on the last one.

Success (``info["success"]`` on the last step): by ``success_rule``. ``"auto"`` (default) is
``"positive_reward"`` (the episode terminated and its last reward is > 0) for FrozenLake,
Blackjack (a win) and minigrid (the goal reached), and ``"terminated"`` (the episode terminated
rather than being cut at the step limit) for CliffWalking, Taxi and every other environment.
A truncated episode is never a success.

Step limit: ``max_steps`` = 0 takes the environment's own limit (its registered ``TimeLimit``:
FrozenLake 100, FrozenLake8x8 200, Taxi 200; minigrid's ``max_steps``, e.g. 250 for
DoorKey-5x5) or 200 when it has none (CliffWalking, Blackjack); > 0 overrides it (passed to
gymnasium as ``max_episode_steps``, and to the constructor when it takes ``max_steps``). The
adapter counts every step, invalid ones included, and truncates at the limit.

Keyword arguments: the spec's parameters are the environment constructor's keyword arguments
(read from its signature and the registered defaults; ``is_slippery: bool``, ``map_name: str``,
...) plus the adapter's ``max_steps``, ``reward`` and ``success_rule``. A parameter whose
default is a bool, int, float or str is typed and checked; any other (``desc=None``,
``reward_schedule=(1, 0, 0)``) accepts any value, parsed from the command line by
:func:`parse_literal`. Only values that differ from the default are passed to gymnasium. On the
command line, ``parse_env_kwarg("gym:FrozenLake-v1", "is_slippery=false")`` gives
``("is_slippery", False)``; :func:`parse_gym_kwargs` parses a list of ``key=value`` strings.

minigrid: ids starting with ``MiniGrid-`` or ``BabyAI-`` import the ``minigrid`` package
(an :class:`EnvError` says ``pip install minigrid`` when it is missing). The observation is the
agent's egocentric partial view as a symbolic grid (``#`` wall, ``.`` empty, ``?`` unseen,
``K`` key, ``D``/``L``/``/`` closed/locked/open door, ``G`` goal, ``~`` lava, ``B`` ball,
``X`` box, ``_`` floor, ``^`` the agent at the bottom centre looking up), with the mission, the
absolute facing direction, what the agent carries and the colours of the objects in view. The
view is partial, so equal texts can be different true states (anchor states are observation
matches there).

Why step credit matters here: these are classic tabular tasks with small, repeated state sets
(16 to 500 states), so the episodes of a group revisit the same states and step-level methods
(GiGPO, SALT) can compare the actions taken there; FrozenLake's reward is a single 1 at the goal
after up to 100 steps.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from stepcredit._params import Param, UsageError, parse_assignment, split_assignment
from stepcredit.envs.base import EnvError, EnvSpec, StepResult

__all__ = ["DEFAULT_MAX_STEPS", "GymTextEnv", "gym_spec", "parse_gym_kwargs", "parse_literal"]

DEFAULT_MAX_STEPS = 200
"""The step limit of an environment that has none of its own (CliffWalking, Blackjack)."""

_SUCCESS_RULES = ("auto", "terminated", "positive_reward")
_REWARDS = ("env", "outcome")

# Meanings of the actions of environments whose docs give them (gymnasium 1.4 and minigrid 3.x).
_ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "FrozenLake": ("left", "down", "right", "up"),
    "FrozenLake8x8": ("left", "down", "right", "up"),
    "CliffWalking": ("up", "right", "down", "left"),
    "CliffWalkingSlippery": ("up", "right", "down", "left"),
    "Taxi": ("south", "north", "east", "west", "pickup", "dropoff"),
    "Blackjack": ("stick", "hit"),
}
_MINIGRID_ACTIONS = ("turn left", "turn right", "forward", "pickup", "drop", "toggle", "done")
_MINIGRID_PREFIXES = ("MiniGrid-", "BabyAI-")
_POSITIVE_REWARD_SUCCESS = {"FrozenLake", "FrozenLake8x8", "Blackjack"}
_TAXI_PLACES = ("Red", "Green", "Yellow", "Blue", "in taxi")
_DIRECTIONS = ("east", "south", "west", "north")  # minigrid's agent_dir 0..3
_MG_CHAR = {
    "unseen": "?", "empty": ".", "wall": "#", "floor": "_", "key": "K", "ball": "B", "box": "X",
    "goal": "G", "lava": "~", "agent": "A",
}
_MG_DOOR = {0: "/", 1: "D", 2: "L"}  # open, closed, locked
_MG_DOOR_STATE = {0: "open", 1: "closed", 2: "locked"}


# ----------------------------------------------------------------------------- parameters


class _AnyParam(Param):
    """A gymnasium keyword argument whose default is not a bool/int/float/str: any value."""

    def describe(self) -> str:
        return f"{self.name}: any (default {self.default!r})"

    def check(self, value: Any, who: str, error: type[UsageError] = UsageError) -> Any:
        return value

    def parse(self, text: str, who: str, error: type[UsageError] = UsageError) -> Any:
        try:
            return parse_literal(text)
        except ValueError as exc:
            raise error(f"{who}: parameter {self.name}={text!r} is invalid: {exc}") from None


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED = _Required()

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_literal(text: str) -> Any:
    """A command-line value as a Python literal, without ``eval``.

    ``true``/``false`` (any case) -> bool, ``none``/``null`` -> None, ``12`` -> int,
    ``0.5``/``1e-3`` -> float, ``[...]``/``{...}`` -> JSON (lists, dicts), ``'x'``/``"x"`` -> the
    string without quotes, anything else -> the string as written (``8x8`` -> ``"8x8"``).

    Args:
        text: the value part of a ``key=value`` argument.

    Returns:
        The parsed value.

    Raises:
        ValueError: malformed JSON.
    """
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return float(t)
    if t and t[0] in "[{":
        try:
            return json.loads(t)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def parse_gym_kwargs(assignments: list[str], env_id: str | None = None) -> dict[str, Any]:
    """Command-line ``--env-kwargs key=value`` strings as keyword arguments for ``gym:ENV_ID``.

    With ``env_id`` each value is parsed to the parameter's type and checked (as
    ``parse_env_kwarg("gym:" + env_id, s)`` does; an unknown key lists the valid ones); without
    it each value goes through :func:`parse_literal`.
    ``parse_gym_kwargs(["is_slippery=false", "map_name=8x8"])`` ->
    ``{"is_slippery": False, "map_name": "8x8"}``.

    Args:
        assignments: ``key=value`` strings.
        env_id: the gymnasium id (without ``gym:``), or None.

    Returns:
        The keyword arguments, ready for ``make_env("gym:" + env_id, **kwargs)``.

    Raises:
        EnvError: a string without ``=``, a key given twice, a bad value.
    """
    out: dict[str, Any] = {}
    owner = f"environment 'gym:{env_id}'" if env_id else "gym environment"
    params = gym_spec(env_id).params if env_id else None
    for assignment in assignments:
        if params is not None:
            key, value = parse_assignment(params, assignment, owner, EnvError)
        else:
            key, text = split_assignment(assignment, EnvError)
            try:
                value = parse_literal(text)
            except ValueError as exc:
                raise EnvError(f"{owner}: parameter {assignment!r} is invalid: {exc}") from None
        if not key:
            raise EnvError(f"{owner}: parameter '{assignment}' has an empty key")
        if key in out:
            raise EnvError(f"{owner}: parameter '{key}' is given twice")
        out[key] = value
    return out


def _plain_param(name: str, default: Any, help_text: str) -> Param:
    for kind in (bool, int, float, str):  # bool before int: True is an int
        if type(default) is kind:
            if kind is float and not math.isfinite(default):
                break
            return Param(name, default, kind, None, help_text)
    return _AnyParam(name, default, object, None, help_text)


def _constructor_params(creator: Callable[..., Any], spec_kwargs: Mapping[str, Any], env_id: str) -> dict[str, Param]:
    """The keyword arguments of an environment constructor, with the registered defaults.

    A class whose ``__init__`` takes ``**kwargs`` passes them to its base class: the base
    classes' keyword arguments with defaults are added too (minigrid's ``MiniGridEnv``).
    """
    help_text = f"gymnasium keyword argument of {env_id}"
    out: dict[str, Param] = {}
    if inspect.isclass(creator):
        classes = [c for c in inspect.getmro(creator) if "__init__" in c.__dict__ and c is not object]
        inits = [c.__dict__["__init__"] for c in classes]
    else:
        inits = [creator]
    for depth, fn in enumerate(inits):
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            break
        more = False
        for i, p in enumerate(sig.parameters.values()):
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                more = True
                continue
            if (inspect.isclass(creator) and i == 0) or p.name == "render_mode" or p.name in out:
                continue
            if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                continue
            if p.name in spec_kwargs:
                default = spec_kwargs[p.name]
            elif p.default is not inspect.Parameter.empty:
                default = p.default
            elif depth == 0:
                default = _REQUIRED
            else:
                continue  # set by the subclass itself (minigrid's mission_space)
            out[p.name] = _plain_param(p.name, default, help_text)
        if not more:
            break
    for name, default in spec_kwargs.items():
        if name not in out and name != "render_mode":
            out[name] = _plain_param(name, default, help_text)
    return out


def _adapter_params() -> dict[str, Param]:
    return {
        "max_steps": Param(
            "max_steps", 0, int, None,
            f"the step limit; 0 = the environment's own (TimeLimit or minigrid max_steps), else {DEFAULT_MAX_STEPS}",
        ),
        "reward": Param(
            "reward", "env", str, _REWARDS,
            "env = gymnasium's per-step rewards; outcome = 0 per step and 1/0 success on the last",
        ),
        "success_rule": Param(
            "success_rule", "auto", str, _SUCCESS_RULES,
            "auto = per environment (module docs); terminated; positive_reward = terminated with last reward > 0",
        ),
    }


# ----------------------------------------------------------------------------- spaces and text


def _is_minigrid(env_id: str) -> bool:
    return env_id.split(":")[-1].startswith(_MINIGRID_PREFIXES)


def _import_gymnasium(env_id: str) -> Any:
    try:
        import gymnasium
    except ImportError:
        raise EnvError(
            f"environment 'gym:{env_id}': needs gymnasium: pip install 'stepcredit[envs]' (or pip install gymnasium)"
        ) from None
    if _is_minigrid(env_id):
        try:
            import minigrid  # noqa: F401  (registers the MiniGrid-* and BabyAI-* ids)
        except ImportError as exc:
            raise EnvError(
                f"environment 'gym:{env_id}': minigrid environments need the minigrid package "
                f"(not importable: {exc}): pip install minigrid"
            ) from None
    return gymnasium


def _obs_kind(space: Any, spaces: Any, minigrid: bool) -> str | None:
    if isinstance(space, spaces.Discrete):
        return "discrete"
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        return "multi"
    if isinstance(space, spaces.Tuple) and all(isinstance(s, spaces.Discrete) for s in space.spaces):
        return "tuple"
    if minigrid and isinstance(space, spaces.Dict) and {"image", "direction", "mission"} <= set(space.spaces):
        return "minigrid"
    return None


def _plain_obs(obs: Any, kind: str) -> Any:
    if kind == "discrete":
        return int(obs)
    if kind in ("multi", "tuple"):
        return tuple(int(x) for x in (obs.ravel() if hasattr(obs, "ravel") else obs))
    return None  # minigrid: the text is the observation


def _describe(family: str, obs: Any, unwrapped: Any) -> str:
    """The decoded description of a toy-text observation ("" when unknown)."""
    if family in ("FrozenLake", "FrozenLake8x8", "CliffWalking", "CliffWalkingSlippery"):
        ncol = int(unwrapped.ncol) if hasattr(unwrapped, "ncol") else int(unwrapped.shape[1])
        row, col = divmod(int(obs), ncol)
        return f"row {row}, col {col}"
    if family == "Taxi":
        row, col, passenger, dest = unwrapped.decode(int(obs))
        return f"taxi at row {row}, col {col}; passenger at {_TAXI_PLACES[passenger]}; destination {_TAXI_PLACES[dest]}"
    if family == "Blackjack":
        player, dealer, ace = obs
        shown = "ace" if dealer == 1 else dealer
        return f"player sum {player}, dealer shows {shown}, usable ace {'yes' if ace else 'no'}"
    return ""


def _minigrid_text(env_id: str, obs: Mapping[str, Any]) -> str:
    from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

    image = obs["image"]  # [view, view, 3]: (object, colour, state) indexed [x, y]
    width, height = image.shape[0], image.shape[1]
    ax, ay = width // 2, height - 1
    rows, objects = [], []
    for y in range(height):
        row = []
        for x in range(width):
            kind = IDX_TO_OBJECT[int(image[x, y, 0])]
            colour, state = IDX_TO_COLOR.get(int(image[x, y, 1]), "?"), int(image[x, y, 2])
            if (x, y) == (ax, ay):
                row.append("^")
                continue
            row.append(_MG_DOOR.get(state, "D") if kind == "door" else _MG_CHAR.get(kind, "?"))
            if kind in ("key", "ball", "box"):
                objects.append(f"{colour} {kind}")
            elif kind == "door":
                objects.append(f"{_MG_DOOR_STATE.get(state, '')} {colour} door")
        rows.append(" ".join(row))
    held = IDX_TO_OBJECT[int(image[ax, ay, 0])]
    carrying = "nothing"
    if held not in ("empty", "unseen"):
        carrying = f"{IDX_TO_COLOR.get(int(image[ax, ay, 1]), '?')} {held}"
    seen = ", ".join(sorted(set(objects))) or "none"
    return (
        f"{env_id} mission: {obs['mission']}\n"
        f"facing {_DIRECTIONS[int(obs['direction']) % 4]}, carrying {carrying}; objects in view: {seen}\n"
        "view (you are ^ at the bottom centre, looking up):\n" + "\n".join(rows)
    )


# ----------------------------------------------------------------------------- the environment


class GymTextEnv:
    """A gymnasium environment as a :class:`~stepcredit.envs.base.TextEnv` (module docstring).

    Args:
        env: the gymnasium environment (from ``gymnasium.make``).
        env_id: its id, the prefix of every observation text.
        max_steps: the step limit (> 0).
        reward: ``"env"`` or ``"outcome"``.
        success_rule: ``"terminated"`` or ``"positive_reward"`` (resolved, not ``"auto"``).
    """

    def __init__(self, env: Any, env_id: str, max_steps: int, reward: str, success_rule: str):
        from gymnasium import spaces

        self.env, self.env_id, self.max_steps = env, env_id, max_steps
        self.reward_mode, self.success_rule = reward, success_rule
        family = getattr(env.spec, "name", "") if env.spec is not None else ""
        self._family = family
        self._minigrid = _is_minigrid(env_id)
        who = f"environment 'gym:{env_id}'"
        aspace, ospace = env.action_space, env.observation_space
        if not isinstance(aspace, spaces.Discrete):
            raise EnvError(f"{who}: action space {aspace} is not supported; the adapter needs a Discrete action space")
        kind = _obs_kind(ospace, spaces, self._minigrid)
        if kind is None:
            raise EnvError(
                f"{who}: observation space {ospace} is not supported; the adapter needs Discrete, "
                "MultiDiscrete, MultiBinary or a Tuple of Discrete observations (or minigrid's Dict)"
            )
        self._kind = kind
        names = _MINIGRID_ACTIONS if self._minigrid else _ACTION_NAMES.get(family)
        start, n = int(aspace.start), int(aspace.n)
        if names is not None and len(names) != n:
            names = None
        self._action_values = [start + k for k in range(n)]
        self._actions = [
            f"action {v} ({names[k]})" if names else f"action {v}" for k, v in enumerate(self._action_values)
        ]
        self._lookup: dict[str, int] = {}  # lower-case accepted spellings -> gymnasium action
        for k, (text, v) in enumerate(zip(self._actions, self._action_values)):
            self._lookup[text.lower()] = v
            self._lookup[f"action {v}"] = v
            if names:
                self._lookup.setdefault(names[k].lower(), v)
        self._obs_text = ""
        self._gym_obs: Any = None
        self._t = 0
        self._done = True

    def _render(self, obs: Any) -> str:
        if self._kind == "minigrid":
            return _minigrid_text(self.env_id, obs)
        plain = _plain_obs(obs, self._kind)
        head = f"{self.env_id} state {plain}"
        desc = _describe(self._family, plain, self.env.unwrapped)
        return f"{head}: {desc}" if desc else head

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode of the task instance ``seed`` (passed to gymnasium's ``reset``)."""
        obs, _ = self.env.reset(seed=None if seed is None else int(seed), options=dict(options) if options else None)
        self._obs_text, self._gym_obs = self._render(obs), _plain_obs(obs, self._kind)
        self._t, self._done = 0, False
        return self._obs_text, {"state": self._obs_text, "gym_obs": self._gym_obs}

    def valid_actions(self) -> list[str]:
        """Every action of the Discrete action space, ``"action k (meaning)"``."""
        return list(self._actions)

    def step(self, action: str) -> StepResult:
        """Take ``action``: (observation, reward, terminated, truncated, info)."""
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        value = self._lookup.get(action.strip().lower()) if isinstance(action, str) else None
        info: dict[str, Any] = {"valid": value is not None}
        reward, terminated, gym_truncated = 0.0, False, False
        if value is not None:
            obs, r, terminated, gym_truncated, _ = self.env.step(value)
            reward, terminated = float(r), bool(terminated)
            self._obs_text, self._gym_obs = self._render(obs), _plain_obs(obs, self._kind)
        truncated = not terminated and (bool(gym_truncated) or self._t >= self.max_steps)
        self._done = terminated or truncated
        info["state"], info["gym_obs"] = self._obs_text, self._gym_obs
        if self._done:
            if self.success_rule == "terminated":
                success = terminated
            else:
                success = terminated and reward > 0
            info["success"] = success
            if self.reward_mode == "outcome":
                reward = 1.0 if success else 0.0
        elif self.reward_mode == "outcome":
            reward = 0.0
        return self._obs_text, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the gymnasium environment."""
        self.env.close()


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays: compare as different, pass the value on
        return False


def _make(
    env_id: str, family: str, defaults: Mapping[str, Any], takes_max_steps: bool, params: Mapping[str, Any]
) -> GymTextEnv:
    """Make the environment from bound parameters (the adapter's and gymnasium's keyword arguments)."""
    env_kwargs = {k: v for k, v in params.items() if k not in ("max_steps", "reward", "success_rule")}
    max_steps = params.get("max_steps", 0)
    reward, success_rule = params.get("reward", "env"), params.get("success_rule", "auto")
    gymnasium = _import_gymnasium(env_id)
    who = f"environment 'gym:{env_id}'"
    if max_steps < 0:
        raise EnvError(f"{who}: max_steps={max_steps} must be >= 0 (0 = the environment's own limit)")
    kwargs = {k: v for k, v in env_kwargs.items() if v is not _REQUIRED and not _same(v, defaults.get(k, _REQUIRED))}
    missing = [k for k, v in env_kwargs.items() if v is _REQUIRED]
    if missing:
        raise EnvError(f"{who}: parameter '{missing[0]}' is required by the environment")
    make_kwargs: dict[str, Any] = {}
    if max_steps > 0:
        make_kwargs["max_episode_steps"] = max_steps
        if takes_max_steps:
            kwargs["max_steps"] = max_steps
    try:
        env = gymnasium.make(env_id, **make_kwargs, **kwargs)
    except EnvError:
        raise
    except Exception as exc:  # the constructor's own checks: any exception type
        given = kwargs or "no keyword arguments"
        raise EnvError(f"{who}: gymnasium.make failed with {given}: {type(exc).__name__}: {exc}") from exc
    limit = max_steps
    if limit == 0:
        own = env.spec.max_episode_steps if env.spec is not None else None
        if own is None or own <= 0:
            own = getattr(env.unwrapped, "max_steps", None)
        limit = int(own) if isinstance(own, int) and not isinstance(own, bool) and own > 0 else DEFAULT_MAX_STEPS
    rule = success_rule
    if rule == "auto":
        positive = family in _POSITIVE_REWARD_SUCCESS or _is_minigrid(env_id)
        rule = "positive_reward" if positive else "terminated"
    try:
        return GymTextEnv(env, env_id, limit, reward, rule)
    except EnvError:
        env.close()
        raise


@functools.lru_cache(maxsize=None)
def gym_spec(env_id: str) -> EnvSpec:
    """The environment spec of ``gym:ENV_ID``: a gymnasium environment wrapped as text.

    Args:
        env_id: a registered gymnasium id (``"FrozenLake-v1"``, ``"module:Env-v0"`` to import a
            module that registers it, ``"MiniGrid-DoorKey-5x5-v0"`` with minigrid installed).

    Returns:
        An EnvSpec named ``gym:ENV_ID`` whose params are the constructor's keyword arguments plus
        ``max_steps``, ``reward`` and ``success_rule``, and whose ``fn(**params)`` makes a
        :class:`GymTextEnv`. The spaces are checked when the environment is made.

    Raises:
        EnvError: gymnasium (or minigrid for a minigrid id) missing; an unknown, deprecated or
            unloadable id.
    """
    gymnasium = _import_gymnasium(env_id)
    who = f"environment 'gym:{env_id}'"
    try:
        spec = gymnasium.spec(env_id)
    except Exception as exc:  # NameNotFound, VersionNotFound, DeprecatedEnv, a failed module import, ...
        raise EnvError(f"{who}: {type(exc).__name__}: {exc}") from None
    creator = spec.entry_point
    if isinstance(creator, str):
        try:
            from gymnasium.envs.registration import load_env_creator

            creator = load_env_creator(creator)
        except Exception as exc:  # a missing optional dependency of the environment (jax, box2d, ...)
            raise EnvError(
                f"{who}: cannot load its entry point {spec.entry_point!r}: {type(exc).__name__}: {exc}"
            ) from None
    env_params = _constructor_params(creator, spec.kwargs, env_id) if creator is not None else {}
    takes_max_steps = "max_steps" in env_params
    params = {**env_params, **_adapter_params()}
    defaults = {name: p.default for name, p in env_params.items() if name != "max_steps"}

    def fn(**bound: Any) -> GymTextEnv:
        return _make(env_id, spec.name, defaults, takes_max_steps, bound)

    return EnvSpec(
        name=f"gym:{env_id}",
        params=params,
        summary=f"gymnasium {spec.id} rendered as text (entry point {spec.entry_point})",
        fn=fn,
        source="gymnasium",
    )
