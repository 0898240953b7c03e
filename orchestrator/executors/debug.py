"""submitit's debug executor: the job runs inside this process (``pdb`` works on failures)."""

from __future__ import annotations

import submitit

from jobs.entry import run_attempt
from orchestrator.executors import ArraySubmission, JobHandle, JobRef, Liveness
from orchestrator.executors.processes import process_alive, this_host


class DebugBackend:
    name = "debug"

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        executor = submitit.DebugExecutor(folder=array.folder)
        handles = []
        for index, request in enumerate(array.requests):
            job = executor.submit(run_attempt, request)
            try:
                job.result()  # runs now, in this process
            except Exception:  # noqa: BLE001 - the failure is in the attempt's journal
                pass
            handles.append(JobHandle(job.job_id, index, str(job.paths.stdout), str(job.paths.stderr)))
        return handles

    def liveness(self, job: JobRef) -> Liveness:
        if not this_host(job.hostname):
            return Liveness.UNKNOWN
        return Liveness.ALIVE if process_alive(job.pid, "") else Liveness.DEAD

    def cancel(self, job: JobRef) -> None:
        """Nothing to cancel: a debug job has finished by the time ``submit`` returns."""
