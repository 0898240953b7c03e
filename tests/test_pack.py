"""Several runs in one array task (``resources.pack``): a process each, cancelled and resumed
alone; the pack size ``orch plan`` offers from the peak GPU memory similar runs measured."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from jobs.journal import Finished, Heartbeat, read_events, read_heartbeat
from jobs.paths import AttemptPaths
from orchestrator.estimates import ALLOCATOR_SLACK, CUDA_CONTEXT_BYTES, GPU_MEMORY_USABLE
from orchestrator.home import OrchHome
from orchestrator.ingest import JournalRead, apply_journal
from orchestrator.registry.engine import open_registry
from orchestrator.sync import SyncReport
from tests.conftest import Orch, attempt_rows, wait_until, write_sweep

PACKED = """
name: packed
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 2500, checkpoint_every: 100, eval_every: 500, heartbeat_seconds: 0.2}
  resources: {pack: 2, cpus: 2}
grid:
  optimizer.lr: [0.1, 0.05]
"""


def stepped(attempt: dict, step: int) -> bool:
    beat = read_heartbeat(AttemptPaths(Path(attempt["journal_dir"])))
    return beat is not None and beat.step >= step


@pytest.mark.subprocess
def test_packed_runs_share_a_task_and_one_is_cancelled_and_resumed_alone(orch: Orch, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "packed", PACKED)
    orch.ok("submit", sweep)
    first = attempt_rows(orch)
    assert len({attempt["job_id"] for attempt in first}) == 1  # one task holds both runs
    assert sorted(attempt["pack_slot"] for attempt in first) == [0, 1]
    wait_until(lambda: all(stepped(attempt, 120) for attempt in first))  # past a checkpoint
    pids = {
        event.payload.pid
        for attempt in first
        for event in read_events(AttemptPaths(Path(attempt["journal_dir"])))
        if event.kind == "started"
    }
    assert len(pids) == 2  # a process each

    cancelled, kept = first[0], first[1]
    orch.ok("cancel", cancelled["run_id"])
    wait_until(lambda: not {"RUNNING", "PENDING"} & set(orch.ok("status", "--json").json()[0]["counts"]))
    states = {attempt["run_id"]: attempt["state"] for attempt in attempt_rows(orch)}
    assert states == {cancelled["run_id"]: "CANCELLED", kept["run_id"]: "COMPLETED"}
    cancelled_journal = read_events(AttemptPaths(Path(cancelled["journal_dir"])))
    assert not any(isinstance(event.payload, Finished) for event in cancelled_journal)
    assert Path(cancelled["stderr_path"]).parent == Path(cancelled["journal_dir"])  # its own log

    orch.ok("resume", cancelled["run_id"], "--wait")
    again = [attempt for attempt in attempt_rows(orch) if attempt["number"] == 2]
    assert [attempt["run_id"] for attempt in again] == [cancelled["run_id"]]
    assert again[0]["state"] == "COMPLETED" and again[0]["pack_slot"] is None  # alone in its task
    assert again[0]["start_step"] > 0  # from the cancelled attempt's checkpoint
    runs = {run["id"]: run for run in orch.ok("runs", "--json").json()}
    assert all(run["state"] == "COMPLETED" for run in runs.values())


SIZED = """
name: sized
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 5, eval_every: 5, checkpoint_every: 5, device: cpu}
  resources: {gpus: 1, pack: PACK}
  cluster: CLUSTER
grid:
  optimizer.lr: [0.1]
"""


def sized(tmp_path: Path, pack: int, cluster: str) -> Path:
    text = SIZED.replace("PACK", str(pack)).replace("CLUSTER", cluster)
    return write_sweep(tmp_path, f"sized-{cluster}-{pack}", text)


def test_plan_offers_the_pack_one_gpu_holds_and_submit_refuses_more(orch: Orch, tmp_path: Path) -> None:
    """The peak is a GPU's figure, which this machine cannot measure: it is set on a completed
    attempt as a GPU job's journal would have reported it."""
    orch.ok("submit", sized(tmp_path, 1, "local"), "--executor", "debug")
    peak = 1_500 * 2**20
    with sqlite3.connect(orch.registry) as connection:
        connection.execute("UPDATE attempts SET peak_gpu_bytes = ?", (peak,))
    # the mini profile's GPU: 11G (a GTX 1080 Ti)
    expected = int(11 * 2**30 * GPU_MEMORY_USABLE // (peak * ALLOCATOR_SLACK + CUDA_CONTEXT_BYTES))
    assert expected == 4

    row = orch.ok("plan", sized(tmp_path, 2, "mini"), "--json").json()["runs"][0]
    assert (row["pack"], row["pack_offered"]) == (2, expected)
    assert f"2 (fits {expected})" in orch.ok("plan", sized(tmp_path, 2, "mini")).stdout

    refused = orch("submit", sized(tmp_path, expected + 1, "mini"))
    assert refused.exit_code == 2
    assert "resources.pack" in refused.stderr and f"accepted: 1..{expected}" in refused.stderr
    assert "Traceback" not in refused.stderr
    with sqlite3.connect(orch.registry) as connection:  # nothing recorded for the refused sweep
        assert connection.execute("SELECT count(*) FROM sweeps WHERE name LIKE 'sized-mini%'").fetchone() == (
            0,
        )


def test_peak_gpu_memory_is_the_largest_a_journal_reported(orch: Orch, tmp_path: Path) -> None:
    orch.ok("submit", sized(tmp_path, 1, "local"), "--executor", "debug")
    from sqlalchemy.orm import Session

    from orchestrator.registry.models import Attempt

    engine = open_registry(OrchHome(orch.home))
    with Session(engine) as session:
        attempt = session.query(Attempt).one()
        beat = Heartbeat(time.time(), 5, 5, 1.0, peak_gpu_bytes=300)
        finished = read_events(AttemptPaths(Path(attempt.journal_dir)))[-1]
        assert isinstance(finished.payload, Finished) and finished.payload.peak_gpu_bytes is None  # a CPU
        apply_journal(attempt, JournalRead([], beat), None, SyncReport())  # type: ignore[arg-type]
        assert attempt.peak_gpu_bytes == 300
        lower = Heartbeat(time.time() + 1, 5, 5, 1.0, peak_gpu_bytes=200)
        apply_journal(attempt, JournalRead([], lower), None, SyncReport())  # type: ignore[arg-type]
        assert attempt.peak_gpu_bytes == 300
