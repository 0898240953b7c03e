"""Whether a reduced precision changed what a run's lines say (the line probe's
``precision_check_every``; jobs/probes/precision.py).

Per checked line, set and direction: the largest difference of the full-batch mean loss between
the reduced-precision line and its float32 twin, how many points apart their minima are, and the
relative difference of their degree-2 curvatures. A line *changed* if its minimum moved by a point
or more, or its curvature by more than ``CURVATURE_TOLERANCE``: the two quantities the paper's
conclusions (step sizes, the parabolic shape) are read from.
"""

from __future__ import annotations

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    output_path,
    write_figure,
    write_table,
)
from jobs.shards import iter_shards

CURVATURE_TOLERANCE = 0.05  # 5 % of the float32 line's curvature
COLUMNS = [
    "step",
    "set",
    "direction",
    "max_abs_mean_loss_difference",
    "argmin_shift_steps",
    "curvature_relative_difference",
    "changed",
]


def precision(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    rows = []
    precisions = set()
    start, stop = options.steps if options.steps is not None else (None, None)
    for shard in iter_shards(run.paths, options.probe, start, stop, metadata_only=True):
        report = shard.metadata.get("precision_check")
        if not report:
            continue
        precisions.add(shard.metadata.get("precision"))
        for set_name, directions in report.items():
            for index, deviation in enumerate(directions):
                changed = (
                    deviation["argmin_shift_steps"] > 0
                    or deviation["curvature_relative_difference"] > CURVATURE_TOLERANCE
                )
                rows.append(
                    (
                        shard.step,
                        set_name,
                        index,
                        deviation["max_abs_mean_loss_difference"],
                        deviation["argmin_shift_steps"],
                        deviation["curvature_relative_difference"],
                        int(changed),
                    )
                )
    if not rows:
        return AnalysisOutput(
            {"lines_checked": 0, "note": f"no line of probe {options.probe!r} was checked against float32"}
        )
    summary = {
        "precision": ", ".join(sorted(map(str, precisions))),
        "lines_checked": len({row[0] for row in rows}),
        "max_abs_mean_loss_difference": max(row[3] for row in rows),
        "max_argmin_shift_steps": max(row[4] for row in rows),
        "max_curvature_relative_difference": max(row[5] for row in rows),
        "lines_changed": len({row[0] for row in rows if row[6]}),
        "curvature_tolerance": CURVATURE_TOLERANCE,
    }
    output = AnalysisOutput(summary)
    output.tables.append(write_table(output_path(run, "precision", "csv"), COLUMNS, rows))
    steps = np.array([row[0] for row in rows], dtype=np.float64)

    def draw(axes) -> None:
        for axis, column, label in zip(
            axes,
            (3, 4, 5),
            ("max |mean loss difference| (nats)", "minimum shift (points)", "curvature relative difference"),
        ):
            axis.scatter(steps, [row[column] for row in rows], s=12)
            axis.set_xlabel("training step")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        axes[2].axhline(CURVATURE_TOLERANCE, color="red", linestyle="--", linewidth=0.8)

    output.figures.append(
        write_figure(output_path(run, "precision", options.image_format), draw, panels=3, title=run.title)
    )
    return output
