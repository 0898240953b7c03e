"""Recording sweeps and runs, submitting attempts, resuming and cancelling them."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jobs.atomic import publish_text
from jobs.entry import AttemptRequest
from jobs.paths import RunPaths
from jobs.spec import RunSpec, spec_from_yaml, spec_to_yaml
from orchestrator.errors import UserError
from orchestrator.executors import ArraySubmission, JobRef, get_backend
from orchestrator.fingerprint import canonical_json
from orchestrator.home import OrchHome
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, Run, RunState, Sweep, SweepRun
from orchestrator.sweep import SweepPlan
from orchestrator.sync import refresh_run_state, sync


@dataclass
class SubmissionReport:
    submitted: list[str] = field(default_factory=list)  # run ids
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that kept it out


@dataclass(frozen=True)
class PreparedAttempt:
    attempt: Attempt
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


def submit_sweep(engine: Engine, home: OrchHome, plan: SweepPlan, executor: str) -> SubmissionReport:
    """Record the sweep and submit its runs that are neither completed nor active."""
    sync(engine)
    report = SubmissionReport()
    with Session(engine) as session, session.begin():
        runs = record_sweep(session, plan)
        to_submit = []
        for run in runs:
            if run.state == RunState.COMPLETED or run.state in RunState.ACTIVE:
                report.skipped[run.id] = run.state
            else:
                to_submit.append(run)
        report.submitted = [attempt.run_id for attempt in submit_runs(session, home, to_submit, executor)]
    sync(engine)  # what finished already (the debug executor runs jobs inside submit)
    return report


def submit_runs(session: Session, home: OrchHome, runs: Sequence[Run], executor: str) -> list[Attempt]:
    """A new attempt for each run, submitted as one array per group of equal resources."""
    if not runs:
        return []
    backend = get_backend(executor)
    submission_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    prepared = [_prepare_attempt(session, home, run, executor, submission_id) for run in runs]
    session.flush()

    for _, group_items in groupby(sorted(prepared, key=_array_key), key=_array_key):
        group = list(group_items)
        folder = group[0].profile.results_path(home) / "submitit" / submission_id
        array = ArraySubmission([item.request for item in group], group[0].spec.resources, folder, group[0].profile.max_parallel)
        for item, handle in zip(group, backend.submit(array)):
            item.attempt.job_id = handle.job_id
            item.attempt.array_task = handle.array_task
            item.attempt.stdout_path = handle.stdout_path or None
            item.attempt.stderr_path = handle.stderr_path or None
    return [item.attempt for item in prepared]


def _array_key(item: PreparedAttempt) -> str:
    """Runs share an array when they share a cluster profile and resources."""
    return json.dumps([item.profile.name, dataclasses.asdict(item.spec.resources)], sort_keys=True)


def _prepare_attempt(session: Session, home: OrchHome, run: Run, executor: str, submission_id: str) -> PreparedAttempt:
    spec = spec_from_yaml(run.spec_yaml)
    profile = load_profile(spec.cluster)
    if spec.data.root is None and profile.data_root is not None:
        spec = replace(spec, data=replace(spec.data, root=profile.data_root))
    paths = RunPaths.under(profile.results_path(home), run.id)
    publish_text(paths.spec_file, spec_to_yaml(spec))
    number = len(run.attempts) + 1
    key = f"{number:03d}-{secrets.token_hex(4)}"
    attempt = Attempt(
        run=run,
        number=number,
        key=key,
        executor=executor,
        submission_id=submission_id,
        state=RunState.PENDING,
        submitted_time=time.time(),
        journal_dir=str(paths.attempt(key).root),
        journal_seq=0,
    )
    session.add(attempt)
    run.run_dir = str(paths.run_dir)
    run.state = RunState.PENDING
    return PreparedAttempt(attempt, AttemptRequest(run.id, str(paths.run_dir), key), spec, profile)


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


def resume(engine: Engine, home: OrchHome, targets: Sequence[str], executor: str) -> SubmissionReport:
    """Re-submit the named runs whose last attempt failed, timed out, was cancelled or is lost."""
    sync(engine)
    report = SubmissionReport()
    with Session(engine) as session, session.begin():
        runs = resolve_targets(session, targets)
        resumable = [run for run in runs if run.state in RunState.RESUMABLE]
        report.skipped = {run.id: run.state for run in runs if run.state not in RunState.RESUMABLE}
        report.submitted = [attempt.run_id for attempt in submit_runs(session, home, resumable, executor)]
    sync(engine)
    return report


def cancel(engine: Engine, targets: Sequence[str]) -> list[str]:
    """Cancel the active attempts of the named runs; returns the ids of runs cancelled."""
    sync(engine)
    cancelled = []
    with Session(engine) as session, session.begin():
        for run in resolve_targets(session, targets):
            if run.state not in RunState.ACTIVE:
                continue
            attempt = run.attempts[-1]
            get_backend(attempt.executor).cancel(JobRef(attempt.job_id, attempt.hostname, attempt.pid))
            attempt.state, attempt.ended_time, attempt.reason = RunState.CANCELLED, time.time(), "cancelled by orch cancel"
            refresh_run_state(run)
            cancelled.append(run.id)
    return cancelled
