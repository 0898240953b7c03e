"""The job function every executor runs: identical arguments and journal on local, debug, Slurm.

This module imports nothing heavy at import time: a local job waiting for a slot stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from submitit.helpers import Checkpointable

from jobs.slots import local_slot

TIMEOUT_STATE = "TIMEOUT"


@dataclass(frozen=True)
class AttemptRequest:
    """What one execution try needs: the run's folder (spec.yaml inside) and its journal key."""

    run_id: str
    run_dir: str
    attempt_key: str


def run_attempt(request: AttemptRequest) -> int:
    """Train the run to completion (resuming from its newest valid checkpoint); returns the final step."""
    with local_slot():
        from submitit.core.utils import UncompletedJobError

        from jobs.interrupt import StopRequest, Terminated, raise_on_termination
        from jobs.journal import Finished, JournalWriter
        from jobs.paths import RunPaths
        from jobs.spec import spec_from_yaml
        from jobs.train import train

        paths = RunPaths(Path(request.run_dir))
        journal = JournalWriter(paths.attempt(request.attempt_key))
        stop = StopRequest.install()
        if stop.signum is not None:  # inside a submitit job process (not the debug executor's caller)
            raise_on_termination()
        try:
            trainee = train(spec_from_yaml(paths.spec_file.read_text()), paths, journal, stop)
        except SystemExit:
            if stop.requested:
                raise  # requeued: the journal says so, and the requeued job continues it
            journal.failed(RuntimeError("the job exited before finishing"))
            raise
        except UncompletedJobError as error:  # submitit: time limit reached with no requeue left
            journal.failed(error, TIMEOUT_STATE)
            raise
        except Terminated:
            raise  # scancel, a time limit, orch cancel: the scheduler or the registry knows which
        except BaseException as error:
            journal.failed(error)
            raise
        journal.append(Finished(final_step=trainee.step))
        return trainee.step


class AttemptJob(Checkpointable):
    """``run_attempt`` as a submitit Checkpointable: on the warning signal the job is requeued with
    the same request; the resumed job finds its place from the checkpoints in the run folder."""

    def __call__(self, request: AttemptRequest) -> int:
        return run_attempt(request)
