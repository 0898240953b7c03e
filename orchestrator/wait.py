"""``--wait``: sync until the given runs are no longer pending or running, with a progress bar."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orchestrator.executors import poll_seconds
from orchestrator.registry.models import Run
from orchestrator.registry.tables import RunState
from orchestrator.sync import sync


@dataclass(frozen=True)
class Progression:
    states: dict[str, str]  # run id -> state
    executors: list[str]  # of the runs' last attempts
    steps_done: int
    steps_total: int

    @property
    def finished(self) -> bool:
        return not any(state in RunState.ACTIVE for state in self.states.values())

    def summary(self) -> str:
        counts = Counter(self.states.values())
        return " ".join(f"{state.lower()} {counts[state]}" for state in RunState.ALL if state in counts)


def progression(engine: Engine, run_ids: Sequence[str], synchronize: Callable[[], object]) -> Progression:
    synchronize()
    with Session(engine) as session:
        runs = session.scalars(select(Run).where(Run.id.in_(run_ids))).all()
        done = sum(run.total_steps if run.state == RunState.COMPLETED else run.current_step for run in runs)
        executors = sorted({run.attempts[-1].executor for run in runs if run.attempts})
        return Progression(
            {run.id: run.state for run in runs}, executors, done, sum(run.total_steps for run in runs)
        )


def wait_for_runs(
    engine: Engine,
    run_ids: Sequence[str],
    show_progress: bool,
    synchronize: Optional[Callable[[], object]] = None,
) -> Progression:
    """Block until none of ``run_ids`` is active; returns their final states. ``synchronize``
    brings the registry up to date before each look (default: sync; the CLI also submits runs
    held back for a submit slot)."""
    synchronize = synchronize or (lambda: sync(engine))
    current = progression(engine, run_ids, synchronize)
    if not show_progress:
        while not current.finished:
            time.sleep(poll_seconds(current.executors))
            current = progression(engine, run_ids, synchronize)
        return current
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(current.summary(), total=current.steps_total, completed=current.steps_done)
        while not current.finished:
            time.sleep(poll_seconds(current.executors))
            current = progression(engine, run_ids, synchronize)
            bar.update(task, description=current.summary(), completed=current.steps_done)
    return current
