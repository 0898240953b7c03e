"""Printing what a command reports: a rich table for people, or JSON (``--json``) for scripts."""

from __future__ import annotations

import errno
import json
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


PIPE_WIDTH = 200  # columns when stdout is not a terminal (logs, CI): wide tables stay one line per row


class PipedConsole(Console):
    """rich's console, except that a closed pipe (``orch status | head``) raises BrokenPipeError,
    which ``orch``'s main handles for every command alike (rich's own handling exits with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of orch's output went away")


def console() -> Console:
    return PipedConsole(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


MAX_SWEPT_COLUMNS = 6  # more swept keys (a per-optimizer ``grids`` sweep) share one "swept" column


def swept_columns(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Column names and per-row cells for the keys swept in any of ``rows`` (each with a ``swept``
    mapping): a column per dotted key, or one column of ``key=value`` pairs when there are many."""
    keys = list(dict.fromkeys(key for row in rows for key in row["swept"]))
    if len(keys) <= MAX_SWEPT_COLUMNS:
        return keys, [[row["swept"].get(key) for key in keys] for row in rows]
    return ["swept"], [[row["swept"]] for row in rows]


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    rendered = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        rendered.add_column(column, overflow="fold")
    for row in rows:
        rendered.add_row(*(format_cell(cell) for cell in row))
    return rendered


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " ".join(f"{key}={format_cell(item)}" for key, item in value.items())
    return str(value)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
