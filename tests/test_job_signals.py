"""Signals at the edges of a job's life, in real job processes.

A run that finished must end its job with exit 0 whatever the scheduler sends afterwards (Slurm's
record then agrees with the journal), and a run that the time limit stopped with no requeue left
says so in words: which limit, where it stopped, what to change.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import submitit

from jobs.atomic import publish_text
from jobs.entry import AttemptJob, AttemptRequest
from jobs.journal import Failed, Finished, read_events
from jobs.paths import RunPaths
from jobs.spec import ModelSpec, ResourcesSpec, RunSpec, TrainingSpec, spec_to_yaml

TINY = RunSpec(
    model=ModelSpec(hidden=[8]),
    training=TrainingSpec(steps=3, batch_size=32, checkpoint_every=1, eval_every=1),
)

# A job process as submitit starts one (SUBMITIT_EXECUTOR set: the job handles the warning signal
# and SIGTERM itself) whose journal sends the process SIGTERM and USR2 the moment the run's final
# event is published: the time limit or a cancel arriving just as the run finished.
LATE_SIGNALS_JOB = textwrap.dedent(
    """
    import os, signal, sys
    os.environ["SUBMITIT_EXECUTOR"] = "slurm"
    from jobs import journal
    from jobs.entry import AttemptRequest, run_attempt

    append = journal.JournalWriter.append

    def append_then_signalled(self, payload):
        event = append(self, payload)
        if isinstance(payload, journal.Finished):
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)
        return event

    journal.JournalWriter.append = append_then_signalled
    final_step = run_attempt(AttemptRequest("tiny", sys.argv[1], "001-a"))
    os.kill(os.getpid(), signal.SIGTERM)  # and once more while the process winds down
    print("final step", final_step)
    """
)


def events_of(paths: RunPaths, attempt_key: str) -> list[object]:
    return [event.payload for event in read_events(paths.attempt(attempt_key))]


def test_a_finished_run_exits_0_when_signals_come_late(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    publish_text(paths.spec_file, spec_to_yaml(TINY))

    job = subprocess.run(
        [sys.executable, "-c", LATE_SIGNALS_JOB, str(paths.run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert job.returncode == 0, job.stderr
    assert job.stdout.strip() == f"final step {TINY.training.steps}"
    assert "Traceback" not in job.stderr and "Exception ignored" not in job.stderr
    assert events_of(paths, "001-a")[-1] == Finished(final_step=TINY.training.steps)


def test_the_time_limit_with_no_requeue_left_is_a_timeout_that_says_what_to_change(tmp_path: Path) -> None:
    """submitit's own local executor sends the warning signal 3 s before its 15 s limit (12 s to
    start and train: time enough on a loaded machine, where tests run side by side); with no
    requeue left its handler gives up, and the journal names the limit and the step."""
    spec = RunSpec(
        model=ModelSpec(hidden=[256, 256]),
        training=TrainingSpec(
            steps=200_000, batch_size=64, checkpoint_every=100_000, eval_every=100_000, heartbeat_seconds=0.2
        ),
        resources=ResourcesSpec(time="00:00:15", segments=1),
    )
    paths = RunPaths(tmp_path / "run")
    publish_text(paths.spec_file, spec_to_yaml(spec))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit", max_num_timeout=0)
    executor.update_parameters(timeout_min=0.25, signal_delay_s=3)

    job = executor.submit(AttemptJob(), AttemptRequest("long", str(paths.run_dir), "001-a"))
    job.wait()

    assert job.exception() is not None  # submitit reports the job as given up
    [failed] = [event for event in events_of(paths, "001-a") if isinstance(event, Failed)]
    assert (failed.state, failed.error_type) == ("TIMEOUT", "RequeueLimitReached")
    assert failed.step is not None and 0 < failed.step < spec.training.steps
    assert f"stopped at step {failed.step} of {spec.training.steps}" in failed.message
    assert "resources.segments: 1" in failed.message and "resources.time: 00:00:15" in failed.message
    assert "orch resume" in failed.message
