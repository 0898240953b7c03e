"""The registry survives kills during its creation and upgrades, concurrent submitters, and bad URLs."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from alembic import command as alembic_command
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.home import OrchHome
from orchestrator.registry.engine import alembic_config, open_registry
from orchestrator.registry.models import Attempt, Run, RunState
from orchestrator.submit import record_sweep
from orchestrator.sweep import load_sweep
from tests.conftest import SWEEPS_DIR, Orch, write_sweep
from tests.killpoints import KILLED, _context, registry_environment, run_orch, spread

pytestmark = pytest.mark.subprocess

TINY = SWEEPS_DIR / "tiny.yaml"


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[return-value]  # the migrations have a head


def revision_of(registry: Path) -> str | None:
    with sqlite3.connect(registry) as connection:
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return rows[0][0] if rows else None


def _open_in_child(home: str) -> None:
    open_registry(OrchHome(Path(home)))


def open_killed_at(home: Path, kill_at: str) -> int:
    """Open (create or upgrade) the registry of ``home`` in a child killed at ``kill_at``."""
    process = _context().Process(target=_killed_open, args=(str(home), kill_at, registry_environment()))
    process.start()
    process.join(60)
    return process.exitcode  # type: ignore[return-value]  # joined: it has exited


def _killed_open(home: str, kill_at: str, environment: dict[str, str]) -> None:
    os.environ.update(environment)
    os.environ["ORCH_KILL_AT"] = kill_at
    _open_in_child(home)


def statements_of_first_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    from jobs import faults

    monkeypatch.setenv("ORCH_KILL_AT", "never:0")
    before = faults.passes("sql")
    open_registry(OrchHome(tmp_path / "counting"))
    monkeypatch.delenv("ORCH_KILL_AT")
    return faults.passes("sql") - before


def test_a_kill_at_statements_spread_over_the_first_creation_leaves_a_working_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 of the first creation's statements (160 now), first and last included: all of them run in
    the one transaction that creates the schema, so any kill is rolled back alike."""
    count = statements_of_first_creation(tmp_path, monkeypatch)
    assert count >= 10  # the schema's DDL, the version row, the first read
    for point in spread(count, 40):
        home = tmp_path / f"home-{point}"
        home.mkdir()
        (home / "registry.sqlite").touch(mode=0o600)  # as submit leaves it before the first transaction

        assert open_killed_at(home, f"sql:{point}") == KILLED, f"statement {point} was not reached"
        open_registry(OrchHome(home))  # the next command: rolls the hot journal back, migrates again

        assert revision_of(home / "registry.sqlite") == head_revision(), point
        assert not (home / "registry.sqlite-journal").exists()
        Orch(home).ok("status")


def test_an_interrupted_upgrade_leaves_the_old_schema_and_its_rows(tmp_path: Path) -> None:
    old_home = tmp_path / "old"
    old_home.mkdir()
    old_registry = old_home / "registry.sqlite"
    engine = create_engine(f"sqlite:///{old_registry}")
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic_command.upgrade(config, "0003")
    with sqlite3.connect(old_registry) as connection:  # two active attempts of one run: what 0004 cleans up
        connection.execute("INSERT INTO runs VALUES ('r1', '{}', 'x: 1', 'RUNNING', NULL, 10, 0, 0.0)")
        for number in (1, 2):
            connection.execute(
                "INSERT INTO attempts (run_id, number, key, executor, submission_id, state, "
                "submitted_time, journal_dir, journal_seq, requeues) "
                f"VALUES ('r1', {number}, 'k{number}', 'local', 's', 'RUNNING', 0.0, '/nonexistent', 0, 0)"
            )
    pristine = old_registry.read_bytes()
    upgrade_statements = 0
    for point in range(1, 40):
        old_registry.write_bytes(pristine)
        if open_killed_at(old_home, f"sql:{point}") != KILLED:
            break  # the whole upgrade ran before this statement
        upgrade_statements += 1
        assert revision_of(old_registry) in ("0003", head_revision())
        with sqlite3.connect(old_registry) as connection:  # rolls back the hot journal
            assert connection.execute("SELECT count(*) FROM attempts").fetchone()[0] == 2
    assert upgrade_statements >= 3

    open_registry(OrchHome(old_home))
    assert revision_of(old_registry) == head_revision()
    with sqlite3.connect(old_registry) as connection:
        states = connection.execute("SELECT number, state, reason FROM attempts ORDER BY number").fetchall()
    assert [state for _, state, _ in states] == ["LOST", "RUNNING"]
    assert "superseded" in states[0][2]


@pytest.mark.both_backends
def test_the_database_refuses_a_second_active_attempt_of_a_run(orch: Orch) -> None:
    orch.ok("submit", TINY, "--executor", "debug")
    engine = open_registry(OrchHome(orch.home))
    with Session(engine) as session, session.begin():
        run_id = session.scalars(select(Run.id)).first()
    for active in RunState.ACTIVE:
        with pytest.raises(IntegrityError):
            with Session(engine) as session, session.begin():
                for number in (10, 11):
                    session.add(
                        Attempt(
                            run_id=run_id,
                            number=number,
                            key=f"{active}-{number}",
                            executor="debug",
                            submission_id="x",
                            state=active,
                            submitted_time=0.0,
                            journal_dir="/x",
                            journal_seq=0,
                            requeues=0,
                        )
                    )


@pytest.mark.both_backends
def test_attempt_keys_are_unique_by_construction_not_by_chance(
    orch: Orch, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "00000000")  # every random part collides

    result = orch("submit", TINY, "--executor", "debug")

    assert result.exit_code == 0, result.stderr
    keys = [row["key"] for row in orch.rows("SELECT key FROM attempts")]
    assert len(keys) == len(set(keys)) == 2


def test_the_one_active_attempt_index_is_partial_on_postgresql_too() -> None:
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex

    index = next(
        index for index in Attempt.__table__.indexes if index.name == "uq_attempts_one_active_per_run"
    )
    for dialect in (postgresql.dialect(), sqlite.dialect()):
        ddl = str(CreateIndex(index).compile(dialect=dialect))
        assert ddl.startswith(
            "CREATE UNIQUE INDEX uq_attempts_one_active_per_run ON attempts (run_id) WHERE state IN "
            "('PENDING', 'RUNNING')"
        ), ddl


SHARED_BASE = """
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 20, checkpoint_every: 10, eval_every: 10}
"""


def _start_together(home: Path, sweeps: list[Path]) -> list[int]:
    from tests.killpoints import _child

    processes = [
        _context().Process(
            target=_child,
            args=(
                ["--home", str(home), "submit", str(sweep), "--executor", "debug"],
                "never:0",
                registry_environment(),
                str(home.parent / f".p{i}"),
            ),
        )
        for i, sweep in enumerate(sweeps)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(300)
    return [process.exitcode for process in processes]  # type: ignore[misc]  # joined: they have exited


def attempts_per_run(home: Path, registry_backend: str | None) -> dict[str, int]:
    rows = Orch(home, registry_backend).rows(
        "SELECT runs.id, count(attempts.id) AS attempts FROM runs LEFT JOIN attempts ON attempts.run_id = "
        "runs.id GROUP BY runs.id"
    )
    return {row["id"]: row["attempts"] for row in rows}


@pytest.mark.both_backends
@pytest.mark.parametrize("round_number", range(3))
def test_concurrent_submits_of_sweeps_sharing_a_run_run_it_once(
    tmp_path: Path, round_number: int, registry_backend: str | None
) -> None:
    first = write_sweep(tmp_path, "first", "name: first" + SHARED_BASE + "grid: {optimizer.lr: [0.1, 0.2]}\n")
    second = write_sweep(
        tmp_path, "second", "name: second" + SHARED_BASE + "grid: {optimizer.lr: [0.1, 0.3]}\n"
    )
    home = tmp_path / "home"

    assert _start_together(home, [first, second]) == [0, 0]

    counts = attempts_per_run(home, registry_backend)
    assert len(counts) == 3
    assert set(counts.values()) == {1}, counts
    states = {run["id"]: run["state"] for run in Orch(home).ok("runs", "--json").json()}
    assert set(states.values()) == {"COMPLETED"}


@pytest.mark.both_backends
def test_the_same_sweep_submitted_twice_at_once_runs_each_run_once(
    tmp_path: Path, registry_backend: str | None
) -> None:
    home = tmp_path / "home"

    assert _start_together(home, [TINY, TINY]) == [0, 0]

    counts = attempts_per_run(home, registry_backend)
    assert counts and set(counts.values()) == {1}


@pytest.mark.both_backends
def test_resume_submits_runs_a_dead_submit_left_planned(orch: Orch) -> None:
    engine = open_registry(OrchHome(orch.home))
    from jobs.catalog import known_names

    with Session(engine) as session, session.begin():  # what submits before this fix could leave
        record_sweep(session, load_sweep(TINY, known_names()))

    result = orch("resume", "tiny", "--executor", "debug", "--json")

    assert result.exit_code == 0, result.stderr
    assert len(result.json()["submitted"]) == 2
    assert {run["state"] for run in orch.ok("runs", "--json").json()} == {"COMPLETED"}


@pytest.mark.both_backends
def test_a_kill_after_commit_leaves_the_runs_held_back_and_the_next_sync_submits_them(
    tmp_path: Path, registry_backend: str | None
) -> None:
    """Attempts are committed held back before any job exists: killed then, nothing is lost, and
    the next command that syncs hands them to the scheduler (their executor: local)."""
    home = tmp_path / "home"
    assert (
        run_orch(home, ["submit", TINY, "--executor", "local"], kill_at="submit.committed:1").exit_code
        == KILLED
    )
    engine = open_registry(OrchHome(home))
    with Session(engine) as session:
        held = session.scalars(select(Attempt)).all()
        assert [(a.state, a.held_back, a.job_id, a.reason) for a in held] == [
            ("PENDING", True, None, "waiting for a submit slot")
        ] * 2
    engine.dispose()

    assert Orch(home).ok("sync", "--json").json()["submitted"] == 2
    Orch(home).ok("status", "--watch")  # until no run is active
    assert {run["state"] for run in Orch(home).ok("runs", "--json").json()} == {"COMPLETED"}


@pytest.mark.both_backends
def test_runs_held_back_are_cancelled_without_a_job(tmp_path: Path, registry_backend: str | None) -> None:
    """A held-back run has no job: cancelling it marks it, and no job ever starts for it."""
    home = tmp_path / "home"
    assert (
        run_orch(home, ["submit", TINY, "--executor", "local"], kill_at="submit.committed:1").exit_code
        == KILLED
    )
    cancelled = Orch(home).ok("cancel", "tiny", "--json").json()
    assert len(cancelled["cancelled"]) == 2
    assert {run["state"] for run in Orch(home).ok("runs", "--json").json()} == {"CANCELLED"}
    assert Orch(home).ok("sync", "--json").json()["submitted"] == 0
    assert not (home / "results" / "submitit").exists()  # nothing was handed to an executor


@pytest.mark.both_backends
def test_a_kill_between_claim_and_scheduler_is_recovered_by_the_next_submit(
    tmp_path: Path, registry_backend: str | None
) -> None:
    """Claimed for an array but killed before sbatch: no job exists, and sync says so at once."""
    home = tmp_path / "home"
    assert (
        run_orch(home, ["submit", TINY, "--executor", "local"], kill_at="submit.scheduler:1").exit_code
        == KILLED
    )
    assert {run["state"] for run in Orch(home).ok("runs", "--json").json()} == {"LOST"}
    Orch(home).ok("submit", TINY, "--executor", "debug")
    assert {run["state"] for run in Orch(home).ok("runs", "--json").json()} == {"COMPLETED"}
    Orch(home).ok("status")


@pytest.mark.both_backends
def test_a_kill_after_local_jobs_started_but_before_their_ids_were_recorded_runs_them_once(
    tmp_path: Path, registry_backend: str | None
) -> None:
    home = tmp_path / "home"
    assert (
        run_orch(home, ["submit", TINY, "--executor", "local"], kill_at="submit.launched:1").exit_code
        == KILLED
    )
    orch = Orch(home)

    # found, not lost
    assert {run["state"] for run in orch.ok("runs", "--json").json()} <= {
        "PENDING",
        "RUNNING",
    }
    again = orch.ok("submit", TINY, "--executor", "local", "--json").json()
    assert again["submitted"] == []  # still active: nothing is started twice
    deadline = time.monotonic() + 120
    while {run["state"] for run in orch.ok("runs", "--json").json()} != {"COMPLETED"}:
        assert time.monotonic() < deadline, orch.ok("runs", "--json").json()
        time.sleep(0.5)
    assert set(attempts_per_run(home, registry_backend).values()) == {1}


# -- ORCH_DB_URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("garbage", "not a database URL"),
        ("://", "not a database URL"),
        ("mysql://root:hunter2@localhost/db", "unsupported database 'mysql'"),
        ("oracle+cx_oracle://u:hunter2@h/db", "unsupported database 'oracle'"),
        ("postgresql+nosuchdriver://u:hunter2@h/db", "no SQLAlchemy dialect"),
        ("postgresql+pg8000://u:hunter2@localhost:1/db", "not installed"),
        ("sqlite://", "names no plain file"),
        ("sqlite:///:memory:", "names no plain file"),
        ("sqlite:///registry.sqlite?mode=memory&uri=true", "names no plain file"),
        ("postgresql://u:hunter2@[::1/db", "not a database URL"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["runs"], ["submit", str(TINY), "--executor", "debug"]])
def test_a_bad_db_url_is_bad_input_and_never_echoes_a_password(
    orch: Orch, monkeypatch: pytest.MonkeyPatch, url: str, fragment: str, command: list[str]
) -> None:
    monkeypatch.setenv("ORCH_DB_URL", url)

    result = orch(*command)

    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("orch: error: ORCH_DB_URL")
    assert fragment in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_db_url_to_a_file_that_is_not_a_database(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("these are my notes, not a registry\n" * 50)
    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{not_a_database}")
    before = not_a_database.read_bytes()

    for command in (["status"], ["submit", str(TINY), "--executor", "debug"]):
        result = orch(*command)
        assert result.exit_code == 2
        assert f"registry {not_a_database}: file is not a database" in result.stderr
    assert not_a_database.read_bytes() == before


def test_read_only_commands_never_create_a_schema_in_another_database(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign, empty = tmp_path / "foreign.db", tmp_path / "empty.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    sqlite3.connect(empty).close()
    before = {path: path.read_bytes() for path in (foreign, empty)}

    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{foreign}")
    for command in (
        ["status"],
        ["runs"],
        ["sync"],
        ["export", "--json"],
        ["submit", str(TINY), "--executor", "debug"],
    ):
        result = orch(*command)
        assert result.exit_code == 2, (command, result.stderr)
        assert f"{foreign} is an SQLite database but not an orch registry" in result.stderr
    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{empty}")
    assert orch.ok("status", "--json").json() == []

    assert {path: path.read_bytes() for path in (foreign, empty)} == before


def test_a_db_url_to_a_folder(orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{tmp_path}")

    for command in (["status"], ["submit", str(TINY), "--executor", "debug"]):
        result = orch(*command)
        assert result.exit_code == 2
        assert "is not a regular file" in result.stderr


def test_read_only_commands_with_a_url_to_a_missing_folder_create_nothing(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing" / "deeper"
    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{missing}/registry.sqlite")

    for command in (["status", "--json"], ["runs", "--json"], ["sync", "--json"], ["export", "--json"]):
        result = orch(*command)
        assert result.exit_code == 0, result.stderr
    assert orch("plan", TINY).exit_code == 0
    assert not (tmp_path / "missing").exists()
    assert not orch.home.exists()

    result = orch("submit", TINY, "--executor", "debug")  # writing commands say where the folder is missing
    assert result.exit_code == 2
    assert f"folder {missing} does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_a_fresh_home_created_by_submit_is_private(orch: Orch) -> None:
    orch.ok("submit", TINY, "--executor", "debug")

    assert stat.S_IMODE(orch.registry.stat().st_mode) == 0o600
    assert revision_of(orch.registry) == head_revision()


def test_an_empty_registry_file_is_no_registry_for_readers(orch: Orch) -> None:
    orch.home.mkdir()
    orch.registry.touch(mode=0o600)  # a submit killed before its first transaction

    assert orch.ok("status", "--json").json() == []
    assert orch.registry.read_bytes() == b""
    orch.ok("submit", TINY, "--executor", "debug")
    assert {run["state"] for run in orch.ok("runs", "--json").json()} == {"COMPLETED"}


def test_spread_picks_distinct_points_first_and_last() -> None:
    assert spread(100, 5) == [1, 26, 51, 75, 100]
    assert spread(3, 20) == [1, 2, 3]
