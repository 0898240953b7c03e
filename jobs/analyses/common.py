"""What the analyses share: their options and output, line arithmetic, figure and table writing.

An analysis reads one run's shards in step order, one file at a time, keeps only reduced numbers
(a line's full-batch mean, a fit's coefficients), and writes figures plus the numbers behind them
as CSV next to each other (``<out>/<run>-<analysis>.png|pdf`` and ``…-<table>.csv``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from jobs.atomic import publish_bytes
from jobs.paths import RunPaths
from jobs.shards import LoadedShard, iter_shards

DEFAULT_RESOLUTION = 0.006  # the line probe's default spacing of points


@dataclass(frozen=True)
class AnalysisOptions:
    """The knobs of ``orch analyze``; each analysis reads the ones it needs."""

    probe: str = "line"  # the probe's name (its shard folder)
    steps: Optional[tuple[int, int]] = None  # only shards with start <= step < stop
    image_format: str = "png"
    window: float = 0.2  # |s| <= window: shape distances and polynomial fits (Fig. 3: 0.2 SGD, 0.5 momentum)
    stride: int = 1  # every stride-th line (shape distance)
    block: int = 256  # lines per block of the pairwise distance matrix
    kernel: int = 25  # moving-average width over lines (Fig. 6)
    sgd_learning_rates: tuple[float, ...] = (0.1, 0.05)  # the SGD strategies of Fig. 6
    pal_measuring_step: float = 0.1  # μ of the PAL and FBPAL strategies
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)  # emulated batch sizes (Fig. 7)
    noisy_window: float = 0.3  # |s| <= noisy_window for the noisy-direction distances (Fig. 8)
    steps_per_epoch: Optional[int] = None  # walk tables; None: from the run's recorded split


@dataclass(frozen=True)
class RunInput:
    run_id: str
    paths: RunPaths
    title: str  # the run's key config, for figure titles
    out_dir: Path


@dataclass
class AnalysisOutput:
    summary: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def line_shards(
    run: RunInput, options: AnalysisOptions, kind: str = "update_direction"
) -> Iterator[LoadedShard]:
    """The run's line shards of ``kind`` in step order, one in memory at a time."""
    start, stop = options.steps if options.steps is not None else (None, None)
    for shard in iter_shards(run.paths, options.probe, start, stop):
        if shard.metadata.get("kind", "update_direction") == kind:
            yield shard


def mean_line(losses: np.ndarray) -> np.ndarray:
    """Mean over samples of per-sample losses [samples, K], in float64."""
    return losses.astype(np.float64).mean(axis=0)


def on_grid(points: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``values`` measured at ``points`` (increasing) read at ``grid`` by linear interpolation."""
    return np.interp(grid, points, values)


def value_at(points: np.ndarray, values: np.ndarray, s: float) -> np.ndarray:
    """Lines ``values`` [..., K] measured at ``points`` (increasing), linearly interpolated at s."""
    right = int(np.clip(np.searchsorted(points, s), 1, len(points) - 1))
    weight = (s - points[right - 1]) / (points[right] - points[right - 1])
    return values[..., right - 1] * (1.0 - weight) + values[..., right] * weight


def slope_at_zero(points: np.ndarray, values: np.ndarray, spacing: float) -> np.ndarray:
    """Central difference at s = 0 over ±``spacing`` (the grid's resolution, not the distance to an
    inserted point such as s_upd, which can be tiny) of one line [K] or of many [samples, K]."""
    return (
        value_at(points, values.astype(np.float64), spacing)
        - value_at(points, values.astype(np.float64), -spacing)
    ) / (2 * spacing)


def resolution_of(metadata: dict[str, Any]) -> float:
    return float(metadata.get("resolution") or DEFAULT_RESOLUTION)


def window_grid(window: float, resolution: float) -> np.ndarray:
    """Points −window … +window spaced ``resolution`` apart, 0 included."""
    half = int(np.floor(window / resolution + 1e-9))
    return np.arange(-half, half + 1) * resolution


def first_minimum(points: np.ndarray, values: np.ndarray) -> float:
    """The first local minimum met walking from s = 0 towards positive s, refined by the vertex of
    the parabola through it and its neighbours (exact for a parabola sampled on any grid); 0 when
    the line rises from s = 0."""
    zero = index = int(np.searchsorted(points, 0.0))
    while index + 1 < len(points) and values[index + 1] < values[index]:
        index += 1
    if index == zero or index + 1 >= len(points):
        return float(points[index])  # rising from 0 (no step helps), or still falling at the last point
    return max(
        parabola_vertex(points[index - 1 : index + 2], values[index - 1 : index + 2]), float(points[zero])
    )


def parabola_vertex(points: np.ndarray, values: np.ndarray) -> float:
    (x0, x1, x2), (f0, f1, f2) = points, values
    first, second = (f1 - f0) / (x1 - x0), (f2 - f1) / (x2 - x1)
    curvature = (second - first) / (x2 - x0)
    if curvature <= 0:
        return float(x1)
    return float((x0 + x1) / 2 - first / (2 * curvature))


def moving_average(values: np.ndarray, kernel: int) -> np.ndarray:
    """Mean over a centred window of ``kernel`` values (shorter at the ends), NaNs ignored."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0)
    ones = np.ones(min(kernel, len(values)) or 1)
    total = np.convolve(filled, ones, mode="same")
    count = np.convolve(valid.astype(np.float64), ones, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def proportionality(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """c of the least-squares fit y ≈ c·x through the origin, and its R² (1 − SS_res/SS_tot)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    constant = float(x @ y / (x @ x)) if x @ x > 0 else float("nan")
    residual = float(((y - constant * x) ** 2).sum())
    spread = float(((y - y.mean()) ** 2).sum())
    return constant, (1.0 - residual / spread) if spread > 0 else float("nan")


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    publish_bytes(path, buffer.getvalue().encode())
    return path


def write_markdown_table(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    publish_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def write_figure(
    path: Path,
    draw: Callable[[Any], None],
    panels: int = 1,
    width: float = 5.0,
    height: float = 3.8,
    title: str = "",
) -> Path:
    """A figure of ``panels`` side-by-side axes drawn by ``draw(axes)``, published atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, panels, figsize=(width * panels, height), constrained_layout=True, squeeze=False
    )
    draw(axes[0])
    if title:
        figure.suptitle(title, fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip("."), dpi=110)
    plt.close(figure)
    publish_bytes(path, buffer.getvalue())
    return path


def output_path(run: RunInput, name: str, suffix: str) -> Path:
    return run.out_dir / f"{run.run_id}-{name}.{suffix}"
