"""Stages after a sweep: ``orch submit SWEEP --then "analyze --figure lines"`` (or the sweep
file's ``then:`` list) records an analysis of the sweep's runs that runs once their jobs have ended.

A stage is a row of ``stages``: WAITING while any run of its sweep still waits to be submitted
(held back for a submit slot or a smoke test), then submitted as the analysis's job array with
``--dependency=afterany:<the sweep's arrays>`` (Slurm starts it when every run's job has ended,
however it ended: the analysis reads what is there). From then on sync follows its jobs like an
attempt's: PENDING, RUNNING, COMPLETED or FAILED with the scheduler's reason; ``orch status``
lists it under its sweep and ``orch resume SWEEP`` submits a failed or cancelled stage again.
On executors without a queue (local, debug) a stage runs in the syncing process once the sweep's
runs have all ended.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from orchestrator.errors import SpecError, UserError, one_paragraph
from orchestrator.executors import JobRef, Observation, Phase, backend_class, get_backend
from orchestrator.home import OrchHome
from orchestrator.registry.models import Attempt, Stage, Sweep, SweepRun
from orchestrator.registry.tables import RunState, stages
from orchestrator.smoke import dependency_of
from orchestrator.sync import OPEN_STAGE_STATES, STAGE_SUBMITTING, STAGE_WAITING, current_user, owned

if TYPE_CHECKING:
    from orchestrator.analyze import AnalyzeRequest

WAITING, SUBMITTING, OPEN_STATES = STAGE_WAITING, STAGE_SUBMITTING, OPEN_STAGE_STATES
CLAIM_EXPIRES_S = 600  # a claimed stage not recorded by then: its submitter died
STAGE_COMMANDS = ("analyze",)
STAGE_ACCEPTED = 'analyze --figure NAME [its options], e.g. "analyze --figure lines --format pdf"'


class StageParser(argparse.ArgumentParser):
    """``orch analyze``'s options, with a parse error raised instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]  # raises instead of exiting
        raise ValueError(message)


def stage_request(text: str, file: str, key: str) -> AnalyzeRequest:
    """The analysis ``text`` asks for, checked: a run analysis of the sweep's runs (they are its
    targets), run by the sweep's executor."""
    from jobs.analyses import RUN_ANALYSES
    from orchestrator.analyze import AnalyzeRequest
    from orchestrator.cli import _analyze_options

    try:
        words = shlex.split(text)
    except ValueError as error:
        raise SpecError(file, key, f"not a command ({error})", text, STAGE_ACCEPTED) from None
    if not words or words[0] not in STAGE_COMMANDS:
        raise SpecError(file, key, "not a stage command", text, STAGE_ACCEPTED)
    parser = StageParser(prog="orch analyze", add_help=False)
    _analyze_options(parser)
    try:
        arguments = parser.parse_args(words[1:])
    except ValueError as error:
        raise SpecError(file, key, one_paragraph(str(error), 200), text, STAGE_ACCEPTED) from None
    if arguments.figure not in RUN_ANALYSES:
        raise SpecError(
            file,
            key,
            "a sweep view reads the registry: it runs on the login node",
            text,
            ", ".join(RUN_ANALYSES),
        )
    if arguments.targets or arguments.executor or arguments.wait:
        raise SpecError(
            file,
            key,
            "a stage analyzes its sweep's runs, on the runs' executor",
            text,
            "no targets, --executor or --wait",
        )
    fields = dataclasses.fields(AnalyzeRequest)
    return AnalyzeRequest(**{field.name: getattr(arguments, field.name) for field in fields})


def record_stages(session: Session, sweep_name: str, commands: Sequence[str], executor: str) -> None:
    """A WAITING stage per command for the sweep (already recorded in ``session``), but for a
    command the sweep has waiting or running already (a second submit of the same file)."""
    sweep_id = session.scalar(select(Sweep.id).where(Sweep.name == sweep_name))
    open_commands = set(
        session.scalars(select(Stage.command).where(Stage.sweep_id == sweep_id, Stage.state.in_(OPEN_STATES)))
    )
    now = time.time()
    for command in dict.fromkeys(commands):
        if command not in open_commands:
            session.add(
                Stage(
                    sweep_id=sweep_id,
                    command=command,
                    state=WAITING,
                    executor=executor,
                    created_time=now,
                    owner=current_user(),
                )
            )


def advance_stages(engine: Engine, home: OrchHome) -> None:
    """Submit the waiting stages whose sweep has every run submitted, and follow the submitted
    ones' jobs."""
    with Session(engine) as session:
        open_stages = session.scalars(
            select(Stage).where(Stage.state.in_(OPEN_STATES), owned(Stage.owner)).order_by(Stage.id)
        ).all()
        plans = [
            (stage.id, stage.state, stage.sweep_id, stage.command, stage.executor, stage.job_ids)
            for stage in open_stages
        ]
        claimed_before = {stage.id: stage.submitted_time or 0.0 for stage in open_stages}
        current = {stage.id: (stage.state, stage.reason) for stage in open_stages}
    followed: dict[str, dict[int, list[str]]] = {}  # executor -> stage id -> its job ids
    for stage_id, state, sweep_id, command, executor, job_ids in plans:
        if state == WAITING:
            _submit_when_ready(engine, home, stage_id, sweep_id, command, executor)
        elif state == SUBMITTING:
            _expire_claim(engine, stage_id, claimed_before[stage_id])
        else:
            followed.setdefault(executor, {})[stage_id] = json.loads(job_ids)
    for executor, jobs_of in followed.items():  # one observation of every stage's jobs per executor
        every_job = [job_id for stage_jobs in jobs_of.values() for job_id in stage_jobs]
        seen = (
            get_backend(executor).observe([JobRef(job_id, None, None) for job_id in every_job])
            if every_job
            else []
        )
        observed = dict(zip(every_job, seen))
        for stage_id, stage_jobs in jobs_of.items():
            state, reason = followed_state(stage_jobs, [observed[job_id] for job_id in stage_jobs])
            if (state, reason) != current[stage_id]:  # a write only where something changed
                _record(engine, stage_id, state, stage_jobs, None, reason)


@dataclass(frozen=True)
class StageWork:
    """What a stage ready to go runs: arrays for a queue, or analyses for this process."""

    arrays: list[Any]  # orchestrator.analyze.AnalysisArray
    jobs: list[Any]  # jobs.analyses.job.AnalysisJob, for this process
    profiles: list[Any]
    dependency: Optional[str]


def _submit_when_ready(
    engine: Engine, home: OrchHome, stage_id: int, sweep_id: int, command: str, executor: str
) -> None:
    """Submit the stage once every run of its sweep has a job (after those still active) or, on
    an executor without a queue, run it here once they have all ended. What keeps it from going
    out (Slurm not answering, an analysis that does not fit the cluster) is its reason while it
    waits; it is claimed (one transaction) before anything is submitted, so two commands never
    submit it twice."""
    try:
        work = _stage_work(engine, home, sweep_id, command, executor)
    except UserError as problem:
        _note_waiting(engine, stage_id, f"not submitted yet: {problem}")
        return
    if work is None or not _claim(engine, stage_id):
        return
    if not work.arrays and not work.jobs:
        _record(
            engine,
            stage_id,
            RunState.FAILED,
            [],
            None,
            "none of the sweep's runs started: nothing to analyze",
        )
    elif not work.arrays:
        _run_here(engine, stage_id, work)
    else:
        _submit_arrays(engine, stage_id, work, executor)


def _stage_work(
    engine: Engine, home: OrchHome, sweep_id: int, command: str, executor: str
) -> Optional[StageWork]:
    """The stage's arrays or analyses once its sweep's runs allow (None: not yet)."""
    from orchestrator import analyze

    queued = backend_class(executor).queued
    with Session(engine) as session:
        active_jobs = _active_jobs(session, sweep_id)
        if active_jobs is None or (active_jobs and not queued):
            return None  # a run waits to be submitted, or local jobs run: later
        if not active_jobs and not _any_started(session, sweep_id):
            return StageWork([], [], [], None)  # e.g. a failed smoke test cancelled them all
        sweep_name = session.scalar(select(Sweep.name).where(Sweep.id == sweep_id)) or ""
        request = dataclasses.replace(stage_request(command, "stage", "then"), targets=(sweep_name,))
        runs = analyze.selected_runs(session, [sweep_name], [])
        jobs = analyze.analysis_jobs(runs, request)
        if not queued:
            return StageWork([], jobs, [analyze.profile_of(run) for run in runs], None)
        dependency = dependency_of("afterany", active_jobs)
        return StageWork(analyze.plan_arrays(session, runs, jobs, executor, home), [], [], dependency)


def _run_here(engine: Engine, stage_id: int, work: StageWork) -> None:
    """The analyses in this process (no registry session open meanwhile)."""
    from orchestrator import analyze

    try:
        written = sum(len(report.written) for report in analyze.run_in_process(work.jobs, work.profiles))
    except Exception as error:  # noqa: BLE001 - the analysis's failure is the stage's reason
        reason = one_paragraph(f"{type(error).__name__}: {error}", 400)
        _record(engine, stage_id, RunState.FAILED, [], None, reason)
        return
    _record(engine, stage_id, RunState.COMPLETED, [], None, f"wrote {written} files here")


def _submit_arrays(engine: Engine, stage_id: int, work: StageWork, executor: str) -> None:
    """sbatch each array (no registry session open); a refusal fails the stage with the job ids
    of the arrays that went out before it."""
    from orchestrator import analyze

    job_ids: list[str] = []
    for array in work.arrays:
        try:
            job_ids += analyze.submit_array(array, executor, work.dependency).job_ids
        except UserError as refused:
            _record(engine, stage_id, RunState.FAILED, job_ids, work.dependency, str(refused))
            return
    _record(engine, stage_id, RunState.PENDING, job_ids, work.dependency, None)


def _claim(engine: Engine, stage_id: int) -> bool:
    """Take the waiting stage for this command (False: another command took it first)."""
    with engine.begin() as connection:
        claimed = connection.execute(
            update(stages)
            .where(stages.c.id == stage_id, stages.c.state == WAITING)
            .values(state=SUBMITTING, submitted_time=time.time(), number=stages.c.number + 1, reason=None)
        )
        return claimed.rowcount == 1


def _expire_claim(engine: Engine, stage_id: int, claimed_time: float) -> None:
    """A stage claimed long ago and never recorded: its submitter died in between."""
    if time.time() - claimed_time < CLAIM_EXPIRES_S:
        return
    _record(
        engine,
        stage_id,
        RunState.FAILED,
        [],
        None,
        "its submitter ended before recording its jobs (squeue --name shows any orch:analyze array "
        "that went out); orch resume SWEEP submits it again",
    )


def _note_waiting(engine: Engine, stage_id: int, reason: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(stages).where(stages.c.id == stage_id, stages.c.state == WAITING).values(reason=reason)
        )


def _any_started(session: Session, sweep_id: int) -> bool:
    """Whether any run of the sweep ever started (else there is nothing to analyze)."""
    members = select(SweepRun.run_id).where(SweepRun.sweep_id == sweep_id)
    started = select(Attempt.id).where(Attempt.run_id.in_(members), Attempt.started_time.is_not(None))
    return session.execute(started.limit(1)).first() is not None


def _active_jobs(session: Session, sweep_id: int) -> Optional[list[str]]:
    """The job ids of the sweep's active attempts; None while one of them has no job yet (held
    back for a submit slot or a smoke test)."""
    members = select(SweepRun.run_id).where(SweepRun.sweep_id == sweep_id)
    active = session.execute(
        select(Attempt.held_back, Attempt.job_id).where(
            Attempt.run_id.in_(members), Attempt.state.in_(RunState.ACTIVE)
        )
    ).all()
    if any(held or not job for held, job in active):
        return None
    return [job for _, job in active if job]


def followed_state(job_ids: list[str], observations: list[Observation]) -> tuple[str, Optional[str]]:
    """A submitted stage's state and reason from its jobs: FAILED once all ended and one did not
    complete, COMPLETED once all completed, RUNNING while one runs, else PENDING."""
    if not job_ids:
        return RunState.COMPLETED, "no run to analyze"
    phases = [observation.phase for observation in observations]
    if all(phase in (Phase.ENDED, Phase.GONE) for phase in phases):
        failed = [
            (job_id, observation)
            for job_id, observation in zip(job_ids, observations)
            if observation.state != RunState.COMPLETED
        ]
        if not failed:
            return RunState.COMPLETED, None
        job_id, observation = failed[0]
        state = observation.state or "gone"
        reason = f"{len(failed)} of {len(job_ids)} jobs did not complete: job {job_id} {state}"
        return RunState.FAILED, reason + (f" ({observation.reason})" if observation.reason else "")
    if Phase.RUNNING in phases:
        return RunState.RUNNING, None
    reasons = [observation.reason for observation in observations if observation.reason]
    return RunState.PENDING, reasons[0] if reasons else None


def _record(
    engine: Engine,
    stage_id: int,
    state: str,
    job_ids: list[str],
    dependency: Optional[str],
    reason: Optional[str],
) -> None:
    with Session(engine) as session, session.begin():
        stage = session.get(Stage, stage_id)
        if stage is None:
            return
        if stage.state == SUBMITTING:  # the claim's submission is what is recorded now
            stage.after_jobs = dependency
        stage.state, stage.reason = state, reason
        if job_ids:
            stage.job_ids = json.dumps(job_ids)
        if state in (RunState.COMPLETED, RunState.FAILED):
            stage.ended_time = time.time()


def resume_stages(engine: Engine, sweep_names: Sequence[str]) -> int:
    """The failed or cancelled stages of the sweeps wait again (submitted at the next sync);
    returns how many."""
    with Session(engine) as session, session.begin():
        found = session.scalars(
            select(Stage)
            .join(Sweep, Sweep.id == Stage.sweep_id)
            .where(Sweep.name.in_(sweep_names), Stage.state.in_(RunState.RESUMABLE))
        ).all()
        for stage in found:  # whoever resumes it submits it now, as their own
            stage.state, stage.reason, stage.job_ids, stage.ended_time = WAITING, None, "[]", None
            stage.owner = current_user()
        return len(found)
