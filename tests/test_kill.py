"""SIGKILL at every window: submit, sync, resume, cancel and the job itself, each at >= 20 points.

Each point is a named pass (``jobs/faults.py``: the n-th registry statement, the n-th atomic
publication, or a step of submit), reached deterministically. After each kill the next command
works, ``status`` adds up, no run is left active with nothing running it, and the runs, completed
by the commands a user would type next, are bit-identical to runs that were never interrupted.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from tests.conftest import Orch, write_sweep
from tests.killpoints import KILLED, run_orch, spread

pytestmark = [pytest.mark.subprocess, pytest.mark.beside_slurm]

SWEEP = """
name: kills
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 30, checkpoint_every: 10, eval_every: 10, heartbeat_seconds: 3600}
grid:
  optimizer.lr: [0.1, 0.05]
"""
DEBUG = ["--executor", "debug"]
POINTS = 20


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep"), "kills", SWEEP)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sweep: Path) -> Path:
    """A home where the sweep ran once, never interrupted."""
    home = tmp_path_factory.mktemp("reference") / "home"
    Orch(home).ok("submit", sweep, *DEBUG)
    return home


@pytest.fixture(scope="module")
def submit_passes(tmp_path_factory: pytest.TempPathFactory, sweep: Path) -> dict[str, int]:
    """How many statements and publications a whole first submit makes."""
    result = run_orch(tmp_path_factory.mktemp("count") / "home", ["submit", sweep, *DEBUG])
    assert result.exit_code == 0
    return result.passes


# -- what must hold after every kill ------------------------------------------------------------


def assert_consistent(home: Path) -> dict[str, str]:
    """``status`` works and adds up; nothing is active (debug jobs die with their process)."""
    orch = Orch(home)
    views = orch.ok("status", "--json").json()
    runs = orch.ok("runs", "--json").json()
    assert sum(view["runs"] for view in views) == len(runs)
    assert sum(sum(view["counts"].values()) for view in views) == len(runs)
    states = {run["id"]: run["state"] for run in runs}
    assert not {"PENDING", "RUNNING", "PLANNED"} & set(states.values()), states
    return states


def assert_one_active_attempt_at_most(home: Path) -> None:
    with sqlite3.connect(home / "registry.sqlite") as connection:
        query = (
            "SELECT run_id, count(*) FROM attempts WHERE state IN ('PENDING', 'RUNNING') GROUP BY run_id "
            "HAVING count(*) > 1"
        )
        assert connection.execute(query).fetchall() == []


def assert_bit_identical(home: Path, reference: Path) -> None:
    runs = {run["id"]: run["state"] for run in Orch(home).ok("runs", "--json").json()}
    assert runs == {run["id"]: "COMPLETED" for run in Orch(reference).ok("runs", "--json").json()}
    for run_id in runs:
        final = f"results/runs/{run_id}/checkpoints/step_000000030.safetensors"
        assert_same_tensors(home / final, reference / final)
    assert metric_rows(home) == metric_rows(reference)


def assert_same_tensors(checkpoint: Path, reference: Path) -> None:
    """Every tensor (parameters, optimizer state, torch RNG streams) bit for bit. The checkpoint's
    copy of Python's own ``random`` state differs between a local job process and a debug job (the
    process around the job draws from it; training never does), so it is not compared."""
    tensors, expected = load_file(checkpoint), load_file(reference)
    assert tensors.keys() == expected.keys()
    for name, array in expected.items():
        assert tensors[name].dtype == array.dtype and tensors[name].tobytes() == array.tobytes(), (
            checkpoint,
            name,
        )


def metric_rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "registry.sqlite") as connection:
        return connection.execute(
            "SELECT run_id, name, step, value FROM metrics ORDER BY run_id, name, step"
        ).fetchall()


def killed(home: Path, argv: list, point: str) -> None:
    result = run_orch(home, argv, kill_at=point)
    assert result.exit_code == KILLED, f"orch {argv[0]} was not killed at {point} (exit {result.exit_code})"


# -- submit ------------------------------------------------------------------------------------


def test_submit_killed_at_any_point_then_submitted_again(
    tmp_path: Path, sweep: Path, reference: Path, submit_passes: dict[str, int]
) -> None:
    """Kills from the first creation of the home (its DDL) to the last job id recorded."""
    points = [f"sql:{n}" for n in spread(submit_passes["sql"], POINTS)] + [
        f"commit:{n}" for n in range(1, submit_passes["commit"] + 1)
    ]
    points += ["submit.committed:1", "submit.scheduler:1"]
    assert len(points) >= POINTS
    for index, point in enumerate(points):
        home = tmp_path / f"home-{index}"
        killed(home, ["submit", sweep, *DEBUG], point)

        if (home / "registry.sqlite").exists():
            assert_consistent(home)
        Orch(home).ok("submit", sweep, *DEBUG)  # what the user types next

        assert_one_active_attempt_at_most(home)
        assert_bit_identical(home, reference)


# -- the job itself ----------------------------------------------------------------------------


def test_job_killed_at_any_publication_resumes_bit_identical(
    tmp_path: Path, sweep: Path, reference: Path, submit_passes: dict[str, int]
) -> None:
    """The debug executor runs the job inside the killed process: every checkpoint, shard and
    journal publication of both runs is a kill point (the first two are submit's spec files)."""
    points = [f"publish:{n}" for n in spread(submit_passes["publish"], POINTS + 2) if n > 2]
    assert len(points) >= POINTS
    for index, point in enumerate(points):
        home = tmp_path / f"home-{index}"
        killed(home, ["submit", sweep, *DEBUG], point)

        states = assert_consistent(home)
        assert "LOST" in states.values()
        Orch(home).ok("resume", "kills", *DEBUG)

        assert_bit_identical(home, reference)


def test_local_job_process_killed_mid_run_resumes_bit_identical(
    tmp_path: Path, sweep: Path, reference: Path
) -> None:
    """Real job processes (the local executor), each killed at a publication of its own."""
    for index, point in enumerate(["publish:3", "publish:7", "publish:12"]):
        home = tmp_path / f"home-{index}"
        # submit itself publishes 2 files: it lives
        result = run_orch(home, ["submit", sweep, "--executor", "local"], kill_at=point)
        assert result.exit_code == 0

        states = wait_until_not_active(home)
        assert set(states.values()) == {"LOST"}, states
        Orch(home).ok("resume", "kills", *DEBUG)

        assert_bit_identical(home, reference)


def wait_until_not_active(home: Path, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = {run["id"]: run["state"] for run in Orch(home).ok("runs", "--json").json()}
        if not {"PENDING", "RUNNING"} & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.3)


# -- sync and resume ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, sweep: Path, submit_passes: dict[str, int]) -> Path:
    """A home whose submit died inside the second run's job: two attempts, journals not synced."""
    home = tmp_path_factory.mktemp("interrupted") / "home"
    middle_of_second_job = submit_passes["publish"] - 3
    killed(home, ["submit", sweep, *DEBUG], f"publish:{middle_of_second_job}")
    return home


def registry_facts(home: Path) -> dict[str, list[tuple]]:
    queries = {
        "runs": "SELECT id, state, current_step, total_steps FROM runs ORDER BY id",
        "attempts": (
            "SELECT run_id, number, state, journal_seq, exit_code, start_step, pid FROM attempts "
            "ORDER BY run_id, number"
        ),
        "metrics": "SELECT run_id, name, step, value FROM metrics ORDER BY run_id, name, step",
        "checkpoints": "SELECT run_id, step, path, bytes, sha256 FROM checkpoints ORDER BY run_id, step",
        "shards": "SELECT run_id, probe, step, sha256 FROM shards ORDER BY run_id, probe, step",
    }
    with sqlite3.connect(home / "registry.sqlite") as connection:
        return {table: connection.execute(query).fetchall() for table, query in queries.items()}


def test_sync_killed_at_any_statement_then_synced_again(tmp_path: Path, interrupted: Path) -> None:
    whole = tmp_path / "whole"
    shutil.copytree(interrupted, whole)
    count = run_orch(whole, ["sync"]).passes["sql"]
    expected = registry_facts(whole)
    assert {row[2] for row in expected["attempts"]} == {"COMPLETED", "LOST"}

    # set-based: a handful of statements whatever the number of attempts; each is a kill point
    assert count >= 10
    for n in spread(count, POINTS):
        home = tmp_path / f"home-{n}"
        shutil.copytree(interrupted, home)  # journals stay in the original's results: sync only reads them
        killed(home, ["sync"], f"sql:{n}")

        Orch(home).ok("sync")

        assert registry_facts(home) == expected, n


def test_resume_killed_at_any_point_then_resumed_again(
    tmp_path: Path, interrupted: Path, reference: Path
) -> None:
    # the submit killed inside the second run's job, then synced: one run COMPLETED, one LOST
    lost = tmp_path / "lost"
    shutil.copytree(interrupted, lost)
    Orch(lost).ok("sync")
    assert set(assert_consistent(lost).values()) == {"COMPLETED", "LOST"}

    def lost_home(name: str) -> Path:
        """A copy of that home (the journals of its killed submit stay in the original's results,
        which are only read: each resume publishes its attempts in the copy's run folders)."""
        home = tmp_path / name
        shutil.copytree(lost, home)
        return home

    counted = run_orch(lost_home("count"), ["resume", "kills", *DEBUG])
    assert counted.exit_code == 0
    points = [f"sql:{n}" for n in spread(counted.passes["sql"], 16)] + [
        f"publish:{n}" for n in spread(counted.passes["publish"], 4)
    ]
    points += ["submit.committed:1", "submit.scheduler:1"]
    assert len(points) >= POINTS
    for index, point in enumerate(points):
        home = lost_home(f"home-{index}")
        killed(home, ["resume", "kills", *DEBUG], point)

        assert_consistent(home)
        assert_one_active_attempt_at_most(home)
        Orch(home).ok("resume", "kills", *DEBUG)

        assert_bit_identical(home, reference)


# -- cancel ------------------------------------------------------------------------------------

WAITING = """
name: waiting
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [8]}
  training: {steps: 1000000, checkpoint_every: 100000, eval_every: 100000, heartbeat_seconds: 3600}
seeds: 42
"""


def test_cancel_killed_at_any_statement_then_cancelled_again(tmp_path: Path) -> None:
    """42 local jobs, two running and the rest waiting for a slot. Each point takes two runs: one
    cancel counts the statements (fewer as fewer runs are active), the next is killed at the
    point's share of them (the last a little before the end: the count shrinks run by run)."""
    orch = Orch(tmp_path / "home")
    run_ids = orch.ok(
        "submit", write_sweep(tmp_path, "waiting", WAITING), "--executor", "local", "--json"
    ).json()["submitted"]
    try:
        orch.ok("sync")
        for index in range(POINTS):
            counted, victim = run_ids[2 * index], run_ids[2 * index + 1]
            statements = run_orch(orch.home, ["cancel", counted]).passes["sql"]
            point = 1 + round(index * (statements - 12) / (POINTS - 1))
            killed(orch.home, ["cancel", victim], f"sql:{point}")

            orch.ok("cancel", victim)  # what the user types next

            states = {run["id"]: run["state"] for run in orch.ok("runs", "--json").json()}
            assert states[counted] == "CANCELLED"
            assert states[victim] in ("CANCELLED", "LOST"), (point, states[victim])
            assert_one_active_attempt_at_most(orch.home)
    finally:
        orch("cancel", "waiting")
    states = wait_until_not_active(orch.home)
    assert set(states.values()) <= {"CANCELLED", "LOST"}
