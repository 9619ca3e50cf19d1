"""Validation of rollout columns: the checks every reader shares, and their error messages.

Two routes lead here. The fast one flattens an Arrow table of episodes (``flatten_table``) and
checks the flat columns with vectorised NumPy/Arrow operations (``validate_columns``). The
precise one (``RecordChecker``) walks Python records one by one, checking types and structure
so that an error names the exact record and field, and then hands its columns to the same
``validate_columns`` for the value checks (missing values, NaN, empty steps, duplicate ids,
partial presence).

Besides step fields, an episode may carry named **reward components** in an optional
top-level ``rewards`` object (``{"format": 1.0, "correct": 0.0}``): per-episode numbers that
reward transforms combine. In memory they are ``[E]`` float64 columns; the pipeline names
component ``NAME`` as the field ``"rewards.NAME"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepcredit.data.errors import RolloutsError
from stepcredit.data.hashing import hash_keys

KEY_COLUMNS: tuple[str, ...] = ("state", "action", "node", "reference")
FLOAT_COLUMNS: tuple[str, ...] = (
    "reward", "process", "value", "p_answer", "grounding", "importance", "logp", "ref_logp", "label",
)
INT_COLUMNS: tuple[str, ...] = ("tokens",)
NUMERIC_COLUMNS: tuple[str, ...] = FLOAT_COLUMNS + INT_COLUMNS
STEP_COLUMNS: tuple[str, ...] = KEY_COLUMNS + NUMERIC_COLUMNS
#: Step fields that may be absent from some steps (an absent reward is 0).
PARTIAL_ALLOWED: frozenset[str] = frozenset({"reward"})
_REQUIRED = ("episode_id", "group_id", "outcome", "steps")
#: The top-level record field holding an episode's named reward components.
COMPONENTS_FIELD = "rewards"
#: The pipeline's name of component NAME is ``COMPONENT_PREFIX + NAME`` ("rewards.NAME").
COMPONENT_PREFIX = COMPONENTS_FIELD + "."
_COMPONENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_component_name(name: Any) -> bool:
    """Whether ``name`` is a valid reward component name (``[A-Za-z_][A-Za-z0-9_]*``)."""
    return isinstance(name, str) and _COMPONENT_NAME.fullmatch(name) is not None


def component_name(name: str) -> str | None:
    """``NAME`` for a field ``"rewards.NAME"``, else None."""
    return name[len(COMPONENT_PREFIX):] if name.startswith(COMPONENT_PREFIX) else None


Locate = Callable[[int], str]


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


@dataclass
class _Flat:
    """Columns of a rollout file before validation (Arrow arrays, nulls = absent)."""

    episode_id: pa.Array
    group_id: pa.Array
    outcome: pa.Array
    step_counts: np.ndarray  # [E] int64, -1 where `steps` is missing
    step_fields: dict[str, pa.Array]  # [S] each
    meta: pa.Array | None  # [E] JSON text or None
    episode_fields: dict[str, pa.Array] = field(default_factory=dict)  # reward components, [E] each


_FIXES = {
    "meta": 'give meta as an object, e.g. "meta": {"task": "..."}',
    "episode_id": 'give every episode a unique string id, e.g. "episode_id": "g3-e7"',
    "group_id": 'give every episode the string id of its task group, e.g. "group_id": "g3"',
    "outcome": 'give the episode\'s outcome reward as a finite number, e.g. "outcome": 1.0',
    "steps": 'give the episode a non-empty list of step objects, e.g. "steps": [{"state": "s0"}]',
    "rewards": 'give the reward components as an object of named numbers, e.g. "rewards": {"format": 1.0, "correct": 0.0}',
    "rewards.name": (
        "name each reward component with letters, digits and underscores, not starting with a "
        'digit (e.g. "format", "ref_0")'
    ),
}


def _component_fix(name: str) -> str:
    return f"give '{name}' in every episode's \"rewards\" object as a finite number, or in none"



def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _meta_text(meta: Mapping[str, Any], source: str, where: str) -> str:
    """An episode's meta as JSON text (finite numbers only, so that it can be written back)."""
    try:
        return json.dumps(meta, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise RolloutsError(source, where, "meta", f"cannot be stored as JSON ({exc})", "use only JSON values with finite numbers in meta") from None


_INT64 = (-(2**63), 2**63 - 1)


def validate_columns(flat: _Flat, source: str, locate: Locate) -> dict[str, Any]:
    """Vectorised validation of flat columns: the ``Rollouts`` fields, or a RolloutsError."""
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
    return dict(
        episode_id=eid,
        group_id=_string_array(flat.group_id),
        outcome=outcome,
        episode_offsets=offsets,
        columns=columns,
        keys=keys,
        key_values=key_values,
        meta=flat.meta if flat.meta is not None and flat.meta.null_count < E else None,
        episode_columns=_validate_components(flat.episode_fields, E, source, locate),
    )


def _validate_components(
    fields: Mapping[str, pa.Array], E: int, source: str, locate: Locate
) -> dict[str, np.ndarray]:
    """[E] float64 reward components (sorted by name) from [E] Arrow arrays (nulls = absent)."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(fields):
        arr = fields[name]
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        fld = COMPONENT_PREFIX + name
        if len(arr) != E:
            raise RolloutsError(source, "", fld, f"has {len(arr)} values but there are {E} episodes", "give one value per episode")
        n_null = arr.null_count
        if n_null == E:
            continue  # null everywhere: absent
        nulls = arr.is_null().to_numpy(zero_copy_only=False) if n_null else None
        if not is_component_name(name):
            row = _first(~nulls) if n_null else 0
            raise RolloutsError(source, locate(row), COMPONENTS_FIELD, f"has the component name {name!r}", _FIXES["rewards.name"])
        if n_null:
            raise RolloutsError(
                source, locate(_first(nulls)), fld,
                "is missing here but present in other episodes", _component_fix(name),
            )
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
            raise RolloutsError(source, locate(0), fld, f"has type {arr.type}", _component_fix(name))
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = _first(bad)
            raise RolloutsError(source, locate(row), fld, f"is {float(values[row])!r}, not a finite number", _component_fix(name))
        out[name] = values
    return out


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_num(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def flatten_table(table: pa.Table) -> _Flat | None:
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
    components: dict[str, pa.Array] = {}
    if COMPONENTS_FIELD in schema.names:
        r = col(COMPONENTS_FIELD)
        if pa.types.is_struct(r.type):
            for f, child in zip(r.type, r.flatten()):  # flatten(): a null object nulls its fields
                if not (is_component_name(f.name) and _is_num(f.type)):
                    return None  # the record checker names the record
                components[f.name] = child
        elif not pa.types.is_null(r.type):
            return None
    return _Flat(eid, gid, outcome, counts, fields, meta, components)


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


class RecordChecker:
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
        self.components: dict[str, list[float | None]] = {}
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
        rewards = self._check_components(rec.get(COMPONENTS_FIELD), where)
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
        n_before = len(self.eid) - 1
        for name in rewards:
            if name not in self.components:
                self.components[name] = [None] * n_before
        for name, values in self.components.items():
            values.append(rewards.get(name))
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

    def _check_components(self, rewards: Any, where: str) -> dict[str, float]:
        """An episode's reward components (null values dropped: absent), or a RolloutsError."""
        if rewards is None:
            return {}
        if not isinstance(rewards, Mapping):
            raise self._err(where, COMPONENTS_FIELD, f"is {_type_name(rewards)}, not an object", _FIXES["rewards"])
        out = {}
        for name, v in rewards.items():
            if not is_component_name(name):
                raise self._err(where, COMPONENTS_FIELD, f"has the component name {name!r}", _FIXES["rewards.name"])
            if v is None:
                continue
            fld = COMPONENT_PREFIX + name
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self._err(where, fld, f"is {_type_name(v)}, not a number", _component_fix(name))
            out[name] = self._float(v, where, fld)
        return out

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
            episode_fields={
                name: pa.array(values, type=pa.float64()) for name, values in self.components.items()
            },
        )
