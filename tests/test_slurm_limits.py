"""Submitting within the user's Slurm limits, on the mini-cluster (slurmdbd enforces association
and QOS limits there): a sweep larger than the submit limit completes without sbatch errors,
never holding more jobs than allowed; a refusal orch did not foresee holds runs back, not loses them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import pytest

from orchestrator.executors.slurm import run_slurm
from orchestrator.executors.slurm_limits import read_submit_limits
from orchestrator.feed import feeder_job_name
from orchestrator.home import OrchHome
from tests.cluster.minicluster import MiniCluster, slurm_run
from tests.conftest import Orch
from tests.test_slurm import slurm_sweep, wait_until

pytestmark = pytest.mark.slurm

TINY_RUN = (
    "  model: {hidden: [8]}\n"
    "  training: {steps: 5, checkpoint_every: 5, eval_every: 5, heartbeat_seconds: 0.5, device: cpu}\n"
    "  resources: {mem: 2G}\n"  # a job peaks near 1 GB (torch, the data, provenance)
)


class QueueWatch:
    """The most jobs of one sweep squeue listed at once (array tasks one by one), sampled in a thread."""

    def __init__(self, cluster: MiniCluster, sweep: str) -> None:
        self.cluster, self.prefix = cluster, f"orch:{sweep}:"
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            names = slurm_run(self.cluster, "squeue", "--noheader", "--array", "--format=%j").stdout.split()
            self.most = max(self.most, sum(name.startswith(self.prefix) for name in names))
            self.samples += 1
            self._stop.wait(0.2)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def submit_limit(mini_cluster: MiniCluster) -> Iterator[int]:
    """MaxSubmitJobs=5 on the test user's association, lifted afterwards."""
    limit = 5
    assert (
        slurm_run(
            mini_cluster, "sacctmgr", "-i", "modify", "user", "root", "set", f"MaxSubmitJobs={limit}"
        ).returncode
        == 0
    )
    yield limit
    slurm_run(mini_cluster, "sacctmgr", "-i", "modify", "user", "root", "set", "MaxSubmitJobs=-1")


def test_the_limits_and_the_jobs_against_them_are_read_from_slurm(
    mini_cluster: MiniCluster, submit_limit: int
) -> None:
    held = slurm_run(mini_cluster, "sbatch", "--array=0-1", "--wrap=sleep 30", "--output=/dev/null")
    assert held.returncode == 0, held.stderr
    job_id = held.stdout.split()[-1]
    try:
        limits = read_submit_limits(run_slurm)
        assert limits.binding is not None and limits.binding.name == "assoc root/root MaxSubmitJobs"
        assert (limits.binding.limit, limits.binding.used, limits.slots) == (
            submit_limit,
            2,
            submit_limit - 2,
        )
    finally:
        slurm_run(mini_cluster, "scancel", job_id)


def test_a_sweep_of_40_runs_completes_under_a_submit_limit_of_5(
    orch: Orch, mini_cluster: MiniCluster, submit_limit: int, tmp_path: Path
) -> None:
    sweep = slurm_sweep(tmp_path, "limited", TINY_RUN + "seeds: 40\n")

    with QueueWatch(mini_cluster, "limited") as queue:
        result = orch("submit", sweep, "--wait", "--json")

    report = result.json()
    unfinished = {run: state for run, state in report.get("final_states", {}).items() if state != "COMPLETED"}
    assert result.exit_code == 0, [orch.ok("show", run, "--json").json()["attempts"] for run in unfinished]
    assert "sbatch" not in result.stderr and "error" not in result.stderr.lower()
    assert len(report["submitted"]) == submit_limit and len(report["waiting_for_slot"]) == 40 - submit_limit
    assert report["refusals"] == []
    assert set(report["final_states"].values()) == {"COMPLETED"} and len(report["final_states"]) == 40
    assert queue.samples > 10 and 1 <= queue.most <= submit_limit
    [status] = orch.ok("status", "--json").json()
    assert status["counts"] == {"COMPLETED": 40} and status["waiting_for_slot"] == 0


def test_a_refusal_holds_the_runs_back_and_a_later_sync_submits_them(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """A limit orch does not read (a QOS's MaxSubmitJobsPerAccount) makes sbatch refuse: the runs
    wait with sbatch's answer as their reason; once the limit is lifted, sync submits them."""
    qos = ["sacctmgr", "-i", "modify", "qos", "normal", "set"]
    assert slurm_run(mini_cluster, *qos, "MaxSubmitJobsPerAccount=1").returncode == 0
    try:
        sweep = slurm_sweep(tmp_path, "refused", TINY_RUN + "seeds: 3\n")
        result = orch("submit", sweep, "--json")
        assert result.exit_code == 0, result.stdout + result.stderr
        report = result.json()
        assert report["submitted"] == [] and len(report["waiting_for_slot"]) == 3
        assert "MaxSubmitJob" in report["refusals"][0] or "job submit limit" in report["refusals"][0]
        assert "sbatch" not in result.stderr
        [status] = orch.ok("status", "--json").json()
        assert status["waiting_for_slot"] == 3
        assert all(run["reason"].startswith("waiting for a submit slot") for run in status["active"])
    finally:
        slurm_run(mini_cluster, *qos, "MaxSubmitJobsPerAccount=-1")

    assert orch.ok("sync", "--json").json()["submitted"] == 3
    orch.ok("status", "--watch")  # until none is active
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 3}


def test_a_feeder_job_submits_the_waiting_runs_after_the_user_logged_out(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    """``orch feed --reschedule`` keeps a submit slot for its own job and queues itself (``--begin``),
    one per home; started, the feeder submits what waits, with no orch command at the login node."""
    limit = ["sacctmgr", "-i", "modify", "user", "root", "set"]
    # the jobs of earlier tests (completing) would take slots of the 3
    wait_until(lambda: not _queued(mini_cluster, ""), timeout_seconds=120)
    assert slurm_run(mini_cluster, *limit, "MaxSubmitJobs=3").returncode == 0
    try:
        sweep = slurm_sweep(tmp_path, "fed", TINY_RUN + "seeds: 6\n")
        submitted = orch.ok("submit", sweep, "--json").json()
        assert len(submitted["submitted"]) == 3 and len(submitted["waiting_for_slot"]) == 3
        wait_until(lambda: not _queued(mini_cluster, "orch:fed:"))  # ran; nobody synced

        fed = orch.ok("feed", "--reschedule", "60", "--json").json()
        assert (fed["submitted"], fed["waiting_for_slot"]) == (2, 1)  # the third slot: the feeder's
        feeder = fed["feeder_job"]
        assert feeder and fed["feeder_refused"] is None
        again = orch.ok("feed", "--reschedule", "60", "--json").json()
        assert (again["submitted"], again["feeder_job"]) == (0, feeder)  # no slot free; one feeder per home
        queued = slurm_run(mini_cluster, "squeue", "--noheader", "--jobs", feeder, "--format=%j|%T|%r").stdout
        assert queued.strip() == f"{feeder_job_name(OrchHome(orch.home))}|PENDING|BeginTime"
        wait_until(lambda: not _queued(mini_cluster, "orch:fed:"))

        # "logged out": the feeder starts now instead of in an hour, and is the only orch that runs
        assert (
            slurm_run(mini_cluster, "scontrol", "update", f"jobid={feeder}", "starttime=now").returncode == 0
        )
        wait_until(lambda: not _queued(mini_cluster, "orch-feed:"), timeout_seconds=120)
    finally:
        slurm_run(mini_cluster, *limit, "MaxSubmitJobs=-1")
    log = (orch.home / f"feed-{feeder}.log").read_text()
    assert "submitted 1 runs; 0 wait for a submit slot" in log, log
    with sqlite3.connect(orch.registry) as registry:  # read without syncing
        assert registry.execute("SELECT count(*) FROM attempts WHERE job_id IS NOT NULL").fetchone() == (6,)
    orch.ok("status", "--watch")
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 6}


def _queued(cluster: MiniCluster, name_prefix: str) -> list[str]:
    """The jobs slurmctld still lists whose names start with ``name_prefix``."""
    names = slurm_run(cluster, "squeue", "--noheader", "--array", "--format=%j").stdout.split()
    return [name for name in names if name.startswith(name_prefix)]
