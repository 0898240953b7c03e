"""Shared fixtures: an isolated orchestrator home and an in-process ``orch`` runner."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

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
    """Runs ``orch --home <home> ...`` in this process and captures what it prints."""

    home: Path

    def __call__(self, *arguments: str | Path) -> OrchResult:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
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


@pytest.fixture
def orch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Orch:
    monkeypatch.delenv("ORCH_DB_URL", raising=False)
    monkeypatch.delenv("ORCH_HOME", raising=False)
    return Orch(tmp_path / "home")


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
    with sqlite3.connect(orch.registry) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT * FROM attempts ORDER BY job_id, pack_slot, run_id, number"
        ).fetchall()
    return [dict(row) for row in rows]


def write_sweep(directory: Path, name: str, text: str) -> Path:
    """A sweep file in ``directory`` (includes resolve against configs/)."""
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``make test`` runs two pytest workers (``-n 2 --dist loadgroup``): every test on the
    mini-cluster (fixed ports, one slurmctld) goes to the same worker, one after another; the
    other worker takes the rest meanwhile. Slurm tests mostly wait for the scheduler."""
    for item in items:
        if item.get_closest_marker("slurm") is not None or "mini_cluster" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.xdist_group("mini_cluster"))


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
