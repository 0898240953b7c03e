"""Executor backends behind one small protocol (submitit's core/backends split).

Every backend runs the same job function (``jobs.entry.run_attempt``) with the same
``AttemptRequest``; the job's journal is identical whichever backend ran it. A backend submits a
list of requests as one array, observes submitted jobs in batches, and cancels them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

from jobs.entry import AttemptRequest
from jobs.spec import ResourcesSpec
from orchestrator.sbatch import SbatchOptions


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
    name: str = "orch"  # job name and comment: finds the array again if the submitter dies
    launcher: Sequence[str] = ()  # argv that runs Python in the job (a container wrapper); () = this Python
    max_requeues: int = 3  # submitit's max_num_timeout
    signal_delay_s: int = 90
    sbatch: Optional[SbatchOptions] = None  # pass-through options: the runs' own over their cluster profile's (Slurm only)


@dataclass(frozen=True)
class JobRef:
    """What the registry knows of a submitted job, for observation and cancellation."""

    job_id: Optional[str]
    hostname: Optional[str]
    pid: Optional[int]
    name: Optional[str] = None  # the array's job name (its submission)
    array_task: Optional[int] = None


class Phase(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    ENDED = "ended"  # the scheduler says it ended: ``state`` says how
    GONE = "gone"  # the scheduler does not know the job (any more)
    UNKNOWN = "unknown"  # cannot tell from here (another host, scheduler unreachable)


@dataclass(frozen=True)
class EndedRun:
    """One earlier run of a job that the scheduler requeued (its node failed, it was preempted or
    requeued on request): how that run ended, where, and when."""

    state: str  # the scheduler's word: NODE_FAIL, PREEMPTED, REQUEUED, ...
    node: Optional[str]
    started_time: Optional[float]
    ended_time: float


@dataclass(frozen=True)
class Observation:
    phase: Phase
    state: Optional[str] = None  # the registry state of an ENDED job
    exit_code: Optional[int] = None
    reason: Optional[str] = None
    node: Optional[str] = None
    job_id: Optional[str] = None  # the scheduler's id, when it had to be found by name
    requeued: tuple[EndedRun, ...] = ()  # the job's earlier runs, oldest first (Slurm's accounting keeps them)


class Backend(Protocol):
    name: str

    def submit(self, array: ArraySubmission) -> list[JobHandle]: ...

    def observe(self, jobs: Sequence[JobRef]) -> list[Observation]: ...

    def cancel(self, jobs: Sequence[JobRef]) -> None: ...


EXECUTOR_NAMES = ("local", "debug", "slurm")


# How often waiting commands look again: a process table is cheap to read; sacct and squeue load
# slurmctld and slurmdbd, which Slurm's documentation asks not to poll in tight loops.
POLL_SECONDS = {"local": 1.0, "debug": 1.0, "slurm": 10.0}


def poll_seconds(executors: Sequence[str]) -> float:
    return max((POLL_SECONDS[name] for name in executors), default=POLL_SECONDS["local"])


def array_task_of(job_id: str) -> Optional[int]:
    """The task index of a Slurm array job id (``123_4`` -> 4); None for a plain job id."""
    _, separator, task = job_id.partition("_")
    return int(task) if separator and task.isdigit() else None


def get_backend(name: str) -> Backend:
    if name == "local":
        from orchestrator.executors.local import LocalBackend

        return LocalBackend()
    if name == "debug":
        from orchestrator.executors.debug import DebugBackend

        return DebugBackend()
    if name == "slurm":
        from orchestrator.executors.slurm import SlurmBackend

        return SlurmBackend()
    raise KeyError(name)
