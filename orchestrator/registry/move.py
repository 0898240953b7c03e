"""``orch db migrate --from URL --to URL``: move a registry to another database, row for row.

A lab outgrows one researcher's SQLite file: the registry moves to a PostgreSQL server (or back,
or to another file). The target must hold no registry yet. In one transaction on the target, the
schema is created by the same Alembic migrations as always, every table is copied in the order of
its foreign keys (parents first), the server's id sequences are moved past the copied ids, and
every row is read back and compared with the source's: the row count and a sha256 over the rows
in primary-key order, per table. Only then does the transaction commit; any difference, error or
kill rolls everything back and leaves the target as it was. The source is only read.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import URL, Connection, Engine, Table, func, inspect, select, text

from orchestrator.errors import UserError
from orchestrator.registry import engine as registry_engine
from orchestrator.registry.tables import metadata

COPY_BATCH = 5000  # rows per multi-row insert


@dataclass(frozen=True)
class TableDigest:
    """What a table holds, to compare two copies: its row count and a sha256 over its rows."""

    table: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class MoveReport:
    source: str  # where from, in words (a file, or a URL without its password)
    target: str
    tables: list[TableDigest]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


def move_registry(source_text: str, target_text: str) -> MoveReport:
    """Copy the registry at ``source_text`` into the empty database at ``target_text``, verified."""
    started = time.monotonic()
    source_url = registry_engine.parse_registry_url(source_text, "--from")
    target_url = registry_engine.parse_registry_url(target_text, "--to")
    if registry_engine.registry_location(source_url) == registry_engine.registry_location(target_url):
        raise UserError(
            f"--to: {registry_engine.registry_location(target_url)} is the registry being moved; "
            "accepted: another database"
        )
    source = _source_engine(source_url)
    target = _empty_target_engine(target_url)
    try:
        with source.connect() as reading:
            with target.connect() as writing, registry_engine.foreign_keys_checked_at_the_end(writing):
                with registry_engine.reachable(target_url), writing.begin():
                    registry_engine.upgrade_in(writing)
                    tables = [_copy_table(reading, writing, table) for table in metadata.sorted_tables]
                    _move_sequences_past_copied_ids(writing)
                    registry_engine.check_foreign_keys(writing)
    finally:
        source.dispose()
        target.dispose()
    return MoveReport(
        source=registry_engine.registry_location(source_url),
        target=registry_engine.registry_location(target_url),
        tables=tables,
        seconds=time.monotonic() - started,
    )


def _source_engine(url: URL) -> Engine:
    file = registry_engine.sqlite_file(url)
    if file is not None and not file.is_file():
        raise UserError(f"--from: no registry file at {file}; accepted: an orch registry that exists")
    engine = registry_engine.open_url_if_registry(url)
    if engine is None:
        raise UserError(
            f"--from: {registry_engine.registry_location(url)} holds no orch registry; accepted: the "
            "URL of an existing registry"
        )
    return engine


def _empty_target_engine(url: URL) -> Engine:
    engine = registry_engine.create_if_missing(url, "--to")
    with registry_engine.reachable(url), engine.connect() as connection:
        present = sorted(inspect(connection).get_table_names())
    if present:
        engine.dispose()
        raise UserError(
            f"--to: {registry_engine.registry_location(url)} already holds tables ({', '.join(present[:5])}"
            f"{', ...' if len(present) > 5 else ''}); accepted: an empty database (a registry is never "
            "merged into another)"
        )
    return engine


def _copy_table(reading: Connection, writing: Connection, table: Table) -> TableDigest:
    """Copy ``table`` in batches, then compare what the target holds with what the source held."""
    source_digest = _Digest(table.name)
    for batch in _batches(_ordered_rows(reading, table), COPY_BATCH):
        writing.execute(table.insert(), [dict(zip(table.columns.keys(), row)) for row in batch])
        source_digest.add(batch)
    copied = _Digest(table.name)
    for batch in _batches(_ordered_rows(writing, table), COPY_BATCH):
        copied.add(batch)
    if copied.result() != source_digest.result():
        raise UserError(
            f"--to: table {table.name} differs after the copy (source {source_digest.result()}, target "
            f"{copied.result()}); nothing was kept. accepted: a target database that stores what it is "
            "given (check its encoding and column types)"
        )
    return copied.result()


def _ordered_rows(connection: Connection, table: Table) -> Iterator[Sequence[Any]]:
    """The table's rows in primary-key order, texts compared byte by byte on both backends (as
    SQLite does; a PostgreSQL database's own collation may order them otherwise)."""
    keys = [
        key.collate("C") if connection.dialect.name == "postgresql" and key.type.python_type is str else key
        for key in table.primary_key.columns
    ]
    query = select(*table.columns).order_by(*keys)
    yield from connection.execute(query, execution_options={"yield_per": COPY_BATCH})


def _batches(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Digest:
    """A running sha256 over rows, each as the JSON of its values (floats as their exact repr)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.rows = 0
        self.hash = hashlib.sha256()

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self.hash.update(json.dumps(list(row), default=repr).encode() + b"\n")
        self.rows += len(rows)

    def result(self) -> TableDigest:
        return TableDigest(self.table, self.rows, self.hash.hexdigest())


def _move_sequences_past_copied_ids(connection: Connection) -> None:
    """PostgreSQL numbers new rows from a sequence per integer key; rows copied with their ids
    leave it behind, so the next insert would collide. SQLite takes max(id) + 1 by itself."""
    if connection.dialect.name != "postgresql":
        return
    for table in metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not keys[0].autoincrement or keys[0].type.python_type is not int:
            continue
        highest = connection.execute(select(func.max(keys[0]))).scalar()
        if highest is not None:
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, :column), :value)"),
                {"table": table.name, "column": keys[0].name, "value": highest},
            )
