"""``/active`` and ``/api/active``: the pending and running runs with step and ETA. The registry's
step (``orch status``'s) is only as new as the last sync, and the dashboard never syncs, so the
latest heartbeat each active attempt published into its journal is read too: the newer of the
two is shown."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import Connection, select

from jobs.journal import Heartbeat
from orchestrator.output import format_duration
from orchestrator.registry.tables import RunState, attempts, sweeps
from orchestrator.serve import links
from orchestrator.serve.files import latest_heartbeat
from orchestrator.serve.reader import RegistryReader
from orchestrator.status import ActiveRun
from orchestrator.status import active_rows as status_active_rows

REFRESH_MILLISECONDS = 2000
MAX_HEARTBEATS = 5000  # journals read per request (the rest show the registry's step)


@dataclass(frozen=True)
class ActiveRow:
    """One active run of a sweep, with the newest step known of it."""

    sweep: str
    run: str
    url: str
    state: str
    step: int
    total_steps: int
    eta_seconds: Optional[float]
    eta: str
    heartbeat_age_s: Optional[float]  # seconds since its job's last heartbeat; None: none read
    heartbeat: str
    step_from: str  # "heartbeat" (the journal, newer than the registry) or "registry"
    executor: str
    job_id: str
    node: str
    reason: str

    @property
    def progress(self) -> str:
        return f"{self.step}/{self.total_steps}"

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "progress": self.progress}


@dataclass(frozen=True)
class ActivePage:
    registry: str
    recorded: bool
    rows: tuple[ActiveRow, ...]
    refresh_ms: int
    api_url: str


def active_page(reader: RegistryReader) -> ActivePage:
    return ActivePage(
        reader.location, reader.engine() is not None, active_rows(reader), REFRESH_MILLISECONDS, "/api/active"
    )


def active_rows(reader: RegistryReader) -> tuple[ActiveRow, ...]:
    """Every active run of every sweep as ``orch status`` lists them (a run in two sweeps twice;
    sweeps by name), the journals read after the registry's session is closed."""
    with reader.session() as session:
        if session is None:
            return ()
        query = select(sweeps.c.id, sweeps.c.name).order_by(sweeps.c.name)
        names: dict[int, str] = {sweep_id: name for sweep_id, name in session.execute(query)}
        active = status_active_rows(session.connection(), None)
        journals = active_journals(session.connection())
    now = time.time()
    beats: dict[str, Optional[Heartbeat]] = {}
    for run_id in list(journals)[:MAX_HEARTBEATS]:
        beats[run_id] = latest_heartbeat(journals[run_id])
    return tuple(
        active_row(name, item, beats.get(item.run), now)
        for sweep_id, name in names.items()
        for item in active.get(sweep_id, ())
    )


def active_journals(connection: Connection) -> dict[str, str]:
    """The journal folder of each run's active attempt (one per run; the partial index on state)."""
    query = select(attempts.c.run_id, attempts.c.journal_dir).where(attempts.c.state.in_(RunState.ACTIVE))
    return {run_id: journal_dir for run_id, journal_dir in connection.execute(query)}


def active_row(sweep: str, item: ActiveRun, beat: Optional[Heartbeat], now: float) -> ActiveRow:
    newer = beat is not None and beat.step >= item.step
    step = beat.step if beat is not None and newer else item.step
    eta = item.eta_seconds
    if beat is not None and newer and beat.steps_per_second > 0:
        eta = max(item.total_steps - beat.step, 0) / beat.steps_per_second
    age = max(now - beat.time, 0.0) if beat is not None else None
    return ActiveRow(
        sweep=sweep,
        run=item.run,
        url=links.run_url(item.run),
        state=item.state,
        step=step,
        total_steps=item.total_steps,
        eta_seconds=eta,
        eta=format_duration(eta),
        heartbeat_age_s=age,
        heartbeat=f"{format_duration(age)} ago" if age is not None else "-",
        step_from="heartbeat" if beat is not None and newer else "registry",
        executor=item.executor or "-",
        job_id=item.job_id or "-",
        node=item.node or "-",
        reason=item.reason or "",
    )
