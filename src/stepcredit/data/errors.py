"""Errors raised for bad rollout data, naming the file, the record, the field and the fix."""

from __future__ import annotations

__all__ = ["RolloutsError"]


class RolloutsError(ValueError):
    """Bad rollout data.

    The message is one line: ``FILE: RECORD: field 'F': PROBLEM. Fix: FIX``. The parts are also
    attributes, so callers (the CLI, tests, trainers) can use them.

    Attributes:
        source: the file name, or ``"<records>"`` / ``"<arrays>"`` for in-memory input, or
            ``"<rollouts>"`` for a structural problem an estimator finds in validated rollouts
            (e.g. ``tree``'s node ids; the CLI puts the file name in its place).
        record: where the record is: ``"line 12"`` (JSONL, 1-based), ``"row 11"`` (Parquet or an
            Arrow table, 0-based), ``"record 11"`` (``from_records``, 0-based) or ``"episode 11"``
            (``from_arrays``), optionally followed by the step (``", step 3"``). Empty for
            problems of the whole input (an empty file).
        field: the offending field (``"outcome"``, ``"steps[].state"``), or empty.
        problem: what is wrong.
        fix: how to fix it.
    """

    def __init__(self, source: str, record: str, field: str, problem: str, fix: str):
        self.source = source
        self.record = record
        self.field = field
        self.problem = problem
        self.fix = fix
        parts = [source]
        if record:
            parts.append(record)
        if field:
            parts.append(f"field '{field}'")
        super().__init__(": ".join(parts) + f": {problem}. Fix: {fix}")

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing, Ray workers)
        return (type(self), (self.source, self.record, self.field, self.problem, self.fix))
