"""submitit's local executor: jobs run as processes on this machine (the embedded default)."""

from __future__ import annotations

import os
import signal
import shlex

import submitit

from jobs.entry import run_attempt
from jobs.slots import SLOTS_DIR_VARIABLE, SLOTS_VARIABLE
from jobs.spec import time_limit_minutes
from orchestrator.executors import ArraySubmission, JobHandle, JobRef, Liveness
from orchestrator.executors.processes import process_alive, process_tree, this_host

SUBMITIT_MARK = "submitit"
CONTROLLER_MODULE = "submitit.local._local"


class LocalBackend:
    name = "local"

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        executor = submitit.LocalExecutor(folder=array.folder)
        slots_dir = array.folder.parent / "slots"  # shared by all submissions: the cap holds for the machine
        executor.update_parameters(
            timeout_min=time_limit_minutes(array.resources.time),
            setup=[f"export {SLOTS_DIR_VARIABLE}={shlex.quote(str(slots_dir))} {SLOTS_VARIABLE}={int(array.max_parallel)}"],
        )
        with executor.batch():
            jobs = [executor.submit(run_attempt, request) for request in array.requests]
        return [
            JobHandle(job.job_id, index, str(job.paths.stdout), str(job.paths.stderr)) for index, job in enumerate(jobs)
        ]

    def liveness(self, job: JobRef) -> Liveness:
        if not this_host(job.hostname):
            return Liveness.UNKNOWN
        controller_pid = int(job.job_id) if job.job_id else None
        alive = process_alive(job.pid, SUBMITIT_MARK) or process_alive(controller_pid, SUBMITIT_MARK)
        return Liveness.ALIVE if alive else Liveness.DEAD

    def cancel(self, job: JobRef) -> None:
        """Interrupt submitit's controller, which interrupts (then kills) its task, as ``LocalJob.cancel`` does.

        The job id is the pid of the shell that runs the setup lines and then the controller; the
        task ignores SIGTERM (submitit bypasses it), so SIGINT is what ends it.
        """
        if not job.job_id or not this_host(job.hostname):
            return
        for pid in process_tree(int(job.job_id)):
            if process_alive(pid, CONTROLLER_MODULE):
                os.kill(pid, signal.SIGINT)
