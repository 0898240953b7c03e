"""A full disk costs nothing and says so: the attempt ends FAILED with the errno and the path, the
message reaches the user even when the journal cannot be written, the registry refuses cleanly and
loses nothing, and resuming after freeing space gives the bit-identical result.

The disks are real: small tmpfs mounts (the tests need root; without it they are skipped).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from jobs.atomic import TEMP_PREFIX, publish_bytes, publish_text
from jobs.entry import AttemptRequest, run_attempt
from jobs.faults import KILL_VARIABLE
from jobs.journal import Failed, Finished, failure_line, find_failure_line, read_events
from jobs.paths import RunPaths
from jobs.spec import ModelSpec, RunSpec, TrainingSpec, spec_to_yaml
from orchestrator.profiles import load_profile
from tests.conftest import Orch, write_sweep
from tests.disks import tmpfs
from tests.test_crash_resume import (
    assert_bit_identical_checkpoints,
    metric_rows,
    wait_for_counts,
    wait_for_first_checkpoint,
    wait_until_gone,
)

STEPS = 300
SWEEP = f"""
name: fulldisk
include: [problems/digits_mlp.yaml]
base:
  model:
    hidden: [512, 512]  # a checkpoint of a few MB: by far the biggest file of the run
  training:
    steps: {STEPS}
    checkpoint_every: 100
    eval_every: 50
    heartbeat_seconds: 3600  # heartbeats only at the start and the end: the job publishes in a fixed order
"""
OTHER_SWEEP = """
name: another
include: [problems/digits_mlp.yaml]
base:
  training: {steps: 20, seed: 7}
"""
ORCH = Path(sys.executable).with_name("orch")
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


# --- disks ----------------------------------------------------------------------------------------


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """A filler file that leaves ``leave_bytes`` free on ``folder``'s file system (0: not a byte)."""
    filler = folder / "filler"
    to_write = free_bytes(folder) - leave_bytes
    chunk = bytes(1 << 20)
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):  # ENOSPC at the very end when filling up completely
            while to_write > 0:
                to_write -= handle.write(chunk[: min(len(chunk), to_write)])
    assert 0 <= leave_bytes - free_bytes(folder) < os.statvfs(folder).f_frsize  # to the page
    return filler


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f"{TEMP_PREFIX}*"))


@contextlib.contextmanager
def local_slots_held(slots_dir: Path, slots: int) -> Iterator[None]:
    """Hold every slot of the local executor: its jobs wait before they touch anything."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    descriptors = [
        os.open(slots_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600) for slot in range(slots)
    ]
    try:
        for descriptor in descriptors:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


# --- the reference run and what the tests compare with it -------------------------------------------


@dataclass(frozen=True)
class Reference:
    orch: Orch
    run_id: str

    def final_checkpoint(self) -> Path:
        return RunPaths.under(self.orch.home / "results", self.run_id).checkpoint_file(STEPS)

    def checkpoint_bytes(self) -> int:
        return self.final_checkpoint().stat().st_size


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The sweep run once, in process, on a disk with room: what every resumed run must equal."""
    folder = tmp_path_factory.mktemp("reference")
    orch = Orch(folder / "home")
    run_id = orch.ok(
        "submit", write_sweep(folder, "fulldisk", SWEEP), "--executor", "debug", "--json"
    ).json()["submitted"][0]
    return Reference(orch, run_id)


def resume_and_compare(orch: Orch, run_id: str, reference: Reference) -> list[dict]:
    """Resume the sweep, check it completes bit-identically to the reference; returns the attempts."""
    resumed = orch("resume", "fulldisk", "--wait", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["final_states"] == {run_id: "COMPLETED"}
    final_checkpoint = RunPaths.under(orch.home / "results", run_id).checkpoint_file(STEPS)
    assert_bit_identical_checkpoints(final_checkpoint, reference.final_checkpoint())
    # floats compared exactly
    assert metric_rows(orch.registry, run_id) == metric_rows(reference.orch.registry, run_id)
    return orch.ok("show", run_id, "--json").json()["attempts"]


def journaled_failures(run_dir: Path) -> list[Failed]:
    return [
        event.payload
        for attempt_dir in sorted((run_dir / "attempts").iterdir())
        for event in read_events(RunPaths(run_dir).attempt(attempt_dir.name))
        if isinstance(event.payload, Failed)
    ]


def run_orch(home: Path, *arguments: str | Path, **environment: str) -> subprocess.CompletedProcess:
    """``orch`` as a user runs it: its own process, what it prints, its exit code."""
    command = [str(ORCH), "--home", str(home), *map(str, arguments)]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **environment}, timeout=300
    )


def registry_rows(registry: Path) -> dict[str, list[tuple]]:
    """Every row of every table, read only (nothing is written to the full disk by looking)."""
    with contextlib.closing(sqlite3.connect(f"file:{registry}?mode=ro", uri=True)) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }


def integrity(registry: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{registry}?mode=ro", uri=True)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchall()


# --- publication ----------------------------------------------------------------------------------------


def test_a_publication_that_runs_out_of_space_leaves_no_temp_file_and_names_the_path(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        target = disk / "checkpoints" / "step_000000200.safetensors"

        with pytest.raises(OSError) as raised:
            publish_bytes(target, bytes(2 << 20))

        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename == str(target)  # the file it was for, not the temporary name
        assert f"{NO_SPACE}: '{target}'" in str(raised.value)
        assert temp_files(disk) == [] and not target.exists()
        assert free_bytes(disk) == 1 << 20  # the half-written temporary file gave its space back


def test_a_publication_on_a_read_only_file_system_names_the_path(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "checkpoints").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        target = disk / "checkpoints" / "step_000000200.safetensors"

        with pytest.raises(OSError) as raised:
            publish_bytes(target, b"weights")

        assert raised.value.errno == errno.EROFS and raised.value.filename == str(target)
        assert temp_files(disk) == [] and not target.exists()


def test_a_checkpoint_whose_manifest_does_not_fit_is_removed_with_it(tmp_path: Path) -> None:
    import torch

    from jobs.checkpoint import TrainingState, newest_valid_checkpoint, save_checkpoint

    state = TrainingState(
        step=200, model={"weight": torch.arange(100_000, dtype=torch.float32)}, optimizer={}, rng={}
    )
    measured = RunPaths(tmp_path / "measured")
    save_checkpoint(measured, state)
    page = os.statvfs(tmp_path).f_frsize
    data_pages = -(-measured.checkpoint_file(200).stat().st_size // page) * page
    with tmpfs(tmp_path / "disk", "1m") as disk:
        paths = RunPaths(disk / "run")
        paths.checkpoints_dir.mkdir(parents=True)
        fill(disk, leave_bytes=data_pages)  # room for the data file, not a page more for its manifest

        with pytest.raises(OSError) as raised:
            save_checkpoint(paths, state)

        assert raised.value.filename == str(paths.checkpoint_manifest(200))
        assert sorted(paths.checkpoints_dir.iterdir()) == []  # no data file that can never count
        assert newest_valid_checkpoint(paths) is None
        assert free_bytes(disk) >= data_pages  # its space is back, for the job's failure event


# --- the job ----------------------------------------------------------------------------------------------


TINY = RunSpec(
    model=ModelSpec(hidden=[8]),
    training=TrainingSpec(steps=2, batch_size=32, checkpoint_every=1, eval_every=1),
)


def test_a_job_that_cannot_journal_its_failure_says_so_in_one_final_stderr_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        paths = RunPaths(disk / "runs" / "tiny")
        publish_text(paths.spec_file, spec_to_yaml(TINY))
        fill(disk)  # not a byte left: neither for the job's files nor for its failure event

        with pytest.raises(OSError):
            run_attempt(AttemptRequest("tiny", str(paths.run_dir), "001-a"))

        stderr = capsys.readouterr().err
        assert journaled_failures(paths.run_dir) == []  # the journal could not say it ...
        assert temp_files(disk) == []

    final = find_failure_line(stderr)  # ... so stderr does, in the fixed form sync reads
    assert final is not None, stderr
    assert (final.state, final.error_type) == ("FAILED", "OSError")
    assert final.message == f"{NO_SPACE}: {paths.data_indices_file}"
    assert stderr.rstrip("\n").splitlines()[-1] == failure_line(final)
    assert stderr.count(failure_line(final)) == 1


def test_a_starting_job_removes_what_killed_writers_left_in_its_run_folder(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    publish_text(paths.spec_file, spec_to_yaml(TINY))
    left_by_a_kill = [
        paths.run_dir / ".tmp-spec.yaml.41.0a1b2c3d",
        paths.checkpoints_dir / ".tmp-step_000000001.safetensors.41.0a1b2c3d",
        paths.attempt("000-x").events_dir / ".tmp-00000003-metrics.json.41.0a1b2c3d",
    ]
    for path in left_by_a_kill:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")

    run_attempt(AttemptRequest("tiny", str(paths.run_dir), "001-a"))

    assert temp_files(paths.run_dir) == []
    assert paths.checkpoint_file(TINY.training.steps).is_file()


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o077, 0o600)])
def test_files_a_job_publishes_follow_its_umask(tmp_path: Path, umask: int, mode: int) -> None:
    paths = RunPaths(tmp_path / "run")
    publish_text(paths.spec_file, spec_to_yaml(TINY))
    previous = os.umask(0o022)
    try:
        run_attempt(AttemptRequest("tiny", str(paths.run_dir), "001-a", umask=umask))
        # restored when the job returned (the debug executor runs it in process)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)

    published = [
        paths.checkpoint_file(TINY.training.steps),
        paths.checkpoint_manifest(TINY.training.steps),
        paths.data_indices_file,
    ]
    published += sorted(paths.attempt("001-a").events_dir.iterdir())
    assert {oct(path.stat().st_mode & 0o777) for path in published} == {oct(mode)}


# --- end to end: real job processes on a disk that fills up -------------------------------------------------


@pytest.mark.subprocess
def test_a_checkpoint_that_does_not_fit_fails_the_attempt_with_the_reason_then_resumes_bit_identically(
    tmp_path: Path, reference: Reference
) -> None:
    orch = Orch(tmp_path / "home")
    sweep = write_sweep(tmp_path, "fulldisk", SWEEP)
    runs = orch.home / "results" / "runs"  # run folders on the small disk; registry and job logs beside it
    with tmpfs(runs, "32m"):
        checkpoint_bytes = reference.checkpoint_bytes()
        # the first checkpoint fits, the second does not
        filler = fill(runs, leave_bytes=checkpoint_bytes * 3 // 2)

        submitted = orch("submit", sweep, "--executor", "local", "--wait", "--json")

        assert submitted.exit_code == 1, submitted.stderr
        run_id = submitted.json()["submitted"][0]
        no_room_for = RunPaths.under(orch.home / "results", run_id).checkpoint_file(200)
        [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
        assert (attempt["state"], attempt["reason"]) == ("FAILED", f"OSError: {NO_SPACE}: {no_room_for}")
        assert orch.ok("status", "--json").json()[0]["counts"] == {"FAILED": 1}
        assert [failure.message for failure in journaled_failures(no_room_for.parent.parent)] == [
            f"{NO_SPACE}: {no_room_for}"
        ]
        stderr = orch.ok("logs", run_id, "--stderr").stdout
        final = find_failure_line(stderr)
        assert final is not None and final.message == f"{NO_SPACE}: {no_room_for}", stderr
        assert temp_files(runs) == []

        filler.unlink()
        attempts = resume_and_compare(orch, run_id, reference)

    assert [attempt["state"] for attempt in attempts] == ["FAILED", "COMPLETED"]
    assert attempts[1]["start_step"] == 100  # continued from the checkpoint that fitted


@pytest.mark.subprocess
def test_a_job_that_cannot_journal_its_failure_is_failed_by_sync_from_its_stderr_line(
    tmp_path: Path, reference: Reference
) -> None:
    orch = Orch(tmp_path / "home")
    sweep = write_sweep(tmp_path, "fulldisk", SWEEP)
    results = orch.home / "results"
    with tmpfs(results / "runs", "32m") as runs:
        with local_slots_held(results / "submitit" / "slots", load_profile("local").max_parallel):
            run_id = orch.ok("submit", sweep, "--executor", "local", "--json").json()["submitted"][0]
            # while the job waits for its slot: not a byte left, not even for its failure event
            filler = fill(runs)

        assert wait_for_counts(orch, {"FAILED": 1}) == {"FAILED": 1}
        run_dir = RunPaths.under(results, run_id).run_dir
        [attempt] = orch.ok("show", run_id, "--json").json()["attempts"]
        assert attempt["state"] == "FAILED"
        found = re.fullmatch(f"OSError: {NO_SPACE}: (.+)", attempt["reason"] or "")
        assert found is not None and Path(found.group(1)).is_relative_to(run_dir), attempt["reason"]
        assert journaled_failures(run_dir) == []  # so the reason came from the job's stderr line
        final = find_failure_line(orch.ok("logs", run_id, "--stderr").stdout)
        assert final is not None and f"{final.error_type}: {final.message}" == attempt["reason"]
        assert temp_files(runs) == []

        filler.unlink()
        attempts = resume_and_compare(orch, run_id, reference)

    assert [attempt["state"] for attempt in attempts] == ["FAILED", "COMPLETED"]


@pytest.mark.subprocess
def test_a_registry_on_a_full_disk_refuses_cleanly_loses_nothing_and_resumes_bit_identically(
    tmp_path: Path, reference: Reference
) -> None:
    sweep, other_sweep = (
        write_sweep(tmp_path, "fulldisk", SWEEP),
        write_sweep(tmp_path, "another", OTHER_SWEEP),
    )
    with tmpfs(tmp_path / "home", "64m") as home:
        orch = Orch(home)
        # The job dies (SIGKILL) at its 9th publication, the second checkpoint's: its journal holds a
        # checkpoint the registry has not ingested yet, so the next sync has something to write.
        submitted = run_orch(
            home, "submit", sweep, "--executor", "local", "--json", **{KILL_VARIABLE: "publish:9"}
        )
        assert submitted.returncode == 0, submitted.stderr
        run_id = json.loads(submitted.stdout)["submitted"][0]
        run_dir = RunPaths.under(home / "results", run_id).run_dir
        wait_until_gone(wait_for_first_checkpoint(run_dir))
        recorded = registry_rows(orch.registry)
        filler = fill(home)

        for command in (["status"], ["submit", other_sweep, "--executor", "local", "--wait"]):
            refused = run_orch(home, *command)
            assert refused.returncode == 2, f"orch {' '.join(command)}: {refused.stdout}{refused.stderr}"
            assert "Traceback" not in refused.stderr, refused.stderr
            assert re.search("disk is full|no space left on device", refused.stderr, re.IGNORECASE), (
                refused.stderr
            )
            assert str(home) in refused.stderr, refused.stderr  # where
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

        assert integrity(orch.registry) == [("ok",)]
        assert registry_rows(orch.registry) == recorded  # rolled back: nothing lost, nothing half-written

        filler.unlink()
        assert wait_for_counts(orch, {"LOST": 1}) == {"LOST": 1}  # the next command works
        # the refused submission left nothing
        assert [view["sweep"] for view in orch.ok("status", "--json").json()] == ["fulldisk"]
        attempts = resume_and_compare(orch, run_id, reference)

    assert [attempt["state"] for attempt in attempts] == ["LOST", "COMPLETED"]
    assert 0 < attempts[1]["start_step"] < STEPS  # continued from the checkpoint


def test_a_second_writer_of_a_run_folder_stops_and_journals_why(tmp_path: Path) -> None:
    """While one process holds the run folder (here this test, as a surviving job would), an
    attempt of the same run stops before touching it: no checkpoint, no temporary cleaned away,
    and its own journal says who holds the folder."""
    from jobs.writer import RunFolderBusy, sole_writer

    paths = RunPaths(tmp_path / "runs" / "tiny")
    publish_text(paths.spec_file, spec_to_yaml(TINY))
    # the other writer's file in flight
    survivor_temp = paths.run_dir / ".tmp-step_000000001.safetensors.4242"
    survivor_temp.write_bytes(b"half")
    with sole_writer(paths.run_dir, "001-survivor"):
        with pytest.raises(RunFolderBusy):
            run_attempt(AttemptRequest("tiny", str(paths.run_dir), "002-second"))
        [failure] = [
            event.payload
            for event in read_events(paths.attempt("002-second"))
            if isinstance(event.payload, Failed)
        ]
    assert (
        failure.error_type == "RunFolderBusy"
        and "attempt 001-survivor" in failure.message
        and f"pid {os.getpid()}" in failure.message
    )
    assert survivor_temp.exists() and not paths.checkpoints_dir.exists()

    # the lock is free again: the run trains
    run_attempt(AttemptRequest("tiny", str(paths.run_dir), "003-after"))
    assert [event.payload for event in read_events(paths.attempt("003-after"))][-1] == Finished(final_step=2)
