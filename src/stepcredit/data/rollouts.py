"""``Rollouts``: groups of multi-step episodes, validated once, stored column by column.

A rollout record is one episode::

    {"episode_id": "e0", "group_id": "task-3", "outcome": 1.0,
     "steps": [{"state": "s0", "action": "left", "reward": 0.0, "value": 0.4}, ...],
     "meta": {...}}

Required: ``episode_id`` (string, unique), ``group_id`` (string), ``outcome`` (finite number),
``steps`` (a non-empty list of objects). Step fields (all optional):

* key fields, a string or an integer, hashed to uint64 (see ``stepcredit.data.hashing``):
  ``state``, ``action``, ``node``;
* numeric fields: ``reward`` (default 0 where absent), ``process``, ``value``, ``p_answer``,
  ``grounding``, ``importance``, ``logp``, ``ref_logp`` (finite numbers) and ``tokens`` (a non-negative integer).

A step field other than ``reward`` must be in every step or in none ("partial presence" is an
error, because an estimator that needs the column would otherwise read made-up values). Other
top-level and step fields are ignored; put free-form data into ``meta``, which is carried
through unchanged.

In memory every per-episode quantity is an array of length E and every per-step quantity an
array of length S; episode e owns steps ``episode_offsets[e]:episode_offsets[e+1]``. Arrays are
read-only.
"""

from __future__ import annotations

import dataclasses
import json
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
    flatten_table,
    validate_columns,
)

__all__ = [
    "KEY_COLUMNS",
    "NUMERIC_COLUMNS",
    "FLOAT_COLUMNS",
    "PARTIAL_ALLOWED",
    "MissingColumnError",
    "Rollouts",
]


class MissingColumnError(ValueError):
    """An estimator (or transform) needs a step column the rollouts do not have."""

    def __init__(self, column: str, by: str, present: Sequence[str]):
        self.column = column
        self.by = by
        have = ", ".join(present) if present else "none"
        super().__init__(
            f"{by} needs the step field '{column}', which these rollouts do not have "
            f"(step fields present: {have}). Fix: add '{column}' to every step, or choose "
            f"an estimator that does not need it (`stepcredit estimators` lists what each needs)"
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
    """

    episode_id: pa.Array
    group_id: pa.Array
    outcome: np.ndarray
    episode_offsets: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    keys: Mapping[str, np.ndarray] = field(default_factory=dict)
    key_values: Mapping[str, pa.Array] = field(default_factory=dict)
    meta: pa.Array | None = None

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
        """Names of the step fields present, in schema order."""
        return tuple(c for c in STEP_COLUMNS if c in self.columns or c in self.keys)

    def has(self, name: str) -> bool:
        """Whether step field ``name`` is present (``reward`` is always usable: absent = 0)."""
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

        Raises:
            MissingColumnError: naming ``by`` when the column is absent.
        """
        if name == "reward":
            return self.reward
        if name in self.columns:
            return self.columns[name]
        if name in self.keys:
            return self.keys[name]
        raise MissingColumnError(name, by, self.step_fields)

    def require(self, names: Iterable[str], by: str) -> None:
        """Raise :class:`MissingColumnError` for the first of ``names`` that is absent."""
        for name in names:
            if name != "reward" and not self.has(name):
                raise MissingColumnError(name, by, self.step_fields)

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
        )

    def replace_columns(self, **columns: np.ndarray | None) -> Rollouts:
        """A new Rollouts with numeric step columns replaced, added, or (``None``) removed."""
        cols = dict(self.columns)
        for name, arr in columns.items():
            if arr is None:
                cols.pop(name, None)
            else:
                cols[name] = arr
        return Rollouts(
            episode_id=self.episode_id,
            group_id=self.group_id,
            outcome=self.outcome,
            episode_offsets=self.episode_offsets,
            columns=cols,
            keys=self.keys,
            key_values=self.key_values,
            meta=self.meta,
        )

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
        )
        if not same:
            return False
        if (self.meta is None) != (other.meta is None):
            return False
        return self.meta is None or [
            None if m is None else json.loads(m) for m in self.meta.to_pylist()
        ] == [None if m is None else json.loads(m) for m in other.meta.to_pylist()]

    def __repr__(self) -> str:
        return (
            f"Rollouts(groups={self.n_groups}, episodes={self.n_episodes}, "
            f"steps={self.n_steps}, step_fields={list(self.step_fields)})"
        )

    def __len__(self) -> int:
        return self.n_episodes

    # ------------------------------------------------------------------ conversions
    def to_arrow(self) -> pa.Table:
        """The rollouts as an Arrow table, one row per episode with a ``steps`` list column.

        ``meta`` (when present) is a JSON-text string column.
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
                ``steps`` (list of structs) and optionally ``meta`` (struct or JSON text).
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
        **steps: Sequence[Any] | np.ndarray | None,
    ) -> Rollouts:
        """Build validated Rollouts from flat arrays (no Python object per step).

        Args:
            outcome: [E] outcome rewards.
            group_id: [E] group ids (strings or integers; integers are converted to strings).
            episode_offsets: [E+1] CSR offsets, or give ``step_counts`` [E] instead.
            episode_id: [E] unique ids (default ``"0" .. "E-1"``).
            meta: [E] dicts or None.
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
        flat = _Flat(eid_pa, gid_pa, pa.array(outcome), counts, step_fields, meta_pa)
        return _build(flat, source, lambda i: f"episode {i}")


def _build(flat: _Flat, source: str, locate: Locate) -> Rollouts:
    """Validate flat columns (see ``schema.validate_columns``) and build the Rollouts."""
    return Rollouts(**validate_columns(flat, source, locate))
