"""``orch sync``: bring the registry up to date with the attempts' journals and executors.

Only open (PENDING or RUNNING) attempts have anything to ingest or reconcile, so sync first asks
whether any is open, with one query on the attempts' state index over the Core tables; only
then does it import and run the ingestion (:mod:`orchestrator.ingest`: journals, executors, the
ORM). Every read command syncs first: on a registry whose attempts have all ended that costs one
indexed lookup, not the import of the job side's journal and the executors.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from orchestrator.registry.tables import RunState, attempts

OPEN_ATTEMPTS = attempts.c.state.in_(RunState.ACTIVE)  # the attempts sync looks at


@dataclass
class SyncReport:
    attempts_checked: int = 0
    events_ingested: int = 0
    attempts_lost: int = 0


def sync(engine: Engine) -> SyncReport:
    """Ingest what every open attempt's journal holds beyond what the registry has, reconcile the
    attempts still open with their executors, and set each touched run's state, in one
    transaction (:func:`orchestrator.ingest.ingest`); nothing when no attempt is open."""
    if not any_attempt_open(engine):
        return SyncReport()
    from orchestrator.ingest import ingest

    return ingest(engine)


def any_attempt_open(engine: Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(select(attempts.c.id).where(OPEN_ATTEMPTS).limit(1)).first() is not None
