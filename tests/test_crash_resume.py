"""SIGKILL a running local job mid-training, resume it, and get bit-identical results."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from jobs.journal import CheckpointWritten, Started, read_events
from jobs.paths import AttemptPaths
from tests.conftest import Orch, write_sweep

pytestmark = [pytest.mark.subprocess, pytest.mark.beside_slurm]

STEPS = 2000
SWEEP = f"""
name: crash
include: [problems/digits_mlp.yaml]
base:
  model:
    hidden: [512, 512]  # a few ms a step: the kill lands long before the end
  training:
    steps: {STEPS}
    checkpoint_every: 250
    eval_every: 50
    heartbeat_seconds: 0.2
"""
WAIT_SECONDS = 120


def wait_for_first_checkpoint(run_dir: Path) -> int:
    """The pid of the running job, once it has published a checkpoint."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for attempt_dir in (run_dir / "attempts").glob("*"):
            events = [event.payload for event in read_events(AttemptPaths(attempt_dir))]
            started = [payload for payload in events if isinstance(payload, Started)]
            if started and any(isinstance(payload, CheckpointWritten) for payload in events):
                return started[0].pid
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {run_dir} after {WAIT_SECONDS} s")


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, f"process {pid} survived SIGKILL"
        time.sleep(0.05)


def wait_for_counts(orch: Orch, expected: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + WAIT_SECONDS
    counts = orch.ok("status", "--json").json()[0]["counts"]
    while counts != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = orch.ok("status", "--json").json()[0]["counts"]
    return counts


def metric_rows(registry: Path, run_id: str) -> list[tuple[str, int, float]]:
    with sqlite3.connect(registry) as connection:
        query = "SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY name, step"
        return connection.execute(query, (run_id,)).fetchall()


def test_killed_job_resumes_to_bit_identical_result(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "crash", SWEEP)
    crashed, reference = Orch(tmp_path / "crashed"), Orch(tmp_path / "reference")

    run_id = crashed.ok("submit", sweep, "--executor", "local", "--json").json()["submitted"][0]
    run_dir = Path(crashed.ok("show", run_id, "--json").json()["run_dir"])
    job_pid = wait_for_first_checkpoint(run_dir)
    os.kill(job_pid, signal.SIGKILL)
    wait_until_gone(job_pid)

    assert wait_for_counts(crashed, {"LOST": 1}) == {"LOST": 1}  # once submitit's controller noticed too
    resumed = crashed("resume", "crash", "--wait", "--json")
    reference.ok("submit", sweep, "--executor", "debug")

    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["final_states"] == {run_id: "COMPLETED"}
    attempts = crashed.ok("show", run_id, "--json").json()["attempts"]
    assert [attempt["state"] for attempt in attempts] == ["LOST", "COMPLETED"]
    assert 0 < attempts[1]["start_step"] < STEPS  # continued from a checkpoint, not from scratch

    final_checkpoint = f"runs/{run_id}/checkpoints/step_{STEPS:09d}.safetensors"
    assert_bit_identical_checkpoints(
        crashed.home / "results" / final_checkpoint, reference.home / "results" / final_checkpoint
    )

    crashed_metrics, reference_metrics = (
        metric_rows(crashed.registry, run_id),
        metric_rows(reference.registry, run_id),
    )
    assert len(reference_metrics) >= 2 * STEPS  # train loss and accuracy at every step
    assert crashed_metrics == reference_metrics  # floats compared exactly


def assert_bit_identical_checkpoints(checkpoint: Path, reference: Path) -> None:
    """Both safetensors files hold the same tensors, bit for bit (NaN payloads included)."""
    tensors, reference_tensors = load_file(checkpoint), load_file(reference)
    assert tensors.keys() == reference_tensors.keys()
    for name, tensor in reference_tensors.items():
        assert tensors[name].dtype == tensor.dtype
        assert (
            tensors[name].view(-1).view(dtype=_bits(tensor)).equal(tensor.view(-1).view(dtype=_bits(tensor)))
        ), name


def _bits(tensor):  # an integer dtype of the same width: compare bit patterns, NaN included
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_final_journal_event_wins_over_the_guess_that_ended_the_attempt(tmp_path: Path) -> None:
    """The executor's word ends an attempt as LOST while its job lives on (a node's failure that the
    process survived; here its recorded pids are swapped for dead ones). When the job's journal
    then ends in a finished event, the attempt and its run are COMPLETED, not left LOST."""
    orch = Orch(tmp_path / "home")
    run_id = orch.ok("submit", write_sweep(tmp_path, "crash", SWEEP), "--executor", "local", "--json").json()[
        "submitted"
    ][0]
    run_dir = Path(orch.ok("show", run_id, "--json").json()["run_dir"])
    job_pid = wait_for_first_checkpoint(run_dir)
    orch.ok("sync")  # the journal's Started event recorded: its pid is the one swapped next
    with sqlite3.connect(orch.registry) as registry:
        registry.execute(
            "UPDATE attempts SET pid = ?, job_id = ? WHERE run_id = ?", (dead_pid(), str(dead_pid()), run_id)
        )

    assert orch.ok("status", "--json").json()[0]["counts"] == {"LOST": 1}  # the guess
    wait_until_gone(job_pid)  # the job it guessed wrong about finishes
    counts = wait_for_counts(orch, {"COMPLETED": 1})

    assert counts == {"COMPLETED": 1}
    [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
    assert (attempt["state"], attempt["reason"], attempt["end_step"]) == ("COMPLETED", None, STEPS)
    with sqlite3.connect(orch.registry) as registry:
        assert registry.execute("SELECT closed_by_guess FROM attempts").fetchall() == [(0,)]


def test_a_second_process_refused_by_the_run_folder_leaves_the_outcome_to_the_survivor(
    tmp_path: Path,
) -> None:
    """The scheduler starts the attempt's job again while its first process still works (a node
    failure the process survived): the second process finds the run folder held, stops and
    journals why, and the attempt shows that failure; when the survivor then finishes, its final
    event wins and the run is COMPLETED."""
    orch = Orch(tmp_path / "home")
    run_id = orch.ok("submit", write_sweep(tmp_path, "crash", SWEEP), "--executor", "local", "--json").json()[
        "submitted"
    ][0]
    [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
    run_dir = Path(orch.ok("show", run_id, "--json").json()["run_dir"])
    survivor_pid = wait_for_first_checkpoint(run_dir)
    os.kill(survivor_pid, signal.SIGSTOP)  # it cannot finish while the second process is refused
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from jobs.entry import AttemptRequest, run_attempt; "
                "run_attempt(AttemptRequest(*sys.argv[1:]))",
                run_id,
                str(run_dir),
                attempt["key"],
            ],
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
        )
        assert second.returncode != 0 and "RunFolderBusy" in second.stderr
        [refused] = orch.ok("show", run_id, "--json").json()["attempts"]
        assert (
            refused["state"] == "FAILED"
            and refused["reason"].startswith("RunFolderBusy: ")
            and f"pid {survivor_pid}" in refused["reason"]
        )
    finally:
        os.kill(survivor_pid, signal.SIGCONT)

    assert wait_for_counts(orch, {"COMPLETED": 1}) == {"COMPLETED": 1}
    [finished] = orch.ok("show", run_id, "--json").json()["attempts"]
    assert (finished["state"], finished["reason"], finished["end_step"]) == ("COMPLETED", None, STEPS)
