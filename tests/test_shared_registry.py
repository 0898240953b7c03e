"""A lab's registry shared by several people: four users' ``orch`` processes submit overlapping
sweeps at once and wait on them (each syncing as it waits), against one registry, on SQLite and on
a real PostgreSQL server. Each user has a home of their own (their results); ``ORCH_DB_URL`` names
the shared registry; ``LOGNAME`` is whom ``getpass.getuser()`` reports, as on a login node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Orch, write_sweep

pytestmark = [pytest.mark.both_backends, pytest.mark.subprocess]

USERS = ("alice", "bob", "carol", "dave")
LEARNING_RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
STEPS = 20
SWEEP = """name: {name}
include: [problems/digits_mlp.yaml]
base:
  model: {{hidden: [16]}}
  training: {{steps: {steps}, checkpoint_every: 10, eval_every: 10}}
grid: {{optimizer.lr: [{rates}]}}
"""


def users_sweep(folder: Path, index: int, user: str) -> Path:
    """Three learning rates from a window that overlaps the next user's by two."""
    rates = [LEARNING_RATES[(index + offset) % len(LEARNING_RATES)] for offset in range(3)]
    text = SWEEP.format(name=f"{user}-lr", steps=STEPS, rates=", ".join(map(str, rates)))
    return write_sweep(folder, f"{user}-lr", text)


def start_orch(user: str, home: Path, arguments: list[str], registry_url: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "ORCH_DB_URL": registry_url, "LOGNAME": user, "USER": user}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--home", str(home), *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def shared_registry(orch: Orch, tmp_path: Path) -> Orch:
    """The test's PostgreSQL database, or an SQLite file outside every user's home."""
    if orch.db_url is not None:
        return orch
    folder = tmp_path / "shared"
    folder.mkdir()
    return Orch(folder, f"sqlite:///{folder / 'registry.sqlite'}")


def test_four_users_submitting_overlapping_sweeps_at_once(orch: Orch, tmp_path: Path) -> None:
    orch = shared_registry(orch, tmp_path)
    registry_url = orch.url
    sweeps = {user: users_sweep(tmp_path, index, user) for index, user in enumerate(USERS)}
    homes = {user: tmp_path / user / "home" for user in USERS}
    started = time.monotonic()

    processes = {
        user: start_orch(
            user, homes[user], ["submit", sweeps[user], "--executor", "local", "--wait"], registry_url
        )
        for user in USERS
    }
    outcomes = {user: process.communicate(timeout=600) for user, process in processes.items()}
    elapsed = time.monotonic() - started

    errors = {
        user: stderr
        for user, (_, stderr) in outcomes.items()
        if processes[user].returncode != 0 or "Traceback" in stderr
    }
    assert errors == {}, errors
    attempts = orch.rows("SELECT run_id, owner, state, end_step FROM attempts ORDER BY run_id")
    runs = orch.rows("SELECT id, state, current_step FROM runs ORDER BY id")
    metrics = orch.rows(
        "SELECT run_id, count(*) AS count FROM metrics WHERE name = 'train_loss' "
        "GROUP BY run_id ORDER BY run_id"
    )
    checkpoints = orch.rows(
        "SELECT run_id, count(*) AS count FROM checkpoints GROUP BY run_id ORDER BY run_id"
    )
    attempts_per_run = Counter(attempt["run_id"] for attempt in attempts)
    duplicates = sum(count - 1 for count in attempts_per_run.values())
    print(
        f"\n{len(USERS)} users, {len(runs)} runs, {len(attempts)} attempts, {duplicates} duplicate attempts, "
        f"{len(errors)} errors, owners {dict(Counter(attempt['owner'] for attempt in attempts))}, "
        f"{elapsed:.1f} s ({orch.url.split(':')[0]})"
    )
    assert len(runs) == len(LEARNING_RATES) and duplicates == 0
    assert {run["state"] for run in runs} == {"COMPLETED"}
    assert {run["current_step"] for run in runs} == {STEPS}
    assert {(attempt["state"], attempt["end_step"]) for attempt in attempts} == {("COMPLETED", STEPS)}
    assert {attempt["owner"] for attempt in attempts} <= set(USERS)
    # no lost update: every metric and checkpoint each job journaled is in the registry, once
    assert [row["count"] for row in metrics] == [STEPS] * len(runs)
    assert [row["count"] for row in checkpoints] == [STEPS // 10] * len(runs)
    for user in USERS:  # everyone sees the whole registry, every sweep complete
        status = start_orch(user, homes[user], ["status", "--json"], registry_url).communicate()[0]
        assert {sweep["sweep"]: sweep["counts"] for sweep in json.loads(status)} == {
            f"{name}-lr": {"COMPLETED": 3} for name in USERS
        }


def test_a_users_sync_leaves_another_users_attempts_to_them(orch: Orch, tmp_path: Path) -> None:
    """Held-back attempts and open attempts of alice are not bob's to launch, ingest or settle:
    bob's sync checks none of them, and alice's next command submits hers."""
    from tests.killpoints import KILLED, run_orch

    orch = shared_registry(orch, tmp_path)
    registry_url = orch.url
    sweep = write_sweep(tmp_path, "alone", SWEEP.format(name="alone", steps=STEPS, rates="0.1"))
    environment = {"LOGNAME": "alice", "USER": "alice", "ORCH_DB_URL": registry_url}
    killed = run_orch(
        tmp_path / "alice" / "home",
        ["submit", sweep, "--executor", "local"],
        kill_at="submit.committed:1",
        environment=environment,
    )
    assert killed.exit_code == KILLED
    bob = start_orch("bob", tmp_path / "bob" / "home", ["sync", "--json"], registry_url)
    stdout, stderr = bob.communicate(timeout=120)
    assert bob.returncode == 0, stderr
    assert '"submitted": 0' in stdout and '"attempts_checked": 0' in stdout
    assert {row["held_back"] for row in orch.rows("SELECT held_back FROM attempts")} == {True}
    bob_cancels = start_orch("bob", tmp_path / "bob" / "home", ["cancel", "alone"], registry_url)
    _, refusal = bob_cancels.communicate(timeout=120)
    assert bob_cancels.returncode == 2 and "is alice's); nothing was cancelled" in refusal, refusal

    alice = start_orch("alice", tmp_path / "alice" / "home", ["status", "--watch"], registry_url)
    assert alice.communicate(timeout=300)[0] and alice.returncode == 0
    assert {row["state"] for row in orch.rows("SELECT state FROM attempts")} == {"COMPLETED"}
