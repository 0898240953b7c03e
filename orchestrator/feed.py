"""Submitting within the user's limits: the attempts beyond the scheduler's free submit slots wait
in the registry, held back, and are handed to it as slots free.

A submission commits every attempt held back, then launches as many as the user's submit limits
leave room for (``Backend.submit_slots``: on Slurm the tightest of MaxSubmitJobs, GrpSubmitJobs,
a QOS's MaxSubmitJobsPerUser and the cluster's MaxJobCount, against the jobs held now). Every
command that syncs (``status``, ``status --watch``, ``submit --wait``, ``sync``) and ``orch feed``
(from cron, or as a small Slurm job that submits itself again later) then tops the queue up:
the oldest held-back attempts first, as many as there are free slots. A launch the scheduler
refuses is held back again with its answer as the reason; nothing is lost, and the next feed
tries again.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from jobs.entry import AttemptRequest
from jobs.spec import spec_from_json
from orchestrator.errors import UserError
from orchestrator.executors import get_backend
from orchestrator.home import OrchHome
from orchestrator.launch import (
    LaunchReport,
    PreparedAttempt,
    RunToSubmit,
    SubmitChoices,
    TargetResolver,
    claim,
    grouped_by_array,
    launch,
)
from orchestrator.registry.models import Attempt, Run
from orchestrator.registry.tables import RunState
from orchestrator.sync import FeedReport, owned


@dataclass
class SlotBudget:
    """The free submit slots of each executor, asked of the backend once, spent as arrays go out;
    ``kept`` slots of an executor are left free (the feeder job's own)."""

    free: dict[str, Optional[int]] = field(default_factory=dict)  # None: no limit
    kept: dict[str, int] = field(default_factory=dict)

    def take(self, executor: str, wanted: int) -> int:
        if executor not in self.free:
            slots = get_backend(executor).submit_slots()
            self.free[executor] = None if slots is None else max(slots - self.kept.get(executor, 0), 0)
        free = self.free[executor]
        if free is None:
            return wanted
        taken = min(free, wanted)
        self.free[executor] = free - taken
        return taken


def launch_within_slots(
    engine: Engine, home: OrchHome, groups: Sequence[Sequence[PreparedAttempt]], budget: SlotBudget
) -> LaunchReport:
    """Launch the leading attempts of each array (committed held back) as far as the free slots
    go; the others stay held back."""
    report = LaunchReport()
    for group in groups:
        pack = group[0].spec.resources.pack
        room = budget.take(group[0].executor, math.ceil(len(group) / pack)) * pack  # slots hold tasks
        claimed = claim(engine, group[:room], group[0].array_name) if room else []
        if claimed:
            report.add(launch(engine, home, claimed))
        report.held_back += [item.request.run_id for item in group[room:]]
    return report


def feed(engine: Engine, home: OrchHome, budget: Optional[SlotBudget] = None) -> FeedReport:
    """Top the scheduler's queue up with the oldest held-back attempts, as many as the free
    submit slots of their executors allow; nothing (one indexed query) when none is held back."""
    budget = budget or SlotBudget()
    report = FeedReport()
    for executor, waiting in held_back_counts(engine).items():
        room = budget.take(executor, waiting)
        if room:
            launched = _launch_oldest(engine, home, executor, room)
            report.launched += launched.launched
            report.refusals += launched.refusals
    report.waiting = sum(held_back_counts(engine).values())
    return report


def launchable() -> ColumnElement[bool]:
    """Held back for a submit slot only: not behind a smoke test that has not let them go yet."""
    released = or_(Attempt.gate.is_(None), Attempt.after_jobs.is_not(None))
    return and_(
        Attempt.held_back.is_(True), Attempt.state == RunState.PENDING, released, owned(Attempt.owner)
    )


def held_back_counts(engine: Engine) -> dict[str, int]:
    """Held-back attempts per executor, those a smoke test still holds back not counted."""
    query = (
        select(Attempt.executor, func.count())
        .where(launchable())
        .group_by(Attempt.executor)
        .order_by(Attempt.executor)
    )
    with engine.connect() as connection:
        return {executor: count for executor, count in connection.execute(query)}


def _launch_oldest(engine: Engine, home: OrchHome, executor: str, slots: int) -> LaunchReport:
    """Launch the oldest held-back attempts of ``executor`` that ``slots`` tasks hold (packed runs
    share one) as new arrays (fresh names: the scheduler finds each array again by its name and
    the positions in it)."""
    resolver = TargetResolver(home, SubmitChoices(executor=executor))
    report = LaunchReport()
    prepared: list[tuple[PreparedAttempt, str]] = []
    labels: dict[str, str] = {}
    tasks: dict[str, int] = {}  # array key -> attempts taken, packed into ceil(n / pack) tasks
    for batch in _oldest_held_back(engine, executor, slots):
        for held in batch:
            try:
                attempt, array_key = _held_attempt(held, resolver)
            except UserError as problem:  # its image is gone since it was submitted: it stays held back
                report.refusals.append(f"run {held.run.run_id}: {problem}")
                continue
            taken, pack = tasks.get(array_key, 0), attempt.spec.resources.pack
            if taken % pack == 0:  # it opens a task
                if slots == 0:
                    continue  # it needs a slot of its own; a later one of the batch may join a task
                slots -= 1
            tasks[array_key] = taken + 1
            prepared.append((attempt, array_key))
            labels[held.key] = held.submission.partition(":")[0]
        if slots == 0:
            break
    if not prepared:
        return report
    stamp = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    for number, group in enumerate(grouped_by_array(prepared)):
        array_name = f"{labels[group[0].request.attempt_key]}:{stamp}.{number}"
        claimed = claim(engine, group, array_name)
        if claimed:
            report.add(launch(engine, home, claimed))
    return report


@dataclass(frozen=True)
class HeldAttempt:
    """A held-back attempt as the registry has it."""

    key: str
    number: int
    submission: str  # the submission that committed it: its label names the new array
    after_jobs: Optional[str]  # the dependency its smoke test gave it ("" none)
    run: RunToSubmit


def _oldest_held_back(engine: Engine, executor: str, slots: int) -> Iterator[list[HeldAttempt]]:
    """Held-back attempts of ``executor``, oldest first, in batches of ``slots`` while the caller
    takes them."""
    query = (
        select(Attempt.key, Attempt.number, Attempt.submission_id, Attempt.after_jobs, Run)
        .join(Run, Run.id == Attempt.run_id)
        .where(launchable(), Attempt.executor == executor)
        .order_by(Attempt.submitted_time, Attempt.submission_id, Attempt.array_task, Attempt.id)
    )
    batch = max(slots, 1)
    for offset in itertools.count(0, batch):
        with Session(engine) as session:
            rows = [
                HeldAttempt(
                    key,
                    number,
                    submission,
                    after_jobs,
                    RunToSubmit(run.id, run.state, number - 1, spec_from_json(run.spec_json)),
                )
                for key, number, submission, after_jobs, run in session.execute(
                    query.offset(offset).limit(batch)
                )
            ]
        yield rows
        if len(rows) < batch:
            return


def _held_attempt(held: HeldAttempt, resolver: TargetResolver) -> tuple[PreparedAttempt, str]:
    """The held-back attempt, ready for an array (named when claimed), and the key of the arrays
    it may share (its dependency included)."""
    run = held.run
    target = resolver.target(run)
    request = AttemptRequest(
        run.run_id, str(target.paths.run_dir), held.key, umask=target.profile.results_umask
    )
    prepared = PreparedAttempt(
        target.executor,
        "",
        request,
        target.spec,
        target.profile,
        held.number,
        0,
        target.image_sha256,
        target.sbatch,
        after_jobs=held.after_jobs,
    )
    return prepared, f"{target.array_key}|{held.after_jobs or ''}"


FEEDER_TIME_LIMIT = "10"  # minutes: a feed is one sync and a few sbatch calls
FEEDER_MEMORY = "2G"


def feeder_job_name(home: OrchHome) -> str:
    """The job name of this home's feeder (one per home: a second is not queued beside it)."""
    return "orch-feed:" + hashlib.sha256(str(home.root).encode()).hexdigest()[:12]


def pending_feeder(home: OrchHome) -> Optional[str]:
    """The job id of this home's feeder if it waits in Slurm's queue (a running one is the command
    asking, which queues its successor)."""
    from orchestrator.executors.slurm import run_slurm  # Slurm only: not imported by other commands

    squeue = ["squeue", "--noheader", "--states=PENDING", f"--name={feeder_job_name(home)}", "--format=%i"]
    return next(iter(run_slurm(squeue).split()), None)


def reschedule_feeder(home: OrchHome, minutes: int, partition: Optional[str]) -> str:
    """Queue ``orch feed --reschedule MINUTES`` as a small Slurm job that starts ``minutes`` from
    now (``sbatch --begin``), unless this home's feeder is queued already; returns its job id.
    The job runs this interpreter on a compute node, which sees the home on the shared file system
    like the runs' jobs do; its log is ``<home>/feed-<job id>.log``. It takes a submit slot of its
    own: ``orch feed --reschedule`` keeps one free for it. Raises SlurmError if sbatch refuses it."""
    from orchestrator.executors.slurm import run_slurm

    queued = pending_feeder(home)
    if queued is not None:
        return queued
    feed_again = [sys.executable, "-m", "orchestrator", "--home", str(home.root), "feed"]
    feed_again += ["--reschedule", str(minutes), *(["--partition", partition] if partition else [])]
    sbatch = [
        "sbatch",
        "--parsable",
        f"--job-name={feeder_job_name(home)}",
        f"--begin=now+{minutes}minutes",
        f"--time={FEEDER_TIME_LIMIT}",
        f"--mem={FEEDER_MEMORY}",
        "--cpus-per-task=1",
        f"--output={home.root / 'feed-%j.log'}",
        *([f"--partition={partition}"] if partition else []),
        f"--wrap={shlex.join(feed_again)}",
    ]
    return run_slurm(sbatch).strip().split(";")[0]
