"""Terminal output for the CLI: tables and progress, with rich when installed, plain text otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

try:  # rich is in the `cli` and `dev` extras; the core works without it
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError:  # pragma: no cover - exercised only without rich
    Console = None  # type: ignore[assignment,misc]

__all__ = ["print_table", "progress"]


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], file=None) -> None:
    """Print a table (rich box table, or aligned plain text without rich)."""
    file = file or sys.stdout
    cells = [[_fmt(v) for v in row] for row in rows]
    if Console is not None:
        table = Table(title=title, title_justify="left", show_lines=False)
        for i, c in enumerate(columns):
            table.add_column(c, justify="right" if cells and _numeric(cells[0][i]) else "left", overflow="fold")
        for row in cells:
            table.add_row(*row)
        Console(file=file, width=max(100, Console(file=file).width)).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print(title, file=file)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)), file=file)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _Bar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def update(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)


@contextmanager
def progress(description: str, enabled: bool, total: int | None = None) -> Iterator[_Bar]:
    """A progress bar on stderr (or nothing when disabled or rich is missing)."""
    if not enabled or Console is None:
        yield _Bar(None, None)
        return
    cols = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        cols += [BarColumn(), TextColumn("{task.completed:,}/{task.total:,}")]
    cols.append(TimeElapsedColumn())
    with Progress(*cols, console=Console(file=sys.stderr), transient=True) as p:
        task = p.add_task(description, total=total)
        yield _Bar(p, task)
