"""The Slurm path on a real single-node cluster (slurmctld, slurmd, slurmdbd, MariaDB, munge)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest

from orchestrator import launch
from orchestrator.executors.slurm import max_array_size
from tests.cluster.minicluster import MiniCluster, kill_slurmd, restart_slurmd, slurm_run
from tests.conftest import SWEEPS_DIR, Orch, write_sweep

pytestmark = pytest.mark.slurm

GPU_SWEEP = SWEEPS_DIR / "slurm_gpu.yaml"
WAIT_SECONDS = 300


def slurm_sweep(tmp_path: Path, name: str, base: str, grid: str = "") -> Path:
    text = f"name: {name}\ninclude: [problems/digits_mlp.yaml]\nbase:\n  cluster: mini\n{base}"
    return write_sweep(tmp_path, name, text + (f"grid:\n{grid}" if grid else ""))


def attempts_of(orch: Orch) -> list[dict]:
    return [
        orch.ok("show", run["id"], "--json").json()["attempts"][-1]
        for run in orch.ok("runs", "--json").json()
    ]


def wait_until(condition, timeout_seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(1.0)


def test_gpu_sweep_runs_as_one_array_with_parallelism_cap(orch: Orch, mini_cluster: MiniCluster) -> None:
    submitted = orch("submit", GPU_SWEEP, "--wait", "--json")

    assert submitted.exit_code == 0, submitted.stdout + submitted.stderr
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 6}
    job_ids = [attempt["job_id"] for attempt in attempts_of(orch)]
    assert len(set(job_ids)) == 6
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 1  # one array
    assert sorted(attempt["array_task"] for attempt in attempts_of(orch)) == [0, 1, 2, 3, 4, 5]
    script = next((orch.home / "results" / "submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-5%2" in script and "#SBATCH --gres=gpu:1080ti:1" in script
    assert "#SBATCH --partition=test" in script and "#SBATCH --signal=USR2@30" in script
    names = slurm_run(
        mini_cluster, "sacct", "-X", "-n", "-P", "-o", "JobName", "-j", job_ids[0].split("_")[0]
    ).stdout.split()
    # squeue says what a job is
    assert names and all(name.startswith("orch:slurm-gpu:") and name.endswith(".0+0") for name in names)
    assert_usage_is_sacct_s(orch, mini_cluster, job_ids)


def assert_usage_is_sacct_s(orch: Orch, cluster: MiniCluster, job_ids: list[str]) -> None:
    """``orch usage``'s GPU-hours are accounting's: ElapsedRaw x the allocated GPUs of each job; and
    ``orch plan`` projects the GPU-hours of runs like these from their measured speed."""
    lines = slurm_run(
        cluster, "sacct", "-X", "-n", "-P", "-o", "JobID,ElapsedRaw,AllocTRES", "-j", job_ids[0].split("_")[0]
    ).stdout.split()
    recorded = {job_id: (int(elapsed), tres) for job_id, elapsed, tres in (line.split("|") for line in lines)}
    assert all("gres/gpu=1" in recorded[job_id][1] for job_id in job_ids)
    expected_hours = sum(recorded[job_id][0] for job_id in job_ids) / 3600

    usage = orch.ok("usage", "slurm-gpu", "--json").json()
    assert usage["sources"] == {"sacct": 6} and usage["total"]["attempts"] == 6
    assert usage["total"]["gpu_hours"] == pytest.approx(expected_hours, abs=1e-4)
    assert usage["total"]["failed_share"] == 0.0 and usage["total"]["mean_queue_wait_s"] >= 0
    by_lr = orch.ok("usage", "--by", "optimizer.lr", "--json").json()["groups"]
    assert sorted(group["group"] for group in by_lr) == ["0.02", "0.05", "0.1"]
    assert sum(group["attempts"] for group in by_lr) == 6
    assert "gpu_hours" in orch.ok("usage", "--by", "partition").stdout

    more_seeds = GPU_SWEEP.read_text().replace("seeds: 2", "seeds: 3")
    planned = orch.ok("plan", write_sweep(orch.home, "slurm-gpu-more", more_seeds), "--json").json()
    assert planned["runs_estimated"] >= 3 and planned["projected_gpu_hours"] > 0


def test_sweep_larger_than_max_array_size_goes_out_in_chunks(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    set_max_array_size(mini_cluster, 5)
    try:
        sweep = slurm_sweep(
            tmp_path,
            "chunked",
            "  training: {steps: 20, checkpoint_every: 10, eval_every: 10}\n  model: {hidden: [8]}\n",
            "  optimizer.lr: [0.1, 0.05, 0.02]\nseeds: 4\n",
        )
        result = orch("submit", sweep, "--wait", "--json")
    finally:
        set_max_array_size(mini_cluster, 1001)

    assert result.exit_code == 0, result.stderr
    job_ids = [attempt["job_id"] for attempt in attempts_of(orch)]
    assert len(job_ids) == 12 and len(set(job_ids)) == 12
    assert sorted(Counter(job_id.split("_")[0] for job_id in job_ids).values()) == [2, 5, 5]
    assert max(attempt["array_task"] for attempt in attempts_of(orch)) == 4


def test_failing_task_is_failed_with_traceback_in_logs(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """A diverging run: FAILED as in sacct, at the step its training reached (not 0/300)."""
    sweep = slurm_sweep(
        tmp_path, "diverges", "  optimizer: {lr: 1000.0}\n  training: {steps: 300, eval_every: 25}\n"
    )

    result = orch("submit", sweep, "--wait", "--json")

    assert result.exit_code == 1
    [run] = orch.ok("runs", "--json").json()
    assert run["state"] == "FAILED"
    attempt = orch.ok("show", run["id"], "--json").json()["attempts"][0]
    assert attempt["reason"].startswith("FloatingPointError: training loss is nan")
    failing_step = int(attempt["reason"].split(" at step ")[1].split()[0])
    assert run["step"] == attempt["end_step"] == failing_step - 1 > 0
    wait_until(lambda: sacct_states(mini_cluster, attempt["job_id"]) == ["FAILED"], timeout_seconds=60)
    stderr = orch.ok("logs", run["id"], "--stderr").stdout
    assert "Traceback (most recent call last)" in stderr and "FloatingPointError" in stderr


def test_task_over_its_memory_limit_is_out_of_memory(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.executors.slurm import SlurmBackend

    # Slurm's 10 s: in the first second after the kill Slurm still says FAILED (exit code 9), and
    # OUT_OF_MEMORY only once the kill is accounted; a sync that early ends the attempt FAILED
    # (a known race, not yet handled)
    monkeypatch.setattr(SlurmBackend, "poll_seconds", 10.0)
    sweep = slurm_sweep(tmp_path, "oom", "  resources: {mem: 60M}\n")

    orch("submit", sweep, "--wait")

    [run] = orch.ok("runs", "--json").json()
    assert run["state"] == "OUT_OF_MEMORY"
    assert "OUT_OF_MEMORY" in orch.ok("show", run["id"], "--json").json()["attempts"][0]["reason"]


def test_cancel_calls_scancel(orch: Orch, mini_cluster: MiniCluster, tmp_path: Path) -> None:
    sweep = slurm_sweep(tmp_path, "cancelled", "  training: {steps: 10000000, heartbeat_seconds: 0.5}\n")
    run_id = orch.ok("submit", sweep, "--json").json()["submitted"][0]
    wait_until(lambda: orch.ok("show", run_id, "--json").json()["step"] > 0)

    assert orch.ok("cancel", "cancelled", "--json").json() == {"cancelled": [run_id]}

    job_id = orch.ok("show", run_id, "--json").json()["attempts"][0]["job_id"]
    wait_until(lambda: sacct_state(mini_cluster, job_id).startswith("CANCELLED"))
    assert orch.ok("runs", "--json").json()[0]["state"] == "CANCELLED"


def test_crash_between_commit_and_sbatch_record_is_recovered_not_doubled(
    orch: Orch, mini_cluster: MiniCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_get_backend = launch.get_backend

    class SubmitterDiesAfterSbatch:
        def __init__(self, name: str) -> None:
            self.backend = real_get_backend(name)

        def submit(self, array):
            self.backend.submit(array)
            raise KeyboardInterrupt  # the login-node process dies before it records the job ids

    monkeypatch.setattr(launch, "get_backend", SubmitterDiesAfterSbatch)
    assert orch("submit", GPU_SWEEP).exit_code == 130
    monkeypatch.undo()

    with sqlite3.connect(orch.registry) as registry:
        assert registry.execute("SELECT DISTINCT state, job_id FROM attempts").fetchall() == [
            ("PENDING", None)
        ]
    again = orch.ok("submit", GPU_SWEEP, "--wait", "--json").json()

    assert again["submitted"] == []  # the six attempts are still active: nothing is submitted twice
    wait_until(lambda: orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 6})
    assert all(attempt["job_id"] for attempt in attempts_of(orch))  # found by the array's job name


def test_attempt_unknown_to_slurm_becomes_lost_and_resumes(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    sweep = slurm_sweep(
        tmp_path,
        "forgotten",
        # about 20 s of training: still training a few seconds after step 200, when it is killed
        "  model: {hidden: [1024, 1024, 1024]}\n  training: {steps: 1500, checkpoint_every: 100, "
        "heartbeat_seconds: 0.5}\n",
    )
    run_id = orch.ok("submit", sweep, "--json").json()["submitted"][0]
    wait_until(lambda: orch.ok("show", run_id, "--json").json()["step"] >= 200)
    job_id = orch.ok("show", run_id, "--json").json()["attempts"][0]["job_id"]
    subprocess.run(["scancel", "--signal=KILL", "--full", job_id], check=True)  # no last words in the journal
    with sqlite3.connect(orch.registry) as registry:  # as if the scheduler's accounting had lost the job
        registry.execute("UPDATE attempts SET job_id = '999999' WHERE job_id = ?", (job_id,))

    wait_until(lambda: orch.ok("runs", "--json").json()[0]["state"] == "LOST", timeout_seconds=120)
    resumed = orch("resume", "forgotten", "--wait", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    attempts = orch.ok("show", run_id, "--json").json()["attempts"]
    assert [attempt["state"] for attempt in attempts] == ["LOST", "COMPLETED"]
    assert attempts[1]["start_step"] >= 100


def set_max_array_size(cluster: MiniCluster, size: int) -> None:
    text = cluster.slurm_conf.read_text()
    lines = [
        f"MaxArraySize={size}" if line.startswith("MaxArraySize=") else line for line in text.splitlines()
    ]
    cluster.slurm_conf.write_text("\n".join(lines) + "\n")
    subprocess.run(["scontrol", "reconfigure"], check=True, env={**os.environ, **cluster.environment})
    wait_until(lambda: max_array_size() == size, timeout_seconds=30)


def sacct_state(cluster: MiniCluster, job_id: str) -> str:
    completed = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True
    )
    lines = completed.stdout.splitlines()
    return lines[-1] if lines else ""


def test_time_limit_checkpoints_requeues_and_completes_identically(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from orchestrator.executors.slurm import SlurmBackend

    # its length is the time limit's, not the polling's: Slurm's own 10 s, so that syncing every
    # second does not take CPU from the two trainings whose speed the step count assumes
    monkeypatch.setattr(SlurmBackend, "poll_seconds", 10.0)

    # about 100 s of training in a job here (13 ms a step): more than one 2-minute job trains, which
    # is signalled 30 s (signal_delay_s) to 90 s (Slurm's slack) before its limit
    steps = 8000
    base = (
        f"  model: {{hidden: [1024, 1024, 1024]}}\n  training: {{steps: {steps}, checkpoint_every: 3000, "
        "eval_every: 1000, heartbeat_seconds: 1.0}\n"
    )
    # requeues to spare (segments 6: up to 8 requeues): on a loaded machine a step takes two or three
    # times as long, and the run needs more 2-minute jobs than the two it needs here alone
    sweep = slurm_sweep(tmp_path, "limited", base + "  resources: {time: '2', segments: 6}\n")
    reference = Orch(tmp_path / "reference")

    # the uninterrupted reference (the same run: its time limit is not part of the run id) trains
    # beside the Slurm job, in a local process with the profile's default limit of 10 minutes
    (tmp_path / "unlimited").mkdir()
    unlimited = slurm_sweep(tmp_path / "unlimited", "limited", base)
    reference.ok("submit", unlimited, "--executor", "local")
    result = orch("submit", sweep, "--wait", "--json")
    reference.ok("status", "--watch")  # until the reference run ended

    assert result.exit_code == 0, result.stdout + result.stderr
    assert reference.ok("runs", "--json").json()[0]["state"] == "COMPLETED"
    [run] = orch.ok("runs", "--json").json()
    [attempt] = orch.ok("show", run["id"], "--json").json()["attempts"]
    assert attempt["state"] == "COMPLETED" and attempt["requeues"] >= 1  # one job, requeued by submitit
    # each requeue once, from the journal with its step (accounting's REQUEUED record of it is the same one)
    assert [(r["cause"], r["source"]) for r in attempt["requeue_history"]] == [
        ("SIGUSR2", "journal")
    ] * attempt["requeues"]
    assert all(0 < r["step"] < steps for r in attempt["requeue_history"])
    # accounting: a REQUEUED record per requeue and the last run's COMPLETED, in whichever order
    # sacct lists them, once slurmdbd has them (it can lag behind slurmctld on a loaded machine)
    expected, job_id = sorted(["REQUEUED"] * attempt["requeues"] + ["COMPLETED"]), attempt["job_id"]
    deadline = time.monotonic() + 180
    while sorted(sacct_states(mini_cluster, job_id)) != expected and time.monotonic() < deadline:
        time.sleep(1.0)
    columns = "JobID,State,Submit,Start,End"
    listing = slurm_run(mini_cluster, "sacct", "--duplicates", "-X", "-P", "-o", columns, "-j", job_id)
    assert sorted(sacct_states(mini_cluster, job_id)) == expected, listing.stdout
    final = f"runs/{run['id']}/checkpoints/step_{steps:09d}.safetensors"
    requeued, uninterrupted = (
        load_file(orch.home / "results" / final),
        load_file(reference.home / "results" / final),
    )
    assert requeued.keys() == uninterrupted.keys()
    assert all(requeued[name].numpy().tobytes() == uninterrupted[name].numpy().tobytes() for name in requeued)


def test_an_analysis_runs_as_a_slurm_job_without_a_gpu(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    base = (
        "  model: {hidden: [16]}\n"
        "  training: {steps: 30, checkpoint_every: 10, eval_every: 10, heartbeat_seconds: 0.5, device: cpu}\n"
        "  probes: [{type: line, every: 10, resolution: 0.02}]\n"
        "  resources: {gpus: 1, gpu_type: 1080ti, mem: 2G}\n"
    )
    assert orch("submit", slurm_sweep(tmp_path, "probed", base), "--wait").exit_code == 0

    (report,) = orch.ok(
        "analyze", "probed", "--figure", "polyfit", "--executor", "slurm", "--wait", "--json"
    ).json()

    assert report["summary"]["lines"] == 3 and Path(report["figures"][0]).is_file()
    script = next((orch.home / "results" / "submitit").glob("analyze-*/*_submission.sh")).read_text()
    # minutes from the shards' measured cost
    assert "#SBATCH --partition=test" in script and "#SBATCH --time=7\n" in script and "--gres" not in script


def squeue_line(cluster: MiniCluster, job_id: str) -> Optional[tuple[str, str, str]]:
    """(state, reason, node) of a job as slurmctld has it now, or None."""
    listed = slurm_run(
        cluster,
        "squeue",
        "--noheader",
        "--array",
        "--states=all",
        "--jobs",
        job_id.split("_")[0],
        "--format=%i|%T|%r|%N",
    ).stdout
    for line in listed.splitlines():
        listed_id, state, reason, node = line.split("|")
        if listed_id == job_id:
            return state, reason, node
    return None


def active_item(orch: Orch, run_id: str) -> dict:
    return next(
        item
        for view in orch.ok("status", "--json").json()
        for item in view["active"]
        if item["run"] == run_id
    )


def test_a_held_task_shows_slurms_reason_and_runs_once_released(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """A hold is what squeue says (sacct's reason of a queued job is stale); released, it runs."""
    sweep = slurm_sweep(
        tmp_path,
        "held",
        "  training: {steps: 400, heartbeat_seconds: 0.5}\n",
        "  optimizer.lr: [0.1, 0.05, 0.02]\n",
    )
    orch.ok("submit", sweep, "--json")  # the mini profile runs two tasks at a time: the third waits
    by_task = {
        attempt["array_task"]: (run["id"], attempt["job_id"])
        for run, attempt in zip(orch.ok("runs", "--json").json(), attempts_of(orch))
    }
    run_id, job_id = by_task[2]

    held = slurm_run(mini_cluster, "scontrol", "hold", job_id)
    assert held.returncode == 0, held.stderr
    state, reason, _ = squeue_line(mini_cluster, job_id) or ("", "", "")
    assert state == "PENDING" and reason.startswith("JobHeld")
    item = active_item(orch, run_id)
    assert (item["state"], item["reason"]) == ("PENDING", f"pending: {reason}")

    assert slurm_run(mini_cluster, "scontrol", "release", job_id).returncode == 0
    wait_until(
        lambda: (squeue_line(mini_cluster, job_id) or ("",))[0] in ("RUNNING", "COMPLETING", "COMPLETED")
    )
    wait_until(lambda: orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 3})
    assert orch.ok("show", run_id, "--json").json()["attempts"][0]["reason"] is None


def test_a_task_slurm_runs_is_running_before_its_first_journal_event(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """squeue says RUNNING while the job is still importing: status says RUNNING on that node with
    no pending reason, not PENDING until the journal's first event (the job is stopped in that
    window with SIGSTOP, so the test does not race it)."""
    sweep = slurm_sweep(tmp_path, "starting", "  training: {steps: 20}\n")
    run_id = orch.ok("submit", sweep, "--json").json()["submitted"][0]
    attempt = orch.ok("show", run_id, "--json").json()["attempts"][0]
    job_id, events_dir = attempt["job_id"], Path(attempt["journal_dir"]) / "events"
    deadline = time.monotonic() + 60
    while (squeue_line(mini_cluster, job_id) or ("",))[0] != "RUNNING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    pids = [
        int(line.split()[0])
        for line in slurm_run(mini_cluster, "scontrol", "listpids", job_id).stdout.splitlines()[1:]
        if line.split()[0].isdigit()
    ]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert not events_dir.is_dir() or not any(events_dir.glob("*.json"))  # nothing journaled yet
        _, _, node = squeue_line(mini_cluster, job_id) or ("", "", "")
        item = active_item(orch, run_id)
        assert (item["state"], item["node"], item["reason"]) == ("RUNNING", node, None)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: orch.ok("runs", "--json").json()[0]["state"] == "COMPLETED")


def test_max_parallel_on_the_command_line_caps_the_array(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    sweep = slurm_sweep(
        tmp_path, "capped", "  training: {steps: 5}\n", "  optimizer.lr: [0.1, 0.05, 0.02, 0.01]\n"
    )
    assert orch("submit", sweep, "--max-parallel", "3", "--wait").exit_code == 0
    script = next((orch.home / "results" / "submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%3" in script


def sacct_states(cluster: MiniCluster, job_id: str) -> list[str]:
    """Every record accounting holds of one job, oldest first (a requeue adds one)."""
    listed = slurm_run(
        cluster, "sacct", "--duplicates", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id.split("_")[0]
    ).stdout
    return [line.split("|")[1].split()[0] for line in listed.splitlines() if line.split("|")[0] == job_id]


def test_a_node_failure_is_node_fail_then_a_requeue_and_the_run_completes(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """slurmd killed while two runs train: once slurmctld declares NODE_FAIL and requeues them,
    orch says PENDING with squeue's reason and keeps the NODE_FAIL in the attempt's history; back
    in service, the same attempts finish (start step kept) and the runs are COMPLETED as in sacct."""
    steps = 20000  # about 100 s of training here while both run: still training when NODE_FAIL comes
    base = (
        f"  model: {{hidden: [512, 512]}}\n  training: {{steps: {steps}, checkpoint_every: 1000, "
        "eval_every: 1000, heartbeat_seconds: 1.0}\n"
    )
    sweep = slurm_sweep(tmp_path, "nodefail", base, "  optimizer.lr: [0.1, 0.05]\n")
    run_ids = orch.ok("submit", sweep, "--json").json()["submitted"]
    jobs = {run_id: orch.ok("show", run_id, "--json").json()["attempts"][0]["job_id"] for run_id in run_ids}
    wait_until(lambda: all(orch.ok("show", run_id, "--json").json()["step"] > 0 for run_id in run_ids))
    node = {run_id: (squeue_line(mini_cluster, job_id) or ("", "", ""))[2] for run_id, job_id in jobs.items()}
    assert all(node.values()) and {active_item(orch, run_id)["node"] for run_id in run_ids} == set(
        node.values()
    )

    kill_slurmd(mini_cluster)
    try:
        wait_until(
            lambda: all("NODE_FAIL" in sacct_states(mini_cluster, job_id) for job_id in jobs.values()),
            timeout_seconds=120,
        )
        for run_id, job_id in jobs.items():

            def agrees_with_squeue() -> bool:
                item, (state, reason, _) = (
                    active_item(orch, run_id),
                    squeue_line(mini_cluster, job_id) or ("", "", ""),
                )
                return state == "PENDING" and (item["state"], item["reason"]) == (
                    "PENDING",
                    f"pending: {reason}",
                )

            # squeue's reason moves on (BeginTime, then the node is down)
            wait_until(agrees_with_squeue, timeout_seconds=60)
            [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
            assert attempt["requeues"] == 1
            assert [(r["cause"], r["source"], r["node"]) for r in attempt["requeue_history"]] == [
                ("NODE_FAIL", "scheduler", node[run_id])
            ]
    finally:
        restart_slurmd(mini_cluster)

    wait_until(lambda: orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 2})
    for run_id, job_id in jobs.items():
        [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
        assert (attempt["state"], attempt["start_step"], attempt["end_step"], attempt["requeues"]) == (
            "COMPLETED",
            0,
            steps,
            1,
        )
        assert [r["cause"] for r in attempt["requeue_history"]] == ["NODE_FAIL"]
        wait_until(lambda: sacct_states(mini_cluster, job_id)[-1] == "COMPLETED", timeout_seconds=60)
        assert sacct_states(mini_cluster, job_id)[0] == "NODE_FAIL"


def test_sync_holds_no_registry_lock_while_slurm_answers(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """A busy slurmctld answers squeue in seconds: meanwhile other orch commands must be able to
    write the registry. Here the real squeue answers 3 s late (a wrapper sleeps before it); while
    `orch status` waits for it, this test takes the registry's write lock at once."""
    sweep = slurm_sweep(
        tmp_path, "slowslurm", "  training: {steps: 1000000, heartbeat_seconds: 0.5}\n"
    )  # still running when status looks
    run_id = orch.ok("submit", sweep, "--json").json()["submitted"][0]
    wrappers, asked = tmp_path / "bin", tmp_path / "squeue-asked"
    wrappers.mkdir()
    (wrappers / "squeue").write_text(
        f'#!/bin/sh\ntouch {asked}\nsleep 3\nexec {shutil.which("squeue")} "$@"\n'
    )
    (wrappers / "squeue").chmod(0o755)
    environment = {**os.environ, "PATH": f"{wrappers}:{os.environ['PATH']}"}

    status = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "--home", str(orch.home), "status", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    wait_until(asked.exists, timeout_seconds=60)
    with sqlite3.connect(orch.registry, timeout=0.5) as registry:
        registry.execute("BEGIN IMMEDIATE")  # "database is locked" if status held it
        registry.execute("ROLLBACK")
    output, _ = status.communicate(timeout=120)

    assert status.returncode == 0
    assert [item["run"] for view in json.loads(output) for item in view["active"]] == [run_id]
    orch.ok("cancel", run_id)
