"""Executor backends behind one small protocol (submitit's core/backends split).

Every backend runs the same job function (``jobs.entry.run_attempt``) with the same
``AttemptRequest``; the job's journal is identical whichever backend ran it. A backend submits a
list of requests as one array, tells whether a submitted job is still alive, and cancels jobs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

from jobs.entry import AttemptRequest
from jobs.spec import ResourcesSpec


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    array_task: Optional[int]
    stdout_path: str
    stderr_path: str


@dataclass(frozen=True)
class ArraySubmission:
    """Runs with equal resources, submitted as one array under ``folder`` (submitit's files)."""

    requests: Sequence[AttemptRequest]
    resources: ResourcesSpec
    folder: Path
    max_parallel: int


@dataclass(frozen=True)
class JobRef:
    """What the registry knows of a submitted job, for liveness checks and cancellation."""

    job_id: Optional[str]
    hostname: Optional[str]
    pid: Optional[int]


class Liveness(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"  # cannot tell from here (another host, scheduler unreachable)


class Backend(Protocol):
    name: str

    def submit(self, array: ArraySubmission) -> list[JobHandle]: ...

    def liveness(self, job: JobRef) -> Liveness: ...

    def cancel(self, job: JobRef) -> None: ...


EXECUTOR_NAMES = ("local", "debug")


def get_backend(name: str) -> Backend:
    if name == "local":
        from orchestrator.executors.local import LocalBackend

        return LocalBackend()
    if name == "debug":
        from orchestrator.executors.debug import DebugBackend

        return DebugBackend()
    raise KeyError(name)
