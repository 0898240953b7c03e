"""Read-side queries of the registry, shaped for the CLI (tables) and ``--json`` alike.

Set-based, for registries of 10⁵ runs, on the Core tables (``status`` is
:mod:`orchestrator.status`). A run's spec is recorded as its sections (``spec_sections``: each
distinct value of a top-level field once; ``runs.section_ids`` names a run's). So ``runs
--where`` decides each clause once per distinct section (SQL keeps candidates with SQLite's
JSON functions or PostgreSQL's ``jsonb``, Python's equality decides) and selects the runs naming
a matching section; ``export`` flattens each distinct section once and takes every final metric
from one aggregate query. Only ``show`` and the analyses, which read a few runs, load ORM
objects per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import operator
import re
import time
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import yaml
from sqlalchemy import ColumnElement, Connection, Select, and_, case, false, func, literal_column, select

from orchestrator.bulk import IN_CHUNK, in_chunks
from orchestrator.errors import bounded_list, shown  # noqa: F401  (also the CLI's, through this module)
from orchestrator.registry import tables

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from orchestrator.registry.models import Attempt, Requeue, Run, Shard


WHERE_CLAUSE = re.compile(
    r"\s*(?P<key>[^\s=<>!]+?)\s*(?:(?P<operator>>=|<=|!=|=|>|<)(?P<value>.*)|\s+in\s+(?P<members>[(\[].*[)\]])\s*)",
    re.DOTALL,
)
WHERE_SYNTAX = (
    "KEY=VALUE, KEY!=VALUE, KEY>NUMBER (or >=, <, <=) or KEY in (A, B, ...), KEY a dotted run-spec key and "
    "values YAML, e.g. optimizer.lr>0.01"
)
COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class WhereClause:
    """A ``--where`` clause: a dotted run-spec key, an operator (``=``, ``!=``, ``>``, ``>=``,
    ``<``, ``<=``, ``in``) and a YAML-typed value (a list of them for ``in``). Equality is
    Python's (1 == 1.0 == true); a comparison holds for numbers only; a key whose value is a
    mapping holds none (a mapping is flattened into its keys)."""

    key: str
    value: Any
    operator: str = "="

    @classmethod
    def parse(cls, text: str) -> "WhereClause":
        """The clause, or argparse's usage error (exit 2) naming what is wrong and what is accepted."""
        match = WHERE_CLAUSE.fullmatch(text)
        if match is None:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a clause; accepted: {WHERE_SYNTAX}")
        key = match["key"]
        problem = unknown_key_problem(key)
        if problem:
            raise argparse.ArgumentTypeError(f"{shown(text)}: {problem}")
        if match["members"] is not None:
            members = where_value(text, "[" + match["members"][1:-1] + "]")
            if not members:
                raise argparse.ArgumentTypeError(
                    f"{shown(text)}: an empty set; accepted: KEY in (A, B, ...) with at least one value"
                )
            return cls(key, members, "in")
        from jobs.spec import is_number  # dataclasses only: no torch (loaded already by the key check above)

        value = where_value(text, match["value"])
        if match["operator"] in COMPARISONS and not is_number(value):
            raise argparse.ArgumentTypeError(
                f"{shown(text)}: {match['operator']} compares numbers; found "
                f"{shown(match['value'].strip())}; accepted: a number, e.g. "
                f"{key}{match['operator']}0.01"
            )
        return cls(key, value, match["operator"])

    @property
    def text(self) -> str:
        if self.operator == "in":
            return f"{self.key} in ({', '.join(json.dumps(member) for member in self.value)})"
        return f"{self.key}{self.operator}{json.dumps(self.value)}"

    def matches(self, config: dict[str, Any]) -> bool:
        return self.key in config and self.holds(config[self.key])

    def holds(self, found: Any) -> bool:
        """Whether the value found at the key satisfies the clause."""
        if isinstance(found, dict):
            return False
        if self.operator == "=":
            return bool(found == self.value)
        if self.operator == "!=":
            return bool(found != self.value)
        if self.operator == "in":
            return any(found == member for member in self.value)
        from jobs.spec import is_number

        return is_number(found) and COMPARISONS[self.operator](found, self.value)


WHERE_VALUE_EXAMPLES = "a YAML scalar or list, e.g. 0.1, sgd, true, null, [16, 16]"
INDEXED_KEY = re.compile(r"(?P<list>[A-Za-z_][A-Za-z0-9_]*)\[(?P<index>\d+)\]\.(?P<field>.+)")
MAX_KEY_LIST_CHARS = 640  # of the keys an unknown-key message lists (the whole message stays within 1 000)


def where_value(text: str, value_text: str) -> Any:
    """The value of a ``--where`` clause: plain YAML data (no tags for objects, no sets or dates)."""
    try:
        value = yaml.safe_load(value_text)
        json.dumps(value, allow_nan=True)  # what a run spec can hold; refuses recursive lists (&a [*a])
    except (yaml.YAMLError, RecursionError, TypeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: the value {shown(value_text)} is not plain YAML data ({first_line}); "
            f"accepted: {WHERE_VALUE_EXAMPLES}"
        ) from None
    return value


def unknown_key_problem(key: str) -> Optional[str]:
    """Why ``key`` names no field of a run spec, with the keys accepted instead; None if it does."""
    keys = spec_keys()
    indexed = INDEXED_KEY.fullmatch(key)
    if (
        key in keys.plain
        or indexed
        and indexed["list"] in keys.item_fields
        and indexed["field"] in keys.item_fields[indexed["list"]]
    ):
        return None
    names = keys.all_names()
    section = nearest_section(key, names)
    related = (
        [name for name in names if _unindexed(name) == section or _unindexed(name).startswith(section + ".")]
        if section
        else top_level_sections(names)
    )
    return (
        f"unknown key {shown(key)}; accepted: a dotted run-spec key: "
        f"{bounded_list(related, MAX_KEY_LIST_CHARS)}"
    )


def _unindexed(key: str) -> str:
    return re.sub(r"\[(\d+|N)\]", "", key)


def nearest_section(key: str, names: Sequence[str]) -> str:
    """The longest dotted prefix of ``key`` (list indices left out) under which ``names`` has keys
    ("optimizer.schedule" for "optimizer.schedule.typo", "probes" for "probes[0].typo"); "" if none."""
    parts = _unindexed(key).split(".")
    for length in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:length])
        if any(_unindexed(name).startswith(prefix + ".") for name in names):
            return prefix
    return ""


def top_level_sections(names: Sequence[str]) -> list[str]:
    """The first part of each name, a section as ``model.*``."""
    return list(
        dict.fromkeys(
            head + (".*" if dot else "") for head, dot, _ in (name.partition(".") for name in names)
        )
    )


@dataclass(frozen=True)
class SpecKeys:
    """The dotted keys of a run spec as :func:`flatten` names them (a list is one value), and the
    fields of the items of lists of mappings (probes), which ``--where`` names ``probes[0].every``."""

    plain: tuple[str, ...]
    item_fields: dict[str, tuple[str, ...]]

    def all_names(self) -> list[str]:
        return [
            *self.plain,
            *(f"{name}[N].{field}" for name, fields in self.item_fields.items() for field in fields),
        ]


@functools.lru_cache(maxsize=1)
def spec_keys() -> SpecKeys:
    from jobs.spec import RunSpec  # dataclasses only: no torch

    plain: list[str] = []
    item_fields: dict[str, tuple[str, ...]] = {}
    _collect_keys(RunSpec, "", plain, item_fields)
    return SpecKeys(tuple(plain), item_fields)


def _collect_keys(
    schema: type, prefix: str, plain: list[str], item_fields: dict[str, tuple[str, ...]]
) -> None:
    hints = typing.get_type_hints(schema)
    for name in (schema_field.name for schema_field in dataclasses.fields(schema)):
        hint = hints[name]
        key = f"{prefix}{name}"
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            _collect_keys(hint, f"{key}.", plain, item_fields)
            continue
        plain.append(key)
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            nested: list[str] = []
            _collect_keys(item, "", nested, {})
            item_fields[key] = tuple(nested)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


def where_view(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`flatten` of a spec plus ``list[i].field`` for each mapping in a list (``probes[0].every``)."""
    flat = flatten(spec)
    for key, value in list(flat.items()):
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    flat.update(flatten(item, f"{key}[{index}]."))
    return flat


# -- reading many rows ---------------------------------------------------------------------------------

BATCH_ROWS = 2000  # rows fetched from the database at a time


def driver_rows(connection: Connection, query: Select[Any], batch: int) -> Iterator[Sequence[Any]]:
    """The rows of ``query`` as the database driver gives them, ``batch`` at a time: for reads of
    10⁵ rows, without SQLAlchemy's result processing per row (its events still see the query)."""
    compiled = query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    parameters = compiled.construct_params()
    bound = (
        tuple(parameters[name] for name in compiled.positiontup or ()) if compiled.positional else parameters
    )
    result = connection.exec_driver_sql(str(compiled), bound)
    try:
        while rows := result.cursor.fetchmany(batch):
            yield from rows
    finally:
        result.close()


# -- --where in SQL ----------------------------------------------------------------------------------

WHERE_PATH_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?(\.[A-Za-z_][A-Za-z0-9_]*)*")
NUMBER_MARGIN = 1e-9  # relative: SQL keeps the numbers this close to a clause's, Python then compares exactly
MAX_SQL_ITEMS = 32  # items of a list value compared in SQL (the rest only in Python)
INT64 = 2**63


def section_path(key: str) -> tuple[str, str]:
    """The section a ``--where`` key lies in and the key's JSON path inside the section's value
    (``optimizer.lr``: optimizer, ``$.lr``; ``probes[0].every``: probes, ``$[0].every``)."""
    if not WHERE_PATH_KEY.fullmatch(key):
        raise ValueError(
            f"--where key {key!r} is not a dotted run-spec key (WhereClause.parse accepts only such keys)"
        )
    section = re.match(r"[A-Za-z_][A-Za-z0-9_]*", key).group(0)  # type: ignore[union-attr]  # fullmatched above
    return section, "$" + key[len(section) :]


@dataclass(frozen=True)
class SqliteJson:
    """A JSON text column at a JSON path, with SQLite's JSON functions (``json_type`` names: null,
    true, false, integer, real, text, array, object; NULL where the path is absent)."""

    column: ColumnElement[Any]
    KINDS: typing.ClassVar = {
        "null": ("null",),
        "number": ("integer", "real", "true", "false"),
        "text": ("text",),
        "array": ("array",),
        "object": ("object",),
    }

    def is_kind(self, path: str, kind: str) -> ColumnElement[bool]:
        return func.json_type(self.column, path).in_(self.KINDS[kind])

    def number(self, path: str) -> ColumnElement[Any]:
        return func.json_extract(self.column, path)  # true and false as 1 and 0

    def text(self, path: str) -> ColumnElement[Any]:
        return func.json_extract(self.column, path)

    def array_length(self, path: str) -> ColumnElement[Any]:
        return func.json_array_length(self.column, path)

    def json_text(self, path: str) -> ColumnElement[Any]:
        """The value's JSON text, numbers as written (not through SQLite's REAL)."""
        return self.column.op("->")(path)

    def member(self, name: str) -> ColumnElement[Any]:
        """The integer at a top-level key (a run's section id)."""
        return func.json_extract(self.column, f"$.{name}")


@dataclass(frozen=True)
class PostgresJson:
    """The same over ``CAST(column AS jsonb)`` with PostgreSQL's path operators ``#>``/``#>>``."""

    column: ColumnElement[Any]
    KINDS: typing.ClassVar = {
        "null": ("null",),
        "number": ("number", "boolean"),
        "text": ("string",),
        "array": ("array",),
        "object": ("object",),
    }

    def _at(self, path: str, operator: str = "#>") -> ColumnElement[Any]:
        from sqlalchemy import Text, cast, literal
        from sqlalchemy.dialects.postgresql import ARRAY, JSONB

        parts = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+", path[2:])
        return cast(self.column, JSONB).op(operator)(literal(parts, ARRAY(Text)))

    def _typeof(self, path: str) -> ColumnElement[Any]:
        return func.jsonb_typeof(self._at(path))

    def is_kind(self, path: str, kind: str) -> ColumnElement[bool]:
        return self._typeof(path).in_(self.KINDS[kind])

    def number(self, path: str) -> ColumnElement[Any]:
        from sqlalchemy import Float, case, cast

        scalar = self._at(path, "#>>")
        return case(
            (self._typeof(path) == "number", cast(scalar, Float)),
            (self._typeof(path) == "boolean", case((scalar == "true", 1.0), else_=0.0)),
            else_=None,
        )

    def text(self, path: str) -> ColumnElement[Any]:
        from sqlalchemy import case

        return case((self._typeof(path) == "string", self._at(path, "#>>")), else_=None)

    def array_length(self, path: str) -> ColumnElement[Any]:
        from sqlalchemy import case

        return case((self._typeof(path) == "array", func.jsonb_array_length(self._at(path))), else_=None)

    def json_text(self, path: str) -> ColumnElement[Any]:
        from sqlalchemy import Text, cast

        return cast(self._at(path), Text)

    def member(self, name: str) -> ColumnElement[Any]:
        from sqlalchemy import Integer, cast, literal
        from sqlalchemy.dialects.postgresql import JSONB

        return cast(cast(self.column, JSONB).op("->>")(literal(name)), Integer)


JsonColumn = typing.Union[SqliteJson, PostgresJson]


def json_column(connection: Connection, column: ColumnElement[Any]) -> JsonColumn:
    return PostgresJson(column) if connection.dialect.name == "postgresql" else SqliteJson(column)


def value_condition(spec: JsonColumn, path: str, value: Any, top: bool = True) -> ColumnElement[bool]:
    """SQL that holds for every JSON value equal to ``value`` at ``path`` and for few others
    (numbers within :data:`NUMBER_MARGIN`, lists holding mappings): Python decides exactly."""
    if value is None:
        return spec.is_kind(path, "null")
    if isinstance(value, (bool, int, float)):
        return number_condition(spec, path, value)
    if isinstance(value, str):
        return and_(spec.is_kind(path, "text"), spec.text(path) == value)
    if isinstance(value, list):
        conditions = [spec.is_kind(path, "array"), spec.array_length(path) == len(value)]
        if top:  # items of items: their kind and length in Python
            conditions += [
                value_condition(spec, f"{path}[{index}]", item, top=False)
                for index, item in enumerate(value[:MAX_SQL_ITEMS])
            ]
        return and_(*conditions)
    if isinstance(value, dict):
        return spec.is_kind(path, "object")
    return false()  # where_value gives JSON data only


def number_condition(spec: JsonColumn, path: str, value: bool | int | float) -> ColumnElement[bool]:
    """A number, true or false (1 == 1.0 == True, as in Python) near ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        return false()  # NaN equals nothing, and a spec holds no infinity (spec_json is strict JSON)
    if not -INT64 < value < INT64:
        return spec.is_kind(path, "number")
    margin = abs(value) * NUMBER_MARGIN
    return and_(spec.is_kind(path, "number"), spec.number(path).between(value - margin, value + margin))


@dataclass(frozen=True)
class SpecFilter:
    """``--where`` clauses as conditions on runs. A clause's value depends on one section of the
    spec only, so it is decided once per distinct section (``spec_sections``: SQL keeps the
    candidates, :meth:`WhereClause.matches`' equality decides on their JSON text), and a run
    matches when its section is one that does (``runs.section_ids``)."""

    conditions: tuple[ColumnElement[bool], ...]

    @classmethod
    def on(cls, connection: Connection, clauses: Sequence[WhereClause]) -> "SpecFilter":
        """The clauses as one condition on runs: their ids among those whose sections match,
        found by a scan of the index ``ix_runs_section_ids`` (section_ids, id)."""
        if not clauses:
            return cls(())
        scanned = tables.runs.alias("scanned")
        run_sections = json_column(connection, scanned.c.section_ids)
        matching = select(scanned.c.id).where(
            *(clause_runs(connection, run_sections, clause) for clause in clauses)
        )
        return cls((tables.runs.c.id.in_(matching),))


def clause_runs(connection: Connection, run_sections: JsonColumn, clause: WhereClause) -> ColumnElement[bool]:
    """The runs whose section holds ``clause``'s value at its key: those naming a candidate
    section, less the candidates Python refused (few: near numbers, lists of mappings); or the
    exact sections by id where they are fewer."""
    if clause.operator == "=" and isinstance(clause.value, dict):
        return false()  # a mapping is flattened into its keys: no key holds one
    section, path = section_path(clause.key)
    sections = tables.spec_sections
    section_json = json_column(connection, sections.c.json)
    candidate = sections.c.name == section  # other operators: Python decides on every distinct section
    if clause.operator == "=":
        candidate = and_(candidate, value_condition(section_json, path, clause.value))
    exact: list[int] = []
    refused: list[int] = []
    for section_id, text in connection.execute(
        select(sections.c.id, section_json.json_text(path)).where(candidate)
    ):
        (exact if text is not None and clause.holds(json.loads(text)) else refused).append(section_id)
    run_section = run_sections.member(section)
    if not exact:
        return false()
    if len(exact) <= len(refused) or len(exact) <= IN_CHUNK:
        return run_section.in_(exact)
    return and_(
        run_section.in_(select(sections.c.id).where(candidate)),
        *([run_section.not_in(refused)] if refused else []),
    )


@dataclass(frozen=True)
class RunSelection:
    """The runs ``orch runs``/``export`` list: of a sweep, in a state, matching ``--where`` clauses."""

    sweep: Optional[str] = None
    state: Optional[str] = None
    where: tuple[WhereClause, ...] = ()

    def conditions(self) -> list[ColumnElement[bool]]:
        """The sweep and state (``--where`` is a :class:`SpecFilter`'s)."""
        conditions: list[ColumnElement[bool]] = []
        if self.sweep:
            conditions.append(tables.runs.c.id.in_(sweep_member_ids(self.sweep)))
        if self.state:
            conditions.append(tables.runs.c.state == self.state.upper())
        return conditions


def sweep_member_ids(sweep: str) -> Select[tuple[str]]:
    return (
        select(tables.sweep_runs.c.run_id)
        .join(tables.sweeps, tables.sweeps.c.id == tables.sweep_runs.c.sweep_id)
        .where(tables.sweeps.c.name == sweep)
    )


def select_runs(
    session: Session, sweep: Optional[str], state: Optional[str], where: Sequence[WhereClause]
) -> list[Run]:
    """The selected runs as ORM objects, oldest first (for the few runs an analysis reads)."""
    from orchestrator.registry.models import Run

    selection = RunSelection(sweep, state, tuple(where))
    spec_filter = SpecFilter.on(session.connection(), selection.where)
    query = (
        select(Run)
        .where(*selection.conditions(), *spec_filter.conditions)
        .order_by(tables.runs.c.created_time, tables.runs.c.id)
    )
    return list(session.scalars(query))


def matches_where(run: Run, where: Sequence[WhereClause]) -> bool:
    """Whether the run's resolved spec satisfies every ``--where`` clause."""
    config = where_view(json.loads(run.spec_json))
    return all(clause.matches(config) for clause in where)


# -- runs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """One run as ``orch runs`` lists it (its JSON: these fields)."""

    id: str
    sweeps: list[str]
    state: str
    step: int
    total_steps: int
    attempts: int
    swept: dict[str, Any]  # dotted key -> value, over the run's sweeps


def run_rows(connection: Connection, selection: RunSelection) -> Iterator[RunRow]:
    """:func:`run_row` of each selected run, oldest first: the runs with their attempt count from
    one query, their memberships from another."""
    spec_filter = SpecFilter.on(connection, selection.where)
    attempts = (
        select(func.count(tables.attempts.c.id))
        .where(tables.attempts.c.run_id == tables.runs.c.id)
        .correlate(tables.runs)
        .scalar_subquery()
    )
    query = (
        select(
            tables.runs.c.id,
            tables.runs.c.state,
            tables.runs.c.current_step,
            tables.runs.c.total_steps,
            attempts,
        )
        .where(*selection.conditions(), *spec_filter.conditions)
        .order_by(tables.runs.c.created_time, tables.runs.c.id)
    )
    runs = list(driver_rows(connection, query, BATCH_ROWS))
    memberships = run_memberships(connection, [row[0] for row in runs])
    for run_id, state, step, total_steps, attempt_count, *_ in runs:
        swept: dict[str, Any] = {}
        names = []
        for name, swept_json in memberships.get(run_id, ()):
            names.append(name)
            swept.update(json.loads(swept_json))
        yield RunRow(run_id, sorted(names), state, step, total_steps, attempt_count, swept)


def run_memberships(connection: Connection, run_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(sweep name, swept values as JSON) of each membership of the runs ``run_ids``, per run, in
    the order the run joined its sweeps: looked up by run id (index ``ix_sweep_runs_run_id``) in
    ``IN`` chunks."""
    memberships: dict[str, list[tuple[str, str]]] = {}
    for chunk in in_chunks(run_ids):
        query = (
            select(tables.sweep_runs.c.run_id, tables.sweeps.c.name, tables.sweep_runs.c.swept_json)
            .join(tables.sweeps, tables.sweeps.c.id == tables.sweep_runs.c.sweep_id)
            .where(tables.sweep_runs.c.run_id.in_(chunk))
            .order_by(membership_order(connection))
        )
        for run_id, name, swept_json in driver_rows(connection, query, BATCH_ROWS):
            memberships.setdefault(run_id, []).append((name, swept_json))
    return memberships


def membership_order(connection: Connection) -> ColumnElement[Any]:
    """The order in which memberships were recorded (SQLite: the row id), the order in which
    :func:`run_row` merges a run's swept values."""
    return (
        literal_column("sweep_runs.rowid")
        if connection.dialect.name == "sqlite"
        else tables.sweep_runs.c.sweep_id
    )


def sweep_names(run: Run) -> list[str]:
    return sorted(member.sweep.name for member in run.memberships)


def swept_values(run: Run) -> str:
    """``key=value`` of each swept key of the run, for titles."""
    return " ".join(f"{key}={value}" for key, value in swept_of(run).items())


def swept_of(run: Run) -> dict[str, Any]:
    """The value of each swept key of the run, over its sweeps."""
    swept: dict[str, Any] = {}
    for member in run.memberships:
        swept.update(json.loads(member.swept_json))
    return swept


def run_row(run: Run) -> RunRow:
    return RunRow(
        run.id,
        sweep_names(run),
        run.state,
        run.current_step,
        run.total_steps,
        len(run.attempts),
        swept_of(run),
    )


# -- show ---------------------------------------------------------------------------------------------


def final_metrics(session: Session, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """The value of each metric at its last recorded step, per run."""
    finals: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    for chunk in in_chunks(run_ids):
        for run_id, name, value in session.execute(last_metric_values(tables.metrics.c.run_id.in_(chunk))):
            finals[run_id][name] = value
    return finals


def last_metric_values(runs: ColumnElement[bool]) -> Select[str, str, float]:
    """(run id, metric name, value at the metric's last step) of the metrics ``runs`` selects:
    the rows no later step of the same metric follows (one probe of the primary key each)."""
    metrics, later = tables.metrics, tables.metrics.alias("later")
    followed = select(later.c.step).where(
        later.c.run_id == metrics.c.run_id, later.c.name == metrics.c.name, later.c.step > metrics.c.step
    )
    return select(metrics.c.run_id, metrics.c.name, metrics.c.value).where(runs, ~followed.exists())


@dataclass(frozen=True)
class MetricSummary:
    """One metric of a run: how many points, its range, and its value at its last step."""

    count: int
    min: float
    max: float
    last_step: int
    last: float


def metric_summary(session: Session, run_id: str) -> dict[str, MetricSummary]:
    query = (
        select(
            tables.metrics.c.name,
            func.count(),
            func.min(tables.metrics.c.value),
            func.max(tables.metrics.c.value),
            func.max(tables.metrics.c.step),
        )
        .where(tables.metrics.c.run_id == run_id)
        .group_by(tables.metrics.c.name)
    )
    finals = final_metrics(session, [run_id])[run_id]
    return {
        name: MetricSummary(count, low, high, last_step, finals[name])
        for name, count, low, high, last_step in session.execute(query)
    }


MetricSeries = dict[str, tuple[list[int], list[float]]]  # metric -> (steps, values), by step


def metric_series(session: Session, run_id: str) -> MetricSeries:
    return metric_series_of(session, [run_id])[run_id]


def metric_series_of(session: Session, run_ids: Sequence[str]) -> dict[str, MetricSeries]:
    """Every metric of each run, in one query per chunk of runs (not one per run)."""
    series_of: dict[str, MetricSeries] = {run_id: {} for run_id in run_ids}
    metrics = tables.metrics.c
    for chunk in in_chunks(list(series_of)):
        query = (
            select(metrics.run_id, metrics.name, metrics.step, metrics.value)
            .where(metrics.run_id.in_(chunk))
            .order_by(metrics.run_id, metrics.name, metrics.step)
        )
        for run_id, name, step, value in session.execute(query):
            steps, values = series_of[run_id].setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
    return series_of


@dataclass(frozen=True)
class RequeueRow:
    """One time the scheduler put an attempt's job back in the queue, and why."""

    time: float
    cause: str
    source: str  # journal (the job's own signal) or scheduler (sacct)
    node: Optional[str]
    step: Optional[int]


@dataclass(frozen=True)
class AttemptView:
    """One attempt of a run as ``orch show`` reports it."""

    number: int
    key: str
    executor: str
    job_id: Optional[str]
    array_task: Optional[int]
    hostname: Optional[str]
    pid: Optional[int]
    state: str
    exit_code: Optional[int]
    reason: Optional[str]
    start_step: Optional[int]
    end_step: Optional[int]
    requeues: int
    requeue_history: list[RequeueRow]
    image_sha256: Optional[str]
    journal_dir: str
    submitted_time: float
    started_time: Optional[float]
    ended_time: Optional[float]
    queue_wait_s: Optional[float]
    elapsed_s: Optional[float]
    provenance: Optional[dict[str, Any]]


@dataclass(frozen=True)
class CheckpointRow:
    step: int
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardRow:
    probe: str
    step: int
    path: str
    bytes: int
    sha256: str
    n_points: int
    is_extrapolation: bool


@dataclass(frozen=True)
class RunView:
    """One run with everything the registry knows of it (``orch show``)."""

    id: str
    sweeps: list[str]
    state: str
    step: int
    total_steps: int
    attempts: list[AttemptView]
    swept: dict[str, Any]
    run_dir: Optional[str]
    spec: dict[str, Any]  # the resolved spec, as recorded
    checkpoints: list[CheckpointRow]
    shards: list[ShardRow]
    metrics: dict[str, MetricSummary]


def show_view(session: Session, run: Run) -> RunView:
    return RunView(
        id=run.id,
        sweeps=sweep_names(run),
        state=run.state,
        step=run.current_step,
        total_steps=run.total_steps,
        attempts=[attempt_view(attempt) for attempt in run.attempts],
        swept=swept_of(run),
        run_dir=run.run_dir,
        spec=json.loads(run.spec_json),
        checkpoints=[CheckpointRow(c.step, c.path, c.bytes, c.sha256) for c in run.checkpoints],
        shards=[shard_row(shard) for shard in run.shards],
        metrics=metric_summary(session, run.id),
    )


def attempt_view(attempt: Attempt) -> AttemptView:
    return AttemptView(
        number=attempt.number,
        key=attempt.key,
        executor=attempt.executor,
        job_id=attempt.job_id,
        array_task=attempt.array_task,
        hostname=attempt.hostname,
        pid=attempt.pid,
        state=attempt.state,
        exit_code=attempt.exit_code,
        reason=attempt.reason,
        start_step=attempt.start_step,
        end_step=attempt.end_step,
        requeues=attempt.requeues,
        requeue_history=[requeue_row(requeue) for requeue in attempt.requeue_history],
        image_sha256=attempt.image_sha256,
        journal_dir=attempt.journal_dir,
        submitted_time=attempt.submitted_time,
        started_time=attempt.started_time,
        ended_time=attempt.ended_time,
        queue_wait_s=attempt_queue_wait(attempt),
        elapsed_s=attempt_elapsed(attempt),
        provenance=json.loads(attempt.provenance_json) if attempt.provenance_json else None,
    )


def requeue_row(requeue: Requeue) -> RequeueRow:
    return RequeueRow(requeue.time, requeue.cause, requeue.source, requeue.node, requeue.step)


def attempt_queue_wait(attempt: Attempt) -> Optional[float]:
    """Seconds from submission to the job's start (to now while it waits; None once it ended unstarted)."""
    if attempt.started_time is not None:
        return attempt.started_time - attempt.submitted_time
    return time.time() - attempt.submitted_time if attempt.ended_time is None else None


def attempt_elapsed(attempt: Attempt) -> Optional[float]:
    """Seconds from the job's start to its end (to now while it runs); None before it started."""
    if attempt.started_time is None:
        return None
    return (attempt.ended_time if attempt.ended_time is not None else time.time()) - attempt.started_time


def shard_row(shard: Shard) -> ShardRow:
    return ShardRow(
        shard.probe,
        shard.step,
        shard.path,
        shard.bytes,
        shard.sha256,
        shard.n_points,
        shard.is_extrapolation,
    )


# -- export -------------------------------------------------------------------------------------------


def flat_spec(run: Run) -> dict[str, Any]:
    return flatten(json.loads(run.spec_json))


@dataclass(frozen=True, eq=False)
class ColumnGroup:
    """Columns of export rows with their values, shared by every row that has the same: one
    distinct text of a section of the specs (``config.*``), or a run's final metrics (``final.*``)."""

    columns: tuple[str, ...]
    values: tuple[Any, ...]  # lists as JSON text


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One run of ``orch export``: id, its sweeps' names (comma-separated), state, and the groups
    of its other columns."""

    run_id: str
    sweeps: str
    state: str
    groups: tuple[ColumnGroup, ...]

    @property
    def shape(self) -> tuple[tuple[str, ...], ...]:
        """The column names of each group: rows of one shape have the same columns."""
        return tuple(group.columns for group in self.groups)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*EXPORT_ID_COLUMNS, *itertools.chain.from_iterable(group.columns for group in self.groups))

    @property
    def values(self) -> tuple[Any, ...]:
        return (
            self.run_id,
            self.sweeps,
            self.state,
            *itertools.chain.from_iterable(group.values for group in self.groups),
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self.columns, self.values))


EXPORT_ID_COLUMNS = ("id", "sweep", "state")


def export_rows(connection: Connection, selection: RunSelection) -> list[ExportRow]:
    """One row per selected run (of a sweep, in a state, where clauses hold; or every run), oldest first: id,
    its sweeps' names, state,
    its flattened spec (``config.*``, lists as JSON; each distinct section flattened once) and the
    value of each metric at its last step (``final.*``, by name). Read in the table's order,
    sorted here: sorting in SQL would move every row through SQLite's sorter."""
    conditions = [*selection.conditions(), *SpecFilter.on(connection, selection.where).conditions]
    runs = and_(*conditions) if conditions else None
    names = member_sweep_names(connection, runs)
    finals = final_metric_groups(connection, runs)
    query = select(
        tables.runs.c.created_time, tables.runs.c.id, tables.runs.c.state, tables.runs.c.section_ids
    )
    if runs is not None:
        query = query.where(runs)
    selected = [
        (created_time, run_id, state, tuple(json.loads(section_ids).values()))
        for created_time, run_id, state, section_ids in driver_rows(connection, query, BATCH_ROWS)
    ]
    groups = section_groups(
        connection, {section_id for *_, section_ids in selected for section_id in section_ids}
    )
    selected.sort(key=lambda item: (item[0], item[1]))
    rows = []
    for _, run_id, state, section_ids in selected:
        spec_groups = tuple(map(groups.__getitem__, section_ids))
        final = finals.get(run_id)
        rows.append(
            ExportRow(
                run_id, names.get(run_id, ""), state, spec_groups if final is None else (*spec_groups, final)
            )
        )
    return rows


def section_groups(connection: Connection, section_ids: set[int]) -> dict[int, ColumnGroup]:
    """The ``config.*`` columns of each section (``IN``-chunked), lists as their JSON."""
    ordered = sorted(section_ids)
    columns: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct set of columns
    groups = {}
    for chunk in in_chunks(ordered):
        query = select(
            tables.spec_sections.c.id, tables.spec_sections.c.name, tables.spec_sections.c.json
        ).where(tables.spec_sections.c.id.in_(chunk))
        for section_id, name, value_json in connection.execute(query):
            flat = flatten({name: json.loads(value_json)})
            names = tuple(f"config.{key}" for key in flat)
            values = tuple(json.dumps(value) if isinstance(value, list) else value for value in flat.values())
            groups[section_id] = ColumnGroup(columns.setdefault(names, names), values)
    return groups


def member_sweep_names(connection: Connection, runs: Optional[ColumnElement[bool]]) -> dict[str, str]:
    """The names of each run's sweeps, sorted and joined by commas, per run (of ``runs``)."""
    query = select(tables.sweep_runs.c.run_id, tables.sweeps.c.name).join(
        tables.sweeps, tables.sweeps.c.id == tables.sweep_runs.c.sweep_id
    )
    if runs is not None:
        query = query.where(tables.sweep_runs.c.run_id.in_(select(tables.runs.c.id).where(runs)))
    names: dict[str, list[str]] = {}
    for run_id, name in driver_rows(connection, query, BATCH_ROWS):
        names.setdefault(run_id, []).append(name)
    return {run_id: ",".join(sorted(run_names)) for run_id, run_names in names.items()}


def final_metric_groups(
    connection: Connection, runs: Optional[ColumnElement[bool]]
) -> dict[str, ColumnGroup]:
    """Per run (of ``runs``) with metrics: ``final.<name>`` columns by name with the value of each
    metric at its last step, one row per run from one aggregate query (a column per metric name)."""
    selected = (
        tables.metrics.c.run_id.in_(select(tables.runs.c.id).where(runs))
        if runs is not None
        else tables.metrics.c.run_id.is_not(None)
    )
    names = sorted(connection.execute(select(tables.metrics.c.name).where(selected).distinct()).scalars())
    if not names:
        return {}
    last = last_metric_values(selected).subquery()
    query = select(
        last.c.run_id, *(func.max(case((last.c.name == name, last.c.value))) for name in names)
    ).group_by(last.c.run_id)
    final_names = tuple(f"final.{name}" for name in names)
    columns: dict[tuple[int, ...], tuple[str, ...]] = {}  # by the positions of the metrics a run has
    finals = {}
    for run_id, *values in driver_rows(connection, query, BATCH_ROWS):
        present = tuple(index for index, value in enumerate(values) if value is not None)
        if present not in columns:
            columns[present] = tuple(final_names[index] for index in present)
        finals[run_id] = ColumnGroup(columns[present], tuple(values[index] for index in present))
    return finals
