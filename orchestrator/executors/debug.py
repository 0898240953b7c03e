"""submitit's debug executor: the job runs inside this process (``pdb`` works on failures)."""

from __future__ import annotations

from typing import Sequence

import submitit

from jobs.entry import run_attempt
from orchestrator.executors import (
    ArraySubmission,
    JobHandle,
    JobRef,
    JobSettings,
    Observation,
    OnThisMachine,
    Phase,
)
from orchestrator.executors.processes import process_alive, this_host


class DebugBackend(OnThisMachine):
    name = "debug"

    def submitit_executor(self, settings: JobSettings) -> submitit.DebugExecutor:
        return submitit.DebugExecutor(folder=settings.folder)

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        executor = self.submitit_executor(array.settings)
        handles = []
        for index, request in enumerate(array.requests):
            job = executor.submit(run_attempt, request)
            try:
                job.result()  # runs now, in this process
            except Exception:  # noqa: BLE001 - the failure is in the attempt's journal
                pass
            handles.append(JobHandle(job.job_id, index, str(job.paths.stdout), str(job.paths.stderr)))
        return handles

    def observe(self, jobs: Sequence[JobRef]) -> list[Observation]:
        """A debug job has ended by the time ``submit`` returns, unless its process is this one, still in
        it."""
        return [
            Observation(Phase.RUNNING)
            if this_host(job.hostname) and process_alive(job.pid, "")
            else Observation(
                Phase.ENDED, state="LOST", reason="the debug job ended without a final journal event"
            )
            for job in jobs
        ]

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Nothing to cancel: a debug job has finished by the time ``submit`` returns."""


BACKEND = DebugBackend
