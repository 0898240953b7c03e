"""Recording sweeps and runs, submitting attempts, resuming and cancelling them."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Optional, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jobs.atomic import publish_text
from jobs.entry import AttemptRequest
from jobs.paths import RunPaths
from jobs.spec import RunSpec, spec_from_yaml, spec_to_yaml
from orchestrator.errors import UserError
from orchestrator.estimates import schedule_plan
from orchestrator.containers import container_image, image_sha256, launcher_argv
from orchestrator.executors import ArraySubmission, get_backend
from orchestrator.fingerprint import canonical_json
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
    attempt_id: int
    executor: str
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
    """Record the sweep and submit its runs that are neither completed nor active."""
    sync(engine)
    report = SubmissionReport()
    with Session(engine) as session, session.begin():
        scheduled = [item.run for item in schedule_plan(session, plan)]
        runs = record_sweep(session, replace(plan, runs=scheduled))
        for run in runs:
            if run.state == RunState.COMPLETED or run.state in RunState.ACTIVE:
                report.skipped[run.id] = run.state
        to_submit = [run.id for run in runs if run.id not in report.skipped]
    report.submitted = submit_runs(engine, home, to_submit, executor)
    sync(engine)  # what finished already (the debug executor runs jobs inside submit)
    return report


def submit_runs(engine: Engine, home: OrchHome, run_ids: Sequence[str], executor: Optional[str]) -> list[str]:
    """A new attempt for each run, submitted as one array per group of equal executor and resources.

    The attempts are committed before the scheduler is called (intent first): if this process dies
    in between, sync finds the jobs by their name or marks the attempts lost; never submits twice.
    """
    if not run_ids:
        return []
    submission_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    with Session(engine) as session, session.begin():
        prepared = [_prepare_attempt(session, home, session.get_one(Run, run_id), executor, submission_id) for run_id in run_ids]
        groups = [list(items) for _, items in groupby(sorted(prepared, key=_array_key), key=_array_key)]
        for number, group in enumerate(groups):  # each attempt's array and position in it, before sbatch
            for position, item in enumerate(group):
                attempt = session.get_one(Attempt, item.attempt_id)
                attempt.submission_id, attempt.array_task = f"{submission_id}.{number}", position
    for number, group in enumerate(groups):
        handles = get_backend(group[0].executor).submit(_array_of(group, home, submission_id, f"{submission_id}.{number}"))
        with Session(engine) as session, session.begin():
            for item, handle in zip(group, handles):
                attempt = session.get_one(Attempt, item.attempt_id)
                attempt.job_id, attempt.array_task = handle.job_id, handle.array_task
                attempt.stdout_path, attempt.stderr_path = handle.stdout_path or None, handle.stderr_path or None
    return [item.request.run_id for item in prepared]


def _array_of(group: list[PreparedAttempt], home: OrchHome, submission_id: str, array_name: str) -> ArraySubmission:
    first = group[0]
    return ArraySubmission(
        requests=[item.request for item in group],
        resources=first.spec.resources,
        folder=first.profile.results_path(home) / "submitit" / submission_id,
        max_parallel=first.profile.max_parallel,
        name=array_name,
        launcher=launcher_argv(first.spec, first.profile, home),
        signal_delay_s=first.profile.signal_delay_s,
        max_requeues=first.spec.resources.segments + REQUEUE_MARGIN,
    )


def _array_key(item: PreparedAttempt) -> str:
    """Runs share an array when they share an executor, a cluster profile, resources and an image."""
    return json.dumps([item.executor, item.profile.name, dataclasses.asdict(item.spec.resources), item.spec.container.image], sort_keys=True)


def _prepare_attempt(session: Session, home: OrchHome, run: Run, executor: Optional[str], submission_id: str) -> PreparedAttempt:
    spec = spec_from_yaml(run.spec_yaml)
    profile = load_profile(spec.cluster)
    if spec.data.root is None and profile.data_root is not None:
        spec = replace(spec, data=replace(spec.data, root=profile.data_root))
    digest = _image_digest(spec, profile, home)  # before anything is written: a missing image is bad input
    paths = RunPaths.under(profile.results_path(home), run.id)
    publish_text(paths.spec_file, spec_to_yaml(spec))
    number = len(run.attempts) + 1
    key = f"{number:03d}-{secrets.token_hex(4)}"
    attempt = Attempt(
        run=run,
        number=number,
        key=key,
        executor=executor or profile.executor,
        submission_id=submission_id,
        state=RunState.PENDING,
        submitted_time=time.time(),
        journal_dir=str(paths.attempt(key).root),
        journal_seq=0,
        requeues=0,
        image_sha256=digest,
    )
    session.add(attempt)
    session.flush()
    run.run_dir = str(paths.run_dir)
    run.state = RunState.PENDING
    return PreparedAttempt(attempt.id, attempt.executor, AttemptRequest(run.id, str(paths.run_dir), key), spec, profile)


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


def resume(engine: Engine, home: OrchHome, targets: Sequence[str], executor: Optional[str]) -> SubmissionReport:
    """Re-submit the named runs whose last attempt failed, timed out, was cancelled or is lost."""
    sync(engine)
    report = SubmissionReport()
    with Session(engine) as session, session.begin():
        runs = resolve_targets(session, targets)
        resumable = [run.id for run in runs if run.state in RunState.RESUMABLE]
        report.skipped = {run.id: run.state for run in runs if run.state not in RunState.RESUMABLE}
    report.submitted = submit_runs(engine, home, resumable, executor)
    sync(engine)
    return report


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
