"""``/``: every sweep with its runs per state, progress and the GPU-hours its attempts took, as
``orch status`` and ``orch usage`` count them (usage from the registry's times: the dashboard
never asks the scheduler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.registry.tables import RunState
from orchestrator.serve import links
from orchestrator.serve.reader import RegistryReader
from orchestrator.status import SweepStatus, status_view
from orchestrator.usage import UsageGroup, attempt_rows, attempt_usage, grouped


@dataclass(frozen=True)
class SweepSummary:
    name: str
    url: str
    runs: int
    counts: tuple[int, ...]  # runs per state, in the order of SweepsPage.states
    completed: int
    active: int
    waiting_for_slot: int
    gpu_hours: Optional[float]  # of its attempts that started; None: none did
    cpu_hours: Optional[float]
    failed_share: Optional[float]  # of the GPU-hours, in attempts that failed, timed out, ...

    @property
    def progress_percent(self) -> int:
        return round(100 * self.completed / self.runs) if self.runs else 0


@dataclass(frozen=True)
class SweepsPage:
    registry: str
    recorded: bool  # a registry exists
    states: tuple[str, ...]  # the states some sweep has runs in, in RunState.ALL's order
    sweeps: tuple[SweepSummary, ...]
    active_runs: int
    compare_url: str


def sweeps_page(reader: RegistryReader) -> SweepsPage:
    with reader.session() as session:
        if session is None:
            return SweepsPage(reader.location, False, (), (), 0, links.compare_url(()))
        views = status_view(session.connection(), None)
        attempts = attempt_rows(session.connection(), None)
    usage = {group.group: group for group in grouped(attempts, attempt_usage(attempts, {}), "sweep")}
    states = tuple(state for state in RunState.ALL if any(view.counts.get(state) for view in views))
    summaries = tuple(sweep_summary(view, states, usage.get(view.sweep)) for view in views)
    return SweepsPage(
        reader.location,
        True,
        states,
        summaries,
        sum(summary.active for summary in summaries),
        links.compare_url(()),
    )


def sweep_summary(view: SweepStatus, states: tuple[str, ...], usage: Optional[UsageGroup]) -> SweepSummary:
    return SweepSummary(
        name=view.sweep,
        url=links.sweep_url(view.sweep),
        runs=view.runs,
        counts=tuple(view.counts.get(state, 0) for state in states),
        completed=view.counts.get(RunState.COMPLETED, 0),
        active=len(view.active),
        waiting_for_slot=view.waiting_for_slot,
        gpu_hours=usage.gpu_hours if usage else None,
        cpu_hours=usage.cpu_hours if usage else None,
        failed_share=usage.as_json()["failed_share"] if usage else None,
    )
