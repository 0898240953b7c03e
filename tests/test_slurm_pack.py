"""Runs packed several to one array task on the mini-cluster: 8 runs, 4 per task -> 2 Slurm jobs;
a member killed mid-way fails alone and is resumed alone; a warning signal (preemption, time limit)
checkpoints and requeues every member of its task."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from jobs.journal import Requeued, read_events, read_heartbeat
from jobs.paths import AttemptPaths
from tests.cluster.minicluster import MiniCluster, slurm_run
from tests.conftest import Orch, attempt_rows, wait_until, write_sweep

pytestmark = pytest.mark.slurm

PACKED = """
name: packed
include: [problems/digits_mlp.yaml]
base:
  cluster: mini
  model: {hidden: [64]}
  training: {steps: 1500, checkpoint_every: 100, eval_every: 500, heartbeat_seconds: 0.5, device: cpu}
  resources: {gpus: 1, gpu_type: 1080ti, pack: 4, cpus: 1, mem: 3900M}
grid:
  optimizer.lr: [0.1, 0.05, 0.02, 0.01]
seeds: 2
"""


def step_of(attempt: dict) -> int:
    beat = read_heartbeat(AttemptPaths(Path(attempt["journal_dir"])))
    return beat.step if beat is not None else -1


def pid_of(attempt: dict) -> int:
    events = read_events(AttemptPaths(Path(attempt["journal_dir"])))
    return [event.payload.pid for event in events if event.kind == "started"][-1]


def test_eight_runs_packed_four_per_task_one_killed_and_resumed_alone(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    sweep = write_sweep(tmp_path, "packed", PACKED)
    assert orch.ok("submit", sweep, "--json").json()["submitted"].__len__() == 8
    first = attempt_rows(orch)
    jobs = sorted({attempt["job_id"] for attempt in first})
    assert len(jobs) == 2 and len({job.split("_")[0] for job in jobs}) == 1  # one array of 2 tasks
    assert [attempt["pack_slot"] for attempt in first] == [0, 1, 2, 3] * 2
    script = next((orch.home / "results" / "submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --gres=gpu:1080ti:1" in script

    one, other = ([a for a in first if a["job_id"] == job] for job in jobs)
    killed = one[1]
    # the killed run past its checkpoint at 100, every run training (its signal handler in place) and
    # none near its end: members of one task start seconds apart and train at different speeds
    wait_until(lambda: step_of(killed) >= 150 and all(step_of(attempt) >= 1 for attempt in first))
    assert len({pid_of(attempt) for attempt in first}) == 8  # a process each
    os.kill(pid_of(killed), signal.SIGKILL)  # the OOM killer's way: no last words
    # the other task gets the warning signal a time limit or a preemption sends
    subprocess.run(["scancel", "--signal=USR2", other[0]["job_id"]], check=True)

    wait_until(lambda: not {"RUNNING", "PENDING"} & set(orch.ok("status", "--json").json()[0]["counts"]))
    states = {attempt["run_id"]: attempt["state"] for attempt in attempt_rows(orch)}
    assert states.pop(killed["run_id"]) == "FAILED"
    assert set(states.values()) == {"COMPLETED"}
    shown = orch.ok("show", killed["run_id"], "--json").json()
    assert "killed by SIGKILL" in shown["attempts"][0]["reason"]
    for attempt in other:  # each member checkpointed, journaled its requeue and continued
        journal = read_events(AttemptPaths(Path(attempt["journal_dir"])))
        assert any(isinstance(event.payload, Requeued) for event in journal)
    requeued = {attempt["run_id"]: attempt["requeues"] for attempt in attempt_rows(orch)}
    assert all(requeued[attempt["run_id"]] >= 1 for attempt in other)
    accounting = slurm_run(
        mini_cluster, "sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", jobs[0].split("_")[0]
    ).stdout

    resumed = orch("resume", "packed", "--wait", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["submitted"] == [killed["run_id"]]
    last = [attempt for attempt in attempt_rows(orch) if attempt["number"] == 2]
    assert [attempt["run_id"] for attempt in last] == [killed["run_id"]]
    assert last[0]["state"] == "COMPLETED" and last[0]["pack_slot"] is None  # a task of its own
    assert last[0]["job_id"] not in jobs and last[0]["start_step"] >= 100  # from its checkpoint
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 8}
    print(accounting)
