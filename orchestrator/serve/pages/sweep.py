"""``/sweeps/{name}``: the runs of a sweep as ``orch runs --sweep NAME`` lists them, with their
final metrics, filtered by ``--where`` clauses (the CLI's language, parsed by the CLI's parser)
and a state, sorted by any column (query parameters: the page works without script)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.registry.tables import RunState, sweeps
from orchestrator.serve import links
from orchestrator.serve.pages.common import NotFound, value_text
from orchestrator.serve.pages.common import usage_error as cli_error
from orchestrator.serve.reader import RegistryReader
from orchestrator.views import RunRow, RunSelection, WhereClause, final_metrics, run_rows

MAX_TABLE_ROWS = 2000  # shown after sorting; --where narrows the rest
BASE_COLUMNS = (("run", "run"), ("state", "state"), ("step", "step"), ("attempts", "attempts"))
SWEPT_PREFIX, FINAL_PREFIX = "swept:", "final:"


@dataclass(frozen=True)
class SweepQuery:
    """What the sweep page is asked: ``--where`` clauses (as typed), a state, a column to sort by."""

    where: tuple[str, ...] = ()
    state: str = ""
    sort: str = ""
    descending: bool = False

    @classmethod
    def of(cls, where: Sequence[str], state: str, sort: str, order: str) -> "SweepQuery":
        return cls(
            tuple(text for text in where if text.strip()), state.strip().upper(), sort, order == "desc"
        )

    def parameters(self) -> list[tuple[str, str]]:
        return [
            *(("where", text) for text in self.where),
            *([("state", self.state)] if self.state else []),
            *([("sort", self.sort), ("order", "desc" if self.descending else "asc")] if self.sort else []),
        ]

    def sorted_by(self, column: str) -> "SweepQuery":
        """Sorted by ``column``: ascending first, the other way round when it is sorted so already."""
        return replace(self, sort=column, descending=self.sort == column and not self.descending)


@dataclass(frozen=True)
class Column:
    key: str  # run, state, step, attempts, swept:<dotted key> or final:<metric>
    label: str
    sort_url: str
    sorted: str  # "asc", "desc" or ""


@dataclass(frozen=True)
class TableRow:
    run_id: str
    url: str
    cells: tuple[str, ...]  # the columns after the run's


@dataclass(frozen=True)
class SweepPage:
    name: str
    url: str
    query: SweepQuery
    error: Optional[str]  # what is wrong with the query, as the CLI says it (HTTP 400)
    states: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[TableRow, ...]
    matched: int  # runs the query selects (rows: the first MAX_TABLE_ROWS of them)
    compare_url: str


@dataclass(frozen=True)
class SelectedRun:
    """A run of the table: as ``orch runs`` lists it, with its final metrics."""

    row: RunRow
    finals: dict[str, float]

    def value(self, column: str) -> Any:
        if column.startswith(SWEPT_PREFIX):
            return self.row.swept.get(column[len(SWEPT_PREFIX) :])
        if column.startswith(FINAL_PREFIX):
            return self.finals.get(column[len(FINAL_PREFIX) :])
        base = {
            "run": self.row.id,
            "state": self.row.state,
            "step": self.row.step,
            "attempts": self.row.attempts,
        }
        return base.get(column)


def sweep_page(reader: RegistryReader, name: str, query: SweepQuery) -> SweepPage:
    clauses, error = parse_query(query)
    if error:
        require_sweep(reader, name)
    selected = [] if error else selected_runs(reader, name, RunSelection(name, query.state or None, clauses))
    swept = list(dict.fromkeys(key for run in selected for key in run.row.swept))
    finals = sorted({metric for run in selected for metric in run.finals})
    keys = [
        *BASE_COLUMNS,
        *((SWEPT_PREFIX + key, key) for key in swept),
        *((FINAL_PREFIX + metric, f"final {metric}") for metric in finals),
    ]
    ordered = sort_runs(selected, query) if query.sort in {key for key, _ in keys} else selected
    return SweepPage(
        name=name,
        url=links.sweep_url(name),
        query=query,
        error=error,
        states=RunState.ALL,
        columns=tuple(column(name, query, key, label) for key, label in keys),
        rows=tuple(table_row(run, [key for key, _ in keys[1:]]) for run in ordered[:MAX_TABLE_ROWS]),
        matched=len(selected),
        compare_url=links.compare_url([name]),
    )


def parse_query(query: SweepQuery) -> tuple[tuple[WhereClause, ...], Optional[str]]:
    """The ``--where`` clauses, or the message ``orch runs`` gives for the first bad one (and for
    a state that is none)."""
    if query.state and query.state not in RunState.ALL:
        choices = ", ".join(repr(state) for state in RunState.ALL)
        return (), cli_error(
            "runs", f"argument --state: invalid choice: {query.state!r} (choose from {choices})"
        )
    clauses = []
    for text in query.where:
        try:
            clauses.append(WhereClause.parse(text))
        except argparse.ArgumentTypeError as error:
            return (), cli_error("runs", f"argument --where: {error}")
    return tuple(clauses), None


def require_sweep(reader: RegistryReader, name: str) -> None:
    with reader.session() as session:
        if session is None or not sweep_known(session, name):
            raise NotFound(f"no sweep named {name!r} in registry {reader.location}")


def sweep_known(session: Session, name: str) -> bool:
    return session.execute(select(sweeps.c.id).where(sweeps.c.name == name)).first() is not None


def selected_runs(reader: RegistryReader, name: str, selection: RunSelection) -> list[SelectedRun]:
    with reader.session() as session:
        if session is None or not sweep_known(session, name):
            raise NotFound(f"no sweep named {name!r} in registry {reader.location}")
        rows = list(run_rows(session.connection(), selection))
        finals = final_metrics(session, [row.id for row in rows])
    return [SelectedRun(row, finals[row.id]) for row in rows]


def sort_runs(runs: list[SelectedRun], query: SweepQuery) -> list[SelectedRun]:
    """By the column's values (numbers before text), runs without a value last either way; ties
    keep the runs' order (oldest first)."""
    present = [run for run in runs if run.value(query.sort) is not None]
    missing = [run for run in runs if run.value(query.sort) is None]
    return sorted(present, key=sort_key(query.sort), reverse=query.descending) + missing


def sort_key(column: str) -> Callable[[SelectedRun], tuple[int, float, str]]:
    def key(run: SelectedRun) -> tuple[int, float, str]:
        value = run.value(column)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1, 0.0, value_text(value))

    return key


def column(sweep: str, query: SweepQuery, key: str, label: str) -> Column:
    sorted_now = ("desc" if query.descending else "asc") if query.sort == key else ""
    return Column(key, label, links.sweep_url(sweep, query.sorted_by(key).parameters()), sorted_now)


def table_row(run: SelectedRun, keys: list[str]) -> TableRow:
    return TableRow(
        run.row.id,
        links.run_url(run.row.id),
        tuple(
            f"{run.row.step}/{run.row.total_steps}"
            if key == "step"
            else value_text(run.value(key), 4 if key.startswith(FINAL_PREFIX) else 6)
            for key in keys
        ),
    )
