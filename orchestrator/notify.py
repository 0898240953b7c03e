"""Notices about sweeps, sent through apprise by the login-node side after a sync, never by jobs.

Off unless a cluster profile lists notification URLs (``notify.urls``; a user's own profile in
``~/.config/orch/clusters/`` is the place for them). A sweep's notices go to the URLs of its runs'
cluster profile. The events: a sweep *finished* (none of its runs pending or running; again after
a resume finishes it anew), its *first failure* (the run and the reason), a run *stuck pending*
longer than ``notify.pending_minutes`` (waiting for a submit slot, or queued by Slurm), and a
*digest* of every sweep each ``notify.digest_hours``. Each notice is recorded in the registry's
``notices`` table before it is sent (and removed again if sending fails), so several syncs, by
several people, send it once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from sqlalchemy import Connection, Engine, Select, bindparam, delete, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError

from orchestrator.bulk import in_chunks
from orchestrator.errors import SpecError
from orchestrator.profile_files import profile_files, profile_names
from orchestrator.registry.tables import RunState, attempts, notices, runs, sweep_runs, sweeps
from orchestrator.status import state_counts
from orchestrator.sync import owned

if TYPE_CHECKING:
    from orchestrator.profiles import Notifications

MAX_LISTED = 10  # runs named in one notice; the rest are counted


@dataclass(frozen=True)
class Notice:
    sweep: str  # "" for a digest
    event: str
    subjects: tuple[str, ...]  # what it is about (each recorded once): an attempt, a period, ...
    title: str
    body: str
    urls: tuple[str, ...]


def notify(engine: Engine, now: Optional[float] = None) -> list[Notice]:
    """Send the notices that are due and not sent yet; returns those sent. Nothing (no query) when
    no cluster profile lists notification URLs."""
    settings = notifying_profiles()
    if not settings:
        return []
    now = time.time() if now is None else now
    with engine.connect() as connection:
        due = [notice for notice in due_notices(connection, settings, now) if notice.subjects]
        due = unsent(connection, due)
    return [notice for notice in due if _claim_and_send(engine, notice, now)]


def notifying_profiles() -> dict[str, Notifications]:
    """The notification settings of each cluster profile that lists URLs (a profile that does not
    load is left out here: planning and submitting report what is wrong with it)."""
    settings = {}
    for name in profile_names():
        if not any("notify" in path.read_text() for path in profile_files(name)):
            continue  # not parsed: the commands that sync stay as quick as a registry lookup
        from orchestrator.profiles import load_profile  # parsed only where a profile mentions notices

        try:
            profile = load_profile(name)
        except SpecError:
            continue
        if profile.notify.urls:
            settings[name] = profile.notify
    return settings


def due_notices(connection: Connection, settings: dict[str, Notifications], now: float) -> Iterator[Notice]:
    """Every notice the registry's state calls for now (sent or not)."""
    digests: dict[str, list[str]] = {}
    notifying = [
        (sweep_id, name, cluster)
        for sweep_id, name, cluster in sweep_clusters(connection)
        if cluster in settings
    ]
    counts_by_sweep = state_counts(connection, [sweep_id for sweep_id, _, _ in notifying])
    for sweep_id, name, cluster in notifying:
        notify_settings = settings[cluster]
        urls = tuple(notify_settings.urls)
        counts = counts_by_sweep.get(sweep_id, Counter())
        events = set(notify_settings.events)
        if "finished" in events:
            yield from _finished(connection, sweep_id, name, counts, urls)
        if "first_failure" in events:
            yield from _first_failure(connection, sweep_id, name, urls)
        if "stuck_pending" in events:
            yield from _stuck(connection, sweep_id, name, notify_settings.pending_minutes, now, urls)
        if "digest" in events and notify_settings.digest_hours:
            period = int(now // (notify_settings.digest_hours * 3600))
            digests.setdefault(f"{cluster}:{period}", []).append(f"{name}: {_counts_text(counts)}")
    for subject, lines in digests.items():
        cluster = subject.partition(":")[0]
        urls = tuple(settings[cluster].urls)
        yield Notice(
            "", "digest", (subject,), f"orch: digest of the sweeps on {cluster}", "\n".join(lines), urls
        )


def sweep_clusters(connection: Connection) -> list[tuple[int, str, str]]:
    """(id, name, cluster profile of its first run) of every sweep this user has an attempt in:
    in a registry a lab shares, each user is told about their own sweeps, by their own profiles."""
    first_run = (
        select(sweep_runs.c.sweep_id, func.min(sweep_runs.c.run_id).label("run_id"))
        .group_by(sweep_runs.c.sweep_id)
        .subquery()
    )
    mine = (
        select(sweep_runs.c.sweep_id)
        .join(attempts, attempts.c.run_id == sweep_runs.c.run_id)
        .where(owned(attempts.c.owner))
    )
    query = (
        select(sweeps.c.id, sweeps.c.name, runs.c.spec_json)
        .join(first_run, first_run.c.sweep_id == sweeps.c.id)
        .join(runs, runs.c.id == first_run.c.run_id)
        .where(sweeps.c.id.in_(mine))
        .order_by(sweeps.c.name)
    )
    return [
        (sweep_id, name, json.loads(spec)["cluster"]) for sweep_id, name, spec in connection.execute(query)
    ]


def _members(sweep_id: int) -> Select[tuple[str]]:
    """The run ids of a sweep (a subquery)."""
    return select(sweep_runs.c.run_id).where(sweep_runs.c.sweep_id == sweep_id)


def _finished(
    connection: Connection, sweep_id: int, name: str, counts: Counter[str], urls: tuple[str, ...]
) -> Iterator[Notice]:
    if not counts or any(counts[state] for state in (*RunState.ACTIVE, RunState.PLANNED)):
        return
    made = connection.execute(
        select(func.count()).select_from(attempts).where(attempts.c.run_id.in_(_members(sweep_id)))
    ).scalar_one()
    if made:  # the number of attempts names this finish: a resume that finishes the sweep again is news
        yield Notice(
            name,
            "finished",
            (f"after {made} attempts",),
            f"orch: sweep {name} finished",
            _counts_text(counts),
            urls,
        )


def _first_failure(
    connection: Connection, sweep_id: int, name: str, urls: tuple[str, ...]
) -> Iterator[Notice]:
    query = (
        select(attempts.c.run_id, attempts.c.state, attempts.c.reason, attempts.c.end_step)
        .where(attempts.c.run_id.in_(_members(sweep_id)), attempts.c.state.in_(RunState.RESUMABLE))
        .order_by(attempts.c.ended_time, attempts.c.id)
        .limit(1)
    )
    failed = connection.execute(query).first()
    if failed is None:
        return
    run_id, state, reason, end_step = failed
    step = f" at step {end_step}" if end_step is not None else ""
    body = (
        f"run {run_id} {state}{step}: {reason or 'no reason recorded'}\n"
        f"orch show {run_id}; orch logs {run_id} --stderr; orch resume {name}"
    )
    yield Notice(name, "first_failure", ("",), f"orch: first failure in sweep {name}", body, urls)


def _stuck(
    connection: Connection, sweep_id: int, name: str, minutes: float, now: float, urls: tuple[str, ...]
) -> Iterator[Notice]:
    query = (
        select(attempts.c.key, attempts.c.run_id, attempts.c.reason)
        .where(
            attempts.c.run_id.in_(_members(sweep_id)),
            attempts.c.state == RunState.PENDING,
            attempts.c.submitted_time < now - minutes * 60,
        )
        .order_by(attempts.c.submitted_time, attempts.c.id)
    )
    stuck = connection.execute(query).all()
    if not stuck:
        return
    listed = ", ".join(f"{run_id} ({reason or 'queued'})" for _, run_id, reason in stuck[:MAX_LISTED])
    more = f" and {len(stuck) - MAX_LISTED} more" if len(stuck) > MAX_LISTED else ""
    body = f"{len(stuck)} runs pending for more than {minutes:g} minutes: {listed}{more}"
    yield Notice(
        name,
        "stuck_pending",
        tuple(key for key, _, _ in stuck),
        f"orch: runs of {name} stuck pending",
        body,
        urls,
    )


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{state.lower()} {counts[state]}" for state in RunState.ALL if counts[state])


def unsent(connection: Connection, due: Sequence[Notice]) -> list[Notice]:
    """``due`` without the subjects already recorded as sent (notices left with none dropped)."""
    keys = [(notice.sweep, notice.event, subject) for notice in due for subject in notice.subjects]
    sent: set[tuple[str, str, str]] = set()
    for chunk in in_chunks(keys):
        query = select(notices.c.sweep, notices.c.event, notices.c.subject).where(
            tuple_(notices.c.sweep, notices.c.event, notices.c.subject).in_(chunk)
        )
        sent.update(tuple(row) for row in connection.execute(query))
    kept = []
    for notice in due:
        subjects = tuple(s for s in notice.subjects if (notice.sweep, notice.event, s) not in sent)
        if subjects:
            kept.append(Notice(notice.sweep, notice.event, subjects, notice.title, notice.body, notice.urls))
    return kept


def _claim_and_send(engine: Engine, notice: Notice, now: float) -> bool:
    """Record the notice, send it, and forget it again if it could not be sent (the next sync tries
    again). False where another command recorded it first or sending failed."""
    rows = [
        {"sweep": notice.sweep, "event": notice.event, "subject": s, "sent_time": now}
        for s in notice.subjects
    ]
    try:
        with engine.begin() as connection:
            connection.execute(insert(notices), rows)
    except IntegrityError:
        return False  # another sync sends it
    if send(notice.urls, notice.title, notice.body):
        return True
    with engine.begin() as connection:
        connection.execute(
            delete(notices).where(
                notices.c.sweep == bindparam("sweep"),
                notices.c.event == bindparam("event"),
                notices.c.subject == bindparam("subject"),
            ),
            [{key: row[key] for key in ("sweep", "event", "subject")} for row in rows],
        )
    return False


def send(urls: Sequence[str], title: str, body: str) -> bool:
    """One notice to every URL (apprise, imported only when a profile asks for notices)."""
    import apprise

    sender = apprise.Apprise()
    for url in urls:
        sender.add(url)
    return bool(sender.notify(title=title, body=body))
