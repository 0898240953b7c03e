"""The job function every executor runs: identical arguments and journal on local, debug, Slurm.

This module imports nothing heavy at import time: a local job waiting for a slot stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.slots import local_slot


@dataclass(frozen=True)
class AttemptRequest:
    """What one execution try needs: the run's folder (spec.yaml inside) and its journal key."""

    run_id: str
    run_dir: str
    attempt_key: str


def run_attempt(request: AttemptRequest) -> int:
    """Train the run to completion (resuming from its newest valid checkpoint); returns the final step."""
    with local_slot():
        from jobs.journal import Finished, JournalWriter
        from jobs.paths import RunPaths
        from jobs.spec import spec_from_yaml
        from jobs.train import train

        paths = RunPaths(Path(request.run_dir))
        journal = JournalWriter(paths.attempt(request.attempt_key))
        try:
            trainee = train(spec_from_yaml(paths.spec_file.read_text()), paths, journal)
        except BaseException as error:
            journal.failed(error)
            raise
        journal.append(Finished(final_step=trainee.step))
        return trainee.step
