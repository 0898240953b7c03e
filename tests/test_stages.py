"""``orch submit --smoke`` and ``--then`` on executors without a queue (debug, local): the gate
holds the runs until the smoke runs passed, a failed smoke test cancels them with the way to
reproduce it, and a stage runs its analysis once the sweep has ended. Bad stage commands are
refused before anything is written. (On Slurm: tests/test_slurm_stages.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.journal import Started, read_events
from jobs.paths import AttemptPaths
from tests.conftest import Orch, write_sweep
from tests.datasets import write_cifar10

pytestmark = pytest.mark.both_backends

SWEEP = """
name: staged
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 40, checkpoint_every: 20, eval_every: 20}
  probes:
    - {type: line, every: 20}
grid:
  optimizer.name: [sgd, pal]
seeds: 2
"""
DEBUG = ("--executor", "debug")


def status_of(orch: Orch, sweep: str) -> dict:
    return next(view for view in orch.ok("status", "--json").json() if view["sweep"] == sweep)


def test_smoke_runs_each_configuration_then_the_sweep(orch: Orch, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "staged", SWEEP)
    submitted = orch.ok("submit", sweep, "--smoke", *DEBUG, "--json").json()
    assert len(submitted["smoke"]) == 2 and len(submitted["submitted"]) == 4
    assert status_of(orch, "staged.smoke")["counts"] == {"COMPLETED": 2}
    assert status_of(orch, "staged")["counts"] == {"COMPLETED": 4}
    smoke = [
        (row["journal_dir"], row["ended_time"])
        for row in orch.rows("SELECT journal_dir, ended_time FROM attempts WHERE gate IS NULL")
    ]
    runs = [
        (row["started_time"], row["after_jobs"])
        for row in orch.rows("SELECT started_time, after_jobs FROM attempts WHERE gate = 'staged.smoke'")
    ]
    for journal_dir, _ in smoke:  # 4 steps, a line at each, stopped at 2 and restored from its checkpoint
        events = read_events(AttemptPaths(Path(journal_dir)))
        assert [event.payload.start_step for event in events if isinstance(event.payload, Started)] == [0, 2]
        assert sum(event.kind == "shard" for event in events) == 4
    assert min(started for started, _ in runs) >= max(ended for _, ended in smoke)  # after the gate
    assert {after for _, after in runs} == {""}  # no scheduler: let go once passed, no dependency

    again = orch.ok("submit", sweep, "--smoke", *DEBUG, "--json").json()  # all done: nothing to run
    assert again["smoke"] == [] and again["submitted"] == []


def test_a_failed_smoke_test_cancels_the_runs_and_says_how_to_reproduce(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar10(tmp_path / "data", np.random.default_rng(0), 4, monkeypatch)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    data = f"  data: {{name: cifar10, root: {tmp_path / 'data'}, verify_checksums: false}}"
    text = SWEEP.replace("name: staged", "name: broken").replace("  probes:", data + "\n  probes:")
    orch.ok("submit", write_sweep(tmp_path, "broken", text), "--smoke", *DEBUG)

    assert status_of(orch, "broken")["counts"] == {"CANCELLED": 4}
    failures = status_of(orch, "broken.smoke")["smoke_failures"]
    assert len(failures) == 2 and failures[0]["traceback_tail"]
    reproduce = failures[0]["reproduce"]
    assert reproduce == f"orch resume {failures[0]['run_id']} --executor debug"
    for run in orch.ok("runs", "--sweep", "broken", "--json").json():
        attempt = orch.ok("show", run["id"], "--json").json()["attempts"][-1]
        assert attempt["started_time"] is None and reproduce in attempt["reason"]
    assert reproduce in orch.ok("status").stdout
    again = orch(*reproduce.split()[1:])  # it fails again, in this process
    assert "UnpicklingError" in again.stderr
    assert orch.ok("show", failures[0]["run_id"], "--json").json()["attempts"][-1]["state"] == "FAILED"


def test_then_analyzes_the_sweep_once_it_has_ended(orch: Orch, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "staged", SWEEP)
    orch.ok("submit", sweep, "--then", "analyze --figure lines --format pdf", "--executor", "local", "--wait")
    stage = status_of(orch, "staged")["stages"][0]
    assert (stage["command"], stage["state"]) == ("analyze --figure lines --format pdf", "COMPLETED")
    for run in orch.ok("runs", "--sweep", "staged", "--json").json():
        assert (orch.home / "results" / "runs" / run["id"] / "figures" / f"{run['id']}-lines.pdf").is_file()
    assert "analyze --figure lines" in orch.ok("status").stdout


def test_resume_runs_a_failed_stage_again(orch: Orch, tmp_path: Path) -> None:
    """A stage whose jobs failed (set as sync records it) waits again after ``orch resume`` and
    runs at the next sync."""
    sweep = write_sweep(tmp_path, "staged", SWEEP)
    orch.ok("submit", sweep, "--then", "analyze --figure lines", *DEBUG)
    assert status_of(orch, "staged")["stages"][0]["state"] == "COMPLETED"
    orch.execute("UPDATE stages SET state = 'FAILED', reason = 'job 12_0 FAILED'")
    assert status_of(orch, "staged")["stages"][0]["state"] == "FAILED"

    orch.ok("resume", "staged")
    stage = status_of(orch, "staged")["stages"][0]
    assert (stage["state"], stage["reason"]) == (
        "COMPLETED",
        "wrote 8 files here",
    )  # 4 runs: a figure and a table each
    assert orch.rows("SELECT number FROM stages") == [{"number": 2}]
    orch.ok("submit", sweep, "--then", "analyze --figure lines", *DEBUG)  # the same stage, not again
    assert len(status_of(orch, "staged")["stages"]) == 2  # a finished stage is analyzed anew


@pytest.mark.parametrize(
    "then",
    [
        "analyze --figure curves",  # a sweep view: runs on the login node
        "analyze --figure nonsense",
        "analyze --figure lines staged",  # targets: a stage's are its sweep's runs
        "analyze --figure lines --executor slurm",
        "rm -rf /",
        "analyze --figure 'lines",
        "",
        "analyze --figure lines --out HOME",  # into orch's own home
    ],
)
def test_a_bad_stage_is_refused_before_anything_is_written(orch: Orch, tmp_path: Path, then: str) -> None:
    then = then.replace("HOME", str(orch.home / "results"))
    refused = orch("submit", write_sweep(tmp_path, "staged", SWEEP), "--then", then, *DEBUG)
    assert refused.exit_code == 2, refused.stderr
    assert "then" in refused.stderr and "accepted" in refused.stderr and "Traceback" not in refused.stderr
    assert not orch.has_registry() or orch.rows("SELECT count(*) AS sweeps FROM sweeps") == [{"sweeps": 0}]


@pytest.mark.parametrize("then", ["[1]", "analyze --figure lines", "['analyze --figure walk --window x']"])
def test_a_bad_then_in_the_sweep_file_is_refused(orch: Orch, tmp_path: Path, then: str) -> None:
    refused = orch("plan", write_sweep(tmp_path, "staged", SWEEP + f"then: {then}\n"))
    assert refused.exit_code == 2 and "then" in refused.stderr and "Traceback" not in refused.stderr


def test_a_stage_follows_its_jobs() -> None:
    from orchestrator.executors import Observation, Phase
    from orchestrator.stages import followed_state

    ended, failed = Observation(Phase.ENDED, "COMPLETED"), Observation(Phase.ENDED, "FAILED", reason="exit 1")
    pending, running = Observation(Phase.PENDING, reason="Dependency"), Observation(Phase.RUNNING)
    assert followed_state(["1_0", "1_1"], [pending, pending]) == ("PENDING", "Dependency")
    assert followed_state(["1_0", "1_1"], [ended, running]) == ("RUNNING", None)
    assert followed_state(["1_0", "1_1"], [ended, ended]) == ("COMPLETED", None)
    assert followed_state(["1_0", "1_1"], [ended, failed]) == (
        "FAILED",
        "1 of 2 jobs did not complete: job 1_1 FAILED (exit 1)",
    )
    assert followed_state(["1_0"], [Observation(Phase.GONE)]) == (
        "FAILED",
        "1 of 1 jobs did not complete: job 1_0 gone",
    )
