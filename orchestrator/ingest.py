"""What ``orch sync`` does once some attempt is open (:mod:`orchestrator.sync` decides): ingest
the open attempts' journals into the registry — the registry's only writer of job facts.

Incremental (each attempt remembers the last event it ingested) and idempotent (rows are keyed
by what they describe, values come verbatim from the journal): a second sync writes nothing.
An attempt that has no final event while its process is gone becomes LOST, unless its job printed
a failure line on stderr (``jobs.journal.failure_line``: the journal could not take the event).

Set-based, whatever the number of attempts: the open attempts and their runs come in one query,
every journal is read before anything is written, the metrics, checkpoints and shards of all
attempts go in one prepared upsert per table (an executemany), and the attempts and runs that
changed in one UPDATE per set of changed columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import operator
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence

from sqlalchemy import Engine, Executable, ScalarSelect, Table, bindparam, select, update
from sqlalchemy.orm import Session, aliased, joinedload, load_only
from sqlalchemy.orm.attributes import instance_dict

from jobs.journal import (
    CheckpointWritten,
    Failed,
    Finished,
    Heartbeat,
    JournalEvent,
    Metrics,
    Provenance,
    Requeued,
    ShardWritten,
    Started,
    find_failure_line,
    read_events,
    read_heartbeat,
)
from jobs.paths import AttemptPaths
from orchestrator.bulk import in_chunks
from orchestrator.executors import (
    EndedRun,
    JobRef,
    Observation,
    Phase,
    array_task_of,
    backend_class,
    get_backend,
)
from orchestrator.executors.processes import submitter_alive
from orchestrator.registry.models import Attempt, Checkpoint, Metric, Requeue, Run, RunState, Shard
from orchestrator.sync import SyncReport, open_attempts

WRITER_REFUSED = "RunFolderBusy"  # jobs.writer: a second process found the run folder held and stopped
# where a job's failure line is looked for: it prints it last, a traceback may follow
STDERR_TAIL_BYTES = 64 * 1024
UPSERT_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgresql"}  # the dialects with INSERT ... ON CONFLICT


@dataclass(frozen=True)
class JournalRead:
    """What one attempt's journal holds beyond what the registry has: events after its
    ``journal_seq``, and the latest heartbeat."""

    events: list[JournalEvent]
    heartbeat: Optional[Heartbeat]


@dataclass(frozen=True, eq=False)
class UpsertTarget:
    """A table the journals fill, and the columns that identify one of its rows."""

    table: Table
    keys: tuple[str, ...]

    @functools.cached_property
    def key_of(self) -> Callable[[dict[str, Any]], tuple]:
        """A row's values of ``keys``."""
        return operator.itemgetter(*self.keys)


METRICS = UpsertTarget(Metric.__table__, ("run_id", "name", "step"))
CHECKPOINTS = UpsertTarget(Checkpoint.__table__, ("run_id", "step"))
SHARDS = UpsertTarget(Shard.__table__, ("run_id", "probe", "step"))
REQUEUES = UpsertTarget(Requeue.__table__, ("attempt_id", "time", "cause"))
REQUEST_MATCH_SECONDS = 5.0  # a job's own requeue request (journaled) ends its run within seconds
OPTIMISTIC_TRIES = 2  # syncs done outside the registry's lock before one holds it throughout


@dataclass
class JournalRows:
    """Rows the ingested events describe, across all attempts, last one per key (what upserting
    them one event at a time would leave), written with one executemany per table."""

    by_target: dict[UpsertTarget, dict[tuple, dict[str, Any]]] = field(
        default_factory=lambda: {METRICS: {}, CHECKPOINTS: {}, SHARDS: {}, REQUEUES: {}}
    )

    def add(self, target: UpsertTarget, row: dict[str, Any]) -> None:
        self.by_target[target][target.key_of(row)] = row

    def write(self, session: Session) -> None:
        dialect = session.get_bind().dialect.name
        for target, rows in self.by_target.items():
            if rows:
                session.execute(
                    _upsert_statement(dialect, target, tuple(next(iter(rows.values())))), list(rows.values())
                )


def ingest(engine: Engine) -> SyncReport:
    """Ingest what every open attempt's journal holds beyond what the registry has, reconcile the
    attempts still open with their executors, and set each touched run's state.

    The journals and the scheduler (``squeue``/``sacct``, seconds on a busy cluster) are read with
    no transaction open, so other ``orch`` commands are not held off meanwhile; what they say is
    written in one short transaction, after checking that no other command changed those attempts
    since they were loaded. If one did (two syncs at once, a cancel), the whole sync is done again,
    and after :data:`OPTIMISTIC_TRIES` inside one transaction that holds the registry throughout.
    """
    for _ in range(OPTIMISTIC_TRIES):
        with Session(engine) as session, session.begin():
            loaded = load_open_attempts(session)
        report, rows = bring_up_to_date(loaded, lambda: _read_session(engine))
        with Session(engine) as session, session.begin():
            if not loaded.changed_in(session):
                _write(session, loaded, rows)
                return report
    with Session(engine) as session, session.begin():
        loaded = load_open_attempts(session)
        report, rows = bring_up_to_date(loaded, lambda: contextlib.nullcontext(session))
        _write(session, loaded, rows)
    return report


def _write(session: Session, loaded: OpenAttempts, rows: JournalRows) -> None:
    """The journals' rows, then the attempts' and runs' new facts."""
    rows.write(session)
    loaded.write_changes(session)


@contextlib.contextmanager
def _read_session(engine: Engine) -> Iterator[Session]:
    """A short transaction for the reads sync needs between the scheduler's answer and its write."""
    with Session(engine) as session, session.begin():
        yield session


def bring_up_to_date(
    loaded: OpenAttempts, reader: Callable[[], ContextManager[Session]]
) -> tuple[SyncReport, JournalRows]:
    """Apply the journals and the executors' word to the loaded attempts (in memory) and collect
    the rows they describe; ``reader`` gives a session for the few reads this needs."""
    report, rows = SyncReport(), JournalRows()
    open_attempts = loaded.attempts
    journals = [read_journal(attempt.journal_dir, attempt.journal_seq) for attempt in open_attempts]
    was_active = {attempt.id for attempt in open_attempts if attempt.state in RunState.ACTIVE}
    for attempt, journal in zip(open_attempts, journals):
        apply_journal(attempt, journal, rows, report)
    still_open = [attempt for attempt in open_attempts if attempt.state in RunState.ACTIVE]
    # a job's journal can end it before sync saw that Slurm had requeued it: asked once more for its history
    ended_now = [
        attempt
        for attempt in open_attempts
        if attempt.id in was_active
        and attempt.state not in RunState.ACTIVE
        and backend_class(attempt.executor).keeps_history
    ]
    observed = observe(still_open + ended_now)
    with reader() as session:
        lost_after = lost_after_by_run(
            session, {attempt.run_id for attempt, observation in observed if _may_be_lost(observation)}
        )
        for attempt, observation in observed:
            if attempt.state in RunState.ACTIVE and not (
                unknown_to_scheduler(observation) and being_submitted(attempt, lost_after.get(attempt.run_id))
            ):
                reconcile(attempt, observation, rows, report, lost_after.get(attempt.run_id))
        record_scheduler_requeues(
            session,
            [(attempt, observation.requeued) for attempt, observation in observed if observation.requeued],
            rows,
        )
    loaded.refresh_run_states()
    return report, rows


def observe(attempts: list[Attempt]) -> list[tuple[Attempt, Observation]]:
    """What each attempt's executor says of it (one call per executor), executor by executor."""
    return [
        (attempt, observation)
        for executor, members in by_executor(attempts).items()
        for attempt, observation in zip(
            members, get_backend(executor).observe([job_ref(attempt) for attempt in members])
        )
    ]


@dataclass(frozen=True)
class TrackedColumns:
    """The columns of a table that sync may change on the objects it loaded, and how one row is named."""

    table: Table
    key: str  # the primary key column
    columns: tuple[str, ...]

    def values(self, item: Any) -> tuple:
        """The item's values of ``columns`` (read from its loaded state: no attribute machinery per value)."""
        return tuple(map(instance_dict(item).__getitem__, self.columns))

    def write_changes(self, session: Session, items: Sequence[Any], loaded_values: dict[Any, tuple]) -> None:
        """UPDATE the columns of each item that differ from what was loaded (nothing for an item
        that did not change): one executemany per distinct set of changed columns."""
        by_changed: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for item in items:
            key = getattr(item, self.key)
            before, now = loaded_values[key], self.values(item)
            if before == now:
                continue
            changed = [(column, new) for column, old, new in zip(self.columns, before, now) if old != new]
            parameters = {f"new_{column}": new for column, new in changed}
            by_changed.setdefault(tuple(column for column, _ in changed), []).append(
                {"row_key": key, **parameters}
            )
        for changed_columns, parameters_list in by_changed.items():
            statement = update(self.table).where(self.table.c[self.key] == bindparam("row_key"))
            session.execute(
                statement.values({column: bindparam(f"new_{column}") for column in changed_columns}),
                parameters_list,
            )


RUN_COLUMNS = TrackedColumns(Run.__table__, "id", ("state", "total_steps", "current_step"))
ATTEMPT_COLUMNS = TrackedColumns(
    Attempt.__table__, "id", tuple(column.key for column in Attempt.__table__.columns if column.key != "id")
)


@dataclass
class OpenAttempts:
    """The active attempts and their runs as loaded, detached from the session: sync changes them
    in memory and writes what changed with :meth:`write_changes`, never through a flush (which
    would emit one UPDATE per stretch of rows changed in the same columns)."""

    attempts: list[Attempt]
    # attempt id -> the state of its run's last attempt if that is a later one
    later_states: dict[int, Optional[str]]
    loaded_attempts: dict[int, tuple] = field(default_factory=dict)
    loaded_runs: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loaded_attempts = {attempt.id: ATTEMPT_COLUMNS.values(attempt) for attempt in self.attempts}
        self.loaded_runs = {run.id: RUN_COLUMNS.values(run) for run in self.runs}

    @property
    def runs(self) -> list[Run]:
        return list({attempt.run_id: attempt.run for attempt in self.attempts}.values())

    def refresh_run_states(self) -> None:
        """:func:`refresh_run_state` of every run here: its last attempt's state, which is the open
        attempt's unless a later (ended) attempt exists."""
        for attempt in self.attempts:
            later_state = self.later_states[attempt.id]
            state = attempt.state if later_state is None else later_state
            if attempt.run.state != state:
                attempt.run.state = state

    def write_changes(self, session: Session) -> None:
        ATTEMPT_COLUMNS.write_changes(session, self.attempts, self.loaded_attempts)
        RUN_COLUMNS.write_changes(session, self.runs, self.loaded_runs)

    def changed_in(self, session: Session) -> bool:
        """Whether another command changed these attempts (or added a later attempt to their runs)
        since they were loaded: what the registry holds now, read in ``IN`` chunks, against the
        loaded values."""
        ids = sorted(self.loaded_attempts)
        table = Attempt.__table__
        columns = [table.c[name] for name in ATTEMPT_COLUMNS.columns]
        for chunk in in_chunks(ids):
            query = select(table.c.id, _later_state(), *columns).where(table.c.id.in_(chunk))
            for attempt_id, later_state, *values in session.execute(query):
                if (
                    tuple(values) != self.loaded_attempts[attempt_id]
                    or later_state != self.later_states[attempt_id]
                ):
                    return True
        return False


def load_open_attempts(session: Session) -> OpenAttempts:
    """Open attempts (:func:`orchestrator.sync.open_attempts`) with their runs (the columns sync
    changes) and the state of any later attempt of the same run, in one query; detached from
    ``session``."""
    later_state = _later_state()
    run_columns = load_only(*(getattr(Run, column) for column in RUN_COLUMNS.columns))
    query = (
        select(Attempt, later_state)
        .where(open_attempts(time.time()))
        .options(joinedload(Attempt.run, innerjoin=True).options(run_columns))
        .order_by(Attempt.id)
    )
    loaded = session.execute(query).all()
    session.expunge_all()
    return OpenAttempts([attempt for attempt, _ in loaded], {attempt.id: state for attempt, state in loaded})


def _later_state() -> ScalarSelect[Any]:
    """The state of the last attempt of the same run after this one, if any (a scalar subquery)."""
    later = aliased(Attempt)
    return (
        select(later.state)
        .where(later.run_id == Attempt.run_id, later.number > Attempt.number)
        .order_by(later.number.desc())
        .limit(1)
        .scalar_subquery()
    )


def read_journal(journal_dir: str, after_seq: int) -> JournalRead:
    """The events after ``after_seq`` and the heartbeat of one attempt's journal (file I/O only).

    Journals are read one after the other: threads make it slower (on a local disk, the small
    reads' contention for the interpreter lock costs 2.5 to 3.5 times the reads themselves)."""
    paths = AttemptPaths(Path(journal_dir))
    return JournalRead(read_events(paths, after_seq=after_seq), read_heartbeat(paths))


def apply_journal(attempt: Attempt, journal: JournalRead, rows: JournalRows, report: SyncReport) -> None:
    report.attempts_checked += 1
    apply_events(attempt, journal.events, rows, report)
    beat = journal.heartbeat
    if beat is not None and beat.time != attempt.heartbeat_time:
        attempt.heartbeat_time = beat.time
        attempt.steps_per_second = beat.steps_per_second
        attempt.run.current_step = beat.step
        _note_peak_gpu(attempt, beat.peak_gpu_bytes)


def _note_peak_gpu(attempt: Attempt, peak_bytes: Optional[int]) -> None:
    if peak_bytes is not None and peak_bytes > (attempt.peak_gpu_bytes or 0):
        attempt.peak_gpu_bytes = peak_bytes


def reconcile(
    attempt: Attempt,
    observation: Observation,
    rows: JournalRows,
    report: SyncReport,
    lost_after_s: Optional[float] = None,
) -> None:
    """Apply what the scheduler says of an attempt whose journal has no final event."""
    if observation.job_id and not attempt.job_id:
        attempt.job_id, attempt.array_task = observation.job_id, array_task_of(observation.job_id)
    if observation.node and not attempt.hostname:
        attempt.hostname = observation.node
    if observation.phase is Phase.PENDING:
        if attempt.state == RunState.RUNNING:
            attempt.state = RunState.PENDING  # requeued by the scheduler (its node failed, it was preempted)
        attempt.reason = observation.reason and f"pending: {observation.reason}"
    elif observation.phase is Phase.RUNNING:
        _running(attempt, observation.node)
    elif observation.phase in (Phase.ENDED, Phase.GONE):
        # they may have landed since
        last_words = read_events(AttemptPaths(Path(attempt.journal_dir)), after_seq=attempt.journal_seq)
        apply_events(attempt, last_words, rows, report)
        if attempt.state not in RunState.ACTIVE:
            return
        if observation.phase is Phase.ENDED:
            state = RunState.FAILED if observation.state == RunState.COMPLETED else observation.state
            reason = (
                observation.reason
                if observation.state != RunState.COMPLETED
                else "the job exited without a final journal event"
            )
            _end_without_final_event(attempt, state or RunState.LOST, observation.exit_code, reason)
        elif time.time() - _last_sign_of_life(attempt) > _lost_after(attempt, lost_after_s):
            _end_without_final_event(attempt, RunState.LOST, None, observation.reason)
        if attempt.state == RunState.LOST:
            report.attempts_lost += 1


def _running(attempt: Attempt, node: Optional[str]) -> None:
    """The scheduler runs the attempt's job (its first journal event may be seconds away): the
    attempt is RUNNING, on the scheduler's node, with no pending reason left over."""
    if attempt.state == RunState.PENDING:
        attempt.state = RunState.RUNNING
    if node:
        attempt.hostname = node
    attempt.reason = None


def unknown_to_scheduler(observation: Observation) -> bool:
    return observation.job_id is None and observation.phase in (Phase.ENDED, Phase.GONE)


def _may_be_lost(observation: Observation) -> bool:
    """Whether reconciling this observation may ask how long its attempt may stay silent."""
    return unknown_to_scheduler(observation) or observation.phase is Phase.GONE


def being_submitted(attempt: Attempt, lost_after_s: Optional[float] = None) -> bool:
    """Committed, no job id recorded yet, and the orch process submitting it still runs (on
    another login node: until it would count as lost). A scheduler that knows nothing of such an
    attempt has not been asked yet: the attempt is not lost. ``lost_after_s``: the attempt's
    cluster's :func:`lost_after_seconds` when the caller has it already."""
    if attempt.job_id is not None or attempt.pid is not None:
        return False
    if attempt.submitter is None or not submitter_alive(attempt.submitter):
        return False
    return time.time() - attempt.submitted_time < _lost_after(attempt, lost_after_s)


def _end_without_final_event(
    attempt: Attempt, state: str, exit_code: Optional[int], reason: Optional[str]
) -> None:
    """End an attempt whose journal has no final event: as the failure its job printed last on
    stderr when there is one (the journal could not take the event: a full disk), else as the
    scheduler says."""
    failed = read_failure_line(attempt.stderr_path)
    if failed is not None:
        state = failed.state if failed.state in (RunState.FAILED, RunState.TIMEOUT) else RunState.FAILED
        exit_code, reason = exit_code or 1, f"{failed.error_type}: {failed.message}"
    _end(attempt, state, time.time(), exit_code, reason)
    attempt.closed_by_guess = failed is None  # then its journal is read again: a final event there wins


def read_failure_line(stderr_path: Optional[str]) -> Optional[Failed]:
    """The failure line (``jobs.journal.failure_line``) in the last ``STDERR_TAIL_BYTES`` of a job's
    stderr."""
    if not stderr_path:
        return None  # not recorded (an attempt submitted before the logs were known)
    try:
        with open(stderr_path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - STDERR_TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None  # no log (yet, or not from this host): nothing to add
    return find_failure_line(tail.decode(errors="replace"))


def job_ref(attempt: Attempt) -> JobRef:
    return JobRef(attempt.job_id, attempt.hostname, attempt.pid, attempt.submission_id, attempt.array_task)


def lost_after_seconds(attempt: Attempt) -> float:
    """How long the attempt's cluster lets a job the scheduler does not know stay silent."""
    run = attempt.run
    return _lost_after_on(cluster_name(run.spec_json))


def _lost_after_on(cluster: str) -> float:
    from orchestrator.profiles import load_profile  # OmegaConf: only for attempts that may be lost

    return load_profile(cluster).lost_after_s


def _lost_after(attempt: Attempt, known: Optional[float]) -> float:
    return known if known is not None else lost_after_seconds(attempt)


def lost_after_by_run(session: Session, run_ids: set[str]) -> dict[str, float]:
    """:func:`lost_after_seconds` of each run's attempts, from the runs' ``spec_json`` read in
    ``IN`` chunks (each cluster's profile looked up once)."""
    ordered = sorted(run_ids)
    by_cluster: dict[str, float] = {}
    limits: dict[str, float] = {}
    for chunk in in_chunks(ordered):
        query = select(Run.id, Run.spec_json).where(Run.id.in_(chunk))
        for run_id, spec_json in session.execute(query):
            cluster = cluster_name(spec_json)
            if cluster not in by_cluster:
                by_cluster[cluster] = _lost_after_on(cluster)
            limits[run_id] = by_cluster[cluster]
    return limits


def cluster_name(spec_json: str) -> str:
    """The cluster a run's resolved spec names."""
    return json.loads(spec_json)["cluster"]


def _last_sign_of_life(attempt: Attempt) -> float:
    return max(
        t for t in (attempt.heartbeat_time, attempt.started_time, attempt.submitted_time) if t is not None
    )


def by_executor(attempts: list[Attempt]) -> dict[str, list[Attempt]]:
    groups: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.executor, []).append(attempt)
    return groups


def apply_events(attempt: Attempt, events: list[JournalEvent], rows: JournalRows, report: SyncReport) -> None:
    for event in events:
        apply_event(attempt, event, rows)
    if events:
        attempt.journal_seq = events[-1].seq
        report.events_ingested += len(events)


def apply_event(attempt: Attempt, event: JournalEvent, rows: JournalRows) -> None:
    payload = event.payload
    if isinstance(payload, Started):
        _apply_started(attempt, event.time, payload)
    elif isinstance(payload, Metrics):
        for metric in payload.rows:
            if metric.value == metric.value:  # a NaN (a diverged evaluation) is no value: SQL REAL holds none
                rows.add(
                    METRICS,
                    {
                        "run_id": attempt.run_id,
                        "attempt_id": attempt.id,
                        "step": metric.step,
                        "name": metric.name,
                        "value": metric.value,
                    },
                )
    elif isinstance(payload, CheckpointWritten):
        rows.add(
            CHECKPOINTS,
            {
                "run_id": attempt.run_id,
                "attempt_id": attempt.id,
                "created_time": event.time,
                **_fields_of(payload),
            },
        )
    elif isinstance(payload, ShardWritten):
        rows.add(
            SHARDS,
            {
                "run_id": attempt.run_id,
                "attempt_id": attempt.id,
                "created_time": event.time,
                **_fields_of(payload),
            },
        )
    elif isinstance(payload, Requeued):
        attempt.state = RunState.PENDING  # the same job continues after the scheduler restarts it
        attempt.requeues += 1
        attempt.reason = f"requeued at step {payload.step} on {payload.signal}"
        requeue = {
            "attempt_id": attempt.id,
            "time": event.time,
            "cause": payload.signal,
            "source": "journal",
            "node": attempt.hostname,
            "step": payload.step,
        }
        rows.add(REQUEUES, requeue)
    elif isinstance(payload, Finished):
        _end(attempt, RunState.COMPLETED, event.time, exit_code=0, reason=None)
        attempt.end_step = attempt.run.current_step = payload.final_step
        _note_peak_gpu(attempt, payload.peak_gpu_bytes)
    elif isinstance(payload, Failed):
        _end(
            attempt, payload.state, event.time, exit_code=1, reason=f"{payload.error_type}: {payload.message}"
        )
        if payload.step is not None:
            attempt.end_step = attempt.run.current_step = payload.step
        if payload.error_type == WRITER_REFUSED and attempt.state == payload.state:
            attempt.closed_by_guess = (
                True  # the process that holds the run folder has the last word: its final event wins
            )


def record_scheduler_requeues(
    session: Session, histories: list[tuple[Attempt, tuple[EndedRun, ...]]], rows: JournalRows
) -> None:
    """Add a requeue row for each earlier run of an attempt's job that the registry does not hold
    yet, and count it in ``attempts.requeues``. A run that ended REQUEUED while the job journaled
    its own request is that journaled requeue (recorded with its step), not a second one."""
    if not histories:
        return
    known = requeues_known(session, [attempt.id for attempt, _ in histories])
    for row in rows.by_target[REQUEUES].values():
        known.setdefault(row["attempt_id"], []).append((row["time"], row["cause"], row["source"]))
    for attempt, ended_runs in histories:
        recorded = known.get(attempt.id, [])
        requested = [when for when, _, source in recorded if source == "journal"]
        for ended in ended_runs:
            if any((when, cause) == (ended.ended_time, ended.state) for when, cause, _ in recorded):
                continue
            started = ended.started_time if ended.started_time is not None else float("-inf")
            if ended.state == "REQUEUED" and any(
                started <= when <= ended.ended_time + REQUEST_MATCH_SECONDS for when in requested
            ):
                continue
            rows.add(
                REQUEUES,
                {
                    "attempt_id": attempt.id,
                    "time": ended.ended_time,
                    "cause": ended.state,
                    "source": "scheduler",
                    "node": ended.node,
                    "step": None,
                },
            )
            attempt.requeues += 1


def requeues_known(session: Session, attempt_ids: list[int]) -> dict[int, list[tuple[float, str, str]]]:
    """(time, cause, source) of the requeues the registry holds, by attempt."""
    table = Requeue.__table__
    known: dict[int, list[tuple[float, str, str]]] = {}
    for chunk in in_chunks(attempt_ids):
        query = select(table.c.attempt_id, table.c.time, table.c.cause, table.c.source).where(
            table.c.attempt_id.in_(chunk)
        )
        for attempt_id, when, cause, source in session.execute(query):
            known.setdefault(attempt_id, []).append((when, cause, source))
    return known


def _fields_of(payload: CheckpointWritten | ShardWritten | Provenance) -> dict[str, Any]:
    """The fields of a journal dataclass by name, what ``dataclasses.asdict`` gives for these
    flat ones (plain values only) without its deep copy."""
    payload_type: type = type(payload)
    return {name: getattr(payload, name) for name in _field_names(payload_type)}


@functools.cache
def _field_names(payload_type: type) -> tuple[str, ...]:
    return tuple(item.name for item in dataclasses.fields(payload_type))


def _apply_started(attempt: Attempt, event_time: float, started: Started) -> None:
    if attempt.state == RunState.PENDING:
        attempt.state = RunState.RUNNING
        attempt.reason = None
    attempt.started_time = attempt.started_time or event_time
    attempt.hostname = started.hostname
    attempt.pid = started.pid
    # the first segment's, kept across requeues
    attempt.start_step = started.start_step if attempt.start_step is None else attempt.start_step
    attempt.provenance_json = json.dumps(_fields_of(started.provenance), sort_keys=True)
    attempt.run.total_steps = started.total_steps
    attempt.run.current_step = max(attempt.run.current_step, started.start_step)


def _end(attempt: Attempt, state: str, end_time: float, exit_code: int | None, reason: str | None) -> None:
    if attempt.state not in RunState.ACTIVE and not attempt.closed_by_guess:
        return  # already ended from this side (cancelled): the job's last words do not override it
    attempt.closed_by_guess = False
    attempt.state = state
    attempt.ended_time = end_time
    attempt.exit_code = exit_code
    attempt.reason = reason


def refresh_run_state(run: Run) -> None:
    """A run's state is its last attempt's."""
    state = run.attempts[-1].state if run.attempts else RunState.PLANNED
    if run.state != state:
        run.state = state


@functools.cache
def _upsert_statement(dialect: str, target: UpsertTarget, columns: tuple[str, ...]) -> Executable:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of ``columns``, built once per process and
    executed with many rows (SQLAlchemy compiles it once too)."""
    # PostgreSQL's pulls in asyncio
    insert = importlib.import_module(f"sqlalchemy.dialects.{UPSERT_DIALECTS[dialect]}").insert
    statement = insert(target.table)
    updated = {column: statement.excluded[column] for column in columns if column not in target.keys}
    return statement.on_conflict_do_update(index_elements=list(target.keys), set_=updated)
