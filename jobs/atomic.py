"""Atomic publication: write a temporary file, fsync it, rename it into place, fsync the folder.

A reader sees either nothing or the whole file, never a torn one, even on NFS where rename within
one folder is atomic. Temporary names start with ``.tmp-`` so readers can skip them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jobs import faults

TEMP_PREFIX = ".tmp-"


def publish_bytes(path: Path, payload: bytes) -> str:
    """Atomically write ``payload`` to ``path``; returns its sha256 (hex).

    On failure (a full disk, a quota, a read-only or unreachable file system) the temporary file is
    removed, so a full disk keeps no half-written copy, and the ``OSError`` raised names ``path``:
    ``[Errno 28] No space left on device: '<path>'``.
    """
    faults.reached("publish")
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_folder(path.parent)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    return hashlib.sha256(payload).hexdigest()


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
