"""``orch status``: runs per state of each sweep and its active runs, counted in SQL over the
Core tables (no ORM: status answers in the time the interpreter takes to start and import
SQLAlchemy, whatever the number of runs)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import Connection, and_, func, select

from orchestrator.registry.tables import RunState, attempts, runs, stages, sweep_runs, sweeps


@dataclass(frozen=True)
class ActiveRun:
    """A pending or running run of a sweep, with what its last attempt says."""

    run: str
    state: str
    step: int
    total_steps: int
    eta_seconds: Optional[float]  # at the attempt's last measured speed; None before one
    executor: Optional[str]
    job_id: Optional[str]
    node: Optional[str]
    reason: Optional[str]
    waiting_for_slot: bool  # held back until the user's submit limits leave room (orchestrator/feed.py)


@dataclass(frozen=True)
class StageRow:
    """An analysis after a sweep (orchestrator/stages.py) as status shows it."""

    id: int
    command: str
    state: str
    job_ids: list[str]
    after_jobs: Optional[str]
    reason: Optional[str]


@dataclass(frozen=True)
class SweepStatus:
    """One sweep: its number of runs, runs per state (states without runs left out), how many of its
    pending runs wait for a submit slot, its active runs."""

    sweep: str
    runs: int
    counts: dict[str, int]
    waiting_for_slot: int
    active: list[ActiveRun]
    stages: list[StageRow] = field(default_factory=list)
    # runs of this smoke sweep (<sweep>.smoke) that failed, with how to reproduce each
    smoke_failures: list[Any] = field(default_factory=list)


def status_view(connection: Connection, sweep_name: Optional[str]) -> list[SweepStatus]:
    """Per sweep (by name): its number of runs, runs per state, and its active runs by position."""
    query = select(sweeps.c.id, sweeps.c.name).order_by(sweeps.c.name)
    if sweep_name:
        query = query.where(sweeps.c.name == sweep_name)
    named = connection.execute(query).all()
    sweep_ids = [sweep_id for sweep_id, _ in named] if sweep_name else None
    counts = state_counts(connection, sweep_ids)
    active = active_rows(connection, sweep_ids)
    stages_of = stage_rows(connection, sweep_ids)
    views = []
    for sweep_id, name in named:
        sweep_counts = counts.get(sweep_id, Counter())
        sweep_active = active.get(sweep_id, [])
        failed = any(sweep_counts[state] for state in RunState.RESUMABLE)
        views.append(
            SweepStatus(
                sweep=name,
                runs=sum(sweep_counts.values()),
                counts={state: sweep_counts[state] for state in RunState.ALL if sweep_counts[state]},
                waiting_for_slot=sum(run.waiting_for_slot for run in sweep_active),
                active=sweep_active,
                stages=stages_of.get(sweep_id, []),
                smoke_failures=smoke_failures(connection, name) if failed and is_smoke(name) else [],
            )
        )
    return views


def is_smoke(sweep_name: str) -> bool:
    from orchestrator.smoke import SMOKE_SUFFIX

    return sweep_name.endswith(SMOKE_SUFFIX)


def smoke_failures(connection: Connection, smoke_sweep: str) -> list[Any]:
    """The failed runs of a smoke sweep, their tracebacks' tails and how to reproduce each (their
    journals read: only for a smoke sweep with failures)."""
    from sqlalchemy.orm import Session

    from orchestrator.smoke import gate_state

    with Session(bind=connection) as session:
        return list(gate_state(session, smoke_sweep).failures)


def stage_rows(connection: Connection, sweep_ids: Optional[list[int]]) -> dict[int, list[StageRow]]:
    """The stages of the sweeps (all: None), per sweep id, oldest first (one query)."""
    query = select(stages).order_by(stages.c.id)
    if sweep_ids is not None:
        query = query.where(stages.c.sweep_id.in_(sweep_ids))
    rows: dict[int, list[StageRow]] = {}
    for row in connection.execute(query).mappings():
        rows.setdefault(row["sweep_id"], []).append(
            StageRow(
                row["id"],
                row["command"],
                row["state"],
                json.loads(row["job_ids"]),
                row["after_jobs"],
                row["reason"],
            )
        )
    return rows


def state_counts(connection: Connection, sweep_ids: Optional[list[int]]) -> dict[int, Counter[str]]:
    """Runs per state of each sweep (of ``sweep_ids``, or every sweep), counted in SQL.

    A run's state sits behind its specs in its row; the index on state has it without them. So the
    runs of every state but the most common are listed from that index (their ids), each
    membership is looked up there, and a membership found in none is of the most common state."""
    present = {
        state: count
        for state, count in connection.execute(select(runs.c.state, func.count()).group_by(runs.c.state))
    }
    if not present:
        return {}
    common = max(present, key=lambda state: present[state])
    others = (
        select(runs.c.id, runs.c.state)
        .where(runs.c.state.in_([state for state in present if state != common]))
        .cte("others")
        .prefix_with("MATERIALIZED")
    )
    query = (
        select(sweep_runs.c.sweep_id, others.c.state, func.count())
        .outerjoin(others, others.c.id == sweep_runs.c.run_id)
        .group_by(sweep_runs.c.sweep_id, others.c.state)
    )
    if sweep_ids is not None:
        query = query.where(sweep_runs.c.sweep_id.in_(sweep_ids))
    counts: dict[int, Counter[str]] = {}
    for sweep_id, state, count in connection.execute(query):
        counts.setdefault(sweep_id, Counter())[state or common] = count
    return counts


def active_rows(connection: Connection, sweep_ids: Optional[list[int]]) -> dict[int, list[ActiveRun]]:
    """The active runs of each sweep in the sweep's order, each with its last attempt, in one query."""
    last_number = (
        select(func.max(attempts.c.number))
        .where(attempts.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
    )
    query = (
        select(
            sweep_runs.c.sweep_id,
            runs.c.id,
            runs.c.state,
            runs.c.current_step,
            runs.c.total_steps,
            attempts.c.executor,
            attempts.c.job_id,
            attempts.c.hostname,
            attempts.c.reason,
            attempts.c.steps_per_second,
            attempts.c.held_back,
        )
        .join(runs, runs.c.id == sweep_runs.c.run_id)
        .outerjoin(attempts, and_(attempts.c.run_id == runs.c.id, attempts.c.number == last_number))
        .where(sweep_runs.c.run_id.in_(select(runs.c.id).where(runs.c.state.in_(RunState.ACTIVE))))
        .order_by(sweep_runs.c.sweep_id, sweep_runs.c.position, sweep_runs.c.run_id)
    )
    if sweep_ids is not None:
        query = query.where(sweep_runs.c.sweep_id.in_(sweep_ids))
    rows: dict[int, list[ActiveRun]] = {}
    for (
        sweep_id,
        run_id,
        state,
        step,
        total_steps,
        executor,
        job_id,
        node,
        reason,
        steps_per_second,
        held_back,
    ) in connection.execute(query):
        rows.setdefault(sweep_id, []).append(
            ActiveRun(
                run=run_id,
                state=state,
                step=step,
                total_steps=total_steps,
                eta_seconds=max(total_steps - step, 0) / steps_per_second if steps_per_second else None,
                executor=executor,
                job_id=job_id,
                node=node,
                reason=reason,
                waiting_for_slot=bool(held_back),
            )
        )
    return rows
