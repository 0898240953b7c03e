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
from typing import TYPE_CHECKING, Optional, Sequence

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orchestrator.errors import SpecError, UserError, one_paragraph
from orchestrator.executors import JobRef, Phase, backend_class, get_backend
from orchestrator.home import OrchHome
from orchestrator.registry.models import Attempt, Stage, Sweep, SweepRun
from orchestrator.registry.tables import RunState
from orchestrator.sync import OPEN_STAGE_STATES, STAGE_WAITING

if TYPE_CHECKING:
    from orchestrator.analyze import AnalyzeRequest

WAITING, OPEN_STATES = STAGE_WAITING, OPEN_STAGE_STATES
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
                Stage(sweep_id=sweep_id, command=command, state=WAITING, executor=executor, created_time=now)
            )


def advance_stages(engine: Engine, home: OrchHome) -> None:
    """Submit the waiting stages whose sweep has every run submitted, and follow the submitted
    ones' jobs."""
    with Session(engine) as session:
        open_stages = session.scalars(
            select(Stage).where(Stage.state.in_(OPEN_STATES)).order_by(Stage.id)
        ).all()
        plans = [
            (stage.id, stage.state, stage.sweep_id, stage.command, stage.executor, stage.job_ids)
            for stage in open_stages
        ]
    for stage_id, state, sweep_id, command, executor, job_ids in plans:
        if state == WAITING:
            _submit_when_ready(engine, home, stage_id, sweep_id, command, executor)
        else:
            _follow(engine, stage_id, executor, json.loads(job_ids))


def _submit_when_ready(
    engine: Engine, home: OrchHome, stage_id: int, sweep_id: int, command: str, executor: str
) -> None:
    """Submit the stage once every run of its sweep has a job (after those still active) or, on
    an executor without a queue, run it here once they have all ended."""
    from orchestrator import analyze

    queued = backend_class(executor).queued
    with Session(engine) as session:
        active_jobs = _active_jobs(session, sweep_id)
        if active_jobs is None or (active_jobs and not queued):
            return  # a run waits to be submitted, or local jobs run: later
        sweep_name = session.scalar(select(Sweep.name).where(Sweep.id == sweep_id)) or ""
        request = dataclasses.replace(stage_request(command, "stage", "then"), targets=(sweep_name,))
        runs = analyze.selected_runs(session, [sweep_name], [])
        jobs = analyze.analysis_jobs(runs, request)
        if queued:
            arrays = analyze.plan_arrays(session, runs, jobs, executor, home)
        else:
            profiles = [analyze.profile_of(run) for run in runs]
    # the registry's read is over: neither sbatch nor the analyses hold it
    if not queued:
        try:
            written = sum(len(report.written) for report in analyze.run_in_process(jobs, profiles))
        except Exception as error:  # noqa: BLE001 - the analysis's failure is the stage's reason
            reason = one_paragraph(f"{type(error).__name__}: {error}", 400)
            _record(engine, stage_id, RunState.FAILED, [], None, reason, submitted=True)
            return
        _record(engine, stage_id, RunState.COMPLETED, [], None, f"wrote {written} files here", submitted=True)
        return
    arrays_after = sorted({job.partition("_")[0] for job in active_jobs})
    dependency = "afterany:" + ":".join(arrays_after) if arrays_after else None
    try:
        submitted = [analyze.submit_array(array, executor, dependency) for array in arrays]
    except UserError as refused:
        _record(engine, stage_id, RunState.FAILED, [], dependency, str(refused))
        return
    job_ids = [job_id for array in submitted for job_id in array.job_ids]
    _record(engine, stage_id, RunState.PENDING, job_ids, dependency, None, submitted=True)


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


def _follow(engine: Engine, stage_id: int, executor: str, job_ids: list[str]) -> None:
    """The stage's state from its jobs: FAILED once one failed and all ended, COMPLETED once all completed."""
    if not job_ids:
        _record(engine, stage_id, RunState.COMPLETED, [], None, "no run to analyze")
        return
    observations = get_backend(executor).observe([JobRef(job_id, None, None) for job_id in job_ids])
    phases = [observation.phase for observation in observations]
    if all(phase in (Phase.ENDED, Phase.GONE) for phase in phases):
        failed = [
            (job_id, observation)
            for job_id, observation in zip(job_ids, observations)
            if observation.state != RunState.COMPLETED
        ]
        if failed:
            job_id, observation = failed[0]
            state = observation.state or "gone"
            reason = f"{len(failed)} of {len(job_ids)} jobs did not complete: job {job_id} {state}"
            reason += f" ({observation.reason})" if observation.reason else ""
            _record(engine, stage_id, RunState.FAILED, job_ids, None, reason, ended=True)
        else:
            _record(engine, stage_id, RunState.COMPLETED, job_ids, None, None, ended=True)
    elif Phase.RUNNING in phases:
        _record(engine, stage_id, RunState.RUNNING, job_ids, None, None)
    else:
        reasons = [observation.reason for observation in observations if observation.reason]
        _record(engine, stage_id, RunState.PENDING, job_ids, None, reasons[0] if reasons else None)


def _record(
    engine: Engine,
    stage_id: int,
    state: str,
    job_ids: list[str],
    dependency: Optional[str],
    reason: Optional[str],
    submitted: bool = False,
    ended: bool = False,
) -> None:
    with Session(engine) as session, session.begin():
        stage = session.get(Stage, stage_id)
        if stage is None:
            return
        stage.state, stage.reason = state, reason
        if job_ids:
            stage.job_ids = json.dumps(job_ids)
        if submitted:
            stage.after_jobs, stage.submitted_time, stage.number = dependency, time.time(), stage.number + 1
        if ended or state in (RunState.COMPLETED, RunState.FAILED):
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
        for stage in found:
            stage.state, stage.reason, stage.job_ids, stage.ended_time = WAITING, None, "[]", None
        return len(found)
