"""``/compare?sweep=A&sweep=B``: the sweep views of ``orch analyze A B --figure table|curves``,
computed by the same functions (jobs.analyses.groups) from the registry's metric series, shown
instead of written: the result table, and the curves (mean over a group's runs, band from min to
max) as SVG."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from sqlalchemy import select

from jobs.analyses.groups import CURVE_METRICS, RunCurves, grouped, result_table_rows, shared_curve
from orchestrator.errors import UserError
from orchestrator.registry.tables import sweeps
from orchestrator.serve import links
from orchestrator.serve.charts import Chart, Curve, line_chart
from orchestrator.serve.pages.common import Link, NotFound
from orchestrator.serve.reader import RegistryReader
from orchestrator.views import flat_spec, metric_series_of

KEY_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class SweepChoice:
    name: str
    chosen: bool


@dataclass(frozen=True)
class ComparePage:
    sweeps: tuple[Link, ...]  # compared
    choices: tuple[SweepChoice, ...]  # every recorded sweep, for the form
    group_by: tuple[str, ...]  # the keys the runs are grouped by
    group_by_text: str  # as asked ("" for the default: the keys the sweeps vary, without the seed)
    error: Optional[str]
    runs: int
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class Comparison:
    """What the registry holds of the compared sweeps' runs, read in one session."""

    choices: tuple[SweepChoice, ...]
    runs: tuple[RunCurves, ...]
    default_keys: tuple[str, ...]


def group_keys(texts: Sequence[str]) -> tuple[str, ...]:
    """``--group-by`` keys as typed: separated by spaces or commas, in one field or several."""
    return tuple(key for text in texts for key in KEY_SEPARATORS.split(text) if key)


def compare_page(reader: RegistryReader, names: Sequence[str], group_by: Sequence[str]) -> ComparePage:
    names = list(dict.fromkeys(name for name in names if name))
    comparison = read_comparison(reader, names)
    keys = group_keys(group_by) or comparison.default_keys
    empty = ComparePage(
        tuple(Link(name, links.sweep_url(name)) for name in names),
        comparison.choices,
        keys,
        " ".join(group_keys(group_by)),
        None,
        len(comparison.runs),
        (),
        (),
        (),
    )
    if not names:
        return empty
    from orchestrator.analyze import check_group_keys

    try:
        check_group_keys(keys, [run.config for run in comparison.runs])
    except UserError as problem:
        return replace(empty, error=str(problem))
    table = result_table_rows(comparison.runs, keys)
    return replace(
        empty,
        columns=tuple(table.columns),
        rows=tuple(tuple(str(cell) for cell in row) for row in table.rows),
        charts=comparison_charts(comparison.runs, keys),
    )


def read_comparison(reader: RegistryReader, names: Sequence[str]) -> Comparison:
    from orchestrator.analyze import default_group_keys
    from orchestrator.submit import resolve_targets

    with reader.session() as session:
        if session is None:
            if names:
                raise NotFound(f"no sweep named {names[0]!r}: no runs recorded yet in {reader.location}")
            return Comparison((), (), ())
        recorded = list(session.scalars(select(sweeps.c.name).order_by(sweeps.c.name)))
        unknown = [name for name in names if name not in recorded]
        if unknown:
            raise NotFound(f"no sweep named {unknown[0]!r} in registry {reader.location}")
        runs = resolve_targets(session, names) if names else []
        series = metric_series_of(session, [run.id for run in runs])
        collected = tuple(RunCurves(run.id, flat_spec(run), series[run.id]) for run in runs)
        defaults = tuple(default_group_keys(runs))
    return Comparison(tuple(SweepChoice(name, name in names) for name in recorded), collected, defaults)


def comparison_charts(runs: Sequence[RunCurves], keys: Sequence[str]) -> tuple[Chart, ...]:
    """One chart per metric of ``orch analyze --figure curves``: per group the mean over its runs
    at the steps they share, the band from min to max."""
    groups = grouped(runs, keys)
    charts = []
    for metric in CURVE_METRICS:
        curves = []
        for label, members in groups.items():
            steps, values = shared_curve(members, metric)
            if len(steps):
                curves.append(
                    Curve(
                        f"{label} ({len(values)} runs)",
                        steps.tolist(),
                        values.mean(axis=0).tolist(),
                        values.min(axis=0).tolist(),
                        values.max(axis=0).tolist(),
                    )
                )
        charts.append(line_chart(metric.replace("_", " "), metric, curves, log_y="loss" in metric))
    return tuple(charts)
