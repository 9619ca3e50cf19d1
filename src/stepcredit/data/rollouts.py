"""``Rollouts``: groups of multi-step episodes, validated once, stored column by column.

A rollout record is one episode::

    {"episode_id": "e0", "group_id": "task-3", "outcome": 1.0,
     "rewards": {"format": 1.0, "correct": 0.0},
     "steps": [{"state": "s0", "action": "left", "reward": 0.0, "value": 0.4}, ...],
     "meta": {...}}

Required: ``episode_id`` (string, unique), ``group_id`` (string), ``outcome`` (finite number),
``steps`` (a non-empty list of objects). Optional ``rewards``: the episode's named reward
components, an object mapping names (``[A-Za-z_][A-Za-z0-9_]*``) to finite numbers; a name must
be in every episode's ``rewards`` or in none. Step fields (all optional):

* key fields, a string or an integer, hashed to uint64 (see ``stepcredit.data.hashing``):
  ``state``, ``action``, ``node``, ``reference`` (the reference, ground-truth action of the
  step, e.g. the reference tool call as JSON text);
* numeric fields: ``reward`` (default 0 where absent), ``process``, ``value``, ``p_answer``,
  ``grounding``, ``importance``, ``logp``, ``ref_logp``, ``label`` (finite numbers) and ``tokens`` (a non-negative integer).

A step field other than ``reward`` must be in every step or in none ("partial presence" is an
error, because an estimator that needs the column would otherwise read made-up values). Other
top-level and step fields are ignored; put free-form data into ``meta``, which is carried
through unchanged.

In memory every per-episode quantity is an array of length E and every per-step quantity an
array of length S; episode e owns steps ``episode_offsets[e]:episode_offsets[e+1]``. Arrays are
read-only. Reward components are the [E] float64 arrays of ``episode_columns``; everywhere a
field is named (``has``, ``require``, a transform's ``requires``), component NAME is
``"rewards.NAME"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data.errors import RolloutsError
from stepcredit.data.schema import (
    _FIXES,
    COMPONENT_PREFIX,
    COMPONENTS_FIELD,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    KEY_COLUMNS,
    NUMERIC_COLUMNS,
    PARTIAL_ALLOWED,
    STEP_COLUMNS,
    Locate,
    RecordChecker,
    _first,
    _Flat,
    _id_array,
    _iter_table_records,
    _meta_text,
    _readonly,
    _string_array,
    _type_name,
    component_name,
    flatten_table,
    is_component_name,
    validate_columns,
)

__all__ = [
    "COMPONENT_PREFIX",
    "KEY_COLUMNS",
    "NUMERIC_COLUMNS",
    "FLOAT_COLUMNS",
    "PARTIAL_ALLOWED",
    "MissingColumnError",
    "Rollouts",
]


class MissingColumnError(ValueError):
    """An estimator, transform or filter needs a field the rollouts do not have.

    The field is a step field (``"value"``) or an episode reward component
    (``"rewards.NAME"``); the message says which, listing the fields of that kind present.

    Attributes:
        column: the missing field as named by the stage (``"value"``, ``"rewards.format"``).
        by: the stage that needs it (``"estimator 'gae'"``).
        present: the fields present as given (step fields and ``"rewards.NAME"`` components).
        component: ``NAME`` when the field is the reward component ``"rewards.NAME"``, else None.
    """

    def __init__(self, column: str, by: str, present: Sequence[str]):
        self.column = column
        self.by = by
        self.present = tuple(present)
        self.component = component_name(column)
        if self.component is not None:
            comps = [p for p in present if p.startswith(COMPONENT_PREFIX)]
            have = ", ".join(comps) if comps else "none"
            msg = (
                f"{by} needs the episode reward component '{column}', which these rollouts do "
                f"not have (components present: {have}). Fix: add '{self.component}' to every "
                f'episode\'s "rewards" object, e.g. "rewards": {{"{self.component}": 1.0}}, or '
                f"drop the stage that needs it"
            )
        else:
            steps = [p for p in present if not p.startswith(COMPONENT_PREFIX)]
            have = ", ".join(steps) if steps else "none"
            msg = (
                f"{by} needs the step field '{column}', which these rollouts do not have "
                f"(step fields present: {have}). Fix: add '{column}' to every step, or choose "
                f"an estimator that does not need it (`stepcredit estimators` lists what each needs)"
            )
        super().__init__(msg)

    def __reduce__(self):  # keep the arguments across pickling (multiprocessing workers)
        return (type(self), (self.column, self.by, self.present))

    def in_file(self, path: str | os.PathLike) -> RolloutsError:
        """The same problem as a data error of the file ``path`` (the CLI's exit status 1)."""
        if self.component is not None:
            field, where, name = self.column, "every episode's \"rewards\" object", self.component
        else:
            field, where, name = f"steps[].{self.column}", "every step", self.column
        return RolloutsError(
            str(path), "", field, f"{self.by} needs this field and the input does not have it",
            f"add '{name}' to {where}, or choose a pipeline that does not need it",
        )


@dataclass(frozen=True, eq=False)
class Rollouts:
    """Groups of multi-step episodes in columnar form (see the module docstring for the schema).

    Build one with :func:`stepcredit.read_rollouts`, :meth:`from_records`, :meth:`from_arrow` or
    :meth:`from_arrays`; those validate the data and raise :class:`RolloutsError` naming the
    record and field of any problem. The constructor itself trusts its (already validated)
    arguments and only checks shapes.

    Attributes:
        episode_id: [E] Arrow string array, unique.
        group_id: [E] Arrow string array.
        outcome: [E] float64 outcome rewards.
        episode_offsets: [E+1] int64 CSR offsets into the step arrays.
        columns: numeric step columns present, name -> [S] array (float64; ``tokens`` int64).
        keys: key step columns present, name -> [S] uint64 hashes.
        key_values: the original key values, name -> [S] Arrow array (strings or integers).
        meta: [E] Arrow string array of each episode's ``meta`` as JSON text (null = absent),
            or None when no episode has one.
        episode_columns: reward components present, NAME -> [E] float64 (finite), in name
            order; the field name of component NAME is ``"rewards.NAME"``.
    """

    episode_id: pa.Array
    group_id: pa.Array
    outcome: np.ndarray
    episode_offsets: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    keys: Mapping[str, np.ndarray] = field(default_factory=dict)
    key_values: Mapping[str, pa.Array] = field(default_factory=dict)
    meta: pa.Array | None = None
    episode_columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "episode_id", _string_array(self.episode_id))
        set_(self, "group_id", _string_array(self.group_id))
        set_(self, "outcome", _readonly(self.outcome, np.float64))
        set_(self, "episode_offsets", _readonly(self.episode_offsets, np.int64))
        E = self.outcome.shape[0]
        off = self.episode_offsets
        if off.shape != (E + 1,) or off[0] != 0 or (E and np.any(np.diff(off) < 1)):
            raise ValueError("episode_offsets must have length E+1, start at 0 and increase by >= 1")
        if len(self.episode_id) != E or len(self.group_id) != E:
            raise ValueError("episode_id, group_id and outcome must all have length E")
        S = int(off[-1])
        cols = {}
        for name, arr in self.columns.items():
            if name not in NUMERIC_COLUMNS:
                raise ValueError(f"unknown numeric step column {name!r}")
            cols[name] = _readonly(arr, np.int64 if name in INT_COLUMNS else np.float64)
            if cols[name].shape != (S,):
                raise ValueError(f"step column {name!r} must have length S={S}")
        set_(self, "columns", cols)
        keys = {}
        for name, arr in self.keys.items():
            if name not in KEY_COLUMNS:
                raise ValueError(f"unknown key step column {name!r}")
            keys[name] = _readonly(arr, np.uint64)
            if keys[name].shape != (S,):
                raise ValueError(f"key column {name!r} must have length S={S}")
        set_(self, "keys", keys)
        set_(self, "key_values", dict(self.key_values))
        if set(self.key_values) != set(keys):
            raise ValueError("key_values and keys must name the same columns")
        if self.meta is not None:
            meta = _string_array(self.meta)
            if len(meta) != E:
                raise ValueError("meta must have length E")
            set_(self, "meta", None if meta.null_count == E else meta)
        comps = {}
        for name in sorted(self.episode_columns):
            if not is_component_name(name):
                raise ValueError(f"reward component name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
            arr = _readonly(self.episode_columns[name], np.float64)
            if arr.shape != (E,):
                raise ValueError(f"reward component {name!r} must have length E={E}, got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"reward component {name!r} must hold finite values")
            comps[name] = arr
        set_(self, "episode_columns", comps)

    # ------------------------------------------------------------------ sizes and indices
    @property
    def n_episodes(self) -> int:
        """E, the number of episodes."""
        return int(self.outcome.shape[0])

    @property
    def n_steps(self) -> int:
        """S, the number of steps of all episodes."""
        return int(self.episode_offsets[-1])

    @cached_property
    def _groups(self) -> tuple[np.ndarray, pa.Array]:
        enc = pc.dictionary_encode(self.group_id)
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        codes.flags.writeable = False
        return codes, enc.dictionary

    @property
    def episode_group(self) -> np.ndarray:
        """[E] dense group index 0..G-1 of each episode (groups numbered by first appearance)."""
        return self._groups[0]

    @property
    def group_names(self) -> pa.Array:
        """[G] the group ids, in the order of their dense index."""
        return self._groups[1]

    @property
    def n_groups(self) -> int:
        """G, the number of groups."""
        return len(self._groups[1])

    @cached_property
    def step_counts(self) -> np.ndarray:
        """[E] number of steps of each episode."""
        c = np.diff(self.episode_offsets)
        c.flags.writeable = False
        return c

    @cached_property
    def step_episode(self) -> np.ndarray:
        """[S] episode index of each step."""
        s = np.repeat(np.arange(self.n_episodes, dtype=np.int64), self.step_counts)
        s.flags.writeable = False
        return s

    @cached_property
    def step_index(self) -> np.ndarray:
        """[S] 0-based position of each step within its episode."""
        s = np.arange(self.n_steps, dtype=np.int64) - np.repeat(
            self.episode_offsets[:-1], self.step_counts
        )
        s.flags.writeable = False
        return s

    # ------------------------------------------------------------------ columns
    @property
    def step_fields(self) -> tuple[str, ...]:
        """Names of the step fields present, in schema order (reward components excluded)."""
        return tuple(c for c in STEP_COLUMNS if c in self.columns or c in self.keys)

    @property
    def episode_fields(self) -> tuple[str, ...]:
        """Field names of the reward components present, ``("rewards.NAME", ...)`` sorted by name."""
        return tuple(COMPONENT_PREFIX + name for name in sorted(self.episode_columns))

    def has(self, name: str) -> bool:
        """Whether field ``name`` is present: a step field, or a reward component ``"rewards.NAME"``.

        (``reward`` is usable even when absent: it reads 0; ``has("reward")`` says whether the
        data gave it.)
        """
        comp = component_name(name)
        if comp is not None:
            return comp in self.episode_columns
        return name in self.columns or name in self.keys

    @property
    def reward(self) -> np.ndarray:
        """[S] immediate rewards (0 where the data gave none)."""
        r = self.columns.get("reward")
        if r is None:
            r = np.zeros(self.n_steps)
            r.flags.writeable = False
        return r

    def column(self, name: str, by: str = "this computation") -> np.ndarray:
        """[S] a numeric step column, or uint64 hashes for a key column.

        For a reward component ``"rewards.NAME"`` it returns that component's **[E]** array
        (the same as :meth:`episode_column`): note the episode, not step, length.

        Raises:
            MissingColumnError: naming ``by`` when the column is absent.
        """
        if name == "reward":
            return self.reward
        if name in self.columns:
            return self.columns[name]
        if name in self.keys:
            return self.keys[name]
        if component_name(name) is not None:
            return self.episode_column(name, by)
        raise MissingColumnError(name, by, self._present())

    def episode_column(self, name: str, by: str = "this computation") -> np.ndarray:
        """[E] float64 values of a reward component, named ``"NAME"`` or ``"rewards.NAME"``.

        Raises:
            MissingColumnError: naming ``by`` and ``"rewards.NAME"`` when the component is absent.
        """
        comp = component_name(name)
        comp = name if comp is None else comp
        arr = self.episode_columns.get(comp)
        if arr is None:
            raise MissingColumnError(COMPONENT_PREFIX + comp, by, self._present())
        return arr

    def _present(self) -> tuple[str, ...]:
        return self.step_fields + self.episode_fields

    def require(self, names: Iterable[str], by: str) -> None:
        """Raise :class:`MissingColumnError` for the first of ``names`` that is absent.

        Names are step fields or reward components ``"rewards.NAME"``; ``reward`` is always
        available (absent = 0).
        """
        for name in names:
            if name != "reward" and not self.has(name):
                raise MissingColumnError(name, by, self._present())

    # ------------------------------------------------------------------ transforms
    def take(self, episodes: Sequence[int] | np.ndarray) -> Rollouts:
        """A new Rollouts holding the given episodes (by index), in that order."""
        idx = np.asarray(episodes, dtype=np.int64)
        lens = self.step_counts[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        steps = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            self.episode_offsets[:-1][idx] - offsets[:-1], lens
        )
        steps_pa = pa.array(steps)
        idx_pa = pa.array(idx)
        return Rollouts(
            episode_id=self.episode_id.take(idx_pa),
            group_id=self.group_id.take(idx_pa),
            outcome=self.outcome[idx],
            episode_offsets=offsets,
            columns={k: v[steps] for k, v in self.columns.items()},
            keys={k: v[steps] for k, v in self.keys.items()},
            key_values={k: v.take(steps_pa) for k, v in self.key_values.items()},
            meta=None if self.meta is None else self.meta.take(idx_pa),
            episode_columns={k: v[idx] for k, v in self.episode_columns.items()},
        )

    @classmethod
    def concat(cls, parts: Sequence[Rollouts]) -> Rollouts:
        """The episodes of ``parts``, in order, as one Rollouts (no revalidation of the values).

        Every part must have the same step fields (key columns of the same kind: strings or
        integers) and the same reward components; episode ids must stay unique. ``reward`` may
        be absent from some parts (absent = 0, as in a file); ``meta`` is kept (null for the
        episodes of a part without it).

        Raises:
            ValueError: the parts do not fit together (naming what differs) or an id repeats.
        """
        if not parts:
            raise ValueError("concat needs at least one Rollouts")
        if any("reward" in p.columns for p in parts):
            parts = [p if "reward" in p.columns else p.replace_columns(reward=np.zeros(p.n_steps)) for p in parts]
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            for what, a, b in (
                ("step columns", set(first.columns), set(p.columns)),
                ("key columns", set(first.keys), set(p.keys)),
                ("reward components", set(first.episode_columns), set(p.episode_columns)),
            ):
                if a != b:
                    raise ValueError(f"concat: part {i} has {what} {sorted(b)}, part 0 has {sorted(a)}")
            for k, v in p.key_values.items():
                if v.type != first.key_values[k].type:
                    raise ValueError(f"concat: part {i}'s '{k}' is {v.type}, part 0's is {first.key_values[k].type}")
        eid = pa.concat_arrays([p.episode_id for p in parts])
        if len(pc.unique(eid)) != len(eid):
            raise ValueError("concat: an episode_id appears in more than one part")
        offsets = np.concatenate(
            [[0]] + [p.episode_offsets[1:] + s for p, s in zip(parts, np.cumsum([0] + [p.n_steps for p in parts[:-1]]))]
        )
        meta = None
        if any(p.meta is not None for p in parts):
            meta = pa.concat_arrays([p.meta if p.meta is not None else pa.nulls(p.n_episodes, pa.string()) for p in parts])
        return cls(
            episode_id=eid,
            group_id=pa.concat_arrays([p.group_id for p in parts]),
            outcome=np.concatenate([p.outcome for p in parts]),
            episode_offsets=offsets,
            columns={k: np.concatenate([p.columns[k] for p in parts]) for k in first.columns},
            keys={k: np.concatenate([p.keys[k] for p in parts]) for k in first.keys},
            key_values={k: pa.concat_arrays([p.key_values[k] for p in parts]) for k in first.key_values},
            meta=meta,
            episode_columns={k: np.concatenate([p.episode_columns[k] for p in parts]) for k in first.episode_columns},
        )

    def replace_columns(self, **columns: np.ndarray | None) -> Rollouts:
        """A new Rollouts with numeric step columns replaced, added, or (``None``) removed."""
        cols = dict(self.columns)
        for name, arr in columns.items():
            if arr is None:
                cols.pop(name, None)
            else:
                cols[name] = arr
        return dataclasses.replace(self, columns=cols)

    def replace_episode_columns(self, **components: np.ndarray | Sequence[float] | None) -> Rollouts:
        """A new Rollouts with reward components replaced, added, or (``None``) removed.

        Args:
            **components: NAME -> [E] finite numbers, or None to remove NAME (absent: no-op).

        Raises:
            ValueError: a name not matching ``[A-Za-z_][A-Za-z0-9_]*``, a length other than E,
                or a non-finite value.
        """
        comps = dict(self.episode_columns)
        for name, arr in components.items():
            if arr is None:
                comps.pop(name, None)
            else:
                comps[name] = np.array(arr, dtype=np.float64)  # a copy: the caller's array stays writeable
        return dataclasses.replace(self, episode_columns=comps)

    def with_outcome(self, outcome: np.ndarray) -> Rollouts:
        """A new Rollouts with the [E] outcome replaced (finite values; reward transforms)."""
        out = np.asarray(outcome, dtype=np.float64)
        if out.shape != (self.n_episodes,) or not np.all(np.isfinite(out)):
            raise ValueError(f"outcome must be [E]=({self.n_episodes},) finite values")
        return dataclasses.replace(self, outcome=out)

    def equals(self, other: Rollouts) -> bool:
        """Exact equality of every field (used by the round-trip tests)."""
        if not isinstance(other, Rollouts):
            return False
        same = (
            self.episode_id.equals(other.episode_id)
            and self.group_id.equals(other.group_id)
            and np.array_equal(self.outcome, other.outcome)
            and np.array_equal(self.episode_offsets, other.episode_offsets)
            and self.columns.keys() == other.columns.keys()
            and self.keys.keys() == other.keys.keys()
            and all(np.array_equal(v, other.columns[k]) for k, v in self.columns.items())
            and all(np.array_equal(v, other.keys[k]) for k, v in self.keys.items())
            and all(v.equals(other.key_values[k]) for k, v in self.key_values.items())
            and self.episode_columns.keys() == other.episode_columns.keys()
            and all(
                np.array_equal(v, other.episode_columns[k]) for k, v in self.episode_columns.items()
            )
        )
        if not same:
            return False
        if (self.meta is None) != (other.meta is None):
            return False
        return self.meta is None or [
            None if m is None else json.loads(m) for m in self.meta.to_pylist()
        ] == [None if m is None else json.loads(m) for m in other.meta.to_pylist()]

    def __repr__(self) -> str:
        comps = f", episode_fields={list(self.episode_fields)}" if self.episode_columns else ""
        return (
            f"Rollouts(groups={self.n_groups}, episodes={self.n_episodes}, "
            f"steps={self.n_steps}, step_fields={list(self.step_fields)}{comps})"
        )

    def __len__(self) -> int:
        return self.n_episodes

    # ------------------------------------------------------------------ conversions
    def to_arrow(self) -> pa.Table:
        """The rollouts as an Arrow table, one row per episode with a ``steps`` list column.

        ``meta`` (when present) is a JSON-text string column; ``rewards`` (when there are
        reward components) a struct column of float64 fields, one per component.
        """
        step_arrays, step_names = [], []
        for name in STEP_COLUMNS:
            if name in self.key_values:
                step_arrays.append(self.key_values[name])
                step_names.append(name)
            elif name in self.columns:
                step_arrays.append(pa.array(self.columns[name]))
                step_names.append(name)
        if not step_arrays:  # Parquet cannot store a struct without fields: an all-null reward
            step_arrays, step_names = [pa.nulls(self.n_steps, pa.float64())], ["reward"]
        struct = pa.StructArray.from_arrays(step_arrays, names=step_names)
        steps = pa.ListArray.from_arrays(pa.array(self.episode_offsets.astype(np.int32)), struct)
        cols = {
            "episode_id": self.episode_id,
            "group_id": self.group_id,
            "outcome": pa.array(self.outcome),
            "steps": steps,
        }
        if self.episode_columns:
            names = sorted(self.episode_columns)
            cols[COMPONENTS_FIELD] = pa.StructArray.from_arrays(
                [pa.array(self.episode_columns[n]) for n in names], names=names
            )
        if self.meta is not None:
            cols["meta"] = self.meta
        return pa.table(cols)

    def to_records(self) -> list[dict[str, Any]]:
        """The rollouts as a list of plain dicts (the JSONL record format)."""
        table = self.to_arrow().drop_columns(["meta"]) if self.meta is not None else self.to_arrow()
        records = table.to_pylist()
        if not self.step_fields:
            for rec in records:
                rec["steps"] = [{} for _ in rec["steps"]]
        if self.meta is not None:
            for rec, m in zip(records, self.meta.to_pylist()):
                if m is not None:
                    rec["meta"] = json.loads(m)
        return records

    @classmethod
    def from_arrow(
        cls, table: pa.Table, source: str = "<table>", locate: Locate | None = None
    ) -> Rollouts:
        """Validate an Arrow table of episodes (the layout of :meth:`to_arrow`).

        Args:
            table: one row per episode with columns ``episode_id``, ``group_id``, ``outcome``,
                ``steps`` (list of structs) and optionally ``rewards`` (struct of numbers) and
                ``meta`` (struct or JSON text).
            source: the name used in error messages (a file name).
            locate: maps a 0-based row to the record's name in messages (default "row N").

        Raises:
            RolloutsError: for the first problem found, naming source, record and field.
        """
        locate = locate or (lambda i: f"row {i}")
        flat = flatten_table(table)
        if flat is None:  # an unexpected type somewhere: let the record checker find it
            collector = RecordChecker(source, meta_json_text=True)
            for start, batch in _iter_table_records(table):
                for i, rec in enumerate(batch):
                    collector.add(rec, locate(start + i))
            flat = collector.flat()
        return _build(flat, source, locate)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], source: str = "<records>") -> Rollouts:
        """Validate a sequence of episode dicts (the JSONL record format).

        Raises:
            RolloutsError: for the first problem found, naming ``record N`` (0-based) and field.
        """
        collector = RecordChecker(source)
        for i, rec in enumerate(records):
            collector.add(rec, f"record {i}")
        return _build(collector.flat(), source, lambda i: f"record {i}")

    @classmethod
    def from_arrays(
        cls,
        *,
        outcome: Sequence[float] | np.ndarray,
        group_id: Sequence[Any] | np.ndarray,
        episode_offsets: Sequence[int] | np.ndarray | None = None,
        step_counts: Sequence[int] | np.ndarray | None = None,
        episode_id: Sequence[Any] | np.ndarray | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
        episode_columns: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        **steps: Sequence[Any] | np.ndarray | None,
    ) -> Rollouts:
        """Build validated Rollouts from flat arrays (no Python object per step).

        Args:
            outcome: [E] outcome rewards.
            group_id: [E] group ids (strings or integers; integers are converted to strings).
            episode_offsets: [E+1] CSR offsets, or give ``step_counts`` [E] instead.
            episode_id: [E] unique ids (default ``"0" .. "E-1"``).
            meta: [E] dicts or None.
            episode_columns: reward components, NAME -> [E] finite numbers (the ``rewards``
                object of the records); a None value inside means "absent in this episode",
                which is an error unless it is absent in every episode.
            **steps: step columns by name (see the module docstring), each [S].

        Raises:
            RolloutsError: naming ``episode N`` / ``step`` and the field of the first problem.
        """
        source = "<arrays>"
        outcome = np.asarray(outcome)
        if outcome.ndim != 1 or outcome.dtype.kind not in "iuf":
            raise RolloutsError(
                source, "", "outcome", f"must be a 1-D array of numbers, got dtype {outcome.dtype}",
                "pass a float array with one outcome per episode",
            )
        outcome = outcome.astype(np.float64)
        E = outcome.shape[0]
        if (episode_offsets is None) == (step_counts is None):
            raise RolloutsError(
                source, "", "episode_offsets", "give exactly one of episode_offsets and step_counts",
                "pass episode_offsets=[0, n0, n0+n1, ...] or step_counts=[n0, n1, ...]",
            )
        if episode_offsets is not None:
            off = np.asarray(episode_offsets, dtype=np.int64)
            if off.shape != (E + 1,) or (E + 1 and off[0] != 0) or np.any(np.diff(off) < 0):
                raise RolloutsError(
                    source, "", "episode_offsets",
                    f"must be non-decreasing, start at 0 and have length E+1 = {E + 1}",
                    "build it as np.concatenate([[0], np.cumsum(step_counts)])",
                )
            counts = np.diff(off)
        else:
            counts = np.asarray(step_counts, dtype=np.int64)
            if counts.shape != (E,):
                raise RolloutsError(source, "", "step_counts", f"must have length E = {E}", "give one count per episode")
            if np.any(counts < 0):
                e = _first(counts < 0)
                raise RolloutsError(source, f"episode {e}", "step_counts", f"is {int(counts[e])}, a negative count", "give every episode at least one step")
        S = int(counts.sum())
        gid_pa = _id_array(group_id)
        eid_pa = _id_array(np.arange(E) if episode_id is None else episode_id)
        step_fields: dict[str, pa.Array] = {}
        for name, values in steps.items():
            if values is None:
                continue
            if name not in STEP_COLUMNS:
                raise RolloutsError(
                    source, "", name, "unknown step field",
                    f"use one of {', '.join(STEP_COLUMNS)}",
                )
            try:
                # lists go to Arrow as they are: np.asarray would turn [1, "a"] into strings
                arr = values if isinstance(values, pa.Array) else pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise RolloutsError(
                    source, "", f"steps[].{name}", f"cannot be converted to a column ({exc})",
                    "give one value per step, all of one type",
                ) from None
            if len(arr) != S:
                raise RolloutsError(
                    source, "", name, f"has {len(arr)} values but the episodes hold {S} steps",
                    "give one value per step, episodes concatenated in order",
                )
            step_fields[name] = arr
        meta_pa = None
        if meta is not None:
            texts = []
            for e, m in enumerate(meta):
                if m is not None and not isinstance(m, Mapping):
                    raise RolloutsError(source, f"episode {e}", "meta", f"is {_type_name(m)}, not an object", _FIXES["meta"])
                texts.append(None if m is None else _meta_text(m, source, f"episode {e}"))
            meta_pa = pa.array(texts, type=pa.string())
        comp_fields: dict[str, pa.Array] = {}
        for name, values in (episode_columns or {}).items():
            if not is_component_name(name):
                raise RolloutsError(source, "", COMPONENTS_FIELD, f"has the component name {name!r}", _FIXES["rewards.name"])
            fld = COMPONENT_PREFIX + name
            if not isinstance(values, (pa.Array, pa.ChunkedArray)) and (
                not isinstance(values, np.ndarray) or values.dtype == object
            ):  # Python objects: Arrow would read True as 1.0
                values = list(values)
                is_bool = [isinstance(v, (bool, np.bool_)) for v in values]
                if any(is_bool):
                    raise RolloutsError(
                        source, f"episode {is_bool.index(True)}", fld, "is a boolean, not a number",
                        "give one finite number per episode",
                    )
            try:
                arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise RolloutsError(
                    source, "", fld, f"cannot be converted to a column ({exc})",
                    "give one finite number per episode",
                ) from None
            if len(arr) != E:
                raise RolloutsError(
                    source, "", fld, f"has {len(arr)} values but there are {E} episodes",
                    "give one value per episode, in episode order",
                )
            if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
                raise RolloutsError(source, "", fld, f"has type {arr.type}", "give one finite number per episode")
            comp_fields[name] = arr
        flat = _Flat(eid_pa, gid_pa, pa.array(outcome), counts, step_fields, meta_pa, comp_fields)
        return _build(flat, source, lambda i: f"episode {i}")


def _build(flat: _Flat, source: str, locate: Locate) -> Rollouts:
    """Validate flat columns (see ``schema.validate_columns``) and build the Rollouts."""
    return Rollouts(**validate_columns(flat, source, locate))
