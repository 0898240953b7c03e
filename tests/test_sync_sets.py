"""``orch sync`` is set-based: many attempts ingested in one pass leave the same registry rows as
ingesting their journals in small rounds, a second sync writes nothing, and the number of SQL
statements does not grow with the number of attempts.

The registry is the real one (``open_registry``), the journals are written by the job's own
``JournalWriter``; the attempts are inserted as rows (the same columns ``submit`` records), so
that hundreds of them take no training and no planning.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from jobs.journal import (
    CheckpointWritten,
    Failed,
    Finished,
    Heartbeat,
    JournalWriter,
    MetricRow,
    Metrics,
    Payload,
    Provenance,
    Requeued,
    ShardWritten,
    Started,
    failure_line,
)
from jobs.paths import AttemptPaths, RunPaths
from jobs.spec import RunSpec
from orchestrator.fingerprint import SpecTexts, canonical_json, spec_json
from orchestrator.ingest import lost_after_by_run, lost_after_seconds
from orchestrator.profiles import load_profile
from orchestrator.registry.models import Attempt, Run, RunState
from orchestrator.submit import record_sections, section_ids_text
from orchestrator.sync import SyncReport, sync
from tests.conftest import OpenRegistry, registry_snapshot

KINDS = (
    "finished",  # started, metrics, a checkpoint, finished
    "failed",  # started, metrics, a failure event
    "requeued",  # requeued at a time limit, restarted from its checkpoint: one step's metrics journaled twice
    "elsewhere",  # still running on another host: the executor cannot tell, it stays RUNNING
    "killed",  # started here, its process gone without a final event: LOST
    "killed_after_failure_line",  # the same, but its stderr ends with a failure line: FAILED with its reason
    "being_submitted",  # no journal yet, its submitter alive on another login node: stays PENDING
    "second_attempt",  # the run's first attempt failed before; the second finishes
    # still running elsewhere, but the run has a later attempt (cancelled): the run takes that one's state
    "superseded",
)
OTHER_HOST = "node-elsewhere.invalid"
SUBMITTER = "login-elsewhere.invalid:4242"  # another login node: alive as far as this one can tell
NO_SUCH_PID = 4_194_305  # above Linux's largest pid: no process has it
PROVENANCE = Provenance("0" * 40, None, "3.11.9", "2.4.1", "0.19.1", "1.5.3", "1.26.4", OTHER_HOST, "cpu")
SHA = "ab" * 32
JournalEntry = Union[Payload, Heartbeat]


pytestmark = pytest.mark.both_backends


@dataclass(frozen=True)
class JournaledAttempt:
    """One open attempt of the test registry and what its job journals, in phases."""

    index: int
    kind: str
    run_id: str
    key: str
    journal_dir: Path
    stderr_path: Optional[Path]

    def phases(self) -> list[list[JournalEntry]]:
        """The journal in the pieces a sync may see one at a time (a killed job's all at once:
        a sync in between would end it before its last events)."""
        index, here = self.index, os.uname().nodename
        if self.kind in ("finished", "second_attempt"):
            return [
                [Started(1000 + index, OTHER_HOST, 0, 2, PROVENANCE), Heartbeat(10.0 + index, 0, 2, 0.0)],
                [
                    metrics(1, index),
                    metrics(2, index),
                    CheckpointWritten(2, "checkpoints/step_2.safetensors", 100 + index, SHA),
                ],
                [Heartbeat(20.0 + index, 2, 2, 1.5), Finished(2)],
            ]
        if self.kind == "failed":
            return [
                [Started(1000 + index, OTHER_HOST, 0, 2, PROVENANCE)],
                [metrics(1, index)],
                [Failed("ValueError", f"bad value {index}", "Traceback ...")],
            ]
        if self.kind == "requeued":
            return [
                [
                    Started(1000 + index, OTHER_HOST, 0, 2, PROVENANCE),
                    metrics(1, index),
                    CheckpointWritten(1, "checkpoints/step_1.safetensors", 50 + index, SHA),
                ],
                [metrics(2, index), Heartbeat(15.0 + index, 2, 2, 1.0), Requeued(2, "SIGUSR2")],
                [Started(2000 + index, OTHER_HOST, 1, 2, PROVENANCE), metrics(2, index, redone=True)],
                [
                    ShardWritten("line", 2, "shards/line_2.npz", 10 + index, SHA, 21, False),
                    Heartbeat(25.0 + index, 2, 2, 2.0),
                    Finished(2),
                ],
            ]
        if self.kind in ("elsewhere", "superseded"):
            return [
                [Started(1000 + index, OTHER_HOST, 0, 9, PROVENANCE)],
                [metrics(1, index), Heartbeat(30.0 + index, 1, 9, 0.5)],
            ]
        if self.kind in ("killed", "killed_after_failure_line"):
            return [
                [
                    Started(NO_SUCH_PID, here, 0, 2, PROVENANCE),
                    metrics(1, index),
                    Heartbeat(40.0 + index, 1, 2, 1.0),
                ]
            ]
        return []  # being_submitted

    def write(self, phase: int) -> None:
        phases = self.phases()
        if phase >= len(phases):
            return
        writer = JournalWriter(AttemptPaths(self.journal_dir))
        for entry in phases[phase]:
            if isinstance(entry, Heartbeat):
                writer.heartbeat(entry)
            else:
                writer.append(entry)

    def events(self) -> int:
        return sum(not isinstance(entry, Heartbeat) for phase in self.phases() for entry in phase)


def metrics(step: int, index: int, redone: bool = False) -> Metrics:
    offset = 0.5 if redone else 0.0  # a step redone after a restart journals other values
    return Metrics(
        [
            MetricRow(step, name, index + step / 10 + number / 100 + offset)
            for number, name in enumerate(("train_loss", "val_loss", "lr"))
        ]
    )


PHASES = 4


def planned(results: Path, count: int) -> list[JournaledAttempt]:
    attempts = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        run_id = f"{index:032x}"
        key = f"attempt-{index:05d}"
        stderr = results / "logs" / f"{key}.err" if kind == "killed_after_failure_line" else None
        attempts.append(
            JournaledAttempt(
                index, kind, run_id, key, RunPaths.under(results, run_id).attempt(key).root, stderr
            )
        )
    return attempts


def record(engine: Engine, attempts: list[JournaledAttempt], now: float) -> Engine:
    """The registry, holding each attempt, open (PENDING), submitted at ``now``, with its run: the
    columns submit records."""
    spec = RunSpec()
    with Session(engine) as session, session.begin():
        sections = SpecTexts().sections(spec)
        # one spec: serialized once
        spec_columns = {
            "canonical_json": canonical_json(spec),
            "spec_json": spec_json(spec),
            "section_ids": section_ids_text(sections, record_sections(session, sections)),
        }
        for item in attempts:
            session.add(
                Run(
                    id=item.run_id,
                    **spec_columns,
                    state=RunState.PENDING,
                    run_dir=str(item.journal_dir.parent.parent),
                    total_steps=2,
                    current_step=0,
                    created_time=now,
                )
            )
            if item.kind == "second_attempt":
                session.add(
                    Attempt(
                        run_id=item.run_id,
                        number=1,
                        key=f"{item.key}-first",
                        executor="local",
                        submission_id="earlier.0",
                        state=RunState.FAILED,
                        exit_code=1,
                        reason="RuntimeError: earlier",
                        submitted_time=now - 3600,
                        ended_time=now - 3000,
                        journal_dir=str(item.journal_dir) + "-first",
                        journal_seq=3,
                    )
                )
            if item.kind == "superseded":
                session.add(
                    Attempt(
                        run_id=item.run_id,
                        number=2,
                        key=f"{item.key}-later",
                        executor="local",
                        submission_id="later.0",
                        state=RunState.CANCELLED,
                        reason="cancelled before it started",
                        submitted_time=now,
                        ended_time=now,
                        journal_dir=str(item.journal_dir) + "-later",
                    )
                )
            session.add(
                Attempt(
                    run_id=item.run_id,
                    number=2 if item.kind == "second_attempt" else 1,
                    key=item.key,
                    executor="local",
                    submission_id="bench.0",
                    array_task=item.index,
                    state=RunState.PENDING,
                    submitted_time=now,
                    journal_dir=str(item.journal_dir),
                    stderr_path=str(item.stderr_path) if item.stderr_path else None,
                    submitter=SUBMITTER,
                )
            )
    for item in attempts:
        if item.stderr_path is not None:
            item.stderr_path.parent.mkdir(parents=True, exist_ok=True)
            failed = Failed("OSError", f"No space left on device: {item.journal_dir}", "", "FAILED")
            item.stderr_path.write_text(
                f"Traceback (most recent call last):\n  ...\n{failure_line(failed)}\n"
            )
    return engine


def registry_rows(engine: Engine, reconciled_run_ids: set[str]) -> dict[str, list[tuple]]:
    """Every fact sync writes, by table (row ids of checkpoints and shards left out: they number
    insertions, not facts); ``ended_time`` of attempts that sync itself ended (its clock) too."""
    queries = {
        "runs": "SELECT id, state, total_steps, current_step FROM runs ORDER BY id",
        "attempts": "SELECT * FROM attempts ORDER BY id",
        "metrics": "SELECT run_id, name, step, value, attempt_id FROM metrics ORDER BY run_id, name, step",
        "checkpoints": (
            "SELECT run_id, step, attempt_id, path, bytes, sha256, created_time FROM checkpoints "
            "ORDER BY run_id, step"
        ),
        "shards": (
            "SELECT run_id, probe, step, attempt_id, path, bytes, sha256, n_points, is_extrapolation, "
            "created_time FROM shards ORDER BY run_id, probe, step"
        ),
    }
    with engine.connect() as connection:
        rows = {
            table: [tuple(row) for row in connection.execute(text(query))] for table, query in queries.items()
        }
        attempt_rows = [dict(row._mapping) for row in connection.execute(text(queries["attempts"]))]
    for row in attempt_rows:
        if row["run_id"] in reconciled_run_ids:
            assert row["ended_time"] is not None
            row["ended_time"] = "(sync's clock)"
    rows["attempts"] = [tuple(row.values()) for row in attempt_rows]
    return rows


def chunks(items: list[JournaledAttempt], size: int) -> Iterator[list[JournaledAttempt]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class StatementLog:
    """The SQL statements an engine sends (an executemany counts once)."""

    statements: list[str]

    @classmethod
    def on(cls, engine: Engine) -> "StatementLog":
        log = cls([])
        event.listen(
            engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_rest: log.record(statement),
        )
        return log

    def record(self, statement: str) -> None:
        if not statement.startswith("SELECT pg_advisory_xact_lock"):  # PostgreSQL's BEGIN IMMEDIATE
            self.statements.append(statement)

    def writes(self) -> list[str]:
        return [
            statement
            for statement in self.statements
            if statement.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
        ]


def test_one_sync_of_many_attempts_equals_syncing_them_in_small_rounds(
    tmp_path: Path, new_registry: OpenRegistry
) -> None:
    attempts = planned(tmp_path / "results", 200)
    now = time.time()
    at_once, in_rounds = (
        record(new_registry(tmp_path / "at-once"), attempts, now),
        record(new_registry(tmp_path / "in-rounds"), attempts, now),
    )
    reports = []
    for item in attempts:
        item.write(0)
    reports.append(sync(in_rounds))
    for phase in range(1, PHASES):
        for group in chunks(attempts, 50):
            for item in group:
                item.write(phase)
            reports.append(sync(in_rounds))

    report = sync(at_once)

    reconciled = {item.run_id for item in attempts if item.kind.startswith("killed")}
    assert registry_rows(at_once, reconciled) == registry_rows(in_rounds, reconciled)
    killed = sum(item.kind == "killed" for item in attempts)
    assert report == SyncReport(
        attempts_checked=len(attempts),
        events_ingested=sum(item.events() for item in attempts),
        attempts_lost=killed,
    )
    assert sum(r.events_ingested for r in reports) == report.events_ingested
    assert sum(r.attempts_lost for r in reports) == report.attempts_lost


def test_sync_applies_each_kind_of_journal(tmp_path: Path, new_registry: OpenRegistry) -> None:
    attempts = planned(tmp_path / "results", 2 * len(KINDS))
    engine = record(new_registry(tmp_path / "home"), attempts, time.time())
    for item in attempts:
        for phase in range(PHASES):
            item.write(phase)

    sync(engine)

    expected_states = {  # the journaled attempt's, its run's
        "finished": (RunState.COMPLETED, RunState.COMPLETED),
        "failed": (RunState.FAILED, RunState.FAILED),
        "requeued": (RunState.COMPLETED, RunState.COMPLETED),
        "elsewhere": (RunState.RUNNING, RunState.RUNNING),
        "killed": (RunState.LOST, RunState.LOST),
        "killed_after_failure_line": (RunState.FAILED, RunState.FAILED),
        "being_submitted": (RunState.PENDING, RunState.PENDING),
        "second_attempt": (RunState.COMPLETED, RunState.COMPLETED),
        "superseded": (RunState.RUNNING, RunState.CANCELLED),
    }
    with Session(engine) as session:
        for item in attempts:
            run = session.get_one(Run, item.run_id)
            attempt = next(attempt for attempt in run.attempts if attempt.key == item.key)
            assert (attempt.state, run.state) == expected_states[item.kind], item.kind
        requeued = session.get_one(Run, next(item.run_id for item in attempts if item.kind == "requeued"))
        attempt = requeued.attempts[-1]
        # start: the first segment's
        assert (
            attempt.requeues,
            attempt.pid,
            attempt.start_step,
            attempt.heartbeat_time,
            attempt.steps_per_second,
        ) == (1, 2002, 0, 27.0, 2.0)
        assert (
            requeued.current_step,
            [c.step for c in requeued.checkpoints],
            [(s.probe, s.step) for s in requeued.shards],
        ) == (2, [1], [("line", 2)])
    with engine.connect() as connection:
        redone = connection.execute(
            text("SELECT value FROM metrics WHERE run_id = :run AND name = 'train_loss' AND step = 2"),
            {"run": attempts[2].run_id},
        ).one()
        failed_reason = connection.execute(
            text("SELECT exit_code, reason FROM attempts WHERE key = :key"), {"key": attempts[5].key}
        ).one()
    assert redone == (metrics(2, 2, redone=True).rows[0].value,)  # the restarted job's value, journaled last
    assert failed_reason == (1, f"OSError: No space left on device: {attempts[5].journal_dir}")


def test_second_sync_writes_nothing(tmp_path: Path, new_registry: OpenRegistry) -> None:
    attempts = planned(tmp_path / "results", 200)
    engine = record(new_registry(tmp_path / "home"), attempts, time.time())
    for item in attempts:
        for phase in range(PHASES):
            item.write(phase)
    sync(engine)
    before = registry_snapshot(engine.url)
    log = StatementLog.on(engine)

    report = sync(engine)

    still_open = sum(item.kind in ("elsewhere", "superseded", "being_submitted") for item in attempts)
    # LOST by a guess: its journal is read again
    still_open += sum(item.kind == "killed" for item in attempts)
    assert report == SyncReport(attempts_checked=still_open, events_ingested=0, attempts_lost=0)
    assert log.writes() == []
    assert registry_snapshot(engine.url) == before


@pytest.mark.parametrize("phases", [range(PHASES), range(1)], ids=["whole journals", "first events only"])
def test_statements_do_not_grow_with_the_number_of_attempts(
    tmp_path: Path, new_registry: OpenRegistry, phases: range
) -> None:
    def statements_of_sync(count: int) -> list[str]:
        attempts = planned(tmp_path / f"results-{count}", count)
        engine = record(new_registry(tmp_path / f"home-{count}"), attempts, time.time())
        for item in attempts:
            for phase in phases:
                item.write(phase)
        log = StatementLog.on(engine)
        sync(engine)
        return log.statements

    few, many = statements_of_sync(20), statements_of_sync(200)

    assert len(many) <= len(few) + 2, "\n".join(many)
    assert len(StatementLog(many).writes()) <= len(StatementLog(few).writes())


def test_lost_after_comes_from_each_runs_cluster_in_one_query(
    tmp_path: Path, new_registry: OpenRegistry
) -> None:
    """The silence an attempt of each run is allowed (its cluster profile's ``lost_after_s``), read
    from ``runs.spec_json`` for all runs at once; the same as ``lost_after_seconds`` of one attempt."""
    attempts = planned(tmp_path / "results", 3)
    engine = record(new_registry(tmp_path / "home"), attempts, time.time())
    log = StatementLog.on(engine)

    with Session(engine) as session:
        limits = lost_after_by_run(session, {item.run_id for item in attempts})
        queries = [statement for statement in log.statements if statement.startswith("SELECT")]
        one = lost_after_seconds(session.get_one(Run, attempts[1].run_id).attempts[0])

    local = load_profile("local").lost_after_s
    assert limits == {item.run_id: local for item in attempts}
    assert one == local
    assert len(queries) == 1


def test_a_sync_that_another_sync_overtook_writes_what_one_sync_would(
    tmp_path: Path, new_registry: OpenRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync reads journals and the scheduler with no transaction open. When another command's sync
    commits in that window (here: a whole sync run from inside the first one's scheduler call),
    the first one sees the attempts changed, does its work again, and the registry is what one
    sync alone leaves: a requeue counted once, not twice."""
    from orchestrator import ingest

    attempts = planned(tmp_path / "results", 2 * len(KINDS))
    now = time.time()
    raced, alone = (
        record(new_registry(tmp_path / "raced"), attempts, now),
        record(new_registry(tmp_path / "alone"), attempts, now),
    )
    for item in attempts:
        for phase in range(PHASES):
            item.write(phase)
    sync(alone)
    observe, calls = ingest.observe, []

    def observe_while_another_sync_commits(open_attempts):
        calls.append(len(open_attempts))
        if len(calls) == 1:
            sync(raced)  # another command, in between
        return observe(open_attempts)

    monkeypatch.setattr(ingest, "observe", observe_while_another_sync_commits)
    sync(raced)

    assert len(calls) == 3  # the first sync, the one in between, the first one again
    reconciled = {item.run_id for item in attempts if item.kind.startswith("killed")}
    assert registry_rows(raced, reconciled) == registry_rows(alone, reconciled)
    with raced.connect() as connection:
        requeued_key = next(item.key for item in attempts if item.kind == "requeued")
        assert connection.execute(
            text("SELECT requeues FROM attempts WHERE key = :key"), {"key": requeued_key}
        ).one() == (1,)
        # one per requeued attempt (two of that kind)
        assert connection.execute(text("SELECT count(*) FROM requeues")).one() == (2,)
