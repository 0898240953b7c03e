"""submitit's local executor: jobs run as processes on this machine (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import ContextManager, Iterator, Optional, Sequence

import submitit

from jobs.slots import SLOTS_DIR_VARIABLE, SLOTS_VARIABLE
from jobs.spec import time_limit_minutes
from orchestrator.executors import (
    ArraySubmission,
    JobHandle,
    JobRef,
    JobSettings,
    Observation,
    OnThisMachine,
    Phase,
    array_tasks,
    task_handles,
    task_job,
)
from orchestrator.executors.processes import process_alive, process_tree, processes_running, this_host

SUBMITIT_MARK = "submitit"


class LocalBackend(OnThisMachine):
    name = "local"

    def submission_context(self, folder: Path) -> ContextManager[None]:
        """A job's controller must not hold orch's stdout (``orch … | cat`` would wait for it)."""
        return streams_detached(folder / "controller.log")

    def submitit_executor(self, settings: JobSettings) -> submitit.LocalExecutor:
        python = shlex.join(settings.launcher) if settings.launcher else None
        executor = submitit.LocalExecutor(
            folder=settings.folder, max_num_timeout=settings.max_requeues, python=python
        )
        executor.update_parameters(
            timeout_min=time_limit_minutes(settings.resources.time or "15"),
            signal_delay_s=settings.signal_delay_s,
        )
        return executor

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        settings = array.settings
        executor = self.submitit_executor(settings)
        # shared by all submissions: the cap holds for the machine
        slots_dir = settings.folder.parent / "slots"
        executor.update_parameters(
            setup=[
                f"export {SLOTS_DIR_VARIABLE}={shlex.quote(str(slots_dir))} "
                f"{SLOTS_VARIABLE}={int(settings.max_parallel)}"
            ]
        )
        tasks = array_tasks(array)
        with self.submission_context(settings.folder), executor.batch():
            jobs = [executor.submit(*task_job(task, settings)) for task in tasks]
        return [
            handle
            for index, (task, job) in enumerate(zip(tasks, jobs))
            for handle in task_handles(task, job.job_id, index, str(job.paths.stdout), str(job.paths.stderr))
        ]

    def observe(self, jobs: Sequence[JobRef]) -> list[Observation]:
        return [self._observe(job) for job in jobs]

    def _observe(self, job: JobRef) -> Observation:
        if not this_host(job.hostname):
            return Observation(Phase.UNKNOWN, reason=f"ran on {job.hostname}, not on this host")
        controller_pid = int(job.job_id) if job.job_id else None
        if process_alive(job.pid, SUBMITIT_MARK) or process_alive(controller_pid, SUBMITIT_MARK):
            return Observation(Phase.RUNNING if job.pid else Phase.PENDING)
        if not job.job_id and not job.pid and job.name and self._controllers_of(job.name):
            return Observation(
                Phase.PENDING, reason="started; its submitter died before recording the job id"
            )
        where = f"process {job.pid}" if job.pid else f"job {job.job_id}"
        return Observation(Phase.ENDED, state="LOST", reason=f"{where} ended without a final journal event")

    @staticmethod
    def _controllers_of(array_name: str) -> list[int]:
        """submitit controllers of the array's submission (``<folder>/submitit/<submission>``):
        found by their command line, as a Slurm array is found by its job name."""
        submission = array_name.rpartition(".")[0] or array_name
        return processes_running("submitit.local._local", f"{os.sep}submitit{os.sep}{submission}")

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """SIGTERM to a started task (it stops at once, without final words; submitit's controller
        follows); a job still waiting for its slot has written nothing yet and is killed outright.

        SIGINT is no use here: jobs started from a background shell ignore it.
        """
        for job in jobs:
            if not this_host(job.hostname):
                continue
            if process_alive(job.pid, SUBMITIT_MARK):
                os.kill(job.pid, signal.SIGTERM)  # type: ignore[arg-type]  # process_alive: a pid
            elif job.job_id:
                for pid in reversed(process_tree(int(job.job_id))):
                    if process_alive(pid, SUBMITIT_MARK):
                        os.kill(pid, signal.SIGKILL)


BACKEND = LocalBackend

STANDARD_STREAMS = (0, 1, 2)


@contextlib.contextmanager
def streams_detached(log_file: Path) -> Iterator[None]:
    """Processes started inside get /dev/null as stdin and ``log_file`` as stdout and stderr, not
    this process's own streams.

    submitit's local executor starts each job's controller with the streams of the process that
    submits; the controller outlives ``orch``, so a pipe (``orch submit F | cat``) stayed open
    until the jobs ended. The jobs' output goes to their submitit log files either way;
    ``log_file`` gets what a controller itself prints (its own crash, say).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    stdin = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    saved = {number: _duplicate(number) for number in STANDARD_STREAMS}
    try:
        for source, number in ((stdin, 0), (log, 1), (log, 2)):
            os.dup2(source, number)
        yield
    finally:
        for number, copy in saved.items():
            if copy is None:
                os.close(number)  # it was closed before: close it again
            else:
                os.dup2(copy, number)
                os.close(copy)
        os.close(stdin)
        os.close(log)


def _duplicate(number: int) -> Optional[int]:
    try:
        return os.dup(number)
    except OSError:  # not open
        return None
