"""The admissible-action table A(s) of the policies that re-score stored steps (MLP, GRU, LM).

A policy's update recomputes π(·|s_t) for stored steps, so it remembers the valid actions of
every state it met: :meth:`AdmissibleActions._register` records a state's list (an action seen
once in s stays in A(s), as in the tabular policy), and the table travels in the policy's state
dict as three plain arrays (``valid_states``, ``valid_offsets``, ``valid_actions``), never
pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["AdmissibleActions"]


class AdmissibleActions:
    """Mixin: ``self._valid`` (state -> A(s), in order of first appearance) and its sets."""

    _valid: dict[str, list[str]]
    _valid_set: dict[str, set[str]]

    def _init_actions(self) -> None:
        self._valid = {}
        self._valid_set = {}

    def _register(self, state: str, actions: Sequence[str]) -> list[str]:
        """Record ``actions`` as admissible in ``state`` and return A(state) so far."""
        known = self._valid.get(state)
        if known is None:
            if not actions:
                raise ValueError(f"state {state!r}: the environment listed no valid action")
            if len(set(actions)) != len(actions):
                raise ValueError(f"state {state!r}: the valid actions repeat an action: {list(actions)}")
            self._valid[state] = known = list(actions)
            self._valid_set[state] = set(actions)
        else:
            seen = self._valid_set[state]
            for a in actions:
                if a not in seen:
                    seen.add(a)
                    known.append(a)
        return known

    @property
    def n_states(self) -> int:
        """States met so far (the size of the admissible-action table)."""
        return len(self._valid)

    def _actions_state(self) -> dict[str, np.ndarray]:
        """The table as ``{"valid_states": [N] str, "valid_offsets": [N+1] int64, "valid_actions": [P] str}``."""
        states = list(self._valid)
        acts = [a for s in states for a in self._valid[s]]
        offsets = np.zeros(len(states) + 1, dtype=np.int64)
        np.cumsum([len(self._valid[s]) for s in states], out=offsets[1:])
        return {
            "valid_states": np.array(states, dtype=np.str_) if states else np.zeros(0, dtype="<U1"),
            "valid_offsets": offsets,
            "valid_actions": np.array(acts, dtype=np.str_) if acts else np.zeros(0, dtype="<U1"),
        }

    @staticmethod
    def _read_actions(state: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
        """The table saved by :meth:`_actions_state` (KeyError for a missing array, ValueError if inconsistent)."""
        states = [str(s) for s in np.asarray(state["valid_states"]).tolist()]
        offsets = np.asarray(state["valid_offsets"], dtype=np.int64)
        acts = [str(a) for a in np.asarray(state["valid_actions"]).tolist()]
        if offsets.shape != (len(states) + 1,) or offsets[-1] != len(acts):
            raise ValueError("policy state: valid_offsets do not fit valid_states and valid_actions")
        return {s: acts[offsets[i]:offsets[i + 1]] for i, s in enumerate(states)}

    def _set_actions(self, table: dict[str, list[str]]) -> None:
        self._valid = table
        self._valid_set = {s: set(a) for s, a in table.items()}
