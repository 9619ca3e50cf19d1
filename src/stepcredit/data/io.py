"""Reading rollouts and writing rollouts and credit, as JSONL or Parquet (chosen by extension).

Reading is streamed: JSONL is parsed block by block by Arrow's JSON reader (the fast path) and,
if that fails or yields an unexpected type, line by line by Python's ``json`` (the precise
path, which names the exact line and field of the problem); the whole JSON text is never held
in memory. Writing is atomic: data goes to a temporary file next to the target, which is
renamed over the target only when complete, so a failure leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from stepcredit.data.credit import Credit
from stepcredit.data.errors import RolloutsError
from stepcredit.data.rollouts import Rollouts, _build
from stepcredit.data.schema import RecordChecker, flatten_table

__all__ = [
    "FORMATS",
    "atomic_path",
    "credit_table",
    "dataset_files",
    "read_rollouts",
    "write_credit",
    "write_rollouts",
]

Progress = Callable[[int, int], None]
#: file extension -> format, for every reader and writer
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_JSON_BLOCK = 1 << 24  # 16 MiB blocks for Arrow's JSON reader


def _format(path: Path, role: str) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise RolloutsError(
            str(path), "", "", f"the {role} file has an unknown extension '{path.suffix}'",
            "name it *.jsonl or *.parquet",
        )
    return fmt


# ---------------------------------------------------------------------- reading
def read_rollouts(path: str | os.PathLike) -> Rollouts:
    """Read and validate a rollout file (``.jsonl`` or ``.parquet``), or a Parquet dataset: a
    directory of ``.parquet`` files (see :func:`dataset_files`), read in path order as one batch.

    Raises:
        RolloutsError: naming the file, the line (JSONL, 1-based) or row (Parquet, 0-based),
            the field and the fix, for the first problem found.
    """
    p = Path(path)
    if p.is_dir():
        files = dataset_files(p)
        return concat_files([_read_parquet(f) for f in files], files)
    fmt = _format(p, "input")
    if not p.is_file():
        raise RolloutsError(str(p), "", "", "no such file", "check the path")
    if fmt == "parquet":
        return _read_parquet(p)
    return _read_jsonl(p)


def dataset_files(path: str | os.PathLike) -> list[Path]:
    """The files of a Parquet dataset: every ``*.parquet`` / ``*.pq`` file under the directory
    ``path`` (subdirectories included), sorted by path; names starting with ``_`` or ``.`` are
    skipped (metadata, as Arrow's dataset reader does).

    Raises:
        RolloutsError: ``path`` is not a directory or holds no Parquet file.
    """
    p = Path(path)
    if not p.is_dir():
        raise RolloutsError(str(p), "", "", "is not a directory", "give a directory of .parquet files")
    files = sorted(
        f for f in p.rglob("*")
        if f.is_file() and FORMATS.get(f.suffix.lower()) == "parquet"
        and not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)
    )
    if not files:
        raise RolloutsError(str(p), "", "", "holds no .parquet file", "write the rollouts as *.parquet files in it")
    return files


def file_fields(ro: Rollouts) -> dict[str, list[str]]:
    """What must agree between the files of a dataset: step fields, key fields with their type,
    reward components (JSON-serialisable, so Ray tasks can return it)."""
    return {
        "step fields": sorted(set(ro.columns) - {"reward"}),  # reward: absent = 0, as in a file
        "key fields": sorted(f"{k} ({ro.key_values[k].type})" for k in ro.keys),
        "reward components": sorted(ro.episode_columns),
    }


def check_same_fields(fields: list[dict[str, list[str]]], files: list[Path]) -> None:
    """Raise naming the first file whose fields (:func:`file_fields`) differ from the first file's."""
    want = fields[0]
    for f, got in zip(files[1:], fields[1:]):
        for what in want:
            if got[what] != want[what]:
                raise RolloutsError(
                    str(f), "", "", f"has {what} {got[what]}, {Path(files[0]).name} has {want[what]}",
                    "give every file of a dataset the same step fields and reward components",
                )


def concat_files(parts: list[Rollouts], files: list[Path]) -> Rollouts:
    """The rollouts of several files as one batch, in order; an error names the file that does
    not fit the first one (other fields) or the two files that share an episode id."""
    if len(parts) == 1:
        return parts[0]
    check_same_fields([file_fields(p) for p in parts], files)
    try:
        return Rollouts.concat(parts)  # the fields agree: only a repeated episode id is left to refuse
    except ValueError:
        seen: dict[str, int] = {}  # find the first repeat, to name both files
        for i, part in enumerate(parts):
            for row, eid in enumerate(part.episode_id.to_pylist()):
                first = seen.setdefault(eid, i)
                if first != i:
                    raise RolloutsError(
                        str(files[i]), f"row {row}", "episode_id", f"{eid!r} is also an episode of {files[first]}",
                        "give every episode of a dataset its own id",
                    ) from None
        raise


def parquet_table(path: str | os.PathLike) -> pa.Table:
    """The Arrow table of a Parquet file, not yet validated as rollouts.

    Raises:
        RolloutsError: the file is missing or is not readable Parquet (naming it).
    """
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RolloutsError(str(path), "", "", f"is not a readable Parquet file ({exc})", "write it with pyarrow or `stepcredit` again") from None


def _read_parquet(p: Path) -> Rollouts:
    return Rollouts.from_arrow(parquet_table(p), source=str(p), locate=lambda i: f"row {i}")


class _JsonlLines:
    """Maps the i-th record of a JSONL file to its 1-based line number (blank lines skipped)."""

    def __init__(self, path: Path):
        self.path = path
        self._lines: list[int] | None = None

    @property
    def lines(self) -> list[int]:
        """Line numbers of the non-blank lines (one scan of the file, done once)."""
        if self._lines is None:
            lines = []
            with open(self.path, "rb") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        lines.append(n)
            self._lines = lines
        return self._lines

    def __call__(self, i: int) -> str:
        lines = self.lines
        return f"line {lines[i]}" if i < len(lines) else f"record {i}"


def _has_temporal(t: pa.DataType) -> bool:
    """Whether Arrow inferred a date/time type anywhere (it does so for date-like strings)."""
    if pa.types.is_temporal(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_temporal(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_temporal(t.value_type)
    return False


def _read_jsonl(p: Path) -> Rollouts:
    """Fast path: Arrow's JSON reader. Anything it might have read differently from Python's
    ``json`` (date-like strings, int/float promotion, ``meta`` objects merged into one struct,
    invalid UTF-8, two objects on one line) sends the file to the precise reader instead.
    ``rewards`` objects stay on the fast path: Arrow merges them into one struct whose missing
    keys are nulls, which the shared checks report as partial presence on the right line; a
    component of a non-numeric type or an invalid name makes ``flatten_table`` return None."""
    locate = _JsonlLines(p)
    try:
        table = pj.read_json(p, read_options=pj.ReadOptions(block_size=_JSON_BLOCK))
        table.validate(full=True)  # checks UTF-8, which the JSON reader does not
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return _read_jsonl_precise(p)
    if "meta" in table.column_names or any(_has_temporal(f.type) for f in table.schema):
        return _read_jsonl_precise(p)
    flat = flatten_table(table)
    if flat is None or table.num_rows != len(locate.lines):
        return _read_jsonl_precise(p)
    return _build(flat, str(p), locate)


def _read_jsonl_precise(p: Path) -> Rollouts:
    """Line-by-line reader: slower, and its errors name the exact line and field."""
    collector = RecordChecker(str(p))
    line_of: list[int] = []
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise RolloutsError(str(p), f"line {n}", "", f"is not valid JSON ({detail})", "write one JSON object per line") from None
            collector.add(rec, f"line {n}")
            line_of.append(n)
    return _build(collector.flat(), str(p), lambda i: f"line {line_of[i]}")


# ---------------------------------------------------------------------- writing
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_rollouts(ro: Rollouts, path: str | os.PathLike) -> None:
    """Write rollouts as ``.jsonl`` or ``.parquet`` (atomically). Reading it back gives ``ro``."""
    p = Path(path)
    fmt = _format(p, "output")
    with atomic_path(p) as tmp:
        if fmt == "parquet":
            pq.write_table(ro.to_arrow(), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in ro.to_records():
                    f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False))
                    f.write("\n")


def credit_table(credit: Credit, ro: Rollouts, start: int = 0, stop: int | None = None) -> pa.Table:
    """The advantages table (one row per step) for steps ``start:stop``.

    Columns: ``episode_id``, ``group_id``, ``step`` (0-based index in the episode),
    ``advantage``, ``episode_advantage``, ``return`` / ``reward`` where the estimator
    produced them, and ``weight`` (the episode's loss weight, 0 = dropped) where credit filters
    set one.
    """
    _check_match(credit, ro)
    stop = ro.n_steps if stop is None else stop
    ep = ro.step_episode[start:stop]
    ep_pa = pa.array(ep)
    cols = {
        "episode_id": ro.episode_id.take(ep_pa),
        "group_id": ro.group_id.take(ep_pa),
        "step": pa.array(ro.step_index[start:stop]),
        "advantage": pa.array(credit.step_advantage[start:stop]),
        "episode_advantage": pa.array(credit.episode_advantage[ep]),
    }
    if credit.step_return is not None:
        cols["return"] = pa.array(credit.step_return[start:stop])
    if credit.step_reward is not None:
        cols["reward"] = pa.array(credit.step_reward[start:stop])
    if credit.episode_weight is not None:
        cols["weight"] = pa.array(credit.episode_weight[ep])
    return pa.table(cols)


def _check_match(credit: Credit, ro: Rollouts) -> None:
    if not np.array_equal(credit.episode_offsets, ro.episode_offsets):
        raise ValueError(
            "the credit was computed on other rollouts (episode_offsets differ): "
            "pass the rollouts the estimator was run on"
        )


def _json_lines(table: pa.Table, id_json: dict[str, pa.Array], ep: np.ndarray) -> bytes:
    """JSON Lines text of an advantages table, built with Arrow string kernels (no per-row Python)."""
    parts: list[pa.Array | str] = []
    for i, name in enumerate(table.column_names):
        key = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        if name in id_json:
            val = id_json[name].take(pa.array(ep))
        else:
            val = pc.cast(table.column(name), pa.string())
        parts.extend([key, val])
    parts.append("}\n")
    joined = pc.binary_join_element_wise(*parts, "")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    if len(joined) == 0:
        return b""
    off_type = np.int64 if pa.types.is_large_string(joined.type) else np.int32
    offs = np.frombuffer(joined.buffers()[1], dtype=off_type)
    lo, hi = int(offs[joined.offset]), int(offs[joined.offset + len(joined)])
    return bytes(memoryview(joined.buffers()[2])[lo:hi])


def write_credit(
    credit: Credit,
    ro: Rollouts,
    path: str | os.PathLike,
    *,
    chunk_steps: int = 1 << 20,
    progress: Progress | None = None,
) -> None:
    """Write the advantages table (see :func:`credit_table`) as ``.jsonl`` or ``.parquet``.

    The file is written atomically, in chunks of ``chunk_steps`` rows; ``progress(done, total)``
    is called after each chunk.
    """
    p = Path(path)
    fmt = _format(p, "output")
    _check_match(credit, ro)
    if not isinstance(chunk_steps, int) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps!r}")
    for name in ("step_advantage", "episode_advantage", "step_return", "step_reward"):
        values = getattr(credit, name)
        if values is not None and not np.all(np.isfinite(values)):
            i = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"credit.{name}[{i}] is {values[i]}: only finite values can be written")
    S = ro.n_steps
    with atomic_path(p) as tmp:
        if fmt == "parquet":
            writer = None
            try:
                for start in range(0, S, chunk_steps):
                    t = credit_table(credit, ro, start, min(S, start + chunk_steps))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, t.schema)
                    writer.write_table(t)
                    if progress:
                        progress(min(S, start + chunk_steps), S)
            finally:
                if writer is not None:
                    writer.close()
        else:
            id_json = {
                name: pa.array([json.dumps(v, ensure_ascii=False) for v in arr.to_pylist()], type=pa.string())
                for name, arr in (("episode_id", ro.episode_id), ("group_id", ro.group_id))
            }
            with open(tmp, "wb") as f:
                for start in range(0, S, chunk_steps):
                    stop = min(S, start + chunk_steps)
                    t = credit_table(credit, ro, start, stop)
                    f.write(_json_lines(t, id_json, ro.step_episode[start:stop]))
                    if progress:
                        progress(stop, S)
