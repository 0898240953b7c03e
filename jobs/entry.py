"""The job function every executor runs: identical arguments and journal on local, debug, Slurm.

This module imports nothing heavy at import time: a local job waiting for a slot stays small.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from submitit.helpers import Checkpointable

from jobs.paths import AttemptPaths, RunPaths
from jobs.slots import local_slot

if TYPE_CHECKING:
    from jobs.spec import RunSpec

FAILED_STATE = "FAILED"
TIMEOUT_STATE = "TIMEOUT"


@dataclass(frozen=True)
class AttemptRequest:
    """What one execution try needs: the run's folder (spec.yaml inside) and its journal key."""

    run_id: str
    run_dir: str
    attempt_key: str
    umask: int = 0o077  # the cluster profile's results_access: everything the job writes gets it

    @property
    def attempt_paths(self) -> AttemptPaths:
        """The attempt's journal folder in its run folder."""
        return RunPaths(Path(self.run_dir)).attempt(self.attempt_key)


def run_attempt(request: AttemptRequest) -> int:
    """Train the run to completion (resuming from its newest valid checkpoint); returns the final step."""
    previous_umask = os.umask(request.umask)  # restored below: the debug executor runs in orch's process
    try:
        return _run_attempt(request)
    finally:
        os.umask(previous_umask)


def _run_attempt(request: AttemptRequest) -> int:
    with local_slot():
        from submitit.core.utils import UncompletedJobError

        from jobs.atomic import remove_temporaries
        from jobs.interrupt import StopRequest, Terminated, ignore_termination, raise_on_termination
        from jobs.journal import Finished, JournalWriter
        from jobs.spec import spec_from_yaml
        from jobs.train import peak_gpu_bytes, train
        from jobs.writer import sole_writer

        paths = RunPaths(Path(request.run_dir))
        attempt = paths.attempt(request.attempt_key)
        stop = StopRequest.install()
        if stop.signum is not None:  # inside a submitit job process (not the debug executor's caller)
            raise_on_termination()
        journal: Optional[JournalWriter] = None
        spec: Optional[RunSpec] = None
        try:
            with sole_writer(paths.run_dir, request.attempt_key):
                # a killed attempt's half-written files: one attempt runs at a time
                remove_temporaries(paths.run_dir)
                journal = JournalWriter(attempt)
                spec = spec_from_yaml(paths.spec_file.read_text())
                rehearsal = spec.training.rehearse_requeue_at
                if rehearsal is not None and rehearsal < spec.training.steps:
                    train(rehearsal_segment(spec, rehearsal), paths, journal, stop)
                trainee = train(spec, paths, journal, stop)
                if stop.signum is not None:
                    ignore_termination()  # trained: a signal that comes late must not fail the finished job
                journal.append(Finished(trainee.step, peak_gpu_bytes(trainee.device)))
        except SystemExit:
            if stop.requested:
                raise  # requeued: the journal says so, and the requeued job continues it
            report_failure(attempt, RuntimeError("the job exited before finishing"))
            raise
        except UncompletedJobError:  # submitit: time limit reached with no requeue left
            step = journal.last_step if journal else None
            report_failure(
                attempt, RequeueLimitReached(requeue_limit_message(spec, step)), TIMEOUT_STATE, step
            )
            raise
        except Terminated:
            raise  # scancel, a time limit, orch cancel: the scheduler or the registry knows which
        except BaseException as error:
            report_failure(attempt, error, step=journal.last_step if journal else None)
            raise
        return trainee.step


def rehearsal_segment(spec: RunSpec, step: int) -> RunSpec:
    """The first segment of a rehearsed requeue: the run up to ``step``, ending in a checkpoint
    that the second segment (the whole spec) restores, as a requeued job would."""
    from dataclasses import replace

    return replace(spec, training=replace(spec.training, steps=step))


class RequeueLimitReached(RuntimeError):
    """The time limit came again and submitit has no requeue left for the run."""


def requeue_limit_message(spec: Optional[RunSpec], step: Optional[int]) -> str:
    """Why a run stopped at its last time limit, where, and what to change."""
    if spec is None:
        return (
            "the time limit came and submitit had no requeue left; orch resume continues from the last "
            "checkpoint"
        )
    resources = spec.resources
    where = (
        f"at step {step} of {spec.training.steps}"
        if step is not None
        else f"before step 1 of {spec.training.steps}"
    )
    return (
        f"the time limit came and submitit had no requeue left (resources.segments: {resources.segments}, "
        f"resources.time: {resources.time}): stopped {where}; orch resume continues from the last "
        "checkpoint, "
        "a longer resources.time or more resources.segments lets it finish in one submission"
    )


def report_failure(
    attempt: AttemptPaths, error: BaseException, state: str = FAILED_STATE, step: Optional[int] = None
) -> None:
    """Journal the failure if the disk lets us, and print it as the job's final stderr line either way.

    When the journal cannot take the event (the disk is full for it too), that line is what
    ``orch sync`` reads to end the attempt with its reason instead of calling it lost.
    """
    from jobs.journal import JournalWriter, failure_line, failure_of

    failed = failure_of(error, state, step)
    lines: list[str] = []
    try:
        JournalWriter(attempt).append(failed)
    except OSError as journal_error:
        lines.append(f"orch-job: the journal could not record the failure: {journal_error}")
    lines.append(failure_line(failed))
    # stderr on the full disk too, or closed: nothing more to do
    with contextlib.suppress(OSError, ValueError):
        print(*lines, sep="\n", file=sys.stderr, flush=True)


class AttemptJob(Checkpointable):
    """``run_attempt`` as a submitit Checkpointable: on the warning signal the job is requeued with
    the same request; the resumed job finds its place from the checkpoints in the run folder."""

    def __call__(self, request: AttemptRequest) -> int:
        return run_attempt(request)
