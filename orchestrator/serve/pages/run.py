"""``/runs/{id}``: one run as ``orch show`` reports it (resolved spec, attempts, metrics, shards,
checkpoints), with the tails of its attempts' logs, its training curves and the figures its
analyses wrote; and ``/runs/{id}/files/...``, which serves those figures."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import yaml

from jobs.analyses.curves import PANELS
from orchestrator.errors import SpecError
from orchestrator.home import OrchHome
from orchestrator.output import format_duration, format_time
from orchestrator.serve import links
from orchestrator.serve.charts import Chart, Curve, line_chart
from orchestrator.serve.files import LogTail, contained_file, figure_files, log_tail
from orchestrator.serve.pages.common import KeyValue, Link, NotFound, value_text
from orchestrator.serve.reader import RegistryReader
from orchestrator.views import AttemptView, RunView, ShardRow, metric_series, show_view

if TYPE_CHECKING:
    from orchestrator.registry.models import Run

MAX_SHARD_ROWS = 200  # listed per probe (all are counted)


@dataclass(frozen=True)
class AttemptRow:
    """One attempt as ``orch show``'s table has it, with its logs' tails."""

    number: int
    executor: str
    job_id: str
    node: str
    gpu: str
    state: str
    exit_code: str
    steps: str
    submitted: str
    started: str
    ended: str
    queue_wait: str
    elapsed: str
    reason: str
    requeues: tuple[str, ...]
    logs: tuple[LogTail, ...]


@dataclass(frozen=True)
class MetricLine:
    name: str
    points: int
    last_step: int
    last: str
    low: str
    high: str


@dataclass(frozen=True)
class ProbeShards:
    """A probe's shards: how many, their steps and size, and the first of them listed."""

    probe: str
    count: int
    first_step: int
    last_step: int
    total_bytes: int
    points: int
    extrapolations: int
    rows: tuple[ShardRow, ...]

    @property
    def unlisted(self) -> int:
        return self.count - len(self.rows)


@dataclass(frozen=True)
class FigureLink:
    name: str
    url: str
    is_image: bool
    size: int


@dataclass(frozen=True)
class RunPage:
    id: str
    state: str
    progress: str
    sweeps: tuple[Link, ...]
    run_dir: str
    swept: tuple[KeyValue, ...]
    spec_yaml: str
    attempts: tuple[AttemptRow, ...]
    metrics: tuple[MetricLine, ...]
    charts: tuple[Chart, ...]
    figures: tuple[FigureLink, ...]
    probes: tuple[ProbeShards, ...]
    checkpoints: tuple[KeyValue, ...]  # step, file


@dataclass(frozen=True)
class LogFiles:
    """Where an attempt's job writes its output (the registry records it; debug attempts: none)."""

    number: int
    stdout: Optional[str]
    stderr: Optional[str]


@dataclass(frozen=True)
class RunRecord:
    """What the registry holds of a run, read in one short session."""

    view: RunView
    series: dict[str, tuple[list[int], list[float]]]
    logs: tuple[LogFiles, ...]
    results_root: Optional[Path]  # of the run's cluster profile: its folder must lie inside


def run_page(reader: RegistryReader, run_id: str) -> RunPage:
    record = read_run(reader, run_id)
    view = record.view
    figures = figure_files(view.run_dir) if run_folder(record) is not None else ()
    return RunPage(
        id=view.id,
        state=view.state,
        progress=f"{view.step}/{view.total_steps}",
        sweeps=tuple(Link(name, links.sweep_url(name)) for name in view.sweeps),
        run_dir=view.run_dir or "-",
        swept=tuple(KeyValue(key, value_text(value)) for key, value in view.swept.items()),
        spec_yaml=yaml.safe_dump(view.spec, sort_keys=False, allow_unicode=True),
        attempts=tuple(attempt_row(attempt, record.logs) for attempt in view.attempts),
        metrics=tuple(metric_line(name, view) for name in sorted(view.metrics)),
        charts=run_charts(record.series),
        figures=tuple(
            FigureLink(
                figure.relative, links.file_url(view.id, figure.relative), figure.is_image, figure.size
            )
            for figure in figures
        ),
        probes=probe_shards(view.shards),
        checkpoints=tuple(KeyValue(str(checkpoint.step), checkpoint.path) for checkpoint in view.checkpoints),
    )


def read_run(reader: RegistryReader, run_id: str) -> RunRecord:
    from orchestrator.registry.models import Run

    with reader.session() as session:
        run = session.get(Run, run_id) if session is not None else None
        if session is None or run is None:
            raise NotFound(f"no run {run_id!r} in registry {reader.location}")
        return RunRecord(
            show_view(session, run),
            metric_series(session, run.id),
            tuple(
                LogFiles(attempt.number, attempt.stdout_path, attempt.stderr_path) for attempt in run.attempts
            ),
            results_root(run, reader.home),
        )


def results_root(run: Run, home: OrchHome) -> Optional[Path]:
    """The results folder of the run's cluster profile; None where the profile cannot be read."""
    from jobs.spec import spec_from_json
    from orchestrator.profiles import load_profile

    try:
        return load_profile(spec_from_json(run.spec_json).cluster).results_path(home)
    except (SpecError, ValueError, OSError):
        return None


def run_folder(record: RunRecord) -> Optional[Path]:
    """The run's folder where it lies inside its profile's results folder (the registry says
    where; a folder elsewhere is not served)."""
    if not record.view.run_dir or record.results_root is None:
        return None
    try:
        folder = Path(record.view.run_dir).resolve(strict=True)
        return folder if folder.is_relative_to(record.results_root.resolve()) else None
    except (OSError, RuntimeError):
        return None


def run_file(reader: RegistryReader, run_id: str, relative: str) -> Path:
    """The figure file ``relative`` of the run's folder, checked to lie in its figures (NotFound
    for anything else)."""
    record = read_run(reader, run_id)
    folder = run_folder(record)
    found = contained_file(folder, relative) if folder is not None else None
    if found is None:
        raise NotFound(f"run {run_id} has no figure {relative!r}")
    return found


def attempt_row(attempt: AttemptView, logs: Sequence[LogFiles]) -> AttemptRow:
    files = next(
        (item for item in logs if item.number == attempt.number), LogFiles(attempt.number, None, None)
    )
    device = (attempt.provenance or {}).get("device")
    return AttemptRow(
        number=attempt.number,
        executor=attempt.executor,
        job_id=value_text(attempt.job_id)
        + (f" (task {attempt.array_task})" if attempt.array_task is not None else ""),
        node=value_text(attempt.hostname),
        gpu=value_text(device),
        state=attempt.state,
        exit_code=value_text(attempt.exit_code),
        steps=f"{value_text(attempt.start_step)} → {value_text(attempt.end_step)}",
        submitted=format_time(attempt.submitted_time),
        started=format_time(attempt.started_time),
        ended=format_time(attempt.ended_time),
        queue_wait=format_duration(attempt.queue_wait_s),
        elapsed=format_duration(attempt.elapsed_s),
        reason=attempt.reason or "",
        requeues=tuple(
            f"{format_time(requeue.time)}: {requeue.cause} ({requeue.source}) on {value_text(requeue.node)} "
            f"at step {value_text(requeue.step)}"
            for requeue in attempt.requeue_history
        ),
        logs=(log_tail("stdout", files.stdout), log_tail("stderr", files.stderr)),
    )


def metric_line(name: str, view: RunView) -> MetricLine:
    summary = view.metrics[name]
    return MetricLine(
        name,
        summary.count,
        summary.last_step,
        value_text(summary.last, 5),
        value_text(summary.min, 5),
        value_text(summary.max, 5),
    )


def run_charts(series: dict[str, tuple[list[int], list[float]]]) -> tuple[Chart, ...]:
    """A loss chart and an accuracy chart as ``orch curves`` draws them, then one per other metric."""
    charts = []
    shown: set[str] = set()
    for quantity, names in PANELS:
        present = [name for name in names if name in series]
        shown.update(present)
        if present:
            curves = [Curve(name.replace("_", " "), *series[name]) for name in present]
            charts.append(line_chart(quantity, quantity, curves, log_y=quantity == "loss"))
    for name in sorted(set(series) - shown):
        charts.append(line_chart(name.replace("_", " "), name, [Curve(name, *series[name])]))
    return tuple(charts)


def probe_shards(shards: Sequence[ShardRow]) -> tuple[ProbeShards, ...]:
    by_probe = groupby(
        sorted(shards, key=lambda shard: (shard.probe, shard.step)), key=lambda shard: shard.probe
    )
    summaries = []
    for probe, members in by_probe:
        rows = list(members)
        summaries.append(
            ProbeShards(
                probe,
                len(rows),
                rows[0].step,
                rows[-1].step,
                sum(row.bytes for row in rows),
                sum(row.n_points for row in rows),
                sum(row.is_extrapolation for row in rows),
                tuple(rows[:MAX_SHARD_ROWS]),
            )
        )
    return tuple(summaries)
