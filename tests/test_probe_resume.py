"""SIGKILL a probing job at random lines, resume it each time, and get the uninterrupted shard set."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs.atomic import TEMP_PREFIX, sha256_file
from jobs.journal import JournalWriter, ShardWritten, Started, read_events
from jobs.paths import AttemptPaths, RunPaths
from jobs.spec import spec_from_yaml
from jobs.train import train
from tests.conftest import Orch, write_sweep
from tests.test_crash_resume import WAIT_SECONDS, wait_for_counts, wait_until_gone

pytestmark = [pytest.mark.subprocess, pytest.mark.beside_slurm]

STEPS = 24
SWEEP = f"""
name: lines
include: [problems/digits_mlp.yaml]
base:
  model: {{hidden: [32]}}
  training: {{steps: {STEPS}, checkpoint_every: 4, eval_every: 4, heartbeat_seconds: 0.2}}
  probes:
    - {{type: line, every: 1}}
    - {{type: interpolation, every: 2}}
"""


def shard_files(run_dir: Path, probe: str) -> dict[str, str]:
    """File name → sha256 of the published shards of ``probe``."""
    return {
        path.name: sha256_file(path)
        for path in sorted((run_dir / "shards" / probe).glob("step_*.safetensors"))
    }


def running_job_pid(run_dir: Path, attempts_before: int) -> int:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        attempt_dirs = sorted((run_dir / "attempts").glob("*"))
        if len(attempt_dirs) > attempts_before:
            started = [
                event.payload
                for event in read_events(AttemptPaths(attempt_dirs[-1]))
                if isinstance(event.payload, Started)
            ]
            if started:
                return started[0].pid
        time.sleep(0.02)
    raise AssertionError(f"no new attempt started in {run_dir}")


def kill_when_lines_reach(run_dir: Path, pid: int, lines: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(shard_files(run_dir, "line")) < lines:
        assert time.monotonic() < deadline, f"the job did not reach {lines} lines"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    wait_until_gone(pid)


def test_killed_probing_job_resumes_to_the_uninterrupted_shard_set(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "lines", SWEEP)
    orch = Orch(tmp_path / "home")
    run_id = orch.ok("submit", sweep, "--executor", "local", "--json").json()["submitted"][0]
    run_dir = Path(orch.ok("show", run_id, "--json").json()["run_dir"])
    kill_points = sorted(random.Random(4).sample(range(2, STEPS - 2), 3))

    for attempt_index, lines in enumerate(kill_points):
        if attempt_index > 0:
            orch.ok("resume", "lines")
        pid = running_job_pid(run_dir, attempt_index)
        kill_when_lines_reach(run_dir, pid, lines)
        assert wait_for_counts(orch, {"LOST": 1}) == {"LOST": 1}
    resumed = orch("resume", "lines", "--wait", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["final_states"] == {run_id: "COMPLETED"}

    reference = RunPaths(tmp_path / "reference")
    train(
        spec_from_yaml((run_dir / "spec.yaml").read_text()),
        reference,
        JournalWriter(reference.attempt("001-a")),
    )
    for probe, expected_count in (("line", STEPS), ("interpolation", STEPS // 2)):
        resumed_files, reference_files = shard_files(run_dir, probe), shard_files(reference.run_dir, probe)
        assert len(reference_files) == expected_count
        assert resumed_files == reference_files  # every line present, byte-identical to the uninterrupted run
        leftovers = [
            path.name for path in (run_dir / "shards" / probe).iterdir() if path.name not in resumed_files
        ]
        assert leftovers == [], leftovers  # no temporary, torn or unjournaled file

    manifests = [
        event.payload
        for attempt_dir in sorted((run_dir / "attempts").glob("*"))
        for event in read_events(AttemptPaths(attempt_dir))
        if isinstance(event.payload, ShardWritten)
    ]
    per_step = Counter((manifest.probe, manifest.step) for manifest in manifests)
    assert set(per_step.values()) == {1}  # no line measured (and journaled) twice
    attempts = orch.ok("show", run_id, "--json").json()["attempts"]
    assert [attempt["state"] for attempt in attempts] == ["LOST"] * 3 + ["COMPLETED"]
    resumed_from = [attempt["start_step"] for attempt in attempts[1:]]
    assert all(step % 4 == 0 for step in resumed_from)
    # complete lines after the checkpoint were skipped
    assert any(step < lines for step, lines in zip(resumed_from, kill_points))
    indexed = orch.ok("shards", run_id, "--json").json()["shards"]
    assert Counter(row["probe"] for row in indexed) == {"line": STEPS, "interpolation": STEPS // 2}
    assert all(row["sha256"] == sha256_file(run_dir / row["path"]) for row in indexed)
    assert not any(path.name.startswith(TEMP_PREFIX) for path in run_dir.rglob("*"))
