"""The scheduler's warning signal (USR2 before the time limit, or on preemption), handled at a step boundary.

submitit installs a USR2 handler that checkpoints the job's callable and requeues it. Run in the
middle of a training step, that would capture a half-updated model. :class:`StopRequest` takes the
signal over: it only notes it; the training loop publishes a checkpoint at the next step boundary
and then hands the signal to submitit's handler, which requeues the job and exits.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, Callable, Optional, Union

SIGNAL_VARIABLE = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's name for the signal, USR2 by default
EXECUTOR_VARIABLE = "SUBMITIT_EXECUTOR"  # set by submitit in slurm and local jobs
HANDLED_EXECUTORS = ("slurm", "local")

Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


class StopRequest:
    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.requested = False
        self._previous: Handler = None

    @classmethod
    def install(cls) -> "StopRequest":
        """Take over the warning signal inside submitit's slurm/local jobs; elsewhere a request never
        comes."""
        request = cls()
        if os.environ.get(EXECUTOR_VARIABLE) in HANDLED_EXECUTORS:
            request.signum = int(getattr(signal, "SIG" + os.environ.get(SIGNAL_VARIABLE, "USR2")))
            request._previous = signal.signal(request.signum, request._note)
        return request

    def _note(self, signum: int, frame: Optional[FrameType]) -> None:
        self.requested = True

    def hand_over(self) -> None:
        """Let submitit's handler act now (checkpoint the callable, requeue, exit)."""
        assert self.signum is not None
        previous = self._previous
        if callable(previous):
            previous(self.signum, None)
        else:
            raise SystemExit(f"stopped by signal {signal.Signals(self.signum).name}")


class Terminated(BaseException):
    """SIGTERM reached the job: ``orch cancel`` on the local executor, or scancel on Slurm."""


def raise_on_termination() -> None:
    """Make SIGTERM end the job promptly with :class:`Terminated` (no final journal event).

    submitit's job environment ignores SIGTERM; a job started from a background shell ignores
    SIGINT too (Python then installs no KeyboardInterrupt handler), so SIGTERM is what cancels.
    Why the job was terminated (orch cancel, scancel, a time limit) is for the registry or the
    scheduler to say, not for the job, which cannot tell.
    """

    def terminate(signum: int, frame: Optional[FrameType]) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminate)


def ignore_termination() -> None:
    """The training is over: from now a late SIGTERM (a time limit or a cancel that came as the run
    finished) is ignored, so the job journals its end and exits 0, and Slurm's record agrees with
    the journal instead of failing in submitit's teardown or an ``atexit`` hook."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
