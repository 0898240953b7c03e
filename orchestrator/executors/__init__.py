"""Executor backends behind one small protocol (submitit's core/backends split).

Every backend runs the same job function (``jobs.entry.run_attempt``) with the same
``AttemptRequest``; the job's journal is identical whichever backend ran it. A backend submits a
list of requests as one array, observes submitted jobs in batches, cancels them, and makes the
submitit executor that its jobs (and ``orch analyze``'s) go out through.

Adding an executor is one module with a backend class (its ``name``, ``poll_seconds`` and the
methods of :class:`Backend`) bound to ``BACKEND``, and one line in :data:`BACKEND_MODULES`.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Protocol, Sequence

if TYPE_CHECKING:
    import submitit

from jobs.entry import AttemptJob, AttemptRequest
from jobs.pack import PackedJob, PackRequest
from jobs.spec import ResourcesSpec
from orchestrator.sbatch import SbatchOptions


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    array_task: Optional[int]
    stdout_path: str
    stderr_path: str


@dataclass(frozen=True)
class JobSettings:
    """What the jobs of one array ask for, whatever they run: the submitit executor's settings."""

    resources: ResourcesSpec  # its ``time`` is the jobs' limit
    folder: Path  # submitit's files: scripts, logs, pickles
    max_parallel: int
    name: str = "orch"  # job name and comment: finds the array again if the submitter dies
    launcher: Sequence[str] = ()  # argv that runs Python in the job (a container wrapper); () = this Python
    max_requeues: int = 3  # submitit's max_num_timeout
    signal_delay_s: int = 90
    sbatch: Optional[SbatchOptions] = (
        None  # pass-through options: the runs' own over their cluster profile's (Slurm only)
    )
    # Slurm: start only after these jobs (afterok:123)
    dependency: Optional[str] = None


@dataclass(frozen=True)
class ArraySubmission:
    """Runs with equal resources, submitted as one array."""

    requests: Sequence[AttemptRequest]
    settings: JobSettings


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
    # the job's earlier runs, oldest first (Slurm's accounting keeps them)
    requeued: tuple[EndedRun, ...] = ()


class SubmitRefused(Exception):
    """The scheduler refused (part of) an array: ``handles`` of the jobs it took, in order, before
    it refused the rest (a submit limit, a scheduler that does not answer)."""

    def __init__(self, handles: list[JobHandle], message: str) -> None:
        super().__init__(message)
        self.handles = handles
        self.message = message


class Backend(Protocol):
    name: str
    poll_seconds: float  # how often waiting commands look again
    queued: bool  # a scheduler's queue: commands return once submitted (unless --wait); else they wait
    keeps_history: bool  # observations carry a job's earlier runs (requeues) after its journal ended it

    def check_available(self) -> None:
        """Raise ``UserError`` (what is missing, what would be accepted) when this machine cannot submit."""

    def array_limit(self) -> Optional[int]:
        """The most tasks one array may hold (None: any number)."""

    def submission_context(self, folder: Path) -> ContextManager[None]:
        """What ``executor.batch()`` runs inside (local: jobs detached from this process's streams)."""

    def submit_slots(self) -> Optional[int]:
        """How many more jobs (array tasks) this user may submit now (None: any number)."""

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        """A handle per request, in order (packed requests share a job: :func:`array_tasks`);
        raises ``SubmitRefused`` where the scheduler refused some."""

    def observe(self, jobs: Sequence[JobRef]) -> list[Observation]: ...

    def cancel(self, jobs: Sequence[JobRef]) -> None: ...

    def submitit_executor(self, settings: JobSettings) -> submitit.Executor: ...


class OnThisMachine:
    """What the backends whose jobs run on this machine (local processes, this process) share:
    no queue to return from, nothing to check before submitting, no limit on an array, a process
    table cheap enough to look at every second."""

    poll_seconds = 1.0
    queued = False
    keeps_history = False

    def check_available(self) -> None:
        """Always available."""

    def array_limit(self) -> Optional[int]:
        return None

    def submit_slots(self) -> Optional[int]:
        return None

    def submission_context(self, folder: Path) -> ContextManager[None]:
        return contextlib.nullcontext()


# name -> the module whose ``BACKEND`` is the backend class; imported on first use, so that
# ``orch --help`` and the commands that never submit load neither submitit nor a backend.
BACKEND_MODULES = {
    "local": "orchestrator.executors.local",
    "debug": "orchestrator.executors.debug",
    "slurm": "orchestrator.executors.slurm",
}
EXECUTOR_NAMES = tuple(BACKEND_MODULES)


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (KeyError for an unknown name)."""
    return importlib.import_module(BACKEND_MODULES[name]).BACKEND


def get_backend(name: str) -> Backend:
    return backend_class(name)()


def poll_seconds(executors: Sequence[str]) -> float:
    """How long a command waiting on jobs of these executors sleeps between looks: the slowest
    backend's interval (sacct and squeue load slurmctld and slurmdbd, which Slurm's documentation
    asks not to poll in tight loops; a process table is cheap to read)."""
    return max(
        (backend_class(name).poll_seconds for name in set(executors)),
        default=backend_class("local").poll_seconds,
    )


def array_tasks(array: ArraySubmission) -> list[tuple[AttemptRequest, ...]]:
    """The requests of ``array`` as its tasks: ``resources.pack`` consecutive ones share a task."""
    size = array.settings.resources.pack
    return [tuple(array.requests[start : start + size]) for start in range(0, len(array.requests), size)]


def task_job(members: tuple[AttemptRequest, ...], settings: JobSettings) -> tuple[Callable[..., Any], object]:
    """The submitit callable of one task and its argument: one attempt, or a pack of them (which
    has half the warning's lead to checkpoint)."""
    if len(members) == 1:
        return AttemptJob(), members[0]
    return PackedJob(), PackRequest(members, settings.resources.cpus, settings.signal_delay_s / 2)


def task_handles(
    members: tuple[AttemptRequest, ...], job_id: str, array_task: Optional[int], stdout: str, stderr: str
) -> list[JobHandle]:
    """A handle per attempt of a task: packed attempts share the job and log to their own files."""
    if len(members) == 1:
        return [JobHandle(job_id, array_task, stdout, stderr)]
    attempts = [member.attempt_paths for member in members]
    return [
        JobHandle(job_id, array_task, str(attempt.stdout_file), str(attempt.stderr_file))
        for attempt in attempts
    ]


def array_task_of(job_id: str) -> Optional[int]:
    """The task index of a Slurm array job id (``123_4`` -> 4); None for a plain job id."""
    _, separator, task = job_id.partition("_")
    return int(task) if separator and task.isdigit() else None
