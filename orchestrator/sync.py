"""``orch sync``: bring the registry up to date with the attempts' journals and executors.

Only open attempts have anything to ingest or reconcile: the active ones (PENDING, RUNNING), and
for :data:`RECHECK_SECONDS` after their end those the scheduler's word ended without a final
journal event (lost, a node failure): their job may still finish (a process that survived its
node's failure), and its final event wins over the guess. So sync first asks whether any attempt
is open, with one query on indexes of the Core tables; only then does it import and run the
ingestion (:mod:`orchestrator.ingest`: journals, executors, the ORM). Every read command syncs
first: on a registry whose attempts have all ended that costs one indexed lookup, not the import
of the job side's journal and the executors.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from sqlalchemy import ColumnElement, Engine, and_, or_, select

from orchestrator.registry.tables import RunState, attempts, stages

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

RECHECK_SECONDS = 7 * 24 * 3600  # how long the journal of an attempt ended by a guess is read again


def current_user() -> str:
    """The login name this orch acts for (recorded as the owner of what it commits)."""
    try:
        return getpass.getuser()
    except OSError:  # no login name in the environment and no passwd entry: a container's uid
        return str(os.getuid())


def owned(
    owner: "ColumnElement[Optional[str]] | InstrumentedAttribute[Optional[str]]",
) -> ColumnElement[bool]:
    """Rows this user's orch writes: its own, and rows with no owner (inserted by another tool;
    migration 0013 gave the rows from before owners to the user who upgraded). In a
    registry that a lab shares, each fact of an attempt or stage has one writer, its owner's orch:
    the one that can read the job's journal and ask the scheduler about the job as its user."""
    return or_(owner.is_(None), owner == current_user())


def open_attempts(now: float) -> ColumnElement[bool]:
    """The attempts this user's sync looks at: its own, active and handed to the scheduler (not
    held back for a submit slot: no job, no journal yet), or ended by a guess less than
    RECHECK_SECONDS ago."""
    recent_guess = and_(attempts.c.closed_by_guess.is_(True), attempts.c.ended_time > now - RECHECK_SECONDS)
    submitted = and_(attempts.c.state.in_(RunState.ACTIVE), attempts.c.held_back.is_(False))
    return and_(or_(submitted, recent_guess), owned(attempts.c.owner))


@dataclass
class SyncReport:
    attempts_checked: int = 0
    events_ingested: int = 0
    attempts_lost: int = 0


@dataclass
class FeedReport:
    """What topping the scheduler's queue up did (orchestrator/feed.py)."""

    launched: list[str] = field(default_factory=list)  # run ids handed to the scheduler now
    waiting: int = 0  # attempts still held back for a submit slot
    refusals: list[str] = field(default_factory=list)


def sync(engine: Engine) -> SyncReport:
    """Ingest what every open attempt's journal holds beyond what the registry has, reconcile the
    attempts still open with their executors, and set each touched run's state, in one
    transaction (:func:`orchestrator.ingest.ingest`); nothing when no attempt is open."""
    if not any_attempt_open(engine):
        return SyncReport()
    from orchestrator.ingest import ingest

    return ingest(engine)


def any_held_back(engine: Engine) -> bool:
    """Whether any attempt waits for a submit slot (one indexed lookup; orchestrator/feed.py
    submits them)."""
    held = select(attempts.c.id).where(
        attempts.c.held_back.is_(True), attempts.c.state == RunState.PENDING, owned(attempts.c.owner)
    )
    with engine.connect() as connection:
        return connection.execute(held.limit(1)).first() is not None


def any_gate_open(engine: Engine) -> bool:
    """Whether any active attempt waits on a smoke test (one indexed lookup; orchestrator/smoke.py)."""
    gated = select(attempts.c.id).where(
        attempts.c.gate.is_not(None), attempts.c.state.in_(RunState.ACTIVE), owned(attempts.c.owner)
    )
    with engine.connect() as connection:
        return connection.execute(gated.limit(1)).first() is not None


STAGE_WAITING = "WAITING"  # a stage recorded while its sweep still has runs to submit
STAGE_SUBMITTING = "SUBMITTING"  # claimed by one command, its jobs not recorded yet
OPEN_STAGE_STATES = (STAGE_WAITING, STAGE_SUBMITTING, RunState.PENDING, RunState.RUNNING)


def any_stage_open(engine: Engine) -> bool:
    """Whether a stage after a sweep waits or runs (one indexed lookup; orchestrator/stages.py)."""
    open_stage = select(stages.c.id).where(stages.c.state.in_(OPEN_STAGE_STATES), owned(stages.c.owner))
    with engine.connect() as connection:
        return connection.execute(open_stage.limit(1)).first() is not None


def any_attempt_open(engine: Engine) -> bool:
    with engine.connect() as connection:
        return (
            connection.execute(select(attempts.c.id).where(open_attempts(time.time())).limit(1)).first()
            is not None
        )
