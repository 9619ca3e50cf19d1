"""``household``: an ALFWorld-shaped text task (receptacles, objects, admissible commands, a goal).

The task seed generates a scene offline, as in ALFWorld's TextWorld tasks (Shridhar et al.,
2021, arXiv:2010.03768): ``n_receptacles`` numbered receptacles (countertop 1, cabinet 2,
fridge 1, sink 1, desk 1, ...; cabinets, drawers, fridges and microwaves start closed),
``n_objects`` numbered objects placed in them (mug 1, apple 2, ...; never in the agent's hand)
and a goal of one of ALFWorld's six task types (``goal``; "any" draws one from the seed):

=========  ==========================================  ========================================
``goal``   example                                      holds when
=========  ==========================================  ========================================
put        "put a mug on desk."                         a mug is in/on a desk
clean      "put a clean mug on desk."                   a mug cleaned at a sink is in/on a desk
heat       "put a hot potato in cabinet."               a potato heated in a microwave is in it
cool       "put a cool apple on countertop."            an apple cooled in a fridge is on it
two        "put two pen in drawer."                     two pens are in/on one drawer
examine    "examine the book with the desklamp."        the agent holds a book at the desklamp,
                                                        which is on
=========  ==========================================  ========================================

The goal names receptacle *types*: any desk counts. Objects of the goal's type never start in
a receptacle of the goal's type, so the goal never holds at reset.

Observations are ALFWorld's: the first one is "You are in the middle of a room. Looking quickly
around you, you see a cabinet 1, ..., and a sink 1.\\n\\nYour task is to: put a clean mug on
desk."; then "You arrive at desk 1. On the desk 1, you see a mug 1, and a pen 2." (a closed
receptacle: "The fridge 1 is closed."), "You pick up the mug 1 from the desk 1.", "You clean the
mug 1 using the sink 1.", "Nothing happens." for an inadmissible command, and so on.

Actions (``valid_actions()``, ALFWorld's admissible commands, in a fixed order): ``go to R``
(every receptacle but the current one), and at receptacle R: ``open R`` / ``close R`` (openable
ones), ``take O from R`` (objects visible in R, hands empty: the agent carries one object),
``put O in/on R`` (holding O; R open), ``clean O with R`` (R a sink), ``heat O with R`` (a
microwave), ``cool O with R`` (a fridge), ``use desklamp 1`` (the lamp on R; toggles it); and
always ``look`` and ``inventory``. Any other text is a no-op: "Nothing happens.",
``info["valid"] = False``. Heating removes "cool" and cooling removes "hot"; any object can be
cleaned, heated or cooled.

Rewards: 1 on the step that makes the goal hold (``terminated``, ``info["success"] = True``);
0 otherwise, and the episode is cut at ``max_steps`` (``truncated``, outcome 0).

``info["state"]`` is a canonical key of the state without history: the goal, the agent's
location, what it holds, which receptacles are open, the lamp, and every object's place and
flags (clean/hot/cool); looking, taking inventory or opening and closing a receptacle again
return the same key. ``info["goal"]`` holds the goal sentence on every step.

Why step credit matters here: an episode is a long chain of commands (find the object, take
it, clean it, carry it, put it) with a single reward at the end, several commands per state
(7-12 at the defaults) of which most are harmless detours (look, inventory, visiting other
receptacles) and a few are the progress; the states (at a receptacle, holding an object) recur
across a group, so anchor-state estimators can tell the progress steps from the detours, while
an outcome estimator gives every command of a successful episode the same credit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from stepcredit.envs.base import EnvError, StepResult, register_env

__all__ = ["Household", "household"]

GOALS = ("put", "clean", "heat", "cool", "two", "examine")

# receptacle type -> (openable, preposition in goals and descriptions)
_RECEPTACLES: dict[str, tuple[bool, str]] = {
    "cabinet": (True, "in"),
    "drawer": (True, "in"),
    "fridge": (True, "in"),
    "microwave": (True, "in"),
    "countertop": (False, "on"),
    "diningtable": (False, "on"),
    "desk": (False, "on"),
    "shelf": (False, "on"),
    "sidetable": (False, "on"),
    "dresser": (False, "on"),
    "sink": (False, "in"),
    "stoveburner": (False, "on"),
    "garbagecan": (False, "in"),
}
_TARGETS = ("countertop", "diningtable", "desk", "shelf", "sidetable", "dresser", "cabinet", "drawer")
_LAMP_HOSTS = ("desk", "sidetable", "dresser")
_APPLIANCE = {"clean": "sink", "heat": "microwave", "cool": "fridge"}
_UNIQUE = {"fridge", "microwave", "sink", "garbagecan", "diningtable"}  # at most one of each

# object type -> goal types it can be the object of
_OBJECTS: dict[str, frozenset[str]] = {
    name: frozenset(goals.split())
    for name, goals in {
        "mug": "put clean heat cool examine",
        "cup": "put clean heat cool two",
        "apple": "put clean heat cool two",
        "potato": "put clean heat cool",
        "tomato": "put clean heat cool",
        "egg": "put heat cool",
        "bread": "put heat cool",
        "plate": "put clean heat cool two",
        "bowl": "put clean cool examine",
        "pan": "put clean cool",
        "spoon": "put clean two",
        "knife": "put clean two",
        "book": "put two examine",
        "pen": "put two examine",
        "pencil": "put two examine",
        "cellphone": "put two examine",
        "keychain": "put two examine",
        "cd": "put two examine",
        "alarmclock": "put examine",
    }.items()
}


def _listing(names: list[str]) -> str:
    """ALFWorld's enumeration: "a mug 1, a pen 2, and a cd 1" or "nothing"."""
    items = [f"a {n}" for n in names]
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


class Household:
    """The environment (see the module docstring)."""

    def __init__(self, n_receptacles: int, n_objects: int, goal: str, max_steps: int):
        self.n_receptacles, self.n_objects, self.goal_type, self.max_steps = n_receptacles, n_objects, goal, max_steps
        self.goal = ""
        self._task = ""  # the drawn goal type
        self._target = ""  # goal object type
        self._dest = ""  # goal receptacle type ("" for examine)
        self.receptacles: list[str] = []
        self._rtype: dict[str, str] = {}
        self.objects: list[str] = []  # sorted by name
        self._otype: dict[str, str] = {}
        self._lamp = ""  # receptacle holding desklamp 1, "" if none
        self._loc: dict[str, str] = {}
        self._flags: dict[str, frozenset[str]] = {}
        self._open: set[str] = set()
        self._at = ""  # "" = the middle of the room
        self._holding = ""
        self._lamp_on = False
        self._t = 0
        self._done = True
        self._valid: list[str] = []

    # ---- generation -------------------------------------------------------------------------
    def _generate(self, rng: np.random.Generator) -> None:
        task = self.goal_type
        if task == "any":
            allowed = [g for g in GOALS if g != "two" or self.n_objects >= 2]
            task = allowed[int(rng.integers(len(allowed)))]
        candidates = sorted(t for t, goals in _OBJECTS.items() if task in goals)
        target = candidates[int(rng.integers(len(candidates)))]
        dest = "" if task == "examine" else _TARGETS[int(rng.integers(len(_TARGETS)))]
        types: list[str] = []
        if dest:
            types.append(dest)
        if task in _APPLIANCE:
            types.append(_APPLIANCE[task])
        lamp_host = ""
        if task == "examine":
            lamp_host = _LAMP_HOSTS[int(rng.integers(len(_LAMP_HOSTS)))]
            types.append(lamp_host)
        pool = [t for t in _RECEPTACLES if t != dest]
        while len(types) < self.n_receptacles:
            t = pool[int(rng.integers(len(pool)))]
            if t in _UNIQUE and t in types:
                continue
            types.append(t)
        counts: dict[str, int] = {}
        named: list[str] = []
        for t in types:
            counts[t] = counts.get(t, 0) + 1
            named.append(f"{t} {counts[t]}")
        self.receptacles = sorted(named, key=lambda r: (r.rsplit(" ", 1)[0], int(r.rsplit(" ", 1)[1])))
        self._rtype = {r: r.rsplit(" ", 1)[0] for r in self.receptacles}
        # the desklamp: on a receptacle of the drawn host type for "examine", else on a random
        # desk/sidetable/dresser half of the time (a distractor)
        hosts = [r for r in self.receptacles if self._rtype[r] in ((lamp_host,) if lamp_host else _LAMP_HOSTS)]
        self._lamp = ""
        if hosts and (task == "examine" or rng.random() < 0.5):
            self._lamp = hosts[int(rng.integers(len(hosts)))]
        # objects: the goal's (one, two for "two"), then distractors of any type
        needed = 2 if task == "two" else 1
        otypes = [target] * needed
        all_types = sorted(_OBJECTS)
        while len(otypes) < self.n_objects:
            otypes.append(all_types[int(rng.integers(len(all_types)))])
        ocount: dict[str, int] = {}
        self._loc, self._otype = {}, {}
        for t in otypes:
            ocount[t] = ocount.get(t, 0) + 1
            name = f"{t} {ocount[t]}"
            places = [r for r in self.receptacles if t != target or self._rtype[r] != dest]
            self._loc[name] = places[int(rng.integers(len(places)))]
            self._otype[name] = t
        self.objects = sorted(self._loc)
        self._flags = {o: frozenset() for o in self.objects}
        self._task, self._target, self._dest = task, target, dest
        if task == "examine":
            self.goal = f"examine the {target} with the desklamp."
        else:
            prep = _RECEPTACLES[dest][1]
            adjective = {"clean": "clean ", "heat": "hot ", "cool": "cool "}.get(task, "")
            article = "two" if task == "two" else "a"
            self.goal = f"put {article} {adjective}{target} {prep} {dest}."

    # ---- observation helpers ----------------------------------------------------------------
    def _visible(self, r: str) -> bool:
        return not _RECEPTACLES[self._rtype[r]][0] or r in self._open

    def _contents(self, r: str) -> list[str]:
        items = [o for o in self.objects if self._loc[o] == r]
        return (["desklamp 1"] if self._lamp == r else []) + items

    def _describe(self, r: str) -> str:
        if _RECEPTACLES[self._rtype[r]][0]:
            if r not in self._open:
                return f"The {r} is closed."
            return f"The {r} is open. In it, you see {_listing(self._contents(r))}."
        return f"On the {r}, you see {_listing(self._contents(r))}."

    def _state_key(self) -> str:
        objs = "; ".join(
            f"{o}@{'hand' if o == self._holding else self._loc[o]}" + "".join(f"+{f}" for f in sorted(self._flags[o]))
            for o in self.objects
        )
        opened = ",".join(r for r in self.receptacles if r in self._open)
        lamp = f" | lamp: {'on' if self._lamp_on else 'off'}" if self._lamp else ""
        return (
            f"task: {self.goal} | at: {self._at or 'middle of room'} | holding: {self._holding or 'nothing'}"
            f" | open: {opened or 'none'}{lamp} | {objs}"
        )

    def _admissible(self) -> list[str]:
        acts = [f"go to {r}" for r in self.receptacles if r != self._at]
        r, h = self._at, self._holding
        if r:
            rtype = self._rtype[r]
            if _RECEPTACLES[rtype][0]:
                acts.append(f"close {r}" if r in self._open else f"open {r}")
            if self._visible(r):
                if not h:
                    acts += [f"take {o} from {r}" for o in self.objects if self._loc[o] == r]
                else:
                    acts.append(f"put {h} in/on {r}")
            if h and rtype in ("sink", "microwave", "fridge"):
                verb = {"sink": "clean", "microwave": "heat", "fridge": "cool"}[rtype]
                acts.append(f"{verb} {h} with {r}")
            if self._lamp == r:
                acts.append("use desklamp 1")
        return acts + ["look", "inventory"]

    def _goal_holds(self) -> bool:
        task, target = self._task, self._target
        if task == "examine":
            return (
                self._lamp_on and self._at == self._lamp and bool(self._holding) and self._otype[self._holding] == target
            )
        need = {"clean": "clean", "heat": "hot", "cool": "cool"}.get(task)
        per_receptacle: dict[str, int] = {}
        for o in self.objects:
            if o == self._holding or self._otype[o] != target or self._rtype[self._loc[o]] != self._dest:
                continue
            if need is None or need in self._flags[o]:
                per_receptacle[self._loc[o]] = per_receptacle.get(self._loc[o], 0) + 1
        return any(n >= (2 if task == "two" else 1) for n in per_receptacle.values())

    # ---- protocol ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        self._generate(np.random.default_rng(seed))
        self._open, self._at, self._holding, self._lamp_on = set(), "", "", False
        self._t, self._done = 0, False
        self._valid = self._admissible()
        obs = (
            f"You are in the middle of a room. Looking quickly around you, you see {_listing(self.receptacles)}."
            f"\n\nYour task is to: {self.goal}"
        )
        return obs, {"state": self._state_key(), "goal": self.goal}

    def valid_actions(self) -> list[str]:
        return list(self._valid)

    def _execute(self, action: str) -> str:
        """Apply an admissible command; the observation text."""
        words = action.split()
        verb, r, h = words[0], self._at, self._holding
        if action == "look":
            if not r:
                return f"You are in the middle of a room. Looking quickly around you, you see {_listing(self.receptacles)}."
            return f"You are facing the {r}. Next to it, you see nothing."
        if action == "inventory":
            return f"You are carrying: a {h}." if h else "You are not carrying anything."
        if verb == "go":
            self._at = action[len("go to "):]
            return f"You arrive at {self._at}. {self._describe(self._at)}"
        if verb == "open":
            self._open.add(r)
            return f"You open the {r}. {self._describe(r)}"
        if verb == "close":
            self._open.discard(r)
            return f"You close the {r}."
        if verb == "take":
            obj = " ".join(words[1:3])
            self._holding = obj
            return f"You pick up the {obj} from the {r}."
        if verb == "put":
            self._loc[h], self._holding = r, ""
            return f"You put the {h} in/on the {r}."
        if verb in ("clean", "heat", "cool"):
            flags = set(self._flags[h])
            flags.add({"clean": "clean", "heat": "hot", "cool": "cool"}[verb])
            if verb != "clean":
                flags.discard("cool" if verb == "heat" else "hot")
            self._flags[h] = frozenset(flags)
            return f"You {verb} the {h} using the {r}."
        # use desklamp 1
        self._lamp_on = not self._lamp_on
        return f"You turn {'on' if self._lamp_on else 'off'} the desklamp 1."

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended: call reset()")
        self._t += 1
        valid = action in self._valid
        obs = self._execute(action) if valid else "Nothing happens."
        if valid:
            self._valid = self._admissible()
        success = valid and self._goal_holds()
        truncated = not success and self._t >= self.max_steps
        self._done = success or truncated
        info: dict[str, Any] = {"state": self._state_key(), "valid": valid, "goal": self.goal}
        if self._done:
            info["success"] = success
        return obs, 1.0 if success else 0.0, success, truncated, info


@register_env()
def household(
    *,
    n_receptacles: int = 6,
    n_objects: int = 4,
    goal: Literal["any", "put", "clean", "heat", "cool", "two", "examine"] = "any",
    max_steps: int = 0,
) -> Household:
    """ALFWorld-shaped household task: find, take, clean/heat/cool and place objects.

    Args:
        n_receptacles: the number of receptacles in the scene (difficulty knob), 3..30.
        n_objects: the number of objects, the goal's included (difficulty knob), 1..40 (>= 2 for goal "two").
        goal: the task type, or "any" to draw one from the task seed.
        max_steps: the step limit; 0 = 5·n_receptacles.
    """
    if not 3 <= n_receptacles <= 30 or not 1 <= n_objects <= 40 or max_steps < 0 or (goal == "two" and n_objects < 2):
        raise EnvError(
            f"environment 'household': n_receptacles={n_receptacles} must be in 3..30, n_objects={n_objects} in "
            f"1..40 (>= 2 for goal 'two', goal={goal!r}), max_steps={max_steps} >= 0"
        )
    return Household(n_receptacles, n_objects, goal, max_steps or 5 * n_receptacles)
