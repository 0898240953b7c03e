"""The registry file: private, rollback journal, schema from Alembic; sync is idempotent; dedup."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from orchestrator.home import OrchHome
from orchestrator.registry.engine import alembic_config, open_registry
from tests.conftest import SWEEPS_DIR, Orch, write_sweep

pytestmark = pytest.mark.both_backends

TINY = SWEEPS_DIR / "tiny.yaml"


@pytest.mark.sqlite_only
def test_registry_file_is_private_with_rollback_journal(orch: Orch) -> None:
    orch.ok("submit", TINY, "--executor", "debug")

    assert stat.S_IMODE(orch.registry.stat().st_mode) == 0o600
    with sqlite3.connect(orch.registry) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_the_schema_comes_from_alembic_at_its_head(orch: Orch) -> None:
    assert not orch.has_registry()
    orch.ok("submit", TINY, "--executor", "debug")

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert orch.rows("SELECT version_num FROM alembic_version") == [{"version_num": head}]


def test_the_head_revision_orch_reads_without_alembic_is_alembics() -> None:
    from orchestrator.registry.engine import head_revision

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.mark.sqlite_only
def test_registry_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o000)
    try:
        open_registry(OrchHome(tmp_path / "home"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "home" / "registry.sqlite").stat().st_mode) == 0o600


@pytest.mark.sqlite_only
def test_connections_use_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = open_registry(OrchHome(tmp_path))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"


@pytest.mark.sqlite_only
def test_db_url_selects_another_database(orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.sqlite"
    monkeypatch.setenv("ORCH_DB_URL", f"sqlite:///{other}")

    orch.ok("submit", TINY, "--executor", "debug")

    assert other.is_file()
    assert not orch.registry.exists()
    assert [run["state"] for run in orch.ok("runs", "--json").json()] == ["COMPLETED", "COMPLETED"]


def test_sync_twice_changes_nothing(orch: Orch) -> None:
    orch.ok("submit", TINY, "--executor", "debug")
    first = orch.ok("sync", "--json").json()
    after_first = orch.snapshot()

    second = orch.ok("sync", "--json").json()

    assert first["events_ingested"] == 0  # submit synced what the debug executor ran
    assert second == {
        "attempts_checked": 0,
        "attempts_lost": 0,
        "events_ingested": 0,
        "submitted": 0,
        "waiting_for_slot": 0,
    }
    assert orch.snapshot() == after_first


def test_sync_ingests_every_journal_event_once(orch: Orch) -> None:
    orch.ok("submit", TINY, "--executor", "debug")
    runs = orch.ok("runs", "--json").json()
    show = orch.ok("show", runs[0]["id"], "--json").json()

    assert [c["step"] for c in show["checkpoints"]] == [20, 40, 60]
    assert show["metrics"]["train_loss"]["count"] == 60
    assert show["metrics"]["val_loss"]["count"] == 3
    assert show["attempts"][0]["state"] == "COMPLETED"
    assert show["attempts"][0]["provenance"]["torch"]


def test_resubmitting_submits_nothing(orch: Orch) -> None:
    first = orch.ok("submit", TINY, "--executor", "debug", "--json").json()
    second = orch.ok("submit", TINY, "--executor", "debug", "--json").json()

    assert len(first["submitted"]) == 2
    assert second["submitted"] == []
    assert sorted(second["skipped"].values()) == ["COMPLETED", "COMPLETED"]


def test_same_run_from_two_sweeps_is_one_run(orch: Orch, tmp_path: Path) -> None:
    orch.ok("submit", TINY, "--executor", "debug")
    # lr 0.05 is a point of tiny too; resources differ, which does not change results
    overlapping_text = (
        TINY.read_text().replace("name: tiny", "name: overlap").replace("[0.1, 0.05]", "[0.05, 0.02]")
    )
    overlapping = write_sweep(tmp_path, "overlap", overlapping_text + "  resources.partition: [day]\n")

    report = orch.ok("submit", overlapping, "--executor", "debug", "--json").json()

    assert len(report["submitted"]) == 1 and len(report["skipped"]) == 1
    runs = orch.ok("runs", "--json").json()
    assert len(runs) == 3
    shared = [run for run in runs if run["sweeps"] == ["overlap", "tiny"]]
    assert len(shared) == 1 and shared[0]["attempts"] == 1


def test_plan_marks_completed_runs_and_writes_nothing(orch: Orch) -> None:
    assert orch.ok("plan", TINY, "--json").json()["runs"][0]["state"] == "NEW"
    assert not orch.home.exists()
    orch.ok("submit", TINY, "--executor", "debug")
    before = orch.snapshot()

    planned = orch.ok("plan", TINY, "--json").json()

    assert [run["state"] for run in planned["runs"]] == ["COMPLETED", "COMPLETED"]
    assert orch.snapshot() == before


@pytest.mark.sqlite_only
def test_an_upgrade_that_would_leave_dangling_references_is_refused(tmp_path: Path) -> None:
    """Foreign keys are off while a migration recreates a table; what it leaves is checked before
    the commit, and a row that references a missing one rolls the whole upgrade back."""
    from orchestrator.errors import UserError
    from orchestrator.registry.engine import check_foreign_keys, foreign_keys_checked_at_the_end

    engine = open_registry(OrchHome(tmp_path))
    with engine.connect() as connection, foreign_keys_checked_at_the_end(connection):
        with (
            pytest.raises(UserError, match="2 references to missing rows .*sweep_runs row 1"),
            connection.begin(),
        ):
            connection.exec_driver_sql(
                "INSERT INTO sweep_runs (sweep_id, run_id, position, swept_json) VALUES (7, 'nowhere', "
                "0, '{}')"
            )
            check_foreign_keys(connection)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM sweep_runs").scalar() == 0
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_the_longest_sweep_name_goes_through_a_smoke_test(orch: Orch, tmp_path: Path) -> None:
    """Names as long as a sweep's may be, with the smoke sweep's suffix and the arrays' time
    stamps: PostgreSQL enforces the columns' widths that SQLite only declares (migration 0014)."""
    name = "a" * 64
    sweep = write_sweep(tmp_path, "long", TINY.read_text().replace("name: tiny", f"name: {name}"))

    orch.ok("submit", sweep, "--smoke", "--executor", "debug")
    orch.ok("status")  # the runs go out once the smoke runs passed

    assert {row["name"] for row in orch.rows("SELECT name FROM sweeps")} == {name, f"{name}.smoke"}
    assert {row["state"] for row in orch.rows("SELECT state FROM attempts")} == {"COMPLETED"}
