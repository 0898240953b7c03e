"""Shared fixtures: an isolated orchestrator home and an in-process ``orch`` runner."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import URL, Engine, create_engine, inspect, make_url, text

from orchestrator.cli import main

SWEEPS_DIR = Path(__file__).parent / "sweeps"


@dataclass(frozen=True)
class OrchResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass(frozen=True)
class Orch:
    """Runs ``orch --home <home> ...`` in this process and captures what it prints. ``db_url``:
    the PostgreSQL database this test's registry lives in (``ORCH_DB_URL``), or None for the
    home's SQLite file."""

    home: Path
    db_url: str | None = None

    def __call__(self, *arguments: str | Path) -> OrchResult:
        stdout, stderr = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            pytest.MonkeyPatch.context() as environment,
        ):
            if self.db_url is not None:
                environment.setenv("ORCH_DB_URL", self.db_url)
            exit_code = main(["--home", str(self.home), *map(str, arguments)])
        return OrchResult(exit_code, stdout.getvalue(), stderr.getvalue())

    def ok(self, *arguments: str | Path) -> OrchResult:
        result = self(*arguments)
        assert result.exit_code == 0, (
            f"orch {' '.join(map(str, arguments))} exited {result.exit_code}: {result.stderr}"
        )
        return result

    @property
    def registry(self) -> Path:
        return self.home / "registry.sqlite"

    @property
    def url(self) -> str:
        return self.db_url or f"sqlite:///{self.registry}"

    def rows(self, statement: str, **parameters: Any) -> list[dict[str, Any]]:
        """The rows a query returns, as dicts, on either backend."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(text(statement), parameters)]
        finally:
            engine.dispose()

    def execute(self, statement: str, **parameters: Any) -> None:
        """A write to the registry behind orch's back (a state as another tool would leave it)."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                connection.execute(text(statement), parameters)
        finally:
            engine.dispose()

    def has_registry(self) -> bool:
        """Whether any command created the registry (a file, or a schema in the database)."""
        if self.db_url is None and (not self.registry.exists() or self.registry.stat().st_size == 0):
            return False
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                return inspect(connection).has_table("alembic_version")
        finally:
            engine.dispose()

    def snapshot(self) -> Any:
        return registry_snapshot(self.url)

    def table_rows(self) -> dict[str, list[Any]]:
        return registry_rows(self.url)


def registry_snapshot(url: str | URL) -> Any:
    """What a registry holds, to compare before and after a command: an SQLite file's bytes; on
    PostgreSQL every row of every table, in a fixed order."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        return Path(url.database).read_bytes()
    return registry_rows(url)


def registry_rows(url: str | URL) -> dict[str, list[Any]]:
    """Every row of every table, by table, in one order whatever order the database returns."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            names = sorted(inspect(connection).get_table_names())
            return {name: _sorted_rows(connection.execute(text(f'SELECT * FROM "{name}"'))) for name in names}
    finally:
        engine.dispose()


def _sorted_rows(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(map(tuple, rows), key=repr)


BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` (a module's ``pytestmark``) run once per registry backend,
    unless marked ``sqlite_only`` (what only a file has: its mode, its journal, its bytes)."""
    marked = metafunc.definition.get_closest_marker("both_backends") is not None
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if marked and not sqlite_only and "registry_backend" in metafunc.fixturenames:
        metafunc.parametrize("registry_backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for this test session (see tests/postgres.py)."""
    from tests import postgres

    server = postgres.start()
    yield server
    postgres.stop(server.state_dir)


@pytest.fixture
def registry_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The database URL of this test's registry: None (the home's SQLite file) or a fresh
    PostgreSQL database, set as ``ORCH_DB_URL`` for every ``orch`` this test runs."""
    monkeypatch.delenv("ORCH_DB_URL", raising=False)
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    url = request.getfixturevalue("postgres_server").create_database()
    monkeypatch.setenv("ORCH_DB_URL", url)
    return url


OpenRegistry = Callable[[Path], Engine]


@pytest.fixture
def new_registry(
    registry_backend: str | None, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> OpenRegistry:
    """Opens a registry of its own for a home (tests comparing two registries): the home's SQLite
    file, or a fresh PostgreSQL database each time."""
    from orchestrator.home import OrchHome
    from orchestrator.registry.engine import open_registry

    def open_new(home: Path) -> Engine:
        if registry_backend is not None:
            monkeypatch.setenv("ORCH_DB_URL", request.getfixturevalue("postgres_server").create_database())
        return open_registry(OrchHome(home))

    return open_new


@pytest.fixture
def orch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_backend: str | None) -> Orch:
    monkeypatch.delenv("ORCH_HOME", raising=False)
    return Orch(tmp_path / "home", registry_backend)


def wait_until(
    condition: Callable[[], object], timeout_seconds: float = 300, poll_seconds: float = 0.5
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(poll_seconds)


def attempt_rows(orch: Orch) -> list[dict[str, Any]]:
    """Every attempt of the home's registry as its row, by job, place in a pack and number."""
    return orch.rows("SELECT * FROM attempts ORDER BY job_id, pack_slot, run_id, number")


def write_sweep(directory: Path, name: str, text: str) -> Path:
    """A sweep file in ``directory`` (includes resolve against configs/)."""
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def slurm_polls_every_second(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In tests marked ``slurm``, commands waiting on Slurm jobs (``--wait``, ``status --watch``)
    look again every second instead of every 10 s: the mini-cluster's slurmctld is this test's own,
    and a finished job is then seen within a second (every test still waits for the same states)."""
    if request.node.get_closest_marker("slurm") is None:
        return
    from orchestrator.executors.slurm import SlurmBackend

    monkeypatch.setattr(SlurmBackend, "poll_seconds", 1.0)


@pytest.fixture(scope="session")
def mini_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real Slurm cluster on localhost for the whole session (see tests/cluster/minicluster.py)."""
    import os

    from tests.cluster import minicluster

    cluster = minicluster.start(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.environment)
    yield cluster
    minicluster.stop(cluster.state_dir)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
