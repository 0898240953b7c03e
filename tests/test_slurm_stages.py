"""A sweep smoke-tested first and analyzed after, on the mini-cluster: ``orch submit --smoke
--then "analyze --figure lines"``; the runs wait on the smoke jobs (afterok), the analysis on the
runs (afterany), all in Slurm's queue; a failed smoke test keeps every run from starting."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jobs.journal import Started, read_events
from jobs.paths import AttemptPaths
from tests.cluster.minicluster import MiniCluster
from tests.conftest import Orch, wait_until, write_sweep
from tests.datasets import write_cifar10

pytestmark = pytest.mark.slurm

SWEEP = """
name: staged
include: [problems/digits_mlp.yaml]
base:
  cluster: mini
  model: {hidden: [16]}
  training: {steps: 60, checkpoint_every: 30, eval_every: 30, heartbeat_seconds: 0.5}
  probes:
    - {type: line, every: 20}
grid:
  optimizer.name: [sgd, pal]
seeds: 2
"""

BROKEN = """
name: broken
include: [problems/digits_mlp.yaml]
base:
  cluster: mini
  model: {hidden: [16]}
  training: {steps: 60}
  data: {name: cifar10, root: ROOT, verify_checksums: false}
grid:
  optimizer.name: [sgd, pal]
"""


def status_of(orch: Orch, sweep: str) -> dict:
    return next(view for view in orch.ok("status", "--json").json() if view["sweep"] == sweep)


def squeue() -> str:
    return subprocess.run(
        ["squeue", "--noheader", "--format=%i|%j|%T|%r|%E"], capture_output=True, text=True, check=True
    ).stdout


def test_smoke_first_then_the_runs_then_the_analysis(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    sweep = write_sweep(tmp_path, "staged", SWEEP)
    submitted = orch.ok("submit", sweep, "--smoke", "--then", "analyze --figure lines", "--json").json()
    assert len(submitted["smoke"]) == 2  # sgd and pal: one smoke run per configuration, not per seed
    assert sorted(submitted["submitted"]) == sorted(
        run["id"] for run in orch.ok("runs", "--sweep", "staged", "--json").json()
    )
    queue = squeue()
    with sqlite3.connect(orch.registry) as registry:
        rows = registry.execute("SELECT gate, job_id, after_jobs FROM attempts").fetchall()
    smoke_arrays = sorted({job.split("_")[0] for gate, job, _ in rows if gate is None})
    real_rows = [(job, after) for gate, job, after in rows if gate == "staged.smoke"]
    assert len(smoke_arrays) == 1 and len(real_rows) == 4
    assert {after for _, after in real_rows} == {"afterok:" + smoke_arrays[0]}
    after = {job.split("_")[0] for job, _ in real_rows}
    # the runs wait in Slurm's queue on the smoke jobs (or have started once those completed)
    waiting = [line for line in queue.splitlines() if line.split("_")[0] in after]
    assert all("afterok:" + smoke_arrays[0] in line or "RUNNING" in line for line in waiting)

    wait_until(lambda: status_of(orch, "staged")["stages"][0]["state"] == "COMPLETED")
    final = status_of(orch, "staged")
    assert final["counts"] == {"COMPLETED": 4} and status_of(orch, "staged.smoke")["counts"] == {
        "COMPLETED": 2
    }
    assert len(final["stages"]) == 1 and status_of(orch, "staged.smoke")["stages"] == []  # the sweep's own
    stage = final["stages"][0]
    assert stage["after_jobs"] == "afterany:" + ":".join(sorted(after)) and stage["job_ids"]
    for run in orch.ok("runs", "--sweep", "staged", "--json").json():
        assert (orch.home / "results" / "runs" / run["id"] / "figures" / f"{run['id']}-lines.png").is_file()
    for run in orch.ok("runs", "--sweep", "staged.smoke", "--json").json():  # a line, then a restore
        shown = orch.ok("show", run["id"], "--json").json()
        events = read_events(AttemptPaths(Path(shown["attempts"][0]["journal_dir"])))
        assert [event.payload.start_step for event in events if isinstance(event.payload, Started)] == [0, 2]
        assert any(event.kind == "shard" for event in events) and shown["step"] == 4
    smoke_started = max(
        a["ended_time"]
        for r in orch.ok("runs", "--sweep", "staged.smoke", "--json").json()
        for a in orch.ok("show", r["id"], "--json").json()["attempts"]
    )
    real_started = min(
        a["started_time"]
        for r in orch.ok("runs", "--sweep", "staged", "--json").json()
        for a in orch.ok("show", r["id"], "--json").json()["attempts"]
    )
    assert real_started >= smoke_started - 1


def test_a_failed_smoke_test_keeps_the_runs_from_starting(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a data set whose files are all there and one of them broken: planning passes, loading fails
    write_cifar10(tmp_path / "data", np.random.default_rng(0), 4, monkeypatch)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    sweep = write_sweep(tmp_path, "broken", BROKEN.replace("ROOT", str(tmp_path / "data")))
    orch.ok("submit", sweep, "--smoke")
    wait_until(lambda: "FAILED" in status_of(orch, "broken.smoke")["counts"])
    wait_until(lambda: status_of(orch, "broken")["counts"] == {"CANCELLED": 2})
    failure = status_of(orch, "broken.smoke")["smoke_failures"][0]
    assert failure["reproduce"] == f"orch resume {failure['run_id']} --executor debug"
    assert failure["traceback_tail"]
    shown = [
        orch.ok("show", run["id"], "--json").json()
        for run in orch.ok("runs", "--sweep", "broken", "--json").json()
    ]
    for run in shown:
        attempt = run["attempts"][-1]
        assert attempt["started_time"] is None  # no run of the sweep ever started
        # the reason names the smoke run whose failure the sync that cancelled them saw first
        failed_runs = {item["run_id"] for item in status_of(orch, "broken.smoke")["smoke_failures"]}
        prefix = "the smoke test failed (sweep broken.smoke): run "
        assert attempt["reason"].startswith(prefix) and attempt["reason"][len(prefix) :][:16] in failed_runs
        assert (
            f"reproduce: orch resume {attempt['reason'][len(prefix) :][:16]} --executor debug"
            in attempt["reason"]
        )
    text = orch.ok("status").stdout
    assert "reproduce: orch resume" in text
    # the runs' jobs that waited on the smoke test are gone from the queue (cancelled by orch)
    wait_until(lambda: not any("broken:" in line for line in squeue().splitlines()), 60)
