"""A populated orch home for the dashboard's tests (tests/test_serve.py, tests/test_browser.py).

Three sweeps, all run for real: ``tiny`` (two digits runs with a line probe, on the debug
executor, then ``orch analyze --figure lines`` and ``orch curves``: figures in the run folders),
an injection sweep whose swept values are markup (``container.image``, which the debug executor
does not use) and whose name is made markup afterwards (orch refuses such names; a registry
written by another program, a lab's shared PostgreSQL, may hold anything), and ``live``: one
long run on the local executor, synced while it trains and then killed, so that the registry
says RUNNING as it does between two syncs while the job runs. A test moves it on by publishing a
newer heartbeat into its journal, as the job would.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.journal import Heartbeat, JournalWriter
from jobs.paths import AttemptPaths
from orchestrator.executors.processes import process_alive, process_tree
from tests.conftest import Orch, wait_until, write_sweep

SCRIPT_INJECTION = "<script>alert(1)</script>"
ATTRIBUTE_INJECTION = '"><img src=x onerror=alert(1)>'
INJECTIONS = (SCRIPT_INJECTION, ATTRIBUTE_INJECTION)
INJECTION_SWEEP = SCRIPT_INJECTION  # the injection sweep's name once renamed
LIVE_TOTAL_STEPS = 1_000_000

TINY = """
name: tiny
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 60, checkpoint_every: 30, eval_every: 10}
  probes:
    - {type: line, every: 20}
grid:
  optimizer.lr: [0.1, 0.05]
"""
INJECTED = f"""
name: inj
include: [problems/digits_mlp.yaml]
base:
  model: {{hidden: [8]}}
  training: {{steps: 20, checkpoint_every: 20, eval_every: 10}}
grid:
  container.image: {list(INJECTIONS)!r}
"""
LIVE = f"""
name: live
include: [problems/digits_mlp.yaml]
base:
  model: {{hidden: [8]}}
  training: {{steps: {LIVE_TOTAL_STEPS}, checkpoint_every: {LIVE_TOTAL_STEPS}, eval_every: {LIVE_TOTAL_STEPS},
             heartbeat_seconds: 0.2}}
"""


@dataclass(frozen=True)
class ServedHome:
    root: Path
    tiny_runs: tuple[str, ...]  # by learning rate: 0.1, then 0.05
    injected_runs: tuple[str, ...]
    live_run: str
    live_journal: Path  # the journal folder of the live run's attempt

    @property
    def registry(self) -> Path:
        return self.root / "registry.sqlite"

    def publish_heartbeat(self, step: int, steps_per_second: float = 50.0) -> None:
        """A newer heartbeat of the live run, written as its job writes one (jobs/journal.py)."""
        JournalWriter(AttemptPaths(self.live_journal)).heartbeat(
            Heartbeat(time.time(), step, LIVE_TOTAL_STEPS, steps_per_second)
        )


def build_served_home(folder: Path) -> ServedHome:
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("ORCH_DB_URL", "ORCH_HOME"):
            patch.delenv(variable, raising=False)
        orch = Orch(folder / "home")
        orch.ok("submit", write_sweep(folder, "tiny", TINY), "--executor", "debug")
        orch.ok("submit", write_sweep(folder, "inj", INJECTED), "--executor", "debug")
        tiny = tuple(run["id"] for run in orch.ok("runs", "--sweep", "tiny", "--json").json())
        injected = tuple(run["id"] for run in orch.ok("runs", "--sweep", "inj", "--json").json())
        orch.ok("analyze", "tiny", "--figure", "lines")
        orch.ok("curves", tiny[0])
        live_run, live_journal = start_and_freeze_live_run(orch, folder)
    served = ServedHome(orch.home, tiny, injected, live_run, live_journal)
    make_hostile(served)
    return served


def start_and_freeze_live_run(orch: Orch, folder: Path) -> tuple[str, Path]:
    """Submit the live run on the local executor, sync until the registry says it trains, then
    kill its job: nothing syncs afterwards, so the registry keeps saying RUNNING."""
    (run_id,) = orch.ok("submit", write_sweep(folder, "live", LIVE), "--executor", "local", "--json").json()[
        "submitted"
    ]

    def training() -> bool:
        (live,) = [view for view in orch.ok("status", "--json").json() if view["sweep"] == "live"]
        return any(item["state"] == "RUNNING" and item["step"] > 0 for item in live["active"])

    wait_until(training, timeout_seconds=120, poll_seconds=0.3)
    with sqlite3.connect(orch.registry) as connection:
        job_id, journal_dir = connection.execute(
            "SELECT job_id, journal_dir FROM attempts WHERE run_id = ?", (run_id,)
        ).fetchone()
    processes = [pid for pid in process_tree(int(job_id)) if process_alive(pid, "submitit")]
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(process_alive(pid, "submitit") for pid in processes), timeout_seconds=30)
    return run_id, Path(journal_dir)


def make_hostile(served: ServedHome) -> None:
    """What a registry and run folders may hold that orch itself would not write: a sweep named
    with markup, a reason and a log line with markup, and a figure that is a link out of its
    run's folder (to the registry)."""
    with sqlite3.connect(served.registry) as connection:
        connection.execute("UPDATE sweeps SET name = ? WHERE name = 'inj'", (INJECTION_SWEEP,))
        connection.execute(
            "UPDATE attempts SET reason = ? WHERE run_id = ?", (ATTRIBUTE_INJECTION, served.injected_runs[0])
        )
        (stderr_path,) = connection.execute(
            "SELECT stderr_path FROM attempts WHERE run_id = ?", (served.live_run,)
        ).fetchone()
    with open(stderr_path, "a") as log:
        log.write(f"a config value printed by the job: {SCRIPT_INJECTION}\n")
    figures = served.root / "results" / "runs" / served.tiny_runs[0] / "figures"
    (figures / "escape.png").symlink_to(served.registry)


@dataclass(frozen=True)
class FileState:
    path: str
    size: int
    mtime_ns: int
    sha256: str


def tree_state(root: Path) -> list[FileState]:
    """Every file and folder under ``root``: path, size, modification time and content hash."""
    states = []
    for folder, folders, files in os.walk(root):
        for name in sorted(folders + files):
            path = Path(folder) / name
            status = path.lstat()
            digest = (
                hashlib.sha256(path.read_bytes()).hexdigest()
                if path.is_file() and not path.is_symlink()
                else ""
            )
            states.append(FileState(str(path.relative_to(root)), status.st_size, status.st_mtime_ns, digest))
    return sorted(states, key=lambda state: state.path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
