"""Landscape shards: one safetensors file per (run, probe, step), never pickled.

A shard holds a probe's arrays for one training step (per-sample losses as float32, points as
float64, …) and a JSON metadata document in the safetensors header. It is published atomically,
its size and sha256 go into the attempt's journal (``ShardWritten``), and ``sync`` indexes it.

On restart a job asks :func:`complete_steps` which shards of its run are whole: each file must
match a ``ShardWritten`` manifest from the run's journals byte for byte (size and sha256). A file
that does not (torn by a crash, corrupted, or never journaled) is moved aside and measured again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from jobs.atomic import TEMP_PREFIX, publish_bytes, sha256_file
from jobs.journal import ShardWritten, read_events
from jobs.paths import RunPaths

METADATA_KEY = "orch"  # the safetensors header entry that holds the shard's JSON metadata
CORRUPT_SUFFIX = ".corrupt"


@dataclass(frozen=True)
class LoadedShard:
    probe: str
    step: int
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]


def shard_file(paths: RunPaths, probe: str, step: int) -> Path:
    return paths.shards_dir / probe / f"step_{step:09d}.safetensors"


def write_shard(
    paths: RunPaths,
    probe: str,
    step: int,
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any],
    is_extrapolation: bool = False,
) -> ShardWritten:
    """Publish one shard; returns the manifest to append to the journal.

    ``n_points`` is the length of the ``points`` array when there is one (a line), else 1.
    """
    document = {"probe": probe, "step": step, "is_extrapolation": is_extrapolation, **metadata}
    payload = save_safetensors(
        {name: np.ascontiguousarray(array) for name, array in arrays.items()},
        metadata={METADATA_KEY: json.dumps(document)},
    )
    path = shard_file(paths, probe, step)
    digest = publish_bytes(path, payload)
    n_points = len(arrays["points"]) if "points" in arrays else 1
    return ShardWritten(
        probe, step, str(path.relative_to(paths.run_dir)), len(payload), digest, n_points, is_extrapolation
    )


def read_shard(path: Path, metadata_only: bool = False) -> LoadedShard:
    """One shard; with ``metadata_only`` just its header (no array is read)."""
    document = json.loads(_header_metadata(path)[METADATA_KEY])
    arrays = {} if metadata_only else load_safetensors(path.read_bytes())
    return LoadedShard(document["probe"], document["step"], arrays, document)


def iter_shards(
    paths: RunPaths,
    probe: str,
    start: Optional[int] = None,
    stop: Optional[int] = None,
    metadata_only: bool = False,
) -> Iterator[LoadedShard]:
    """Shards of ``probe`` with ``start <= step < stop``, in step order, one file in memory at a time."""
    for step, path in _shard_files(paths, probe):
        if (start is None or step >= start) and (stop is None or step < stop):
            yield read_shard(path, metadata_only)


def complete_steps(paths: RunPaths, probe: str) -> set[int]:
    """Steps whose shard matches its journaled manifest, after clearing up what a crash left.

    A file whose size or sha256 differs from its manifest (torn, corrupted) is moved aside for
    inspection; a file without a manifest (the job died between publishing it and journaling it)
    and temporary files of an interrupted publication are removed. Either way the step is
    measured again.
    """
    manifests = journaled_shards(paths, probe)
    complete = set()
    for step, path in _shard_files(paths, probe):
        manifest = manifests.get(step)
        if manifest is None:
            path.unlink()
        elif path.stat().st_size == manifest.bytes and sha256_file(path) == manifest.sha256:
            complete.add(step)
        else:
            path.rename(path.with_name(f"{path.name}{CORRUPT_SUFFIX}-{time.time_ns()}"))
    folder = paths.shards_dir / probe
    for temporary in folder.glob(f"{TEMP_PREFIX}*") if folder.is_dir() else []:
        temporary.unlink()
    return complete


def journaled_shards(paths: RunPaths, probe: str) -> dict[int, ShardWritten]:
    """The newest ``ShardWritten`` manifest of each step of ``probe``, from every attempt's journal."""
    manifests: dict[int, ShardWritten] = {}
    attempts_dir = paths.run_dir / "attempts"
    for attempt_dir in sorted(attempts_dir.iterdir()) if attempts_dir.is_dir() else []:
        for event in read_events(paths.attempt(attempt_dir.name)):
            if isinstance(event.payload, ShardWritten) and event.payload.probe == probe:
                manifests[event.payload.step] = event.payload
    return manifests


def _shard_files(paths: RunPaths, probe: str) -> list[tuple[int, Path]]:
    folder = paths.shards_dir / probe
    if not folder.is_dir():
        return []
    files = [path for path in folder.glob("step_*.safetensors") if not path.name.startswith(TEMP_PREFIX)]
    return sorted((int(path.stem.split("_")[1]), path) for path in files)


def _header_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (an 8-byte length, then JSON)."""
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    return header.get("__metadata__", {})
