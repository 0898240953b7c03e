"""``orch sync``: ingest attempt journals into the registry — the registry's only writer of job facts.

Incremental (each attempt remembers the last event it ingested) and idempotent (rows are keyed
by what they describe, values come verbatim from the journal): a second sync writes nothing.
An attempt that has no final event while its process is gone becomes LOST, unless its job printed
a failure line on stderr (``jobs.journal.failure_line``: the journal could not take the event).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.journal import (
    CheckpointWritten,
    Failed,
    Finished,
    JournalEvent,
    Metrics,
    Requeued,
    ShardWritten,
    Started,
    find_failure_line,
    read_events,
    read_heartbeat,
)
from jobs.paths import AttemptPaths
from jobs.spec import spec_from_yaml
from orchestrator.executors import JobRef, Observation, Phase, array_task_of, get_backend
from orchestrator.executors.processes import submitter_alive
from orchestrator.profiles import load_profile
from orchestrator.registry.models import Attempt, Checkpoint, Metric, Run, RunState, Shard

UPSERT_BATCH_ROWS = 1000
STDERR_TAIL_BYTES = 64 * 1024  # where a job's failure line is looked for: it prints it last, a traceback may follow


@dataclass
class SyncReport:
    attempts_checked: int = 0
    events_ingested: int = 0
    attempts_lost: int = 0


def sync(engine: Engine) -> SyncReport:
    report = SyncReport()
    with Session(engine) as session, session.begin():
        open_attempts = session.scalars(select(Attempt).where(Attempt.state.in_(RunState.ACTIVE))).all()
        for attempt in open_attempts:
            read_journal(session, attempt, report)
        still_open = [attempt for attempt in open_attempts if attempt.state in RunState.ACTIVE]
        for executor, attempts in by_executor(still_open).items():
            observations = get_backend(executor).observe([job_ref(attempt) for attempt in attempts])
            for attempt, observation in zip(attempts, observations):
                if not (unknown_to_scheduler(observation) and being_submitted(attempt)):
                    reconcile(session, attempt, observation, report)
        for run in {attempt.run for attempt in open_attempts}:
            refresh_run_state(run)
    return report


def read_journal(session: Session, attempt: Attempt, report: SyncReport) -> None:
    report.attempts_checked += 1
    paths = AttemptPaths(Path(attempt.journal_dir))
    ingest_events(session, attempt, paths, report)
    beat = read_heartbeat(paths)
    if beat is not None and beat.time != attempt.heartbeat_time:
        attempt.heartbeat_time = beat.time
        attempt.steps_per_second = beat.steps_per_second
        attempt.run.current_step = beat.step


def reconcile(session: Session, attempt: Attempt, observation: Observation, report: SyncReport) -> None:
    """Apply what the scheduler says of an attempt whose journal has no final event."""
    if observation.job_id and not attempt.job_id:
        attempt.job_id, attempt.array_task = observation.job_id, array_task_of(observation.job_id)
    if observation.node and not attempt.hostname:
        attempt.hostname = observation.node
    if observation.phase is Phase.PENDING:
        attempt.reason = observation.reason and f"pending: {observation.reason}"
    elif observation.phase in (Phase.ENDED, Phase.GONE):
        ingest_events(session, attempt, AttemptPaths(Path(attempt.journal_dir)), report)  # last words may have landed
        if attempt.state not in RunState.ACTIVE:
            return
        if observation.phase is Phase.ENDED:
            state = RunState.FAILED if observation.state == RunState.COMPLETED else observation.state
            reason = observation.reason if observation.state != RunState.COMPLETED else "the job exited without a final journal event"
            _end_without_final_event(attempt, state or RunState.LOST, observation.exit_code, reason)
        elif time.time() - _last_sign_of_life(attempt) > lost_after_seconds(attempt):
            _end_without_final_event(attempt, RunState.LOST, None, observation.reason)
        if attempt.state == RunState.LOST:
            report.attempts_lost += 1


def unknown_to_scheduler(observation: Observation) -> bool:
    return observation.job_id is None and observation.phase in (Phase.ENDED, Phase.GONE)


def being_submitted(attempt: Attempt) -> bool:
    """Committed, no job id recorded yet, and the orch process submitting it still runs (on
    another login node: until it would count as lost). A scheduler that knows nothing of such an
    attempt has not been asked yet: the attempt is not lost."""
    if attempt.job_id is not None or attempt.pid is not None:
        return False
    if attempt.submitter is None or not submitter_alive(attempt.submitter):
        return False
    return time.time() - attempt.submitted_time < lost_after_seconds(attempt)


def _end_without_final_event(attempt: Attempt, state: str, exit_code: Optional[int], reason: Optional[str]) -> None:
    """End an attempt whose journal has no final event: as the failure its job printed last on
    stderr when there is one (the journal could not take the event: a full disk), else as the
    scheduler says."""
    failed = read_failure_line(attempt.stderr_path)
    if failed is not None:
        state = failed.state if failed.state in (RunState.FAILED, RunState.TIMEOUT) else RunState.FAILED
        exit_code, reason = exit_code or 1, f"{failed.error_type}: {failed.message}"
    _end(attempt, state, time.time(), exit_code, reason)


def read_failure_line(stderr_path: Optional[str]) -> Optional[Failed]:
    """The failure line (``jobs.journal.failure_line``) in the last ``STDERR_TAIL_BYTES`` of a job's stderr."""
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
    return load_profile(spec_from_yaml(attempt.run.spec_yaml).cluster).lost_after_s


def _last_sign_of_life(attempt: Attempt) -> float:
    return max(t for t in (attempt.heartbeat_time, attempt.started_time, attempt.submitted_time) if t is not None)


def by_executor(attempts: list[Attempt]) -> dict[str, list[Attempt]]:
    groups: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.executor, []).append(attempt)
    return groups


def ingest_events(session: Session, attempt: Attempt, paths: AttemptPaths, report: SyncReport) -> None:
    events = read_events(paths, after_seq=attempt.journal_seq)
    for event in events:
        apply_event(session, attempt, event)
    if events:
        attempt.journal_seq = events[-1].seq
        report.events_ingested += len(events)


def apply_event(session: Session, attempt: Attempt, event: JournalEvent) -> None:
    payload = event.payload
    if isinstance(payload, Started):
        _apply_started(attempt, event.time, payload)
    elif isinstance(payload, Metrics):
        rows = [{"run_id": attempt.run_id, "attempt_id": attempt.id, **dataclasses.asdict(row)} for row in payload.rows]
        _upsert(session, Metric, rows, ("run_id", "name", "step"))
    elif isinstance(payload, CheckpointWritten):
        row = {"run_id": attempt.run_id, "attempt_id": attempt.id, "created_time": event.time, **dataclasses.asdict(payload)}
        _upsert(session, Checkpoint, [row], ("run_id", "step"))
    elif isinstance(payload, ShardWritten):
        row = {"run_id": attempt.run_id, "attempt_id": attempt.id, "created_time": event.time, **dataclasses.asdict(payload)}
        _upsert(session, Shard, [row], ("run_id", "probe", "step"))
    elif isinstance(payload, Requeued):
        attempt.state = RunState.PENDING  # the same job continues after the scheduler restarts it
        attempt.requeues += 1
        attempt.reason = f"requeued at step {payload.step} on {payload.signal}"
    elif isinstance(payload, Finished):
        _end(attempt, RunState.COMPLETED, event.time, exit_code=0, reason=None)
        attempt.run.current_step = payload.final_step
    elif isinstance(payload, Failed):
        _end(attempt, payload.state, event.time, exit_code=1, reason=f"{payload.error_type}: {payload.message}")


def _apply_started(attempt: Attempt, event_time: float, started: Started) -> None:
    if attempt.state == RunState.PENDING:
        attempt.state = RunState.RUNNING
        attempt.reason = None
    attempt.started_time = attempt.started_time or event_time
    attempt.hostname = started.hostname
    attempt.pid = started.pid
    attempt.start_step = started.start_step
    attempt.provenance_json = json.dumps(dataclasses.asdict(started.provenance), sort_keys=True)
    attempt.run.total_steps = started.total_steps
    attempt.run.current_step = max(attempt.run.current_step, started.start_step)


def _end(attempt: Attempt, state: str, end_time: float, exit_code: int | None, reason: str | None) -> None:
    if attempt.state not in RunState.ACTIVE:
        return  # already ended from this side (cancelled): the job's last words do not override it
    attempt.state = state
    attempt.ended_time = end_time
    attempt.exit_code = exit_code
    attempt.reason = reason


def refresh_run_state(run: Run) -> None:
    """A run's state is its last attempt's."""
    state = run.attempts[-1].state if run.attempts else RunState.PLANNED
    if run.state != state:
        run.state = state


def _upsert(session: Session, model: type, rows: list[dict], keys: tuple[str, ...]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    for start in range(0, len(rows), UPSERT_BATCH_ROWS):  # stay under SQLite's bound-variable limit
        statement = insert(model).values(rows[start : start + UPSERT_BATCH_ROWS])
        updated = {column: statement.excluded[column] for column in rows[0] if column not in keys}
        session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=updated))
