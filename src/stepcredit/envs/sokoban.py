"""``sokoban``: small text Sokoban, one move per step, over generated levels that are solvable.

Framed like the LLM-agent Sokoban tasks (RAGEN and others, built on gym-sokoban): the agent
reads the board as text and answers with one move. The board is ``size`` × ``size`` cells
*including* its outer wall (6 × 6 by default: a 4 × 4 room, as in those tasks), with ``boxes``
boxes (1 by default) and as many targets. The player moves up, down, left or right; walking
into a box pushes it one cell if the cell behind it is free (floor or target, not a wall or
another box). The level is solved when every box stands on a target.

Observation (also ``info["state"]``): the board, one text row per board row, in the usual
Sokoban notation with ``_`` for floor (a space is easily lost in text); the level of task seed
1 at the defaults::

    ######
    ##___#
    #_$__#
    #_#_@#
    #___.#
    ######

``#`` wall, ``_`` floor, ``.`` target, ``$`` box, ``*`` box on a target, ``@`` the player,
``+`` the player on a target. The board is the whole state, with no history or step count, so
equal states of a group (same level) are equal strings: anchor states.

Actions: ``"up"``, ``"down"``, ``"left"``, ``"right"`` (``valid_actions()``, the same four in
every state). The action text is read after ``strip().lower()``, with an optional ``"move "``
prefix (``"Up"``, ``" move left\\n"``); any other text is unparsable.

Rewards (gym-sokoban's values, except that a valid move costs nothing), on each step:

* an unparsable move, or a move that cannot be done (into a wall, or pushing a box into a wall
  or another box): no-op, **−0.1**, ``info["valid"] = False``;
* a push that puts a box on a target: **+1**; a push that takes a box off a target: **−1**
  (target to target or floor to floor: 0);
* the move that puts the last box on its target: **+10** more (so +11 for that step), the
  episode ends (``terminated``, ``info["success"] = True``);
* any other valid move: **0**.

So the reward is *not* sparse (unlike the other built-in environments): a box placed earns +1
before the end, and every wasted move into a wall costs −0.1. After ``max_steps`` steps
without solving, the episode is cut (``truncated``, ``info["success"] = False``); the step's
own reward still counts. ``info["boxes_on_target"]`` counts the boxes on targets after every
step. An episode's return is the sum of its step rewards; success is ``info["success"]``.

Levels. Each level is made by :func:`generate_level` from a random generator, following
gym-sokoban's idea (Schrader, 2018: place the boxes on their targets and play backwards,
pulling boxes) in our own code: carve a room (an open room with a few random inner walls that
keep the floor connected), put the boxes on their targets, then play backwards exhaustively: a
breadth-first search from the solved board (player on any free cell) over reverse moves, where
the player steps to a free cell and may pull the box behind it along. Every state it reaches can
be pushed back to the solved board, and its search depth is its shortest solution length; only
states within ``max_steps`` moves are kept. Of those, the generator takes the boxes farthest
from the targets (largest total distance to the nearest target; one of the ties drawn at
random), then checks the level independently with a forward breadth-first solver over
(player, boxes) states (:func:`solve`): it is served only if the solver finds a solution of the
same length (at most ``max_steps``); otherwise a new room is carved. Every level served is
therefore solvable within the episode's step limit. At the defaults the shortest solutions of
the first 64 levels take 1 to 15 moves (median 7), and a uniformly random policy solves 7% of
the episodes.

Level k of a level sequence comes from ``np.random.default_rng([pool_seed, k])``. With
``pool=N`` (default 64), task seed s plays level ``s mod N``: a fixed pool of N levels that
recur during training (each level's anchor states recur too). With ``pool=0``, task seed s
plays level s: a fresh level for every task (generalisation; there, credit methods tend to look
alike because learning is dominated by generalising over levels). ``reset(options={"level":
BOARD_TEXT})`` plays a hand-made board in the same notation instead.

Difficulty knobs: ``size``, ``boxes``, ``max_steps`` (also the solution-length bound of the
generator), ``pool`` and ``pool_seed``.

Why step credit matters here: a level is won by a short sequence of right moves among many
wrong ones (a push into a corner makes it unsolvable for the rest of the episode, which an
outcome-only estimator blames on every step equally). Within a group the same boards recur, so
anchor-state methods can compare the moves taken from one board by different episodes.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, register_env

__all__ = [
    "ACTIONS",
    "REWARD_BOX_OFF_TARGET",
    "REWARD_BOX_ON_TARGET",
    "REWARD_INVALID",
    "REWARD_SOLVED",
    "Sokoban",
    "SokobanLevel",
    "generate_level",
    "parse_level",
    "render_level",
    "sokoban",
    "solve",
]

ACTIONS = ("up", "down", "left", "right")
_DELTAS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}

REWARD_INVALID = -0.1
REWARD_BOX_ON_TARGET = 1.0
REWARD_BOX_OFF_TARGET = -1.0
REWARD_SOLVED = 10.0

_MAX_ROOMS = 1000  # rooms carved before the generator gives up (only impossible settings reach it)
_SOLVER_LIMIT = 200_000  # states a solver run may visit before the level counts as unverified


@dataclass(frozen=True)
class SokobanLevel:
    """A Sokoban board. Cells are flat indices ``row * width + column``.

    Attributes:
        height, width: board size in cells, the outer wall included.
        walls: [height * width] bools, True for a wall (cells off the board count as walls too).
        targets: the target cells, sorted.
        boxes: the box cells, sorted (as many as targets).
        player: the player's cell.
    """

    height: int
    width: int
    walls: tuple[bool, ...]
    targets: tuple[int, ...]
    boxes: tuple[int, ...]
    player: int

    def neighbour(self, cell: int, move: str) -> int:
        """The cell next to ``cell`` in direction ``move``; -1 off the board."""
        dr, dc = _DELTAS[move]
        r, c = divmod(cell, self.width)
        r, c = r + dr, c + dc
        return r * self.width + c if 0 <= r < self.height and 0 <= c < self.width else -1

    def blocked(self, cell: int) -> bool:
        """Whether ``cell`` is a wall or off the board."""
        return cell < 0 or self.walls[cell]

    def solved(self) -> bool:
        """Whether every box is on a target."""
        return set(self.boxes) == set(self.targets)


def render_level(level: SokobanLevel, boxes: Sequence[int] | None = None, player: int | None = None) -> str:
    """The board text (see the module docstring) of ``level``, optionally with other box and player cells.

    Args:
        level: the board.
        boxes: box cells to draw instead of ``level.boxes``.
        player: the player's cell instead of ``level.player``.

    Returns:
        ``height`` lines of ``width`` characters joined by newlines.
    """
    box_set = set(level.boxes if boxes is None else boxes)
    target_set = set(level.targets)
    at = level.player if player is None else player
    chars = []
    for cell in range(level.height * level.width):
        if level.walls[cell]:
            ch = "#"
        elif cell == at:
            ch = "+" if cell in target_set else "@"
        elif cell in box_set:
            ch = "*" if cell in target_set else "$"
        else:
            ch = "." if cell in target_set else "_"
        chars.append(ch)
    w = level.width
    return "\n".join("".join(chars[r * w : (r + 1) * w]) for r in range(level.height))


def parse_level(text: str) -> SokobanLevel:
    """A board written in the notation of the module docstring (``_``, ``-`` or space for floor).

    Args:
        text: rows separated by newlines, all of one length (blank leading/trailing lines ignored).

    Returns:
        The level.

    Raises:
        EnvError: ragged rows, an unknown character, not exactly one player, no box, or as many
            boxes as targets not given.
    """
    rows = [row.rstrip("\r") for row in text.strip("\n").split("\n")]
    who = "environment 'sokoban': level"
    if not rows or any(len(row) != len(rows[0]) for row in rows) or not rows[0]:
        raise EnvError(f"{who} rows must be non-empty and all of one length, got lengths {[len(r) for r in rows]}")
    width = len(rows[0])
    walls, targets, boxes, players = [], [], [], []
    for r, row in enumerate(rows):
        for c, ch in enumerate(row):
            cell = r * width + c
            if ch not in "#_- .$*@+":
                raise EnvError(f"{who} has an unknown character {ch!r} at row {r}, column {c}")
            walls.append(ch == "#")
            if ch in ".*+":
                targets.append(cell)
            if ch in "$*":
                boxes.append(cell)
            if ch in "@+":
                players.append(cell)
    if len(players) != 1:
        raise EnvError(f"{who} needs exactly one player ('@' or '+'), got {len(players)}")
    if not boxes or len(boxes) != len(targets):
        raise EnvError(f"{who} needs at least one box and as many targets as boxes, got {len(boxes)} boxes and {len(targets)} targets")
    return SokobanLevel(len(rows), width, tuple(walls), tuple(targets), tuple(boxes), players[0])


def _move(level: SokobanLevel, boxes: tuple[int, ...], player: int, move: str) -> tuple[tuple[int, ...], int, int] | None:
    """One move: (new sorted boxes, new player cell, index in ``boxes`` of the pushed box or -1), or None if blocked."""
    nxt = level.neighbour(player, move)
    if level.blocked(nxt):
        return None
    if nxt not in boxes:
        return boxes, nxt, -1
    beyond = level.neighbour(nxt, move)
    if level.blocked(beyond) or beyond in boxes:
        return None
    i = boxes.index(nxt)
    return tuple(sorted(boxes[:i] + (beyond,) + boxes[i + 1 :])), nxt, i


def solve(level: SokobanLevel, max_moves: int | None = None) -> list[str] | None:
    """A shortest solution of ``level`` by breadth-first search over (player, boxes) states.

    Args:
        level: the board to solve from its current boxes and player.
        max_moves: search no deeper than this many moves (None: no bound).

    Returns:
        The moves (``[]`` if already solved), or None if there is no solution within
        ``max_moves`` (or the search visited more than 200,000 states).
    """
    targets = tuple(level.targets)
    start = (level.player, level.boxes)
    if level.boxes == targets:
        return []
    parent: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, tuple[int, ...]], str]] = {}
    seen = {start}
    frontier = deque([(start, 0)])
    while frontier:
        state, depth = frontier.popleft()
        if max_moves is not None and depth >= max_moves:
            continue
        player, boxes = state
        for move in ACTIONS:
            out = _move(level, boxes, player, move)
            if out is None:
                continue
            nxt = (out[1], out[0])
            if nxt in seen:
                continue
            seen.add(nxt)
            parent[nxt] = (state, move)
            if out[0] == targets:
                path = []
                while nxt != start:
                    nxt, m = parent[nxt]
                    path.append(m)
                return path[::-1]
            if len(seen) > _SOLVER_LIMIT:
                return None
            frontier.append((nxt, depth + 1))
    return None


def _room(rng: np.random.Generator, size: int) -> list[bool]:
    """Walls of a size × size board: the outer wall and a few random inner walls keeping the floor connected."""
    walls = [r in (0, size - 1) or c in (0, size - 1) for r in range(size) for c in range(size)]
    inner = [i for i, w in enumerate(walls) if not w]
    n_extra = int(rng.integers(0, len(inner) // 4 + 1))
    for cell in rng.permutation(inner)[:n_extra]:
        walls[int(cell)] = True
        if not _connected(walls, size):
            walls[int(cell)] = False
    return walls


def _connected(walls: list[bool], size: int) -> bool:
    floor = [i for i, w in enumerate(walls) if not w]
    seen = {floor[0]}
    todo = [floor[0]]
    while todo:
        cell = todo.pop()
        for step in (-size, size, -1, 1):
            n = cell + step
            if not walls[n] and n not in seen:  # the outer wall keeps n on the board
                seen.add(n)
                todo.append(n)
    return len(seen) == len(floor)


def _reverse_distances(level: SokobanLevel, max_steps: int) -> dict[tuple[int, tuple[int, ...]], int]:
    """Reverse play from the solved board: the shortest solution length of every state within reach.

    A breadth-first search from every solved state (``level``'s targets all holding a box, the
    player on any free cell) along reverse moves: the player steps to a free neighbouring cell
    and may pull along a box from the cell behind it. Each reverse move undoes one forward move
    (a step or a push), so a state's search depth is the length of its shortest forward
    solution. States deeper than ``max_steps`` are not expanded.

    Returns:
        {(player cell, sorted box cells): shortest solution length}, 0 for the solved states.
    """
    targets = level.targets
    start = [(p, targets) for p in range(level.height * level.width) if not level.walls[p] and p not in targets]
    dist = dict.fromkeys(start, 0)
    frontier = deque(start)
    while frontier:
        state = frontier.popleft()
        d = dist[state]
        if d >= max_steps or len(dist) > _SOLVER_LIMIT:
            continue
        player, boxes = state
        for move in ACTIONS:
            nxt = level.neighbour(player, move)
            if level.blocked(nxt) or nxt in boxes:
                continue
            reached = [(nxt, boxes)]
            behind = level.neighbour(player, _OPPOSITE[move])
            if behind in boxes:  # pull that box onto the player's cell
                i = boxes.index(behind)
                reached.append((nxt, tuple(sorted(boxes[:i] + (player,) + boxes[i + 1 :]))))
            for s in reached:
                if s not in dist:
                    dist[s] = d + 1
                    frontier.append(s)
    return dist


def _displacement(boxes: Sequence[int], targets: Sequence[int], width: int) -> int:
    """Sum over the boxes of the Manhattan distance to the nearest target."""
    return sum(min(abs(b // width - t // width) + abs(b % width - t % width) for t in targets) for b in boxes)


def generate_level(rng: np.random.Generator, *, size: int = 6, boxes: int = 1, max_steps: int = 15) -> SokobanLevel:
    """A random level solvable in at most ``max_steps`` moves (see the module docstring).

    Args:
        rng: the random generator (the level is a function of its state).
        size: board side in cells, the outer wall included (at 4, the 2 × 2 room allows no push, so
            no level exists).
        boxes: number of boxes (and targets), >= 1.
        max_steps: the longest shortest solution allowed, >= 1.

    Returns:
        A level that is not solved yet and whose shortest solution has 1..max_steps moves.

    Raises:
        EnvError: no such level found in 1,000 rooms (too many boxes for the board, or a step
            limit too short).
    """
    for _ in range(_MAX_ROOMS):
        walls = _room(rng, size)
        floor = [i for i, w in enumerate(walls) if not w]
        if len(floor) < boxes + 2:
            continue
        cells = rng.choice(len(floor), size=boxes, replace=False)
        targets = tuple(sorted(floor[int(i)] for i in cells))
        solved = SokobanLevel(size, size, tuple(walls), targets, targets, floor[0])
        # the hardest boxes within reach: largest displacement, one of the ties drawn
        reach = _reverse_distances(solved, max_steps)
        scored = [(_displacement(b, targets, size), d, p, b) for (p, b), d in reach.items() if d > 0]
        if not scored:
            continue
        top = max(x[0] for x in scored)
        ties = [x for x in scored if x[0] == top]  # in search order: deterministic
        _, d, player, box_cells = ties[int(rng.integers(len(ties)))]
        level = SokobanLevel(size, size, tuple(walls), targets, box_cells, player)
        solution = solve(level, max_steps)  # the independent check: the forward search agrees
        if solution is not None and len(solution) == d:
            return level
    raise EnvError(
        f"environment 'sokoban': no level with size={size}, boxes={boxes} solvable within max_steps={max_steps} "
        f"was found in {_MAX_ROOMS} rooms; use a larger board, fewer boxes or more steps"
    )


@functools.lru_cache(maxsize=4096)
def _sequence_level(size: int, boxes: int, max_steps: int, pool_seed: int, k: int) -> SokobanLevel:
    """Level ``k`` of the level sequence ``pool_seed`` (cached: a pool's levels are made once per process)."""
    return generate_level(np.random.default_rng([pool_seed, k]), size=size, boxes=boxes, max_steps=max_steps)


def _parse_move(action: Any) -> str | None:
    if not isinstance(action, str):
        return None
    a = action.strip().lower()
    if a.startswith("move "):
        a = a[5:].strip()
    return a if a in _DELTAS else None


class Sokoban:
    """The environment (see the module docstring)."""

    def __init__(self, size: int, boxes: int, max_steps: int, pool: int, pool_seed: int):
        self.size, self.boxes, self.max_steps = size, boxes, max_steps
        self.pool, self.pool_seed = pool, pool_seed
        self.level: SokobanLevel | None = None
        self._t = 0
        self._done = True

    def level_for(self, seed: int) -> SokobanLevel:
        """The level that task ``seed`` plays (``seed mod pool``-th of the pool, or the ``seed``-th when pool=0)."""
        if seed < 0:
            raise EnvError(f"environment 'sokoban': task seed {seed} must be >= 0")
        k = seed % self.pool if self.pool else seed
        return _sequence_level(self.size, self.boxes, self.max_steps, self.pool_seed, k)

    def _obs(self) -> str:
        return render_level(self.level, self._boxes, self._player)  # type: ignore[arg-type]  (set by reset)

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode of task ``seed`` (None: a random task), or of ``options["level"]`` (a board text)."""
        if options and "level" in options:
            level = parse_level(options["level"])
            if level.solved():
                raise EnvError("environment 'sokoban': the level given in options['level'] is already solved")
            self.level = level
        else:
            if seed is None:
                seed = int(np.random.default_rng().integers(2**32))
            self.level = self.level_for(seed)
        self._boxes, self._player = self.level.boxes, self.level.player
        self._t, self._done = 0, False
        obs = self._obs()
        return obs, {"state": obs}

    def valid_actions(self) -> list[str]:
        """The four moves (the same in every state; a blocked one is a no-op costing −0.1)."""
        return list(ACTIONS)

    def step(self, action: str) -> StepResult:
        """Take ``action``: (observation, reward, terminated, truncated, info)."""
        if self._done or self.level is None:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        move = _parse_move(action)
        out = None if move is None else _move(self.level, self._boxes, self._player, move)
        targets = self.level.targets
        if out is None:
            reward, valid = REWARD_INVALID, False
        else:
            reward, valid = 0.0, True
            boxes, player, pushed = out
            if pushed >= 0:
                was_on = self._boxes[pushed] in targets
                now_on = self.level.neighbour(player, move) in targets  # the pushed box's new cell
                reward = REWARD_BOX_ON_TARGET * (now_on and not was_on) + REWARD_BOX_OFF_TARGET * (was_on and not now_on)
            self._boxes, self._player = boxes, player
        on_target = sum(b in targets for b in self._boxes)
        solved = on_target == len(targets)
        if solved:
            reward += REWARD_SOLVED
        truncated = not solved and self._t >= self.max_steps
        self._done = solved or truncated
        obs = self._obs()
        info: dict[str, Any] = {"state": obs, "valid": valid, "boxes_on_target": on_target}
        if self._done:
            info["success"] = solved
        return obs, float(reward), solved, truncated, info


@register_env()
def sokoban(*, size: int = 6, boxes: int = 1, max_steps: int = 15, pool: int = 64, pool_seed: int = 0) -> Sokoban:
    """Text Sokoban on generated, solvable levels (+1 per box placed, +10 solved, −0.1 invalid move).

    Args:
        size: board side in cells, the outer wall included (difficulty knob), >= 5.
        boxes: number of boxes and targets (difficulty knob), >= 1.
        max_steps: the step limit; every generated level is solvable within it, >= 1.
        pool: N > 0: task seed s plays level s mod N of a fixed pool; 0: a fresh level per task seed.
        pool_seed: which level sequence (pool) to draw from, >= 0.
    """
    if size < 5 or boxes < 1 or max_steps < 1 or pool < 0 or pool_seed < 0:
        raise EnvError(
            f"environment 'sokoban': size={size} must be >= 5, boxes={boxes} >= 1, max_steps={max_steps} >= 1, "
            f"pool={pool} >= 0 and pool_seed={pool_seed} >= 0"
        )
    if boxes + 2 > (size - 2) ** 2:
        raise EnvError(f"environment 'sokoban': boxes={boxes} do not fit a size={size} board ({(size - 2) ** 2} inner cells)")
    return Sokoban(size, boxes, max_steps, pool, pool_seed)
