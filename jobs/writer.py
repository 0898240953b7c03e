"""One writer per run folder: an attempt holds ``<run>/writer.lock`` (``flock``, exclusive) while
it works in the folder. A second process for the same run (a requeued job while the first still
runs on a node that failed without killing it, a resume racing a survivor) finds it held and
stops before touching anything, journaling why in its own attempt folder. The kernel (or the NFS
lock manager) drops a dead process's lock: a killed job never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

LOCK_FILE = "writer.lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's writer lock."""


@contextlib.contextmanager
def sole_writer(run_dir: Path, attempt_key: str) -> Iterator[None]:
    """Hold the run folder's writer lock while the block runs; :class:`RunFolderBusy` naming the
    holder (host, pid, attempt) when another process has it."""
    # the umask (results_access) decides
    descriptor = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (
                os.pread(descriptor, 512, 0).decode(errors="replace").strip()
                or "a process that has not said who it is"
            )
            raise RunFolderBusy(
                f"run folder {run_dir} is being written by another process ({holder}): attempt "
                f"{attempt_key} stops "
                "without touching it, one writer at a time"
            ) from None
        # who holds it, for a second writer's message: a full disk may refuse it
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
            os.pwrite(
                descriptor,
                f"host {os.uname().nodename} pid {os.getpid()} attempt {attempt_key}\n".encode(),
                0,
            )
        yield
    finally:
        os.close(descriptor)
