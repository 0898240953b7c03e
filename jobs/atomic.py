"""Atomic publication: write a temporary file, fsync it, rename it into place, fsync the folder.

A reader sees either nothing or the whole file, never a torn one, even on NFS where rename within
one folder is atomic. Temporary names start with ``.tmp-`` so readers can skip them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from jobs import faults

TEMP_PREFIX = ".tmp-"
PUBLISH_THREADS = 16  # concurrent writes of publish_many


def publish_bytes(path: Path, payload: bytes, create_parents: bool = True, sync_folder: bool = True) -> str:
    """Atomically write ``payload`` to ``path``; returns its sha256 (hex). ``create_parents``:
    create missing folders (else a missing folder is a ``FileNotFoundError``). ``sync_folder``:
    fsync the folder after the rename (off only for a caller that fsyncs it itself, once for many files).

    The temporary file is created exclusively (never through a symlink), with the mode the umask
    leaves. On failure (a full disk, a quota, a read-only or unreachable file system, an
    interruption) it is removed, so nothing half-written stays, and an ``OSError`` about the
    temporary file names ``path`` instead: ``[Errno 28] No space left on device: '<path>'``; one
    about another file (a folder that cannot be created) keeps that file's name.
    """
    faults.reached("publish")
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        if create_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_synced(temp, payload)
        os.replace(temp, path)
        if sync_folder:
            _fsync_folder(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if not isinstance(error, OSError) or error.errno is None or error.filename not in (None, str(temp)):
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    return hashlib.sha256(payload).hexdigest()


def publish_many(files: Sequence[tuple[Path, bytes]], threads: int = PUBLISH_THREADS) -> None:
    """Publish each (path, payload) as :func:`publish_bytes` does, skipping a file that holds the
    payload already (a run's spec file is written once, not once per attempt). The fsyncs, which
    dominate on NFS, overlap in threads, and each folder is fsynced once after its renames."""
    changed = [(path, payload) for path, payload in files if not _holds(path, payload)]
    if not changed:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(changed))) as pool:
        list(pool.map(lambda item: publish_bytes(item[0], item[1], sync_folder=False), changed))
        list(pool.map(_fsync_folder, dict.fromkeys(path.parent for path, _ in changed)))


def _holds(path: Path, payload: bytes) -> bool:
    try:
        return path.stat().st_size == len(payload) and path.read_bytes() == payload
    except OSError:
        return False


def _write_synced(temp: Path, payload: bytes) -> None:
    # the umask applies
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what killed writers left under ``folder`` (``.tmp-*`` files: never published, never
    read); returns them. For a job starting on its run's folder: no other writer is active there."""
    leftovers = (
        [path for path in folder.rglob(f"{TEMP_PREFIX}*") if path.is_file()] if folder.is_dir() else []
    )
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def publish_json(path: Path, document: Any) -> str:
    return publish_bytes(path, json.dumps(document, sort_keys=True, indent=1).encode())


def publish_text(path: Path, text: str) -> str:
    return publish_bytes(path, text.encode())


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
