"""``keydoor``: a gridworld where the agent picks up a key, opens a locked door and reaches the goal.

The grid has ``size`` × ``size`` cells inside an outer wall. An inner wall column splits it
into a left room (the agent and the key) and a right room (the goal); the only way through is
a locked door in that wall. To succeed, the agent walks next to the key and picks it up, walks
next to the door and opens it, then walks through the door to the goal. Reaching the goal ends
the episode with outcome 1 (``terminated``; the goal can only be reached through the opened
door); after ``max_steps`` steps without reaching it the episode is cut with outcome 0
(``truncated``). Every other step gives 0: the reward is sparse.

Observation (also ``info["state"]``): the grid drawn row by row with its outer wall, then one
status line (the fixed layout of size 5)::

    #######
    #@_#__#
    #__#__#
    #__D__#
    #__#__#
    #K_#_G#
    #######
    carrying key: no

``#`` wall, ``_`` floor, ``@`` the agent, ``K`` the key (an obstacle until picked up), ``D``
the locked door, ``/`` the open door, ``G`` the goal. The observation holds the whole state
and no history (no step count), so equal states are equal strings: the episodes of a group
play the same layout, and the states they share are anchor states.

Actions (``valid_actions()``, the same six in every state, as an action space): ``"up"``,
``"down"``, ``"left"``, ``"right"`` move one cell; ``"pick up"`` takes the key when it is on a
neighbouring cell (4-neighbourhood); ``"open"`` opens the door when the agent carries the key
and stands next to the door. The text is compared after ``strip().lower()``. Anything that
cannot be done (walking into a wall, the key or the locked door; picking up with no key next
to the agent; opening without the key, away from the door or an open door; unknown text) is a
no-op that costs a step, with ``info["valid"] = False``.

Difficulty knobs: ``size`` (room size, so path length: the shortest solution of the fixed
layout takes 12 steps at size 5 and 18 at size 7), ``random_layout`` (the inner wall column,
the door row and the agent, key and goal cells drawn from the task seed, or one fixed layout
per size so every task seed is the same task) and ``max_steps``.

Oracle process score (a stand-in for a PRM), ``info["process"]`` on every step: 1.0 when the
step made progress toward the current subgoal (the key while it is not held, then the door
while it is locked, then the goal), else 0.0. Progress is picking up the key, opening the door,
or a move to a cell whose shortest-path distance to the subgoal is strictly smaller than the
distance of the cell it left (breadth-first search on the grid: walls block, the locked door
blocks until opened, the key is the target of its own search). Distances are computed once per
layout at ``reset``. An invalid action scores 0.0. With ``prm_noise`` = q > 0 the score is
flipped (1 − p) on a fixed fraction q of (task seed, state, action) triples, the same ones
every time: a PRM that makes consistent mistakes (``stepcredit.envs.base.oracle_process``).
The score never changes the observations, rewards or states.

Why step credit matters here: success needs three subgoals in order, and a random policy
rarely chains them, so most groups are all-failures or have one success among many long
failures. Within a group (same layout) the same cells are visited again and again with the
same key/door status, so the actions taken from one state by different episodes can be
compared (GiGPO's anchor states): e.g. that "pick up" next to the key leads on to success and
"left" does not, which an outcome-only estimator sees only through whole-episode successes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, check_prm_noise, oracle_process, register_env

__all__ = ["ACTIONS", "KeyDoor", "keydoor"]

ACTIONS = ("up", "down", "left", "right", "pick up", "open")
_MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_NEIGHBOURS = tuple(_MOVES.values())

Cell = tuple[int, int]
_FAR = 1 << 30  # the distance of a cell the search does not reach


class KeyDoor:
    """The environment (see the module docstring).

    Cells are (row, column) inside the outer wall, 0-based: rows and columns ``0..size-1``.
    """

    def __init__(self, size: int, random_layout: bool, max_steps: int, prm_noise: float = 0.0):
        self.size, self.random_layout, self.max_steps, self.prm_noise = size, random_layout, max_steps, prm_noise
        self._seed: int | None = None
        self._dist_layout: tuple | None = None  # the layout the distance maps were computed for
        self._dist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._layout(np.random.default_rng(0))
        self._t = 0
        self._done = True

    def _layout(self, rng: np.random.Generator | None) -> None:
        """Place the inner wall, door, agent start, key and goal (drawn when ``rng`` is given)."""
        n = self.size
        if rng is None:  # the fixed layout of this size
            self.wall_col, self.door_row = n // 2, n // 2
            self.start, self.key, self.goal = (0, 0), (n - 1, 0), (n - 1, n - 1)
            return
        self.wall_col = int(rng.integers(1, n - 1))
        self.door_row = int(rng.integers(0, n))
        left = [(r, c) for r in range(n) for c in range(self.wall_col)]
        right = [(r, c) for r in range(n) for c in range(self.wall_col + 1, n)]
        a, k = rng.choice(len(left), size=2, replace=False)
        self.start, self.key = left[int(a)], left[int(k)]
        self.goal = right[int(rng.integers(len(right)))]

    @property
    def door(self) -> Cell:
        """The door's cell."""
        return (self.door_row, self.wall_col)

    def _obs(self) -> str:
        n = self.size
        rows = [["_"] * n for _ in range(n)]
        for r in range(n):
            rows[r][self.wall_col] = "#"
        rows[self.door_row][self.wall_col] = "/" if self._door_open else "D"
        rows[self.goal[0]][self.goal[1]] = "G"
        if not self._carrying:
            rows[self.key[0]][self.key[1]] = "K"
        rows[self._agent[0]][self._agent[1]] = "@"
        border = "#" * (n + 2)
        lines = [border, *("#" + "".join(row) + "#" for row in rows), border]
        lines.append(f"carrying key: {'yes' if self._carrying else 'no'}")
        return "\n".join(lines)

    def _distances(self, target: Cell, door_open: bool) -> np.ndarray:
        """[size, size] shortest-path distances (in moves) from every cell to ``target``.

        Breadth-first search from ``target`` over floor cells (the inner wall column blocks,
        its door cell too unless ``door_open``); the key is not an obstacle here: the key's own
        search starts at it, and afterwards it is picked up. Unreached cells get a large value.
        """
        n = self.size
        dist = np.full((n, n), _FAR, dtype=np.int64)
        dist[target] = 0
        frontier = [target]
        while frontier:
            nxt = []
            for r, c in frontier:
                for dr, dc in _NEIGHBOURS:
                    rr, cc = r + dr, c + dc
                    if not (0 <= rr < n and 0 <= cc < n) or dist[rr, cc] != _FAR:
                        continue
                    if cc == self.wall_col and not (door_open and rr == self.door_row):
                        continue
                    dist[rr, cc] = dist[r, c] + 1
                    nxt.append((rr, cc))
            frontier = nxt
        return dist

    def subgoal_distances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distance maps of the three subgoals of the current layout: to the key (door
        locked), to the door (door locked, key held) and to the goal (door open); cached per layout."""
        layout = (self.wall_col, self.door_row, self.key, self.goal)
        if self._dist is None or self._dist_layout != layout:
            self._dist = (self._distances(self.key, False), self._distances(self.door, False), self._distances(self.goal, True))
            self._dist_layout = layout
        return self._dist

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode of task ``seed`` (the layout, when ``random_layout``): (observation, info)."""
        self._layout(np.random.default_rng(seed) if self.random_layout else None)
        self._seed = seed
        self.subgoal_distances()
        self._agent = self.start
        self._carrying = False
        self._door_open = False
        self._t, self._done = 0, False
        obs = self._obs()
        return obs, {"state": obs}

    def valid_actions(self) -> list[str]:
        """The six actions (the same in every state; the ones that cannot be done are no-ops)."""
        return list(ACTIONS)

    def _free(self, cell: Cell) -> bool:
        """Whether the agent may walk onto ``cell``."""
        r, c = cell
        if not (0 <= r < self.size and 0 <= c < self.size):
            return False
        if c == self.wall_col:
            return self._door_open and r == self.door_row
        return self._carrying or cell != self.key

    def _next_to(self, cell: Cell) -> bool:
        r, c = self._agent
        return any((r + dr, c + dc) == cell for dr, dc in _NEIGHBOURS)

    def step(self, action: str) -> StepResult:
        """Take ``action``: (observation, reward, terminated, truncated, info)."""
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        a = action.strip().lower() if isinstance(action, str) else ""
        state = self._obs() if self.prm_noise else ""  # the state the action is taken in (for the flip)
        valid = False
        progress = False
        if a in _MOVES:
            dr, dc = _MOVES[a]
            target = (self._agent[0] + dr, self._agent[1] + dc)
            if self._free(target):
                to_key, to_door, to_goal = self._dist  # type: ignore[misc]
                dist = to_goal if self._door_open else to_door if self._carrying else to_key
                progress = bool(dist[target] < dist[self._agent])
                self._agent, valid = target, True
        elif a == "pick up":
            if not self._carrying and self._next_to(self.key):
                self._carrying = valid = progress = True
        elif a == "open":
            if self._carrying and not self._door_open and self._next_to(self.door):
                self._door_open = valid = progress = True
        process = 1.0 if progress else 0.0
        if self.prm_noise:
            process = oracle_process(process, self.prm_noise, self._seed, state, action)
        reached = self._agent == self.goal
        truncated = not reached and self._t >= self.max_steps
        self._done = reached or truncated
        obs = self._obs()
        info: dict[str, Any] = {"state": obs, "valid": valid, "process": process}
        if self._done:
            info["success"] = reached
        return obs, 1.0 if reached else 0.0, reached, truncated, info


@register_env()
def keydoor(*, size: int = 5, random_layout: bool = True, max_steps: int = 0, prm_noise: float = 0.0) -> KeyDoor:
    """Gridworld: pick up the key, open the locked door, reach the goal (outcome 1, else 0).

    Args:
        size: the grid is size × size cells inside the outer wall (difficulty knob), >= 3.
        random_layout: draw the inner wall, door, agent, key and goal from the task seed; False = one fixed layout per size.
        max_steps: the step limit; 0 = 4·size².
        prm_noise: the fraction of steps whose oracle process score ``info["process"]`` is
            flipped, in [0, 0.5]; a deterministic function of (task seed, state, action).
    """
    if size < 3 or max_steps < 0:
        raise EnvError(f"environment 'keydoor': size={size} must be >= 3 and max_steps={max_steps} >= 0")
    check_prm_noise("keydoor", prm_noise)
    return KeyDoor(size, random_layout, max_steps or 4 * size * size, prm_noise)
