"""Several runs in one array task on one GPU: a process each, started and watched by the task.

A digits MLP or a ResNet-20 on 8 % of CIFAR-10 leaves most of a GPU idle. With ``resources.pack:
k`` an array task holds k attempts; :class:`PackedJob`, the task's submitit callable, starts one
process per attempt (``python -m jobs.pack``, which runs :func:`jobs.entry.run_attempt` as a
task of its own would) and waits for them. Each keeps its own journal, checkpoints, shards and
log files, so the registry sees k ordinary attempts that share a job id:

- the scheduler's warning signal goes to every member; each checkpoints and journals its requeue,
  and the task is requeued with the members whose journal ends in that requeue;
- ``orch cancel`` of one member writes its attempt's cancel request: the task stops that process
  alone (SIGTERM), the others go on;
- a member that dies without a final event (killed, out of memory) gets one from the task, so
  ``orch resume`` submits it alone; the task then fails, naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from submitit.core.utils import UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission

from jobs.entry import (
    TIMEOUT_STATE,
    AttemptRequest,
    RequeueLimitReached,
    report_failure,
    requeue_limit_message,
)
from jobs.interrupt import SIGNAL_VARIABLE
from jobs.journal import Failed, Finished, read_events, read_heartbeat
from jobs.paths import AttemptPaths

THREADS_VARIABLE = "ORCH_THREADS"  # a member's share of the task's CPUs (jobs.train sets torch's threads)
POLL_SECONDS = 1.0  # how often the task looks for cancel requests and ended members


@dataclass(frozen=True)
class PackRequest:
    """The attempts of one array task, and the CPUs the task has for them."""

    members: tuple[AttemptRequest, ...]
    cpus: int = 1
    # after the warning signal, how long members may take to checkpoint before they are killed
    # (within the profile's signal_delay_s, which is what is left before the time limit)
    stop_seconds: float = 60.0


class MemberKilled(RuntimeError):
    """A packed run's process ended by a signal nobody in orch sent (the OOM killer, kill -9)."""


class PackIncomplete(RuntimeError):
    """Not every packed run finished: the task fails, and each run's journal says why."""


@dataclass
class Member:
    request: AttemptRequest
    process: subprocess.Popen
    cancelled: bool = False  # its cancel request was found and the process told to stop

    @property
    def attempt(self) -> AttemptPaths:
        return self.request.attempt_paths


@dataclass
class PackedJob(Checkpointable):
    """The submitit callable of a task of k packed attempts (k ≥ 2)."""

    members: list[Member] = field(default_factory=list, repr=False)
    handled: int = 0  # requests of the pack started as members or skipped (cancelled before the start)

    def __call__(self, pack: PackRequest) -> list[int]:
        previous_umask = os.umask(pack.members[0].umask)
        try:
            for request in pack.members:  # one by one: a warning signal meanwhile sees those started
                if not cancelled_before_start(request):
                    self.members.append(start_member(request, member_threads(pack)))
                self.handled += 1
            watch(self.members)
        except UncompletedJobError:  # the time limit came again and submitit has no requeue left
            for member in unfinished(self.members):
                step = heartbeat_step(member.attempt)
                report_failure(
                    member.attempt,
                    RequeueLimitReached(requeue_limit_message(None, step)),
                    TIMEOUT_STATE,
                    step,
                )
            raise
        finally:
            os.umask(previous_umask)
        return finish(self.members)

    # submitit reads None as "do not requeue" (every member finished or was cancelled)
    def checkpoint(self, pack: PackRequest) -> Optional[DelayedSubmission]:  # type: ignore[override]
        """The warning signal (time limit, preemption): every member checkpoints and journals its
        requeue (one still starting, or too slow, is killed: it continues from its last
        checkpoint); the task comes back with the members that did not finish, fail or get
        cancelled."""
        warning = getattr(signal, "SIG" + os.environ.get(SIGNAL_VARIABLE, "USR2"))
        for member in self.members:
            if member.process.poll() is None:
                member.process.send_signal(warning)
        deadline = time.monotonic() + pack.stop_seconds
        for member in self.members:
            try:
                member.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()
        # and those not started yet: the signal came while the task was starting them
        again = (*(member.request for member in unfinished(self.members)), *pack.members[self.handled :])
        return DelayedSubmission(PackedJob(), dataclasses.replace(pack, members=again)) if again else None


def cancelled_before_start(request: AttemptRequest) -> bool:
    """``orch cancel`` reached the run while its task waited: it is not started (its run may run
    again elsewhere by now, and must not meet this process in its folder)."""
    return request.attempt_paths.cancel_request.exists()


def member_threads(pack: PackRequest) -> int:
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", pack.cpus))
    return max(1, cpus // len(pack.members))


def start_member(request: AttemptRequest, threads: int) -> Member:
    """The attempt's own process, logging to files in its journal folder (argument list, no shell)."""
    attempt = request.attempt_paths
    attempt.root.mkdir(parents=True, exist_ok=True)
    with open(attempt.stdout_file, "ab") as stdout, open(attempt.stderr_file, "ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "jobs.pack", json.dumps(dataclasses.asdict(request))],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, THREADS_VARIABLE: str(threads)},
        )
    return Member(request, process)


def watch(members: Sequence[Member]) -> None:
    """Until every member has ended: stop those whose cancel request appeared."""
    while any(member.process.poll() is None for member in members):
        for member in members:
            if (
                not member.cancelled
                and member.process.poll() is None
                and member.attempt.cancel_request.exists()
            ):
                member.process.terminate()
                member.cancelled = True
        time.sleep(POLL_SECONDS)


def unfinished(members: Sequence[Member]) -> list[Member]:
    """The members a requeued task continues: not finished, failed or cancelled."""
    return [
        member
        for member in members
        if not member.cancelled and not isinstance(last_payload(member.attempt), (Finished, Failed))
    ]


def finish(members: Sequence[Member]) -> list[int]:
    """Each member's final step; a member that died without a final event gets one (it failed),
    and the task fails when any member did not finish."""
    unfinished = []
    for member in members:
        code = member.process.returncode
        # SIGTERM, SIGINT: scancel or a time limit stopped it, which the scheduler or the registry
        # says (as for a task of one run); any other signal killed it, which only this task saw
        if code < 0 and not member.cancelled and -code not in (signal.SIGTERM, signal.SIGINT):
            name = signal_name(-code)
            step = heartbeat_step(member.attempt)
            report_failure(
                member.attempt,
                MemberKilled(f"the run's process was killed by {name} (packed with others in one task)"),
                step=step,
            )
        if not isinstance(last_payload(member.attempt), Finished):
            unfinished.append(
                f"{member.request.run_id} (exit {code}{', cancelled' if member.cancelled else ''})"
            )
    if unfinished:
        raise PackIncomplete(
            f"{len(unfinished)} of {len(members)} packed runs did not finish: {', '.join(unfinished)}"
        )
    return [heartbeat_step(member.attempt) or 0 for member in members]


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"


def last_payload(attempt: AttemptPaths) -> object:
    events = read_events(attempt)
    return events[-1].payload if events else None


def heartbeat_step(attempt: AttemptPaths) -> Optional[int]:
    beat = read_heartbeat(attempt)
    return beat.step if beat is not None else None


def main(argv: Sequence[str]) -> int:
    """A member's process: one attempt, as :func:`jobs.entry.run_attempt` runs it anywhere."""
    from jobs.entry import run_attempt

    request = AttemptRequest(**json.loads(argv[0]))
    with contextlib.suppress(SystemExit):  # a requeue: the journal says so and the task acts on it
        run_attempt(request)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
