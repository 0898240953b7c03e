"""Shards: safetensors files with JSON metadata, journaled manifests, corruption detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.journal import JournalWriter
from jobs.paths import RunPaths
from jobs.shards import complete_steps, iter_shards, read_shard, shard_file, write_shard


@pytest.fixture
def run(tmp_path: Path) -> RunPaths:
    return RunPaths(tmp_path / "run")


def write_line(paths: RunPaths, step: int, journal: JournalWriter | None = None) -> None:
    points = np.linspace(-0.5, 0.5, 167, dtype=np.float64)
    losses = np.arange(167 * 3, dtype=np.float32).reshape(167, 3) + step
    manifest = write_shard(
        paths, "line", step, {"points": points, "train_losses": losses}, {"lr": 0.1, "indices": [4, 2]}
    )
    if journal is not None:
        journal.append(manifest)


def test_round_trip_keeps_dtypes_values_and_metadata(run: RunPaths) -> None:
    write_line(run, 7)

    shard = read_shard(shard_file(run, "line", 7))

    assert (shard.probe, shard.step) == ("line", 7)
    assert shard.arrays["points"].dtype == np.float64 and shard.arrays["train_losses"].dtype == np.float32
    assert shard.arrays["train_losses"][0, 0] == 7.0 and shard.arrays["points"][-1] == 0.5
    assert shard.metadata["lr"] == 0.1 and shard.metadata["indices"] == [4, 2]
    assert b"pickle" not in shard_file(run, "line", 7).read_bytes()[:200]


def test_iter_shards_reads_a_step_range_in_order(run: RunPaths) -> None:
    for step in (30, 10, 20, 40):
        write_line(run, step)

    assert [shard.step for shard in iter_shards(run, "line", start=15, stop=40)] == [20, 30]
    assert [shard.step for shard in iter_shards(run, "line")] == [10, 20, 30, 40]
    assert list(iter_shards(run, "hessian_norm")) == []


def test_only_journaled_intact_shards_count_as_complete(run: RunPaths) -> None:
    journal = JournalWriter(run.attempt("001-a"))
    for step in (1, 2, 3):
        write_line(run, step, journal)
    write_line(run, 4)  # published, but the job died before journaling it
    corrupt = shard_file(run, "line", 2)
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0xFF
    corrupt.write_bytes(bytes(data))

    leftover = run.shards_dir / "line" / ".tmp-step_000000005.safetensors.4242"  # a publication cut short
    leftover.write_bytes(b"partial")

    assert complete_steps(run, "line") == {1, 3}
    moved = sorted(path.name.split(".corrupt")[0] for path in (run.shards_dir / "line").glob("*.corrupt-*"))
    assert moved == ["step_000000002.safetensors"]  # kept for inspection
    assert not shard_file(run, "line", 2).exists()
    assert not shard_file(run, "line", 4).exists()  # unjournaled: removed, measured again
    assert not leftover.exists()
    assert complete_steps(run, "line") == {1, 3}  # idempotent


def test_a_later_attempt_manifest_supersedes_an_earlier_one(run: RunPaths) -> None:
    write_line(run, 5, JournalWriter(run.attempt("001-a")))
    write_line(run, 5, JournalWriter(run.attempt("002-b")))  # measured again after a resume

    assert complete_steps(run, "line") == {5}


# --- atomic publication: one writer for jobs and orch ------------------------------------------------


def test_publication_without_creating_parents_refuses_a_missing_folder_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    from jobs.atomic import publish_bytes

    with pytest.raises(FileNotFoundError):
        publish_bytes(tmp_path / "missing" / "file.csv", b"x", create_parents=False)

    assert list(tmp_path.iterdir()) == []


def test_a_failed_publication_keeps_the_name_of_the_path_that_failed(tmp_path: Path) -> None:
    from jobs.atomic import publish_bytes

    (tmp_path / "blocker").write_text("a file where a folder should be")
    target = tmp_path / "blocker" / "deeper" / "file.json"

    with pytest.raises(OSError) as raised:
        publish_bytes(target, b"{}")

    assert raised.value.filename == str(tmp_path / "blocker" / "deeper")  # the folder that could not be made


def test_orchs_own_writer_is_the_jobs_atomic_publication(tmp_path: Path) -> None:
    from orchestrator.safe_output import replace_file

    target = tmp_path / "a-folder"
    target.mkdir()

    with pytest.raises(OSError) as raised:
        replace_file(target, b"rows")

    assert raised.value.filename == str(target)  # the target, not the temporary file
    assert [path.name for path in tmp_path.iterdir()] == ["a-folder"] and list(target.iterdir()) == []


def test_sweeps_and_the_cli_name_file_kinds_with_one_function() -> None:
    from orchestrator import safe_output, sweep, sweep_files

    assert sweep_files.describe_mode is safe_output.describe_mode
    assert not hasattr(sweep, "_file_kind") and not hasattr(sweep_files, "_file_kind")
