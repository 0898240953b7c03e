"""``orch submit --smoke``: every distinct configuration of a sweep for a few steps first; the real
arrays wait on them through a Slurm dependency.

A configuration is what decides which code a run exercises: its model, data set, optimizer, probe
types, resources and image, not its learning rate or seed. Each gets one smoke run: the first run
of the sweep with it, cut to :data:`SMOKE_STEPS` steps, every probe measuring at every step (a
line at least), evaluation and a checkpoint at step :data:`RESTORE_AT`, where the job rehearses a
requeue (stops and restores itself from that checkpoint), on the profile's shortest partition.
The smoke runs are a sweep of their own, ``<sweep>.smoke``, recorded and shown like any other.

The real runs are committed held back behind that gate (``attempts.gate``). Once every smoke run
has a job, they go out with ``--dependency=afterok:<smoke arrays>``: Slurm starts them only when
all smoke runs completed, with nobody at the terminal. When one fails, Slurm leaves them pending
(DependencyNeverSatisfied) and the next orch command that syncs cancels them, with the failed run,
its error and the command that reproduces it in this process as their reason.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import ColumnElement, Engine, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from jobs.journal import Failed, read_events
from jobs.paths import AttemptPaths
from jobs.spec import RunSpec, time_limit_minutes
from orchestrator.executors import backend_class
from orchestrator.fingerprint import run_id
from orchestrator.planner import PlannedRun
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, Sweep, SweepRun
from orchestrator.registry.tables import RunState
from orchestrator.sweep import SweepPlan
from orchestrator.sync import owned

SMOKE_STEPS = 4
RESTORE_AT = 2  # the step where a smoke job stops, checkpoints and restores itself
SMOKE_SUFFIX = ".smoke"
TRACEBACK_TAIL_LINES = 6
SMOKE_FAILED = "the smoke test failed"  # how a gated attempt's reason begins when its gate failed


def smoke_sweep_name(sweep: str) -> str:
    return sweep + SMOKE_SUFFIX


def configuration_key(spec: RunSpec) -> str:
    """What decides the code a run exercises (not its learning rate or seed)."""
    return json.dumps(
        [
            dataclasses.asdict(spec.model),
            dataclasses.asdict(replace(spec.data, split_seed=0)),
            spec.optimizer.name,
            sorted(probe.type for probe in spec.probes),
            dataclasses.asdict(spec.resources),
            spec.container.image,
            spec.cluster,
        ],
        sort_keys=True,
        default=str,
    )


def smoke_plan(plan: SweepPlan) -> SweepPlan:
    """One smoke run per distinct configuration of ``plan``, in the order they first appear."""
    firsts: dict[str, PlannedRun] = {}
    for run in plan.runs:
        firsts.setdefault(configuration_key(run.spec), run)
    runs = []
    for run in firsts.values():
        spec = smoke_spec(run.spec, load_profile(run.spec.cluster))
        runs.append(PlannedRun(run_id(spec), spec, {**run.swept, "smoke_of": run.run_id}, True))
    return replace(plan, name=smoke_sweep_name(plan.name), runs=runs, then=())


def smoke_spec(spec: RunSpec, profile: ClusterProfile) -> RunSpec:
    training = replace(
        spec.training,
        steps=SMOKE_STEPS,
        checkpoint_every=RESTORE_AT,
        eval_every=RESTORE_AT,
        checkpoint_minutes=None,
        rehearse_requeue_at=RESTORE_AT,
    )
    probes = [replace(probe, every=1, steps=[], from_step=0, to_step=None) for probe in spec.probes]
    resources = replace(spec.resources, segments=1, pack=1)
    if profile.partitions:
        shortest = min(profile.partitions, key=lambda partition: time_limit_minutes(partition.max_time))
        resources = replace(resources, partition=shortest.name, time=shortest.max_time)
    return replace(spec, training=training, probes=probes, resources=resources)


# -- the gate: the real runs wait for the smoke runs ---------------------------------------------


@dataclass(frozen=True)
class SmokeFailure:
    """A smoke run that did not complete, and how to see it fail in this process."""

    sweep: str
    run_id: str
    state: str
    reason: Optional[str]
    traceback_tail: list[str]
    reproduce: str


@dataclass(frozen=True)
class GateState:
    """Where the smoke runs of a gate stand."""

    failures: list[SmokeFailure]
    passed: bool  # every smoke run completed
    job_ids: list[str]  # of every smoke attempt, when each has a job in a scheduler's queue (else empty)


def gate_state(session: Session, gate: str) -> GateState:
    """The last attempts of the gate's smoke runs (one query)."""
    last = (
        select(Attempt.run_id, func.max(Attempt.number).label("number"))
        .join(SweepRun, SweepRun.run_id == Attempt.run_id)
        .join(Sweep, Sweep.id == SweepRun.sweep_id)
        .where(Sweep.name == gate)
        .group_by(Attempt.run_id)
        .subquery()
    )
    attempts = session.scalars(
        select(Attempt)
        .join(last, (Attempt.run_id == last.c.run_id) & (Attempt.number == last.c.number))
        .order_by(Attempt.run_id)
    ).all()
    failures = [failure_of(gate, attempt) for attempt in attempts if attempt.state in RunState.RESUMABLE]
    # a dependency needs a scheduler (Slurm); local runs are let go once the smoke runs passed
    job_ids = [
        attempt.job_id
        for attempt in attempts
        if attempt.job_id and not attempt.held_back and backend_class(attempt.executor).queued
    ]
    return GateState(
        failures,
        bool(attempts) and all(attempt.state == RunState.COMPLETED for attempt in attempts),
        job_ids if len(job_ids) == len(attempts) else [],
    )


def failure_of(gate: str, attempt: Attempt) -> SmokeFailure:
    try:
        events = read_events(AttemptPaths(Path(attempt.journal_dir)))
    except PermissionError:  # another user's run folder (a registry a lab shares): the reason alone
        events = []
    failed = [event.payload for event in events if isinstance(event.payload, Failed)]
    tail = failed[-1].traceback.strip().splitlines()[-TRACEBACK_TAIL_LINES:] if failed else []
    return SmokeFailure(
        gate,
        attempt.run_id,
        attempt.state,
        attempt.reason,
        tail,
        f"orch resume {attempt.run_id} --executor debug",
    )


def dependency_of(kind: str, job_ids: Sequence[str]) -> Optional[str]:
    """``kind`` (afterok, afterany) on the arrays that hold the jobs (an array id waits for all
    its tasks); None for no job."""
    arrays = sorted({job_id.partition("_")[0] for job_id in job_ids})
    return f"{kind}:" + ":".join(arrays) if arrays else None


def failure_words(failure: SmokeFailure) -> str:
    return (
        f"{SMOKE_FAILED} (sweep {failure.sweep}): run {failure.run_id} {failure.state}: "
        f"{failure.reason or 'no reason recorded'}; reproduce: {failure.reproduce}"
    )


def open_gates(session: Session) -> list[str]:
    """The gates that still hold attempts back or have active attempts behind them."""
    query = (
        select(Attempt.gate)
        .where(Attempt.gate.is_not(None), Attempt.state.in_(RunState.ACTIVE), owned(Attempt.owner))
        .distinct()
        .order_by(Attempt.gate)
    )
    return [gate for gate in session.scalars(query) if gate]


def settle_gates(engine: Engine) -> list[str]:
    """Move every open gate on: held-back attempts behind smoke runs that all have jobs get their
    dependency (and go out with the next launch); behind a failed smoke run they are cancelled, and
    their jobs if they had any, with the failure as the reason. Returns the cancelled run ids."""
    with Session(engine) as session:
        gates = {gate: gate_state(session, gate) for gate in open_gates(session)}
    cancelled: list[str] = []
    for gate, state in gates.items():
        if state.failures:
            cancelled += cancel_gated(engine, gate, failure_words(state.failures[0]))
        elif state.passed or state.job_ids:
            release(engine, gate, None if state.passed else dependency_of("afterok", state.job_ids))
    return cancelled


def release(engine: Engine, gate: str, dependency: Optional[str]) -> None:
    """The gate's held-back attempts may go out, after ``dependency`` (None: at once)."""
    attempts = Attempt.__table__
    to_release: ColumnElement[bool] = attempts.c.after_jobs.is_(
        None
    )  # still running: the attempts without a dependency yet
    if dependency is None:  # passed: a dependency given before goes too (Slurm forgets the smoke
        to_release = or_(to_release, attempts.c.after_jobs != "")  # jobs after MinJobAge, refusing it)
    with engine.begin() as connection:
        connection.execute(
            update(attempts)
            .where(
                attempts.c.gate == gate,
                owned(attempts.c.owner),
                attempts.c.held_back.is_(True),
                attempts.c.state == RunState.PENDING,
                to_release,
            )
            .values(after_jobs=dependency or "", reason=bindparam("reason")),
            {
                "reason": "waiting for a submit slot (the smoke test "
                + ("passed)" if dependency is None else f"runs: {dependency})")
            },
        )


def cancel_gated(engine: Engine, gate: str, reason: str) -> list[str]:
    """End the gate's active attempts (their jobs, if any, are cancelled) with ``reason``."""
    from orchestrator.submit import cancel_attempts

    with Session(engine) as session:
        keys = session.scalars(
            select(Attempt.key).where(
                Attempt.gate == gate, Attempt.state.in_(RunState.ACTIVE), owned(Attempt.owner)
            )
        ).all()
    return cancel_attempts(engine, list(keys), reason)
