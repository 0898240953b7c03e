"""Recording sweeps and runs, submitting attempts, resuming and cancelling them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import operator
import os
import secrets
import socket
import time
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Callable, Iterator, Optional, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs import faults
from jobs.atomic import publish_text
from jobs.entry import AttemptRequest
from jobs.paths import RunPaths
from jobs.spec import RunSpec, spec_from_yaml, spec_to_yaml
from orchestrator.errors import UserError
from orchestrator.estimates import schedule_plan
from orchestrator.containers import container_image, image_sha256, launcher_argv
from orchestrator.executors import ArraySubmission, get_backend
from orchestrator.fingerprint import canonical_json, spec_json
from orchestrator.home import OrchHome
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, Run, RunState, Sweep, SweepRun
from orchestrator.sweep import SweepPlan
from orchestrator.sync import by_executor, job_ref, refresh_run_state, sync


REQUEUE_MARGIN = 2  # requeues beyond the planned segments (preemptions, early warning signals)


@dataclass
class SubmissionReport:
    submitted: list[str] = field(default_factory=list)  # run ids
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that kept it out


@dataclass(frozen=True)
class PreparedAttempt:
    """A committed attempt, ready for the scheduler (plain values: its session has ended)."""

    attempt_id: int
    executor: str
    array_name: str  # "<submission>.<group>": the job name that finds the array again
    request: AttemptRequest
    spec: RunSpec
    profile: ClusterProfile


def record_sweep(session: Session, plan: SweepPlan) -> list[Run]:
    """Upsert the sweep, its runs (one row per distinct run id) and their membership."""
    now = time.time()
    sweep = session.scalar(select(Sweep).where(Sweep.name == plan.name))
    if sweep is None:
        sweep = Sweep(name=plan.name, created_time=now)
        session.add(sweep)
    if sweep.source_text != plan.source_text or sweep.source_path != str(plan.source_path):
        sweep.source_path, sweep.source_text, sweep.description = str(plan.source_path), plan.source_text, plan.description
        sweep.updated_time = now
    session.flush()
    members = {member.run_id: member for member in sweep.members}
    runs = []
    for position, planned in enumerate(plan.runs):
        run = session.get(Run, planned.run_id)
        if run is None:
            run = Run(
                id=planned.run_id,
                canonical_json=canonical_json(planned.spec),
                spec_yaml=spec_to_yaml(planned.spec),
                spec_json=spec_json(planned.spec),
                state=RunState.PLANNED,
                total_steps=planned.spec.training.steps,
                current_step=0,
                created_time=now,
            )
            session.add(run)
        if planned.run_id not in members:
            session.add(SweepRun(sweep=sweep, run=run, position=position, swept_json=json.dumps(planned.swept)))
        runs.append(run)
    return runs


def submit_sweep(engine: Engine, home: OrchHome, plan: SweepPlan, executor: Optional[str]) -> SubmissionReport:
    """Record the sweep and submit its runs that are neither completed nor active.

    Recording the runs and creating their attempts is one transaction: a submit killed at any
    point leaves either nothing or runs with attempts, never runs that nothing will submit.
    """
    sync(engine)
    return _submit(engine, home, functools.partial(record_submission, home=home, plan=plan, executor=executor))


def record_submission(session: Session, home: OrchHome, plan: SweepPlan, executor: Optional[str]) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
    """The bookkeeping of ``orch submit`` before any job runs, in ``session``'s transaction: the
    runs scheduled with the registry's history, recorded, and an attempt (with its spec file)
    for each run that is neither completed nor active."""
    scheduled = [item.run for item in schedule_plan(session, plan)]
    runs = record_sweep(session, replace(plan, runs=scheduled))
    return _prepare_submission(session, home, runs, executor, submittable=lambda state: state not in _NOT_SUBMITTED)


def resume(engine: Engine, home: OrchHome, targets: Sequence[str], executor: Optional[str]) -> SubmissionReport:
    """Re-submit the named runs whose last attempt failed, timed out, was cancelled or is lost,
    and runs that were recorded but never submitted (PLANNED)."""
    sync(engine)

    def select_and_prepare(session: Session) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
        runs = resolve_targets(session, targets)
        return _prepare_submission(session, home, runs, executor, submittable=lambda state: state in _RESUMABLE)

    return _submit(engine, home, select_and_prepare)


_NOT_SUBMITTED = (RunState.COMPLETED, *RunState.ACTIVE)
_RESUMABLE = (RunState.PLANNED, *RunState.RESUMABLE)
Preparation = Callable[[Session], tuple["SubmissionReport", list[list[PreparedAttempt]]]]


def _submit(engine: Engine, home: OrchHome, prepare: Preparation) -> SubmissionReport:
    """Commit the attempts ``prepare`` creates (intent first), then hand them to the scheduler.

    The transaction holds the registry's write lock (SQLite ``BEGIN IMMEDIATE``), so a concurrent
    submit waits and then sees these runs active. Where the database lets two transactions run
    side by side (PostgreSQL), the one-active-attempt index refuses the loser, which tries once
    more and then finds the runs active: a run is never submitted twice.
    """
    for last_try in (False, True):
        try:
            with Session(engine) as session, session.begin():
                report, groups = prepare(session)
            break
        except IntegrityError:
            if last_try:
                raise UserError("another orch command kept changing the same runs; accepted: run this command again") from None
    faults.reached("submit.committed")
    report.submitted = [item.request.run_id for group in groups for item in group]
    for group in groups:
        _launch(engine, home, group)
    sync(engine)  # what finished already (the debug executor runs jobs inside submit)
    return report


def _prepare_submission(
    session: Session, home: OrchHome, runs: Sequence[Run], executor: Optional[str], submittable: Callable[[str], bool]
) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
    """A new attempt (flushed, in ``session``'s transaction) for each run whose state allows it."""
    report = SubmissionReport(skipped={run.id: run.state for run in runs if not submittable(run.state)})
    to_submit = [run for run in runs if submittable(run.state)]
    if not to_submit:
        return report, []
    submission_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    targets = [_attempt_target(home, run) for run in to_submit]  # every image checked before anything is written
    attempts = [_add_attempt(session, run, target, executor, submission_id) for run, target in zip(to_submit, targets)]
    session.flush()  # the one-active-attempt index speaks here, before any file is written
    by_array = sorted(zip(attempts, targets), key=_array_key)
    groups = []
    for number, (_, grouped) in enumerate(groupby(by_array, key=_array_key)):
        members = list(grouped)
        group = [_prepared(attempt, target, f"{submission_id}.{number}", position) for position, (attempt, target) in enumerate(members)]
        with results_umask(group[0].profile):
            for attempt, target in members:
                publish_text(target.paths.spec_file, spec_to_yaml(target.spec))
        groups.append(group)
    return report, groups


def _prepared(attempt: Attempt, target: AttemptTarget, array_name: str, position: int) -> PreparedAttempt:
    """Each attempt's array and position in it, recorded before sbatch."""
    attempt.submission_id, attempt.array_task = array_name, position
    request = AttemptRequest(attempt.run_id, str(target.paths.run_dir), attempt.key, umask=target.profile.results_umask)
    return PreparedAttempt(attempt.id, attempt.executor, array_name, request, target.spec, target.profile)


def _launch(engine: Engine, home: OrchHome, group: list[PreparedAttempt]) -> None:
    """Submit one array and record its job ids (the attempts are committed already)."""
    faults.reached("submit.scheduler")
    with results_umask(group[0].profile):
        handles = get_backend(group[0].executor).submit(_array_of(group, home))
    faults.reached("submit.launched")
    with Session(engine) as session, session.begin():
        for item, handle in zip(group, handles):
            attempt = session.get_one(Attempt, item.attempt_id)
            attempt.job_id, attempt.array_task = handle.job_id, handle.array_task
            attempt.stdout_path, attempt.stderr_path = handle.stdout_path or None, handle.stderr_path or None


@contextlib.contextmanager
def results_umask(*profiles: ClusterProfile) -> Iterator[None]:
    """Files and folders of runs (spec, logs, figures, and the jobs this process starts) get the
    profiles' modes (the strictest of several)."""
    previous = os.umask(functools.reduce(operator.or_, (profile.results_umask for profile in profiles), 0))
    try:
        yield
    finally:
        os.umask(previous)


def profile_of(run: Run) -> ClusterProfile:
    return load_profile(spec_from_yaml(run.spec_yaml).cluster)


def _array_of(group: list[PreparedAttempt], home: OrchHome) -> ArraySubmission:
    first = group[0]
    array_name = first.array_name
    return ArraySubmission(
        requests=[item.request for item in group],
        resources=first.spec.resources,
        folder=first.profile.results_path(home) / "submitit" / array_name.rpartition(".")[0],
        max_parallel=first.profile.max_parallel,
        name=array_name,
        launcher=launcher_argv(first.spec, first.profile, home),
        signal_delay_s=first.profile.signal_delay_s,
        max_requeues=first.spec.resources.segments + REQUEUE_MARGIN,
    )


def _array_key(pair: tuple[Attempt, AttemptTarget]) -> str:
    """Runs share an array when they share an executor, a cluster profile, resources and an image."""
    attempt, target = pair
    return json.dumps([attempt.executor, target.profile.name, dataclasses.asdict(target.spec.resources), target.spec.container.image], sort_keys=True)


@dataclass(frozen=True)
class AttemptTarget:
    """Where and how a run's next attempt runs: resolved, and its image checked, before any write."""

    spec: RunSpec
    profile: ClusterProfile
    paths: RunPaths
    image_sha256: Optional[str]


def _attempt_target(home: OrchHome, run: Run) -> AttemptTarget:
    spec = spec_from_yaml(run.spec_yaml)
    profile = load_profile(spec.cluster)
    if spec.data.root is None and profile.data_root is not None:
        spec = replace(spec, data=replace(spec.data, root=profile.data_root))
    digest = _image_digest(spec, profile, home)  # a missing image is bad input: found before anything is written
    return AttemptTarget(spec, profile, RunPaths.under(profile.results_path(home), run.id), digest)


def _add_attempt(session: Session, run: Run, target: AttemptTarget, executor: Optional[str], submission_id: str) -> Attempt:
    number = len(run.attempts) + 1
    key = attempt_key(run.id, number)
    attempt = Attempt(
        run=run,
        number=number,
        key=key,
        executor=executor or target.profile.executor,
        submission_id=submission_id,
        state=RunState.PENDING,
        submitted_time=time.time(),
        journal_dir=str(target.paths.attempt(key).root),
        journal_seq=0,
        requeues=0,
        image_sha256=target.image_sha256,
        submitter=f"{socket.gethostname()}:{os.getpid()}",
    )
    session.add(attempt)
    run.run_dir = str(target.paths.run_dir)
    run.state = RunState.PENDING
    return attempt


def attempt_key(run_id: str, number: int) -> str:
    """Names an attempt's journal folder. Unique by construction (a run's attempt numbers are
    unique), where 32 random bits alone collide at a lab's scale (~1 % at 10 000 attempts); the
    random tail keeps a registry rebuilt from scratch off the journal folders of an older one."""
    return f"{number:03d}-{run_id}-{secrets.token_hex(4)}"


def _image_digest(spec: RunSpec, profile: ClusterProfile, home: OrchHome) -> Optional[str]:
    image = container_image(spec, profile)
    if profile.container.runtime is None or image is None:
        return None
    if not image.is_file():
        raise UserError(f"container image {image} does not exist (run {spec.cluster}); accepted: an existing .sif file in container.image or the profile's container.image")
    return image_sha256(image, home.image_digest_cache)


def resolve_targets(session: Session, targets: Sequence[str]) -> list[Run]:
    """Runs named by sweep names or (unique prefixes of) run ids, in order, without repeats."""
    runs: dict[str, Run] = {}
    for target in targets:
        sweep = session.scalar(select(Sweep).where(Sweep.name == target))
        matched = [member.run for member in sweep.members] if sweep else [find_run(session, target)]
        runs.update((run.id, run) for run in matched)
    return list(runs.values())


def find_run(session: Session, id_prefix: str) -> Run:
    matches = session.scalars(select(Run).where(Run.id.startswith(id_prefix, autoescape=True)).limit(3)).all()
    if len(matches) == 1:
        return matches[0]
    sweeps = ", ".join(session.scalars(select(Sweep.name).order_by(Sweep.name))) or "(none)"
    if not matches:
        raise UserError(f"no sweep or run matches {id_prefix!r}; accepted: a sweep name ({sweeps}) or a run id (prefix)")
    raise UserError(f"run id prefix {id_prefix!r} is ambiguous ({', '.join(m.id for m in matches)}, ...); accepted: a longer prefix")


def cancel(engine: Engine, targets: Sequence[str]) -> list[str]:
    """Cancel the active attempts of the named runs; returns the ids of runs cancelled."""
    sync(engine)
    cancelled = []
    with Session(engine) as session, session.begin():
        attempts = [run.attempts[-1] for run in resolve_targets(session, targets) if run.state in RunState.ACTIVE]
        for executor, members in by_executor(attempts).items():
            get_backend(executor).cancel([job_ref(attempt) for attempt in members])
            for attempt in members:
                attempt.state, attempt.ended_time, attempt.reason = RunState.CANCELLED, time.time(), "cancelled by orch cancel"
                refresh_run_state(attempt.run)
                cancelled.append(attempt.run_id)
    return cancelled
