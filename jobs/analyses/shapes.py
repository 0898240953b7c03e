"""The shape of full-batch lines over training (Mutschler & Zell, Fig. 3 and Fig. 4).

``shape-distance``: every line (the mean training loss along the update direction) is read on a
common grid |s| ≤ window, shifted so its minimum is 0, and compared with every other line by
the mean absolute error. The N × N matrix is filled block by block (``block`` lines against
``block`` lines), so memory is the matrix (float32) plus one block, never N × N × points;
``stride`` keeps every stride-th line. Consecutive pairs (line t against line t + stride) are
reported on their own.

``polyfit``: polynomials of degree 1 and 2 fitted to each full-batch line on its measured points
with |s| ≤ window (the papers do not state their fitting window); the mean absolute error of both
fits, and the degree-2 fit's slope l'(0) and curvature l''(0) over training.
"""

from __future__ import annotations

import io
from typing import Any

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
from jobs.atomic import publish_bytes

NEAR = 0.3  # the paper: distances settle below 0.3 after the first lines


def full_batch_lines(run: RunInput, options: AnalysisOptions, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps [N] and full-batch lines on the common window grid [N, G] (every stride-th line)."""
    steps, lines = [], []
    for index, shard in enumerate(line_shards(run, options)):
        if index % options.stride:
            continue
        grid = window_grid(window, resolution_of(shard.metadata))
        steps.append(shard.step)
        lines.append(on_grid(shard.arrays["points"], mean_line(shard.arrays["train"][0]), grid))
    return np.array(steps, dtype=np.int64), np.array(lines, dtype=np.float32).reshape(len(lines), -1)


def pairwise_shape_distance(lines: np.ndarray, block: int) -> np.ndarray:
    """MAE between every pair of minimum-shifted lines [N, N] (float32), computed blockwise."""
    shifted = (lines - lines.min(axis=1, keepdims=True)).astype(np.float32)
    count = len(shifted)
    distances = np.empty((count, count), dtype=np.float32)
    for row in range(0, count, block):
        first = shifted[row : row + block, None, :]
        for column in range(row, count, block):
            second = shifted[None, column : column + block, :]
            tile = np.abs(first - second).mean(axis=2)
            distances[row : row + block, column : column + block] = tile
            distances[column : column + block, row : row + block] = tile.T
    return distances


def shape_distance(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    steps, lines = full_batch_lines(run, options, options.window)
    if len(steps) < 2:
        return AnalysisOutput({"lines": len(steps), "note": "fewer than two lines"})
    distances = pairwise_shape_distance(lines, options.block)
    consecutive = np.diagonal(distances, offset=1).astype(np.float64)
    off_diagonal = distances[np.triu_indices(len(steps), k=1)]
    summary = {
        "lines": int(len(steps)),
        "window": options.window,
        "median_distance": float(np.median(off_diagonal)),
        "fraction_below_0.3": float((off_diagonal < NEAR).mean()),
        "median_consecutive": float(np.median(consecutive)),
        "mean_consecutive_first_10": float(consecutive[:10].mean()),
        "mean_consecutive_after_10": float(consecutive[10:].mean()) if len(consecutive) > 10 else None,
    }
    output = AnalysisOutput(summary)
    output.tables.append(
        write_table(
            output_path(run, "shape-distance-consecutive", "csv"),
            ["step", "next_step", "distance"],
            zip(steps[:-1], steps[1:], consecutive),
        )
    )
    output.tables.append(_save_matrix(output_path(run, "shape-distance-matrix", "npz"), steps, distances))
    output.figures.append(_plot_shape_distance(run, options, steps, distances, consecutive, off_diagonal))
    return output


def _save_matrix(path: Any, steps: np.ndarray, distances: np.ndarray) -> Any:
    buffer = io.BytesIO()
    # numeric arrays only: np.load(..., allow_pickle=False)
    np.savez(buffer, steps=steps, distances=distances)
    publish_bytes(path, buffer.getvalue())
    return path


def _plot_shape_distance(
    run: RunInput, options: AnalysisOptions, steps, distances, consecutive, off_diagonal
):
    shown = slice(None, None, max(1, len(steps) // 1000))  # at most ~1 000 × 1 000 cells drawn

    def draw(axes) -> None:
        image = axes[0].imshow(
            distances[shown, shown],
            origin="lower",
            cmap="viridis",
            extent=(steps[0], steps[-1], steps[0], steps[-1]),
            aspect="auto",
        )
        axes[0].set_xlabel("line at training step")
        axes[0].set_ylabel("line at training step")
        axes[0].set_title(f"MAE between minimum-shifted lines, |s| ≤ {options.window}", fontsize=9)
        axes[0].figure.colorbar(image, ax=axes[0], label="mean absolute error (nats)")
        positive = off_diagonal[off_diagonal > 0]
        bins = (
            np.logspace(np.log10(max(positive.min(), 1e-6)), np.log10(positive.max()), 50)
            if len(positive)
            else 10
        )
        axes[1].hist(off_diagonal, bins=bins, color="tab:blue")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("shape distance (MAE, nats)")
        axes[1].set_ylabel("pairs of lines")
        axes[1].set_title("all pairs", fontsize=9)
        axes[2].plot(steps[:-1], consecutive, linewidth=0.8)
        axes[2].set_yscale("log")
        axes[2].set_xlabel("training step")
        axes[2].set_ylabel("shape distance to the next line (nats)")
        axes[2].set_title("consecutive pairs", fontsize=9)
        for axis in axes:
            axis.grid(alpha=0.3)

    return write_figure(
        output_path(run, "shape-distance", options.image_format), draw, panels=3, title=run.title
    )


def polynomial_fits(points: np.ndarray, values: np.ndarray) -> tuple[float, float, float, float]:
    """(MAE of the degree-1 fit, MAE of the degree-2 fit, l'(0), l''(0)) of one line."""
    linear = np.polyfit(points, values, 1)
    quadratic = np.polyfit(points, values, 2)
    mae_linear = float(np.abs(np.polyval(linear, points) - values).mean())
    mae_quadratic = float(np.abs(np.polyval(quadratic, points) - values).mean())
    return mae_linear, mae_quadratic, float(quadratic[1]), float(2 * quadratic[0])


def polyfit(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    rows = []
    for shard in line_shards(run, options):
        points = shard.arrays["points"]
        inside = np.abs(points) <= options.window + 1e-12
        rows.append(
            (shard.step, *polynomial_fits(points[inside], mean_line(shard.arrays["train"][0])[inside]))
        )
    if not rows:
        return AnalysisOutput({"lines": 0})
    table = np.array(rows, dtype=np.float64)
    summary = {
        "lines": len(rows),
        "window": options.window,
        "mean_mae_degree1": float(table[:, 1].mean()),
        "mean_mae_degree2": float(table[:, 2].mean()),
        "degree2_over_degree1": float(table[:, 2].mean() / table[:, 1].mean())
        if table[:, 1].mean() > 0
        else None,
        "curvature_first": float(table[0, 4]),
        "curvature_max": float(table[:, 4].max()),
        "curvature_max_at_step": int(table[np.argmax(table[:, 4]), 0]),
        "curvature_last": float(table[-1, 4]),
    }
    output = AnalysisOutput(summary)
    output.tables.append(
        write_table(
            output_path(run, "polyfit", "csv"),
            ["step", "mae_degree1", "mae_degree2", "slope", "curvature"],
            rows,
        )
    )

    def draw(axes) -> None:
        steps = table[:, 0]
        axes[0].plot(steps, table[:, 1], label="degree 1 (linear)", linewidth=0.8)
        axes[0].plot(steps, table[:, 2], label="degree 2 (parabola)", linewidth=0.8)
        axes[0].set_yscale("log")
        axes[0].set_ylabel("mean absolute error of the fit (nats)")
        axes[0].legend(fontsize=8)
        axes[1].plot(steps, table[:, 3], linewidth=0.8, color="tab:red")
        axes[1].set_ylabel("slope l'(0) of the parabola (nats per unit s)")
        axes[2].plot(steps, table[:, 4], linewidth=0.8, color="tab:purple")
        axes[2].set_ylabel("curvature l''(0) of the parabola (nats per unit s²)")
        for axis in axes:
            axis.set_xlabel("training step")
            axis.grid(alpha=0.3)
        axes[0].set_title(f"polynomial fits on |s| ≤ {options.window}", fontsize=9)

    output.figures.append(
        write_figure(output_path(run, "polyfit", options.image_format), draw, panels=3, title=run.title)
    )
    return output
