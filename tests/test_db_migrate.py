"""``orch db migrate``: a registry moves from SQLite to PostgreSQL (and back), row for row, in one
transaction that a kill or a difference rolls back."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import SWEEPS_DIR, Orch, registry_snapshot
from tests.killpoints import KILLED, run_orch
from tests.postgres import PostgresServer

pytestmark = pytest.mark.subprocess

TINY = SWEEPS_DIR / "tiny.yaml"
TABLES = [
    "notices",
    "runs",
    "spec_sections",
    "sweeps",
    "attempts",
    "stages",
    "sweep_runs",
    "checkpoints",
    "metrics",
    "requeues",
    "shards",
]


@pytest.fixture
def populated(orch: Orch) -> Orch:
    """A home with a completed sweep of two runs."""
    orch.ok("submit", TINY, "--executor", "debug")
    return orch


def test_sqlite_to_postgresql_and_back_row_for_row(
    populated: Orch, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    target = postgres_server.create_database("moved")

    moved = populated.ok("db", "migrate", "--to", target, "--json").json()

    source_rows = populated.table_rows()
    on_postgresql = Orch(populated.home, target)
    assert on_postgresql.table_rows() == source_rows
    counts = {table["table"]: table["rows"] for table in moved["tables"]}
    assert sorted(counts) == sorted(TABLES)
    assert counts == {table: len(rows) for table, rows in source_rows.items() if table != "alembic_version"}
    assert counts["runs"] == 2 and counts["metrics"] > 100 and moved["rows"] == sum(counts.values())
    print(f"\nmoved {moved['rows']} rows: {counts}")
    # the moved registry is the registry: same views, and it takes new rows (sequences moved on)
    assert on_postgresql.ok("status", "--json").json() == populated.ok("status", "--json").json()
    overlap = tmp_path / "more.yaml"
    overlap.write_text(TINY.read_text().replace("name: tiny", "name: more").replace("[0.1, 0.05]", "[0.02]"))
    on_postgresql.ok("submit", overlap, "--executor", "debug")
    assert len(on_postgresql.ok("runs", "--json").json()) == 3

    back = tmp_path / "back" / "registry.sqlite"
    back.parent.mkdir()
    populated.ok("db", "migrate", "--from", target, "--to", f"sqlite:///{back}")
    assert Orch(back.parent, f"sqlite:///{back}").table_rows() == on_postgresql.table_rows()
    assert stat.S_IMODE(back.stat().st_mode) == 0o600


def test_a_target_that_holds_anything_is_refused_and_left_alone(
    populated: Orch, postgres_server: PostgresServer
) -> None:
    target = postgres_server.create_database("taken")
    postgres_server.psql("CREATE TABLE notes (id integer)", database=target.rsplit("/", 1)[1])
    before = registry_snapshot(target)

    refused = populated("db", "migrate", "--to", target)

    assert refused.exit_code == 2
    assert (
        "already holds tables (notes)" in refused.stderr and "accepted: an empty database" in refused.stderr
    )
    assert registry_snapshot(target) == before


@pytest.mark.parametrize("kill_at", ["sql:30", "sql:100", "commit:1"])
def test_a_kill_during_the_move_leaves_the_target_empty(
    populated: Orch, postgres_server: PostgresServer, kill_at: str
) -> None:
    target = postgres_server.create_database("killed")
    source_before = populated.snapshot()

    killed = run_orch(populated.home, ["db", "migrate", "--to", target], kill_at=kill_at)

    assert killed.exit_code == KILLED
    assert registry_snapshot(target) == {}  # not even the schema: it was created in the same transaction
    assert populated.snapshot() == source_before
    assert populated.ok("db", "migrate", "--to", target).exit_code == 0  # and it can be done again


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--to", "mysql://root:hunter2@localhost/db"], "--to: unsupported database 'mysql'"),
        (["--to", "sqlite:////nowhere/x.sqlite"], "--to: folder /nowhere does not exist"),
        (
            ["--from", "sqlite:////nowhere/registry.sqlite", "--to", "sqlite:////x.sqlite"],
            "--from: no registry",
        ),
    ],
)
def test_bad_urls_are_bad_input_and_never_echo_a_password(
    populated: Orch, arguments: list[str], fragment: str
) -> None:
    result = populated("db", "migrate", *arguments)

    assert result.exit_code == 2 and fragment in result.stderr, result.stderr
    assert "hunter2" not in result.stderr
