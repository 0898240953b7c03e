"""Printing what a command reports: a rich table for people, or JSON (``--json``) for scripts; and
the encodings of ``orch export`` (JSON, CSV, parquet), written row by row or batch by batch.

rich and pyarrow are imported where they are used: ``orch --help`` and ``--json`` need neither.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import itertools
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from orchestrator.views import ExportRow


def json_default(value: Any) -> Any:
    """What JSON holds of a value json cannot encode: a view's dataclass as its fields (each
    encoded in turn), anything else (a path) as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return vars(value)
    return str(value)


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=json_default)
    sys.stdout.write("\n")


def print_json_records(payload: dict[str, Any], records_key: str) -> None:
    """``payload`` as :func:`print_json` prints it, except that the list at ``records_key`` (a
    plan's runs: 100 000 of them) has one record per line, encoded by json's C encoder (indented
    JSON is encoded in Python, ten times slower)."""
    records = payload[records_key]
    marker = "\u0000records\u0000"
    head, tail = json.dumps(
        {**payload, records_key: marker}, indent=2, sort_keys=True, default=json_default
    ).split(json.dumps(marker))
    sys.stdout.write(head + "[")
    for number, record in enumerate(records):
        sys.stdout.write(
            ("\n    " if number == 0 else ",\n    ")
            + json.dumps(record, sort_keys=True, default=json_default)
        )
    sys.stdout.write(("\n  ]" if records else "]") + tail + "\n")


def write_json_list(items: Iterable[Any], out: TextIO, sort_keys: bool) -> int:
    """``json.dump(list(items), out, indent=2, sort_keys=sort_keys, default=json_default)`` and a newline,
    character for character, one item at a time; returns the number of items."""
    count = 0
    for count, item in enumerate(items, start=1):
        out.write(
            ("[\n  " if count == 1 else ",\n  ")
            + json.dumps(item, indent=2, sort_keys=sort_keys, default=json_default).replace("\n", "\n  ")
        )
    out.write("\n]\n" if count else "[]\n")
    return count


PIPE_WIDTH = 200  # columns when stdout is not a terminal (logs, CI): wide tables stay one line per row


def console() -> Console:
    from rich.console import Console

    class PipedConsole(Console):
        """rich's console, except that a closed pipe (``orch status | head``) raises BrokenPipeError,
        which ``orch``'s main handles for every command alike (rich's own handling exits with 1)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader of orch's output went away")

    return PipedConsole(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


MAX_SWEPT_COLUMNS = 6  # more swept keys (a per-optimizer ``grids`` sweep) share one "swept" column


def swept_columns(swept: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Column names and per-row cells for the keys swept in any of ``swept`` (each row's swept
    values): a column per dotted key, or one column of ``key=value`` pairs when there are many."""
    keys = list(dict.fromkeys(key for values in swept for key in values))
    if len(keys) <= MAX_SWEPT_COLUMNS:
        return keys, [[values.get(key) for key in keys] for values in swept]
    return ["swept"], [[values] for values in swept]


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    from rich.table import Table

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
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` for none."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(max(int(round(seconds)), 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_time(unix_seconds: float | None) -> str:
    """A UNIX time as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    if unix_seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_seconds))


# -- orch export ------------------------------------------------------------------------------------
# One column per name any row has, in the order the names first appear; a row without a column
# leaves it empty (CSV), null (parquet) or out (JSON, one object per row).


def write_json_rows(rows: Iterable[ExportRow], out: TextIO) -> int:
    return write_json_list((row.as_dict() for row in rows), out, sort_keys=False)


def export_columns(rows: Sequence[ExportRow]) -> tuple[str, ...]:
    """Every column of ``rows``, in the order the names first appear."""
    shapes = dict.fromkeys(row.shape for row in rows)
    return tuple(
        dict.fromkeys(itertools.chain(("id", "sweep", "state"), *itertools.chain.from_iterable(shapes)))
        if rows
        else ()
    )


def write_csv_rows(rows: Sequence[ExportRow], out: TextIO) -> int:
    columns = export_columns(rows)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    positions: dict[tuple[tuple[str, ...], ...], Optional[list[int]]] = {}
    for row in rows:
        shape = row.shape
        if shape not in positions:
            row_columns = row.columns
            positions[shape] = (
                None if row_columns == columns else [columns.index(column) for column in row_columns]
            )
        where = positions[shape]
        if where is None:
            writer.writerow(row.values)
            continue
        cells: list[Any] = [""] * len(columns)
        for position, value in zip(where, row.values):
            cells[position] = value
        writer.writerow(cells)
    return len(rows)


def parquet_bytes(rows: Sequence[ExportRow]) -> bytes:
    """The rows as a parquet file, built column by column with no Python object per cell: per
    position of a group in the rows (``ExportRow.groups``), each row points at one of the few
    distinct groups there (a section's text), and a column is their values taken per row (text as
    a dictionary). A column's type is what pyarrow infers from its values, as
    ``Table.from_pylist`` does: the file, read back, is that of ``pq.write_table`` of the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    if not rows:
        pq.write_table(pa.Table.from_pylist([]), buffer)
        return buffer.getvalue()
    parts: dict[str, list[Any]] = {
        "id": [pa.array([row.run_id for row in rows])],
        "sweep": [pa.array([row.sweeps for row in rows])],
        "state": [pa.array([row.state for row in rows])],
    }
    # (first row, position, columns) of each kind of group
    firsts: list[tuple[int, int, tuple[str, ...]]] = []
    for position, groups in enumerate(itertools.zip_longest(*(row.groups for row in rows))):
        for first_row, columns, arrays in _group_columns(groups):
            firsts.append((first_row, position, columns))
            for column, array in zip(columns, arrays):
                parts.setdefault(column, []).append(array)
    ordered = dict.fromkeys(
        itertools.chain(
            ("id", "sweep", "state"),
            *(columns for _, _, columns in sorted(firsts, key=lambda first: first[:2])),
        )
    )
    table = pa.table({column: _merged(parts[column]) for column in ordered})
    # text is written from dictionaries; read back, it is text
    pq.write_table(table, buffer, store_schema=False)
    return buffer.getvalue()


def _group_columns(groups: tuple[Any, ...]) -> Iterator[tuple[int, tuple[str, ...], list[Any]]]:
    """For the groups at one position of every row (None where a row has fewer): per kind of
    group (its column names), the first row that has one, the names, and an array per column with
    each row's value (null in rows with another kind or none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = list(map(id, groups))
    by_id = dict(zip(ids, groups))
    id_array = pa.array(ids, type=pa.uint64())
    encoded = pc.if_else(
        pc.equal(id_array, id(None)), pa.scalar(None, pa.uint64()), id_array
    ).dictionary_encode()
    distinct = [by_id[group_id] for group_id in encoded.dictionary.to_pylist()]
    kinds = list(dict.fromkeys(group.columns for group in distinct))
    for columns in kinds:
        indices = encoded.indices
        of_kind = [group.values for group in distinct]
        if len(kinds) > 1:
            is_kind = [group.columns == columns for group in distinct]
            indices = pc.if_else(pc.take(pa.array(is_kind), indices), indices, pa.scalar(None, indices.type))
            of_kind = [values if kind else (None,) * len(columns) for values, kind in zip(of_kind, is_kind)]
        first_row = pc.index(pc.is_valid(indices), True).as_py()
        arrays = []
        for column_values in zip(*of_kind):
            values = pa.array(column_values)
            # a null is a null index: parquet takes no null in a dictionary
            if pa.types.is_string(values.type):
                valid = pc.if_else(
                    pc.take(values.is_valid(), indices), indices, pa.scalar(None, indices.type)
                )
                arrays.append(pa.DictionaryArray.from_arrays(valid, values.fill_null("")))
            elif pa.types.is_null(values.type):
                arrays.append(pa.nulls(len(groups)))
            else:
                arrays.append(values.take(indices))
        yield first_row, columns, arrays


def _merged(parts: list[Any]) -> Any:
    """One column from the arrays of the kinds of groups that hold it (one value per row at most)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(parts) == 1:
        return parts[0]
    dense = [part.dictionary_decode() if pa.types.is_dictionary(part.type) else part for part in parts]
    common = (
        pa.unify_schemas([pa.schema([("column", part.type)]) for part in dense], promote_options="permissive")
        .field("column")
        .type
    )
    return pc.coalesce(*(part.cast(common) for part in dense))
