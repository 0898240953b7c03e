"""Recording sweeps and runs, submitting attempts, resuming and cancelling them.

Attempts are committed held back, then launched within the user's submit slots
(orchestrator/launch.py, orchestrator/feed.py)."""

from __future__ import annotations

import functools
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs import faults
from jobs.atomic import publish_many, publish_text
from jobs.paths import AttemptPaths, RunPaths
from jobs.spec import spec_from_json
from orchestrator.bulk import in_chunks
from orchestrator.errors import SpecError, UserError
from orchestrator.estimates import Scheduled, schedule_plan
from orchestrator.executors import get_backend
from orchestrator.feed import SlotBudget, feed, launch_within_slots
from orchestrator.fingerprint import SectionTexts, SpecTexts, joined_json
from orchestrator.home import OrchHome
from orchestrator.ingest import by_executor, job_ref, refresh_run_state
from orchestrator.launch import (
    WAITING_FOR_SLOT,
    PreparedAttempt,
    RunToSubmit,
    SubmitChoices,
    TargetResolver,
    grouped,
    results_umask,
)
from orchestrator.planner import PlannedRun
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, Run, RunState, SpecSection, Sweep, SweepRun
from orchestrator.sweep import SweepPlan
from orchestrator.sync import current_user, sync

INSERT_CHUNK = 1000  # rows per multi-row insert


@dataclass
class SubmissionReport:
    submitted: list[str] = field(default_factory=list)  # run ids handed to the scheduler
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> state that kept it out
    waiting: list[str] = field(default_factory=list)  # run ids held back for a submit slot
    refusals: list[str] = field(default_factory=list)  # what the scheduler said when it refused
    earlier_submitted: list[str] = field(default_factory=list)  # run ids held back before, submitted now
    smoke: list[str] = field(default_factory=list)  # the smoke runs the others wait on (--smoke)


def record_sweep(session: Session, plan: SweepPlan, texts: Optional[SpecTexts] = None) -> list[RunToSubmit]:
    """Upsert the sweep, its runs (one row per distinct run id) and their membership, in bulk:
    one query per chunk of ids for what is recorded already, multi-row inserts for the rest."""
    texts = texts or SpecTexts()
    now = time.time()
    sweep = session.scalar(select(Sweep).where(Sweep.name == plan.name))
    if sweep is None:
        sweep = Sweep(name=plan.name, created_time=now)
        session.add(sweep)
    if sweep.source_text != plan.source_text or sweep.source_path != str(plan.source_path):
        sweep.source_path, sweep.source_text, sweep.description = (
            str(plan.source_path),
            plan.source_text,
            plan.description,
        )
        sweep.updated_time = now
    session.flush()
    recorded = recorded_runs(session, [planned.run_id for planned in plan.runs])
    members = set(session.scalars(select(SweepRun.run_id).where(SweepRun.sweep_id == sweep.id)))
    new_runs = [planned for planned in plan.runs if planned.run_id not in recorded]
    new_sections = [texts.sections(planned.spec) for planned in new_runs]
    section_entries = record_sections(
        session, {id(section): section for sections in new_sections for section in sections}.values()
    )
    insert_rows(
        session,
        Run,
        (
            _run_row(planned, texts, sections, section_entries, now)
            for planned, sections in zip(new_runs, new_sections)
        ),
    )
    memberships = (
        {
            "sweep_id": sweep.id,
            "run_id": planned.run_id,
            "position": position,
            "swept_json": json.dumps(planned.swept),
        }
        for position, planned in enumerate(plan.runs)
        if planned.run_id not in members
    )
    insert_rows(session, SweepRun, memberships)
    return [
        RunToSubmit(planned.run_id, *recorded.get(planned.run_id, (RunState.PLANNED, 0)), planned.spec)
        for planned in plan.runs
    ]


def _run_row(
    planned: PlannedRun,
    texts: SpecTexts,
    sections: list[SectionTexts],
    section_entries: dict[str, str],
    now: float,
) -> dict[str, Any]:
    return {
        "id": planned.run_id,
        "canonical_json": texts.canonical(planned.spec),
        "spec_json": joined_json(sections),
        "section_ids": section_ids_text(sections, section_entries),
        "state": RunState.PLANNED,
        "total_steps": planned.spec.training.steps,
        "current_step": 0,
        "created_time": now,
    }


def record_sections(session: Session, sections: Iterable[SectionTexts]) -> dict[str, str]:
    """Record each distinct section not recorded yet (``spec_sections``, by digest; IN-chunked
    lookups, multi-row inserts); per digest, the section's entry in a run's ``section_ids``
    (``"name": id``)."""
    by_digest = {section.digest: section for section in sections}
    ids = section_ids_by_digest(session, list(by_digest))
    missing = [section for digest, section in by_digest.items() if digest not in ids]
    insert_rows(
        session,
        SpecSection,
        ({"name": section.name, "json": section.value_json, "digest": section.digest} for section in missing),
    )
    ids.update(section_ids_by_digest(session, [section.digest for section in missing]))
    return {digest: f"{json.dumps(section.name)}: {ids[digest]}" for digest, section in by_digest.items()}


def section_ids_text(sections: Sequence[SectionTexts], section_entries: dict[str, str]) -> str:
    """A run's ``section_ids``: ``{"model": 3, ...}`` in the order of its sections."""
    return "{" + ", ".join(section_entries[section.digest] for section in sections) + "}"


def section_ids_by_digest(session: Session, digests: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in in_chunks(digests):
        query = select(SpecSection.digest, SpecSection.id).where(SpecSection.digest.in_(chunk))
        found.update((digest, section_id) for digest, section_id in session.execute(query))
    return found


def recorded_runs(session: Session, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """State and number of attempts of each recorded run among ``run_ids`` (chunked ``IN`` queries)."""
    found: dict[str, tuple[str, int]] = {}
    for chunk in in_chunks(run_ids):
        query = (
            select(Run.id, Run.state, func.count(Attempt.id))
            .outerjoin(Attempt, Attempt.run_id == Run.id)
            .where(Run.id.in_(chunk))
            .group_by(Run.id, Run.state)
        )
        found.update((run_id, (state, attempts)) for run_id, state, attempts in session.execute(query))
    return found


def insert_rows(session: Session, model: type, rows: Iterable[dict[str, Any]]) -> None:
    """Multi-row inserts of ``rows`` in chunks (the rows of a chunk are built only when it is written)."""
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        session.execute(insert(model), chunk)


def submit_sweep(engine: Engine, home: OrchHome, plan: SweepPlan, choices: SubmitChoices) -> SubmissionReport:
    """Record the sweep and submit its runs that are neither completed nor active.

    Recording the runs and creating their attempts is one transaction: a submit killed at any
    point leaves either nothing or runs with attempts, never runs that nothing will submit.
    """
    sync(engine)
    return _submit(engine, home, functools.partial(record_submission, home=home, plan=plan, choices=choices))


def submit_smoke_tested(
    engine: Engine, home: OrchHome, plan: SweepPlan, choices: SubmitChoices
) -> SubmissionReport:
    """``orch submit --smoke``: a smoke sweep of the configurations of the runs still to do
    first, then those runs held back behind it (orchestrator/smoke.py); they go out, with a
    dependency on the smoke jobs, as soon as each smoke run has a job."""
    from orchestrator.smoke import settle_gates, smoke_plan, smoke_sweep_name

    sync(engine)
    with Session(engine) as session:
        recorded = recorded_runs(session, [run.run_id for run in plan.runs])
    to_run = [run for run in plan.runs if recorded.get(run.run_id, ("",))[0] not in _NOT_SUBMITTED]
    if not to_run:  # every run completed or active: nothing to smoke-test
        return _submit(
            engine, home, functools.partial(record_submission, home=home, plan=plan, choices=choices)
        )
    tested = smoke_plan(replace(plan, runs=to_run))  # bad input found before anything is written
    with Session(engine) as session:  # the sweep's own checks, before the smoke runs go out
        check_packs_fit(schedule_plan(session, plan), str(plan.source_path))
    smoke = _submit(
        engine,
        home,
        functools.partial(record_submission, home=home, plan=tested, choices=choices, exact_members=True),
    )
    gated = functools.partial(
        record_submission, home=home, plan=plan, choices=choices, gate=smoke_sweep_name(plan.name)
    )
    report = _submit(engine, home, gated)
    settle_gates(engine)
    released = feed(engine, home)
    report.smoke = smoke.submitted + smoke.waiting
    planned = {run.run_id for run in plan.runs}  # the feed may launch older sweeps' runs too
    report.submitted += [run_id for run_id in released.launched if run_id in planned]
    report.waiting = [run_id for run_id in report.waiting if run_id not in report.submitted]
    report.refusals += smoke.refusals + released.refusals
    return report


def record_submission(
    session: Session,
    home: OrchHome,
    plan: SweepPlan,
    choices: SubmitChoices,
    gate: Optional[str] = None,
    exact_members: bool = False,
) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
    """The bookkeeping of ``orch submit`` before any job runs, in ``session``'s transaction: the
    runs scheduled with the registry's history, recorded, and an attempt (with its spec file)
    for each run that is neither completed nor active."""
    texts = SpecTexts()
    planned = schedule_plan(session, plan)
    check_packs_fit(planned, str(plan.source_path))
    scheduled = [item.run for item in planned]
    runs = record_sweep(session, replace(plan, runs=scheduled), texts)
    if exact_members:  # a smoke sweep is what this submission tests: earlier smoke runs leave it
        detach_others(session, plan)
    if plan.then and plan.runs:
        from orchestrator.stages import record_stages

        executor = choices.executor or load_profile(plan.runs[0].spec.cluster).executor
        record_stages(session, plan.name, plan.then, executor)
    return _prepare_submission(
        session, home, runs, choices, lambda state: state not in _NOT_SUBMITTED, texts, plan.name, gate
    )


def detach_others(session: Session, plan: SweepPlan) -> None:
    """Remove from the plan's sweep the member runs the plan does not hold (their rows stay)."""
    sweep_id = select(Sweep.id).where(Sweep.name == plan.name).scalar_subquery()
    planned = {run.run_id for run in plan.runs}
    members = session.scalars(select(SweepRun.run_id).where(SweepRun.sweep_id == sweep_id)).all()
    gone = [run_id for run_id in members if run_id not in planned]
    for chunk in in_chunks(gone):
        session.execute(delete(SweepRun).where(SweepRun.sweep_id == sweep_id, SweepRun.run_id.in_(chunk)))


def check_packs_fit(scheduled: Sequence[Scheduled], source: str) -> None:
    """Refuse (bad input, before any write) runs packed more densely than one GPU holds by the
    peak memory similar completed runs measured."""
    for item in scheduled:
        pack, fits = item.run.spec.resources.pack, item.pack_offered
        if fits is not None and pack > fits:
            raise SpecError(
                source,
                "resources.pack",
                f"run {item.run.run_id}: {pack} runs do not fit one GPU of cluster {item.run.spec.cluster} "
                "by the peak GPU memory similar completed runs measured",
                pack,
                f"1..{fits}",
            )


def resume(
    engine: Engine, home: OrchHome, targets: Sequence[str], choices: SubmitChoices
) -> SubmissionReport:
    """Re-submit the named runs whose last attempt failed, timed out, was cancelled or is lost,
    and runs that were recorded but never submitted (PLANNED)."""
    sync(engine)

    def select_and_prepare(session: Session) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
        runs = resolve_targets(session, targets)
        attempts = recorded_runs(session, [run.id for run in runs])
        to_consider = [
            RunToSubmit(run.id, run.state, attempts[run.id][1], spec_from_json(run.spec_json)) for run in runs
        ]
        return _prepare_submission(
            session, home, to_consider, choices, lambda state: state in _RESUMABLE, SpecTexts(), "resume"
        )

    return _submit(engine, home, select_and_prepare)


_NOT_SUBMITTED = (RunState.COMPLETED, *RunState.ACTIVE)
_RESUMABLE = (RunState.PLANNED, *RunState.RESUMABLE)
Preparation = Callable[[Session], tuple["SubmissionReport", list[list[PreparedAttempt]]]]


def _submit(engine: Engine, home: OrchHome, prepare: Preparation) -> SubmissionReport:
    """Commit the attempts ``prepare`` creates (intent first), then hand them to the scheduler.

    The transaction holds the registry's write lock (SQLite ``BEGIN IMMEDIATE``), so a concurrent
    submit waits and then sees these runs active. Where the database lets two transactions run
    side by side (PostgreSQL), the one-active-attempt index refuses the loser, which tries once
    more and then finds the runs active: a run is never submitted twice. Runs held back by an
    earlier submission get the free submit slots first, these the rest.
    """
    budget = SlotBudget()
    older = feed(engine, home, budget)
    for last_try in (False, True):
        try:
            with Session(engine) as session, session.begin():
                report, groups = prepare(session)
            break
        except IntegrityError:
            if last_try:
                raise UserError(
                    "another orch command kept changing the same runs; accepted: run this command again"
                ) from None
    faults.reached("submit.committed")
    launched = launch_within_slots(engine, home, [group for group in groups if group[0].gate is None], budget)
    gated = [item.request.run_id for group in groups if group[0].gate is not None for item in group]
    report.submitted, report.waiting = launched.launched, launched.held_back + gated
    report.refusals = older.refusals + launched.refusals
    report.earlier_submitted = older.launched
    sync(engine)  # what finished already (the debug executor runs jobs inside submit)
    return report


def _prepare_submission(
    session: Session,
    home: OrchHome,
    runs: Sequence[RunToSubmit],
    choices: SubmitChoices,
    submittable: Callable[[str], bool],
    texts: SpecTexts,
    label: str,
    gate: Optional[str] = None,
) -> tuple[SubmissionReport, list[list[PreparedAttempt]]]:
    """A new attempt (inserted in ``session``'s transaction) for each run whose state allows it,
    grouped into arrays, and each run's spec file. The submission is named ``<label>:<time>-<random>``
    (``label``: the sweep's name, or ``resume``): squeue and sacct show it in the jobs' names."""
    report = SubmissionReport(skipped={run.run_id: run.state for run in runs if not submittable(run.state)})
    to_submit = [run for run in runs if submittable(run.state)]
    if not to_submit:
        return report, []
    submission_id = f"{label}:" + time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    resolver = TargetResolver(home, choices)
    targets = [resolver.target(run) for run in to_submit]  # every image checked before anything is written
    groups = grouped(submission_id, to_submit, targets)
    if gate is not None:  # held back until the smoke sweep ``gate`` lets them go
        groups = [[replace(item, gate=gate) for item in group] for group in groups]
    attempt_rows = (_attempt_row(item) for group in groups for item in group)
    # the one-active-attempt index speaks here, before any file is written
    insert_rows(session, Attempt, attempt_rows)
    pending = [
        {"run": item.request.run_id, "folder": item.request.run_dir} for group in groups for item in group
    ]
    session.connection().execute(
        update(Run.__table__)
        .where(Run.__table__.c.id == bindparam("run"))
        .values(state=RunState.PENDING, run_dir=bindparam("folder")),
        pending,
    )
    for group in groups:
        with results_umask(group[0].profile):
            publish_many(
                [
                    (RunPaths(Path(item.request.run_dir)).spec_file, texts.yaml(item.spec).encode())
                    for item in group
                ]
            )
    return report, groups


def _attempt_row(item: PreparedAttempt) -> dict[str, Any]:
    """A new attempt, held back until a launch claims it."""
    return {
        "run_id": item.request.run_id,
        "number": item.number,
        "key": item.request.attempt_key,
        "executor": item.executor,
        "submission_id": item.array_name,
        "array_task": item.array_task,
        "state": RunState.PENDING,
        "submitted_time": time.time(),
        "journal_dir": str(item.request.attempt_paths.root),
        "journal_seq": 0,
        "requeues": 0,
        "image_sha256": item.image_sha256,
        "held_back": True,
        "reason": WAITING_FOR_SLOT
        if item.gate is None
        else f"waiting for the smoke test (sweep {item.gate})",
        "gate": item.gate,
        "owner": current_user(),
    }


def profile_of(run: Run) -> ClusterProfile:
    return load_profile(spec_from_json(run.spec_json).cluster)


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
        raise UserError(
            f"no sweep or run matches {id_prefix!r}; accepted: a sweep name ({sweeps}) or a run id (prefix)"
        )
    raise UserError(
        f"run id prefix {id_prefix!r} is ambiguous ({', '.join(m.id for m in matches)}, ...); "
        "accepted: a longer prefix"
    )


def jobs_going_on(session: Session, attempts: Sequence[Attempt], cancelled: set[int]) -> set[str]:
    """The job ids among the packed ``attempts``' that hold active attempts not being cancelled."""
    job_ids = sorted(
        {attempt.job_id for attempt in attempts if attempt.pack_slot is not None and attempt.job_id}
    )
    going_on: set[str] = set()
    for chunk in in_chunks(job_ids):
        query = select(Attempt.job_id, Attempt.id).where(
            Attempt.job_id.in_(chunk), Attempt.state.in_(RunState.ACTIVE)
        )
        going_on.update(
            job_id for job_id, attempt_id in session.execute(query) if job_id and attempt_id not in cancelled
        )
    return going_on


def cancel(engine: Engine, targets: Sequence[str]) -> list[str]:
    """Cancel the active attempts of the named runs; returns the ids of runs cancelled."""
    sync(engine)
    with Session(engine) as session:
        active = [
            run.attempts[-1] for run in resolve_targets(session, targets) if run.state in RunState.ACTIVE
        ]
        refuse_others_attempts(active)
        keys = [attempt.key for attempt in active]
    return cancel_attempts(engine, keys, "cancelled by orch cancel")


def refuse_others_attempts(active: Sequence[Attempt]) -> None:
    """In a registry a lab shares, only an attempt's owner's orch may cancel its job (the
    scheduler refuses anyone else's scancel, and the registry must not say otherwise)."""
    me = current_user()
    others = [attempt for attempt in active if attempt.owner not in (None, me)]
    if others:
        raise UserError(
            f"cancel: {len(others)} of the {len(active)} active runs named are other users' attempts "
            f"(run {others[0].run_id} is {others[0].owner}'s); nothing was cancelled. accepted: runs "
            f"whose active attempt is yours ({me}'s); its owner cancels the others"
        )


def cancel_attempts(engine: Engine, keys: Sequence[str], reason: str) -> list[str]:
    """Cancel the attempts ``keys`` that are still active, with ``reason``; returns their run ids.
    A run packed with others that go on is stopped by its task (its cancel request), not by scancel.

    The scheduler is told (scancel) with no transaction open, then the attempts still active are
    marked in one short one: killed in between, the jobs are cancelled and the next sync reads so
    from the scheduler."""
    with Session(engine) as session:
        attempts = [
            attempt
            for chunk in in_chunks(list(keys))
            for attempt in session.scalars(
                select(Attempt).where(Attempt.key.in_(chunk), Attempt.state.in_(RunState.ACTIVE))
            )
        ]
        submitted = [attempt for attempt in attempts if not attempt.held_back]  # held back: no job yet
        attempt_ids = sorted(attempt.id for attempt in attempts)
        shared = jobs_going_on(session, submitted, set(attempt_ids))
        alone = [Path(attempt.journal_dir) for attempt in submitted if attempt.job_id in shared]
        jobs = {
            executor: [job_ref(attempt) for attempt in members]
            for executor, members in by_executor([a for a in submitted if a.job_id not in shared]).items()
        }
    for journal_dir in alone:  # packed with runs that go on: its task stops its process alone
        publish_text(AttemptPaths(journal_dir).cancel_request, reason + "\n")
    for executor, refs in jobs.items():
        get_backend(executor).cancel(refs)
    cancelled = []
    with Session(engine) as session, session.begin():
        for chunk in in_chunks(attempt_ids):
            for attempt in session.scalars(
                select(Attempt)
                .where(Attempt.id.in_(chunk), Attempt.state.in_(RunState.ACTIVE))
                .order_by(Attempt.id)
            ):
                attempt.state, attempt.ended_time, attempt.reason = RunState.CANCELLED, time.time(), reason
                refresh_run_state(attempt.run)
                cancelled.append(attempt.run_id)
    return cancelled
