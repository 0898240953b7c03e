"""Sweep-level views: learning curves and result tables grouped by config keys, over seeds.

The orchestrator hands in each run's flattened config and metric series (``RunCurves``); runs
are grouped by the values of the ``group_by`` keys (``optimizer.name``, say, or everything the
sweep varies except the seed). ``curves``: mean and spread (min to max) over a group's runs at the
steps they share, per metric. ``table``: per group the final and the best value of each metric,
mean ± standard deviation over runs, as CSV and as Markdown (the dissertation's and the thesis'
result tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jobs.analyses.common import AnalysisOutput, write_figure, write_markdown_table, write_table

CURVE_METRICS = ("train_loss", "val_loss", "val_accuracy")
HIGHER_IS_BETTER = ("accuracy",)


@dataclass(frozen=True)
class RunCurves:
    run_id: str
    config: dict[str, Any]  # flattened spec: dotted key -> value
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]]  # metric -> (steps, values)


def group_label(config: dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{key}={config.get(key)}" for key in keys) or "all runs"


def grouped(runs: Sequence[RunCurves], keys: Sequence[str]) -> dict[str, list[RunCurves]]:
    groups: dict[str, list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(group_label(run.config, keys), []).append(run)
    return groups


def shared_curve(runs: Sequence[RunCurves], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps all runs of a group measured ``metric`` at, and the values [runs, steps]."""
    present = [run.series[metric] for run in runs if metric in run.series]
    if not present:
        return np.empty(0, dtype=np.int64), np.empty((0, 0))
    steps = sorted(set.intersection(*(set(steps) for steps, _ in present)))
    values = np.array([[dict(zip(*series))[step] for step in steps] for series in present], dtype=np.float64)
    return np.array(steps, dtype=np.int64), values


def curves(
    runs: Sequence[RunCurves], keys: Sequence[str], out_dir: Path, name: str, image_format: str, title: str
) -> AnalysisOutput:
    groups = grouped(runs, keys)
    rows = []
    for label, members in groups.items():
        for metric in CURVE_METRICS:
            steps, values = shared_curve(members, metric)
            for index, step in enumerate(steps):
                column = values[:, index]
                rows.append(
                    (
                        label,
                        metric,
                        int(step),
                        float(column.mean()),
                        float(column.std()),
                        float(column.min()),
                        float(column.max()),
                        len(column),
                    )
                )
    output = AnalysisOutput(
        {"groups": {label: len(members) for label, members in groups.items()}, "group_by": list(keys)}
    )
    output.tables.append(
        write_table(
            out_dir / f"{name}-curves.csv",
            ["group", "metric", "step", "mean", "std", "min", "max", "runs"],
            rows,
        )
    )

    def draw(axes) -> None:
        for axis, metric in zip(axes, CURVE_METRICS):
            for label, members in groups.items():
                steps, values = shared_curve(members, metric)
                if len(steps):
                    line = axis.plot(
                        steps, values.mean(axis=0), linewidth=1.2, label=f"{label} ({len(values)} runs)"
                    )
                    axis.fill_between(
                        steps,
                        values.min(axis=0),
                        values.max(axis=0),
                        color=line[0].get_color(),
                        alpha=0.2,
                        linewidth=0,
                    )
            axis.set_xlabel("training step")
            axis.set_ylabel(
                metric.replace("_", " ")
                + (" (fraction correct)" if "accuracy" in metric else " (cross-entropy, nats)")
            )
            if "loss" in metric:
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        axes[1].set_title("mean over runs, band: min to max", fontsize=9)

    output.figures.append(
        write_figure(out_dir / f"{name}-curves.{image_format}", draw, panels=len(CURVE_METRICS), title=title)
    )
    return output


@dataclass(frozen=True)
class ResultTable:
    """Per group the final and the best value of each metric, mean ± standard deviation over its
    runs: the rows as text (``columns``) and the numbers behind them (``summary``)."""

    columns: list[str]
    rows: list[list[Any]]
    summary: dict[str, dict[str, Any]]


def result_table_rows(runs: Sequence[RunCurves], keys: Sequence[str]) -> ResultTable:
    groups = grouped(runs, keys)
    metrics = sorted(
        {metric for run in runs for metric in run.series if metric in CURVE_METRICS + ("train_accuracy",)}
    )
    columns = ["group", "runs"] + [f"{which} {metric}" for metric in metrics for which in ("final", "best")]
    rows: list[list[Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for label, members in groups.items():
        row: list[Any] = [label, len(members)]
        summary[label] = {"runs": len(members)}
        for metric in metrics:
            finals = np.array(
                [
                    run.series[metric][1][-1]
                    for run in members
                    if metric in run.series and len(run.series[metric][1])
                ]
            )
            best_of = np.max if metric.endswith(HIGHER_IS_BETTER) else np.min
            bests = np.array(
                [
                    best_of(run.series[metric][1])
                    for run in members
                    if metric in run.series and len(run.series[metric][1])
                ]
            )
            for which, values in (("final", finals), ("best", bests)):
                text = f"{values.mean():.4g} ± {values.std():.2g}" if len(values) else "-"
                row.append(text)
                summary[label][f"{which} {metric}"] = (
                    [float(values.mean()), float(values.std())] if len(values) else None
                )
        rows.append(row)
    return ResultTable(columns, rows, summary)


def result_table(runs: Sequence[RunCurves], keys: Sequence[str], out_dir: Path, name: str) -> AnalysisOutput:
    table = result_table_rows(runs, keys)
    output = AnalysisOutput({"group_by": list(keys), "groups": table.summary})
    output.tables.append(write_table(out_dir / f"{name}-table.csv", table.columns, table.rows))
    output.tables.append(write_markdown_table(out_dir / f"{name}-table.md", table.columns, table.rows))
    return output
