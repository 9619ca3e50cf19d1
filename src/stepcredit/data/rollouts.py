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
  ``logp``, ``ref_logp`` (finite numbers) and ``tokens`` (a non-negative integer).

A step field other than ``reward`` must be in every step or in none ("partial presence" is an
error, because an estimator that needs the column would otherwise read made-up values). Other
top-level and step fields are ignored; put free-form data into ``meta``, which is carried
through unchanged.

In memory every per-episode quantity is an array of length E and every per-step quantity an
array of length S; episode e owns steps ``episode_offsets[e]:episode_offsets[e+1]``. Arrays are
read-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data.errors import RolloutsError
from stepcredit.data.hashing import hash_keys

__all__ = [
    "KEY_COLUMNS",
    "NUMERIC_COLUMNS",
    "FLOAT_COLUMNS",
    "PARTIAL_ALLOWED",
    "MissingColumnError",
    "Rollouts",
]

KEY_COLUMNS: tuple[str, ...] = ("state", "action", "node")
FLOAT_COLUMNS: tuple[str, ...] = ("reward", "process", "value", "p_answer", "logp", "ref_logp")
INT_COLUMNS: tuple[str, ...] = ("tokens",)
NUMERIC_COLUMNS: tuple[str, ...] = FLOAT_COLUMNS + INT_COLUMNS
STEP_COLUMNS: tuple[str, ...] = KEY_COLUMNS + NUMERIC_COLUMNS
#: Step fields that may be absent from some steps (an absent reward is 0).
PARTIAL_ALLOWED: frozenset[str] = frozenset({"reward"})
_REQUIRED = ("episode_id", "group_id", "outcome", "steps")

Locate = Callable[[int], str]


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


def _readonly(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.flags.writeable:
        if a.base is not None or not a.flags.owndata:
            a = a.copy()
        a.flags.writeable = False
    return a


def _string_array(values) -> pa.Array:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _id_array(values) -> pa.Array:
    """Ids as an Arrow string array; integer ids become their decimal strings."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _string_array(values)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return pc.cast(pa.array(arr.astype(np.int64)), pa.string())
    return pa.array(arr, type=pa.string())


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
        flat = _flatten_table(table)
        if flat is None:  # an unexpected type somewhere: let the record checker find it
            collector = _Collector(source, meta_json_text=True)
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
        collector = _Collector(source)
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


# ---------------------------------------------------------------------- validation
@dataclass
class _Flat:
    """Columns of a rollout file before validation (Arrow arrays, nulls = absent)."""

    episode_id: pa.Array
    group_id: pa.Array
    outcome: pa.Array
    step_counts: np.ndarray  # [E] int64, -1 where `steps` is missing
    step_fields: dict[str, pa.Array]  # [S] each
    meta: pa.Array | None  # [E] JSON text or None


_FIXES = {
    "meta": 'give meta as an object, e.g. "meta": {"task": "..."}',
    "episode_id": 'give every episode a unique string id, e.g. "episode_id": "g3-e7"',
    "group_id": 'give every episode the string id of its task group, e.g. "group_id": "g3"',
    "outcome": 'give the episode\'s outcome reward as a finite number, e.g. "outcome": 1.0',
    "steps": 'give the episode a non-empty list of step objects, e.g. "steps": [{"state": "s0"}]',
}


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _meta_text(meta: Mapping[str, Any], source: str, where: str) -> str:
    """An episode's meta as JSON text (finite numbers only, so that it can be written back)."""
    try:
        return json.dumps(meta, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise RolloutsError(source, where, "meta", f"cannot be stored as JSON ({exc})", "use only JSON values with finite numbers in meta") from None


_INT64 = (-(2**63), 2**63 - 1)


def _build(flat: _Flat, source: str, locate: Locate) -> Rollouts:
    """Vectorised validation of flat columns; builds the Rollouts or raises RolloutsError."""
    E = len(flat.outcome)
    if E == 0:
        raise RolloutsError(source, "", "", "holds no episodes", "give at least one episode record")
    for name in ("episode_id", "group_id", "outcome"):
        arr = getattr(flat, name)
        if arr.null_count:
            row = _first(arr.is_null().to_numpy(zero_copy_only=False))
            raise RolloutsError(source, locate(row), name, "is missing", _FIXES[name])
    counts = flat.step_counts
    if np.any(counts < 0):
        raise RolloutsError(source, locate(_first(counts < 0)), "steps", "is missing", _FIXES["steps"])
    if np.any(counts == 0):
        raise RolloutsError(source, locate(_first(counts == 0)), "steps", "is empty", _FIXES["steps"])
    outcome = flat.outcome.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(outcome)
    if bad.any():
        row = _first(bad)
        raise RolloutsError(source, locate(row), "outcome", f"is {float(outcome[row])!r}, not a finite number", _FIXES["outcome"])
    eid = _string_array(flat.episode_id)
    enc = pc.dictionary_encode(eid)
    if len(enc.dictionary) < E:  # some id repeats: name the first repeat and its original
        codes = enc.indices.to_numpy(zero_copy_only=False)
        first_of_code = np.full(len(enc.dictionary), -1, dtype=np.int64)
        seen = np.zeros(E, dtype=bool)
        uniq, first_idx = np.unique(codes, return_index=True)
        first_of_code[uniq] = first_idx
        seen[first_idx] = True
        row = _first(~seen)
        first_row = int(first_of_code[codes[row]])
        raise RolloutsError(
            source, locate(row), "episode_id",
            f"{eid[row].as_py()!r} is also the id of {locate(first_row)}",
            "make every episode_id unique within the file",
        )
    offsets = np.zeros(E + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    S = int(offsets[-1])

    def locate_step(s: int) -> str:
        e = int(np.searchsorted(offsets, s, side="right") - 1)
        return f"{locate(e)}, step {s - offsets[e]}"

    columns: dict[str, np.ndarray] = {}
    keys: dict[str, np.ndarray] = {}
    key_values: dict[str, pa.Array] = {}
    for name, arr in flat.step_fields.items():
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n_null = arr.null_count
        if n_null == S:
            continue  # the field is null everywhere: treat as absent
        if n_null and name not in PARTIAL_ALLOWED:
            s = _first(arr.is_null().to_numpy(zero_copy_only=False))
            raise RolloutsError(
                source, locate_step(s), f"steps[].{name}",
                "is missing here but present in other steps",
                f"give '{name}' in every step or in none",
            )
        if name in KEY_COLUMNS:
            if pa.types.is_large_string(arr.type):
                arr = arr.cast(pa.string())
            if not (pa.types.is_string(arr.type) or pa.types.is_integer(arr.type)):
                raise RolloutsError(
                    source, locate_step(0), f"steps[].{name}", f"has type {arr.type}",
                    f"give '{name}' as a string or an integer",
                )
            if pa.types.is_integer(arr.type):
                arr = arr.cast(pa.int64())
            keys[name] = hash_keys(arr)
            key_values[name] = arr
            continue
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
            raise RolloutsError(
                source, locate_step(0), f"steps[].{name}", f"has type {arr.type}",
                f"give '{name}' as a number",
            )
        values = arr.to_numpy(zero_copy_only=False)
        if name in INT_COLUMNS:
            if not pa.types.is_integer(arr.type):
                raise RolloutsError(
                    source, locate_step(0), f"steps[].{name}", f"has type {arr.type}",
                    f"give '{name}' as a whole number",
                )
            values = values.astype(np.int64)
            if np.any(values < 0):
                s = _first(values < 0)
                raise RolloutsError(
                    source, locate_step(s), f"steps[].{name}", f"is {int(values[s])}, a negative count",
                    f"give '{name}' as a count >= 0",
                )
        else:
            values = values.astype(np.float64)  # nulls (reward only) became NaN
            if n_null:
                values = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0.0, values)
            bad = ~np.isfinite(values)
            if bad.any():
                s = _first(bad)
                raise RolloutsError(
                    source, locate_step(s), f"steps[].{name}", f"is {float(values[s])!r}, not a finite number",
                    f"give '{name}' as a finite number (or leave it out where allowed)",
                )
        columns[name] = values
    return Rollouts(
        episode_id=eid,
        group_id=_string_array(flat.group_id),
        outcome=outcome,
        episode_offsets=offsets,
        columns=columns,
        keys=keys,
        key_values=key_values,
        meta=flat.meta if flat.meta is not None and flat.meta.null_count < E else None,
    )


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_num(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _flatten_table(table: pa.Table) -> _Flat | None:
    """Flat columns of a well-typed episode table, or None if any type is unexpected.

    Missing required columns are turned into all-null columns so that ``_build`` reports the
    first record that lacks them.
    """
    E = table.num_rows
    schema = table.schema

    def col(name: str) -> pa.Array:
        if name not in schema.names:
            return pa.nulls(E)
        c = table.column(name)
        return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c

    eid, gid, outcome, steps = col("episode_id"), col("group_id"), col("outcome"), col("steps")
    if not (_is_str(eid.type) and _is_str(gid.type) and _is_num(outcome.type)):
        return None
    if pa.types.is_null(steps.type):
        counts = np.full(E, -1, dtype=np.int64)
        fields: dict[str, pa.Array] = {}
    else:
        if not (pa.types.is_list(steps.type) or pa.types.is_large_list(steps.type)):
            return None
        if not pa.types.is_struct(steps.type.value_type):
            return None
        lens = pc.list_value_length(steps)
        counts = lens.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        items = pc.list_flatten(steps)
        if items.null_count:
            return None  # a step that is not an object: let the record checker say where
        fields = {}
        for i in range(items.type.num_fields):
            f = items.type.field(i)
            if f.name not in STEP_COLUMNS:
                continue
            ok = _is_str(f.type) or pa.types.is_integer(f.type) if f.name in KEY_COLUMNS else (
                pa.types.is_integer(f.type) or pa.types.is_null(f.type)
                if f.name in INT_COLUMNS else _is_num(f.type)
            )
            if not ok:
                return None
            fields[f.name] = items.field(i)
    meta = None
    if "meta" in schema.names:
        m = col("meta")
        if pa.types.is_null(m.type):
            meta = None
        elif _is_str(m.type):
            try:
                parsed = [None if v is None else json.loads(v) for v in m.to_pylist()]
            except ValueError:
                return None
            if any(v is not None and not isinstance(v, dict) for v in parsed):
                return None
            meta = _string_array(m)
        elif pa.types.is_struct(m.type):
            meta = pa.array(
                [None if v is None else json.dumps(v) for v in m.to_pylist()], type=pa.string()
            )
        else:
            return None
    return _Flat(eid, gid, outcome, counts, fields, meta)


def _iter_table_records(table: pa.Table, batch_rows: int = 4096):
    for start in range(0, table.num_rows, batch_rows):
        yield start, table.slice(start, batch_rows).to_pylist()


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


class _Collector:
    """Checks records one by one (types and structure) and collects their columns.

    This is the precise, slow path: used for Python records, and for files whose fast Arrow
    read failed or produced an unexpected type, so that the error names the exact record and
    field. Value checks (NaN, duplicates, empty steps, partial presence) happen afterwards in
    ``_build``, shared with the fast path.
    """

    def __init__(self, source: str, meta_json_text: bool = False):
        self.source = source
        self.meta_json_text = meta_json_text  # Parquet/Arrow input: string meta is JSON text
        self.eid: list[str | None] = []
        self.gid: list[str | None] = []
        self.outcome: list[float | None] = []
        self.counts: list[int] = []
        self.meta: list[str | None] = []
        self.steps: dict[str, list[Any]] = {}
        self.key_kind: dict[str, tuple[type, str]] = {}
        self.n_steps = 0

    def _err(self, where: str, fld: str, problem: str, fix: str) -> RolloutsError:
        return RolloutsError(self.source, where, fld, problem, fix)

    def add(self, rec: Any, where: str) -> None:
        if not isinstance(rec, Mapping):
            raise self._err(where, "", f"the record is {_type_name(rec)}, not an object", "write one JSON object per episode")
        for name in ("episode_id", "group_id"):
            v = rec.get(name)
            if v is not None and not isinstance(v, str):
                raise self._err(where, name, f"is {_type_name(v)}, not a string", _FIXES[name])
        out = rec.get("outcome")
        if out is not None and (isinstance(out, bool) or not isinstance(out, (int, float))):
            raise self._err(where, "outcome", f"is {_type_name(out)}, not a number", _FIXES["outcome"])
        if out is not None:
            out = self._float(out, where, "outcome")
        steps = rec.get("steps")
        if steps is not None and not isinstance(steps, list):
            raise self._err(where, "steps", f"is {_type_name(steps)}, not a list", _FIXES["steps"])
        meta = rec.get("meta")
        if isinstance(meta, str) and self.meta_json_text:
            try:
                meta = json.loads(meta)
            except ValueError as exc:
                raise self._err(where, "meta", f"is not valid JSON text ({exc})", "store meta as the JSON text of an object") from None
        if meta is not None and not isinstance(meta, Mapping):
            raise self._err(where, "meta", f"is {_type_name(meta)}, not an object", _FIXES["meta"])
        for t, step in enumerate(steps or ()):
            if not isinstance(step, Mapping):
                raise self._err(f"{where}, step {t}", "steps[]", f"the step is {_type_name(step)}, not an object", 'write each step as an object, e.g. {"state": "s0", "action": "a"}')
            for name, v in step.items():
                if name not in STEP_COLUMNS or v is None:
                    continue
                self._check_step_value(name, v, f"{where}, step {t}")
        # all checks passed: collect
        self.eid.append(rec.get("episode_id"))
        self.gid.append(rec.get("group_id"))
        self.outcome.append(out)
        self.meta.append(None if meta is None else _meta_text(meta, self.source, where))
        if steps is None:
            self.counts.append(-1)
            return
        self.counts.append(len(steps))
        for name in set().union(*steps) if steps else ():
            if name in STEP_COLUMNS and name not in self.steps:
                self.steps[name] = [None] * self.n_steps
        for name, values in self.steps.items():
            if name in INT_COLUMNS:  # whole-number floats (3.0) were accepted as counts
                values.extend(None if step.get(name) is None else int(step[name]) for step in steps)
            else:
                values.extend(step.get(name) for step in steps)
        self.n_steps += len(steps)

    def _float(self, v: int | float, where: str, fld: str) -> float:
        try:
            return float(v)
        except OverflowError:
            raise self._err(where, fld, "is too large for a 64-bit float", f"give '{fld.split('.')[-1]}' as a number below 1e308") from None

    def _check_step_value(self, name: str, v: Any, where: str) -> None:
        fld = f"steps[].{name}"
        if name in KEY_COLUMNS:
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise self._err(where, fld, f"is {_type_name(v)}", f"give '{name}' as a string or an integer")
            kind = str if isinstance(v, str) else int
            if kind is int and not _INT64[0] <= v <= _INT64[1]:
                raise self._err(where, fld, f"is {v}, outside the 64-bit integer range", f"give '{name}' as a string")
            seen = self.key_kind.setdefault(name, (kind, where))
            if seen[0] is not kind:
                raise self._err(
                    where, fld, f"is {_type_name(v)} but was {_type_name(seen[0]())} at {seen[1]}",
                    f"give '{name}' the same type (all strings or all integers) in every step",
                )
        elif name in INT_COLUMNS:
            whole = isinstance(v, int) or (isinstance(v, float) and v.is_integer())
            if isinstance(v, bool) or not whole:
                raise self._err(where, fld, f"is {_type_name(v)} ({v!r}), not a whole number", f"give '{name}' as a whole number")
            if not _INT64[0] <= v <= _INT64[1]:
                raise self._err(where, fld, f"is {v}, outside the 64-bit integer range", f"give '{name}' as a count below 2**63")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._err(where, fld, f"is {_type_name(v)}, not a number", f"give '{name}' as a number")
        elif isinstance(v, int):
            self._float(v, where, fld)

    def flat(self) -> _Flat:
        fields = {}
        for name, values in self.steps.items():
            if name in KEY_COLUMNS:
                kind = self.key_kind.get(name, (str, ""))[0]
                fields[name] = pa.array(values, type=pa.string() if kind is str else pa.int64())
            elif name in INT_COLUMNS:
                fields[name] = pa.array(values, type=pa.int64())
            else:
                fields[name] = pa.array([None if v is None else float(v) for v in values], type=pa.float64())
        return _Flat(
            episode_id=pa.array(self.eid, type=pa.string()),
            group_id=pa.array(self.gid, type=pa.string()),
            outcome=pa.array(self.outcome, type=pa.float64()),
            step_counts=np.asarray(self.counts, dtype=np.int64),
            step_fields=fields,
            meta=pa.array(self.meta, type=pa.string()) if any(m is not None for m in self.meta) else None,
        )
