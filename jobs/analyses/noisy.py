"""Lines along several noisy gradient directions from one point (Mutschler & Zell, Fig. 8).

A line probe with ``directions: k`` measures, at its steps, the full-batch loss along k
directions −g_j/‖g_j‖ of k seeded mini-batches. Per position: the shape distance (MAE of
minimum-shifted lines on |s| ≤ ``noisy_window``) between every pair of directions, its mean
and maximum; the figure overlays the lines of the first positions and plots the mean distance
over training.
"""

from __future__ import annotations

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    line_shards,
    mean_line,
    on_grid,
    output_path,
    resolution_of,
    window_grid,
    write_figure,
    write_table,
)
from jobs.analyses.shapes import pairwise_shape_distance

SHOWN_POSITIONS = 3


def noisy_directions(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    rows: list[tuple[int, int, float, float]] = []
    shown: list[tuple[int, np.ndarray, np.ndarray]] = []
    for shard in line_shards(run, options, kind="noisy_directions"):
        grid = window_grid(options.noisy_window, resolution_of(shard.metadata))
        points = shard.arrays["points"]
        lines = np.array([on_grid(points, mean_line(losses), grid) for losses in shard.arrays["train"]])
        distances = pairwise_shape_distance(lines, options.block)
        pairs = distances[np.triu_indices(len(lines), k=1)]
        rows.append((shard.step, len(lines), float(pairs.mean()), float(pairs.max())))
        if len(shown) < SHOWN_POSITIONS:
            shown.append((shard.step, grid, lines))
    if not rows:
        return AnalysisOutput(
            {"positions": 0, "note": f"no noisy_directions shards in probe {options.probe!r}"}
        )
    table = np.array(rows, dtype=np.float64)
    summary = {
        "positions": len(rows),
        "directions": int(table[0, 1]),
        "window": options.noisy_window,
        "mean_distance": float(table[:, 2].mean()),
        "max_distance": float(table[:, 3].max()),
    }
    output = AnalysisOutput(summary)
    output.tables.append(
        write_table(
            output_path(run, "noisy-directions", "csv"),
            ["step", "directions", "mean_distance", "max_distance"],
            rows,
        )
    )

    def draw(axes) -> None:
        for axis, (step, grid, lines) in zip(axes, shown):
            for index, line in enumerate(lines):
                axis.plot(grid, line - line.min(), linewidth=0.9, label=f"direction {index}")
            axis.set_title(f"step {step}: {len(lines)} noisy gradient directions", fontsize=9)
            axis.set_xlabel("step size s along −g_j/‖g_j‖")
            axis.set_ylabel("full-batch loss − its minimum (nats)")
        axes[-1].plot(table[:, 0], table[:, 2], marker="o", label="mean over pairs")
        axes[-1].plot(table[:, 0], table[:, 3], marker="x", linestyle="--", label="max over pairs")
        axes[-1].set_xlabel("training step")
        axes[-1].set_ylabel(f"shape distance on |s| ≤ {options.noisy_window} (nats)")
        for axis in axes:
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)

    output.figures.append(
        write_figure(
            output_path(run, "noisy-directions", options.image_format),
            draw,
            panels=len(shown) + 1,
            title=run.title,
        )
    )
    return output
