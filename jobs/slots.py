"""A cap on how many local jobs run at once: N lock files, one held per running job.

submitit's local executor starts every array element at once. The local backend sets
``ORCH_LOCAL_SLOTS_DIR`` and ``ORCH_LOCAL_SLOTS`` in the jobs' environment; each job then waits
for a free slot before it loads anything heavy. The kernel drops a dead job's lock, so a killed
job never leaks its slot. Outside the local executor the variables are unset and this is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

SLOTS_DIR_VARIABLE = "ORCH_LOCAL_SLOTS_DIR"
SLOTS_VARIABLE = "ORCH_LOCAL_SLOTS"


@contextlib.contextmanager
def local_slot(poll_seconds: float = 0.5) -> Iterator[None]:
    slots_dir = os.environ.get(SLOTS_DIR_VARIABLE)
    if not slots_dir:
        yield
        return
    with _hold_free_slot(Path(slots_dir), int(os.environ[SLOTS_VARIABLE]), poll_seconds):
        yield


@contextlib.contextmanager
def _hold_free_slot(slots_dir: Path, slots: int, poll_seconds: float) -> Iterator[None]:
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            # the umask (results_access) decides
            descriptor = os.open(slots_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            try:
                yield
            finally:
                os.close(descriptor)
            return
        time.sleep(poll_seconds)
