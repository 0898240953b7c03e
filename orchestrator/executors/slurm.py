"""Slurm through submitit: one array per submission (chunked under MaxArraySize), sacct for states.

The job runs ``python -u -m submitit.core._submit FOLDER`` where ``python`` is the launcher: the
login node's interpreter, or a container wrapper (``singularity exec --nv … python3``) with every
element shell-quoted, because submitit pastes it into the sbatch script as it is.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import itertools
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import ContextManager, Optional, Sequence

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from jobs.entry import AttemptRequest
from jobs.spec import ResourcesSpec, time_limit_minutes
from orchestrator.errors import UserError, one_paragraph
from orchestrator.executors import (
    ArraySubmission,
    JobHandle,
    JobRef,
    JobSettings,
    Observation,
    Phase,
    SubmitRefused,
    array_task_of,
    array_tasks,
    task_handles,
    task_job,
)
from orchestrator.executors.slurm_limits import read_submit_limits
from orchestrator.executors.slurm_states import (
    PENDING_STATES,
    QUEUED_STATES,
    SacctRecord,
    observation_of,
    parse_sacct,
    runs_before,
    sacct_job_batches,
)
from orchestrator.sbatch import SbatchOptions

SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "NodeList",
    "Reason",
    "Start",
    "End",
    "MaxRSS",
    "ReqMem",
)
COMMAND_TIMEOUT_SECONDS = 60
SUBMIT_TRIES = 3  # sbatch tries of one chunk while slurmctld is busy or does not answer
SUBMIT_BACKOFF_SECONDS = 2.0  # the pause before the second try, doubled before each later one
# what sbatch says when slurmctld is busy or unreachable for a moment (worth a second try)
TRANSIENT_SBATCH_ERRORS = (
    "Socket timed out",
    "Unable to contact slurm controller",
    "Resource temporarily unavailable",
    "Slurm temporarily unable",
    "Zero Bytes were transmitted",
    "Connection refused",
)
SLURM_COMMANDS = ("sbatch", "scontrol")  # submitting an array and reading its size limit


class SlurmError(RuntimeError):
    pass


class SlurmBackend:
    name = "slurm"
    poll_seconds = 10.0  # sacct and squeue load slurmctld and slurmdbd
    queued = True
    keeps_history = True  # sacct --duplicates: the runs of a job before each requeue

    def check_available(self) -> None:
        missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
        if missing:
            raise UserError(
                f"--executor slurm: {' and '.join(missing)} not found on PATH on this machine; "
                "accepted: --executor slurm on a Slurm login node, --executor local, or no --executor"
            )

    def array_limit(self) -> Optional[int]:
        try:
            return max_array_size()
        except SlurmError as error:
            raise UserError(
                f"--executor slurm: Slurm does not answer ({one_paragraph(str(error), 300)}); "
                "accepted: a machine where scontrol and sbatch reach the cluster, --executor local, "
                "or no --executor"
            ) from None

    def submission_context(self, folder: Path) -> ContextManager[None]:
        return contextlib.nullcontext()

    def submitit_executor(self, settings: JobSettings) -> submitit.SlurmExecutor:
        python = shlex.join(settings.launcher) if settings.launcher else shlex.quote(sys.executable)
        executor = submitit.SlurmExecutor(
            folder=settings.folder, max_num_timeout=settings.max_requeues, python=python
        )
        executor.update_parameters(
            **sbatch_parameters(
                settings.resources,
                settings.name,
                settings.max_parallel,
                settings.signal_delay_s,
                settings.sbatch,
                settings.dependency,
            )
        )
        return executor

    def submit_slots(self) -> Optional[int]:
        """The room under the user's tightest submit limit (0 while Slurm does not answer)."""
        try:
            return read_submit_limits(run_slurm).slots
        except SlurmError:
            return 0

    def submit(self, array: ArraySubmission) -> list[JobHandle]:
        """The array in chunks of MaxArraySize; a chunk sbatch refuses for a moment (slurmctld
        busy, a socket timeout) is tried again after a pause, one it refuses for good (a submit
        limit) raises ``SubmitRefused`` with the chunks submitted before it."""
        handles: list[JobHandle] = []
        tasks = array_tasks(array)
        try:
            chunk_size = max_array_size()
            for offset in range(0, len(tasks), chunk_size):
                chunk = tasks[offset : offset + chunk_size]
                handles.extend(self._submit_with_retries(array, offset, chunk))
        except (SlurmError, FailedJobError, FailedSubmissionError) as error:
            raise SubmitRefused(handles, one_paragraph(str(error), 400)) from None
        return handles

    def _submit_with_retries(
        self, array: ArraySubmission, offset: int, tasks: Sequence[tuple[AttemptRequest, ...]]
    ) -> list[JobHandle]:
        for attempt in itertools.count(1):
            try:
                # submitit prints sbatch's complaints: they are reported, not shown raw
                with contextlib.redirect_stderr(io.StringIO()):
                    return self._submit_chunk(array, offset, tasks)
            except FailedJobError as error:
                if attempt == SUBMIT_TRIES or not is_transient(str(error)):
                    raise
                time.sleep(SUBMIT_BACKOFF_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # itertools.count never ends

    def _submit_chunk(
        self, array: ArraySubmission, offset: int, tasks: Sequence[tuple[AttemptRequest, ...]]
    ) -> list[JobHandle]:
        executor = self.submitit_executor(
            replace(array.settings, name=chunk_name(array.settings.name, offset))
        )
        with executor.batch():
            jobs = [executor.submit(*task_job(task, array.settings)) for task in tasks]
        return [
            handle
            for task, job in zip(tasks, jobs)
            for handle in task_handles(
                task, job.job_id, array_task_of(job.job_id), str(job.paths.stdout), str(job.paths.stderr)
            )
        ]

    def observe(self, jobs: Sequence[JobRef]) -> list[Observation]:
        """What Slurm says of each job: the live facts (state, reason, node) of a job still in the
        queue from slurmctld (``squeue``), the record of an ended one and the job's earlier runs
        (requeued after a node failure, a preemption) from accounting (``sacct``: exit code,
        memory, start and end), one batched call each. sacct's reason of a queued job is stale (a
        released hold still reads JobHeldAdmin), and accounting lags behind just-submitted jobs."""
        job_ids = [job.job_id for job in jobs if job.job_id]
        live = squeue_records(job_ids) if job_ids else {}
        records = sacct_records(job_ids)
        for job_id, record in live.items():
            history = records.get(job_id)
            # queued: squeue's facts; ended: until accounting has it
            if record.state in QUEUED_STATES or history is None:
                records[job_id] = replace(record, earlier=earlier_runs(record, history))
        unrecorded = [job for job in jobs if not job.job_id and job.name]
        by_position = records_by_submission(unrecorded) if unrecorded else {}
        observations = []
        for job in jobs:
            if job.job_id:
                observations.append(observation_of(records.get(job.job_id)))
            else:
                observations.append(_recovered(by_position.get((job.name or "", job.array_task))))
        return observations

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        job_ids = [job.job_id for job in jobs if job.job_id]
        if job_ids:
            run_slurm(["scancel", *job_ids])


BACKEND = SlurmBackend


def earlier_runs(live: SacctRecord, history: Optional[SacctRecord]) -> tuple[SacctRecord, ...]:
    """The ended runs of a job squeue still holds: accounting's earlier ones, and accounting's
    newest too when it ended while squeue has the job waiting again (requeued before accounting
    recorded the new run)."""
    if history is None:
        return ()
    return runs_before(history) if live.state in PENDING_STATES else history.earlier


def sbatch_parameters(
    resources: ResourcesSpec,
    name: str,
    max_parallel: int,
    signal_delay_s: int,
    options: Optional[SbatchOptions] = None,
    dependency: Optional[str] = None,
) -> dict[str, object]:
    parameters: dict[str, object] = {
        **(options.parameters() if options is not None else {}),
        "job_name": name,
        "comment": name,
        "time": math.ceil(time_limit_minutes(resources.time or "15")),
        "cpus_per_task": resources.cpus,
        "mem": resources.mem,
        "array_parallelism": max_parallel,
        "signal_delay_s": signal_delay_s,
    }
    if dependency:  # one that can no longer be met leaves the job pending: orch cancels it, saying why
        parameters["dependency"] = dependency
    if resources.partition:
        parameters["partition"] = resources.partition
    if resources.gpus:
        parameters["gres"] = (
            f"gpu:{resources.gpu_type}:{resources.gpus}" if resources.gpu_type else f"gpu:{resources.gpus}"
        )
    return parameters


def is_transient(sbatch_error: str) -> bool:
    """Whether sbatch's error says slurmctld is busy or unreachable (try again) rather than no."""
    return any(pattern in sbatch_error for pattern in TRANSIENT_SBATCH_ERRORS)


def chunk_name(submission: str, offset: int) -> str:
    """The job name of the array holding runs ``offset``… of a submission (task i is run offset +
    i): ``orch:<sweep>:<time>-<random>.<array>+<offset>``, what a job is on a shared cluster."""
    return f"orch:{submission}+{offset}"


def records_by_submission(jobs: Sequence[JobRef]) -> dict[tuple[str, Optional[int]], SacctRecord]:
    """Records of submissions whose job ids were never recorded, keyed by (submission, position in it)."""
    chunk_size = max_array_size()
    names = {
        chunk_name(job.name, offset): (job.name, offset)
        for job in jobs
        if job.name
        for offset in range(0, (job.array_task or 0) + 1, chunk_size)
    }
    joined = ",".join(sorted(names))
    # sacct lists a task by name once it started
    found = parse_sacct(_squeue(["--name", joined]), wanted=None)
    found.update(parse_sacct(_sacct(["--name", joined, "--starttime", "now-7days"]), wanted=None))
    by_position: dict[tuple[str, Optional[int]], SacctRecord] = {}
    for record in found.values():
        if record.name in names:
            submission, offset = names[record.name]
            by_position[(submission, offset + (record.array_task or 0))] = record
    return by_position


def max_array_size() -> int:
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", run_slurm(["scontrol", "show", "config"]), re.MULTILINE)
    if match is None:
        raise SlurmError("scontrol show config does not report MaxArraySize")
    return int(match.group(1))


def sacct_records(job_ids: Sequence[str]) -> dict[str, SacctRecord]:
    """The newest record of each job id (``123`` or ``123_4``), ≤ 1 000 ids per sacct call.

    sacct is asked for whole arrays (``123``): a task still pending inside its array's
    ``123_[4-5%2]`` line is not found under its own id.
    """
    wanted = set(job_ids)
    records: dict[str, SacctRecord] = {}
    for arrays in sacct_job_batches(job_ids):
        records.update(parse_sacct(_sacct(["--jobs", arrays]), wanted=wanted))
    return records


def squeue_records(job_ids: Sequence[str]) -> dict[str, SacctRecord]:
    """What slurmctld itself says of the jobs among ``job_ids`` it still holds (queued, running,
    or ended within MinJobAge): one squeue of this user's jobs, whatever their number (asking for
    ids fails as a whole when slurmctld has forgotten one of them)."""
    return parse_sacct(_squeue(["--user", getpass.getuser()]), wanted=set(job_ids))


def _squeue(selection: list[str]) -> str:
    # the first six columns of SACCT_FIELDS; squeue has no exit code (that column stays empty)
    command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%j|%T||%N|%r", *selection]
    try:
        return run_slurm(command)
    except SlurmError:
        return ""  # squeue rejects ids that slurmctld has already forgotten


def _sacct(selection: list[str]) -> str:
    command = ["sacct", "--duplicates", "--parsable2", "--noheader", f"--format={','.join(SACCT_FIELDS)}"]
    return run_slurm(command + selection)


def _recovered(record: Optional[SacctRecord]) -> Observation:
    if record is None:
        return Observation(
            Phase.GONE, reason="no job id was recorded and Slurm knows no job of this submission"
        )
    return replace(observation_of(record), job_id=record.job_id)


def run_slurm(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmError(f"{command[0]} failed: {error}") from None
    if completed.returncode != 0:
        raise SlurmError(f"{shlex.join(command)} exited {completed.returncode}: {completed.stderr.strip()}")
    return completed.stdout
