"""Representative lines (Mutschler & Zell, Fig. 2) from a run's line shards.

For each chosen line: the full-batch loss (mean over the training split), the loss of the
direction-defining batch, the median and quartile band of the mean losses of the *other*
mini-batches (the training split without the direction batch, cut into batches of the same size
in a seeded order) and the validation loss, over the step size s along the normalized update
direction, with s = 0 and s_upd marked. Shards are read one at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    output_path,
    write_figure,
    write_table,
)
from jobs.shards import LoadedShard, iter_shards

QUARTILES = (25.0, 50.0, 75.0)


@dataclass(frozen=True)
class LineSummary:
    step: int
    points: int
    update_norm: float
    s_min_full_batch: float  # location of the full-batch minimum
    full_batch_at_zero: float
    full_batch_at_update: float
    is_extrapolation: bool


def other_batch_quartiles(train_losses: np.ndarray, direction_indices: np.ndarray, seed: int) -> np.ndarray:
    """Quartiles over mini-batches of the training split without the direction batch: [3, K]."""
    batch_size = len(direction_indices)
    others = np.setdiff1d(np.arange(train_losses.shape[0]), direction_indices)
    order = np.random.default_rng(seed).permutation(others)
    batches = order[: len(order) // batch_size * batch_size].reshape(-1, batch_size)
    batch_means = train_losses[batches].astype(np.float64).mean(axis=1)  # [batches, K]
    return np.percentile(batch_means, QUARTILES, axis=0)


def choose_steps(available: list[int], count: int) -> list[int]:
    """``count`` steps spread evenly over the available ones (first and last included)."""
    if len(available) <= count:
        return available
    return [available[round(i * (len(available) - 1) / (count - 1))] for i in range(count)]


def summarize(shard: LoadedShard) -> LineSummary:
    points = shard.arrays["points"]
    full_batch = shard.arrays["train"][0].astype(np.float64).mean(axis=0)
    update_norm = float(shard.arrays["update_norm"][0])
    return LineSummary(
        step=shard.step,
        points=len(points),
        update_norm=update_norm,
        s_min_full_batch=float(points[np.argmin(full_batch)]),
        full_batch_at_zero=float(full_batch[np.searchsorted(points, 0.0)]),
        full_batch_at_update=float(full_batch[np.searchsorted(points, update_norm)]),
        is_extrapolation=bool(shard.metadata.get("is_extrapolation", False)),
    )


def representative_lines(run: RunInput, options: AnalysisOptions, count: int = 4) -> AnalysisOutput:
    """Four lines spread over ``options.steps``: the figure, a CSV and a summary of each line shown."""
    start, stop = options.steps if options.steps is not None else (None, None)
    available = [
        shard.step
        for shard in iter_shards(run.paths, options.probe, start, stop, metadata_only=True)
        if shard.metadata.get("kind") == "update_direction"
    ]
    chosen = choose_steps(available, count)
    if not chosen:
        return AnalysisOutput({"count": 0, "note": f"no update-direction shards of probe {options.probe!r}"})
    lines: list[LineSummary] = []

    def draw(axes) -> None:
        for axis, step in zip(axes, chosen):
            (shard,) = iter_shards(run.paths, options.probe, step, step + 1)
            lines.append(summarize(shard))
            draw_line(axis, shard)
        axes[0].legend(fontsize=7, loc="best")

    figure = write_figure(
        output_path(run, "lines", options.image_format),
        draw,
        panels=len(chosen),
        width=4.2,
        height=3.8,
        title=run.title,
    )
    columns = [name for name in LineSummary.__dataclass_fields__]
    table = write_table(
        output_path(run, "lines", "csv"),
        columns,
        [[getattr(line, name) for name in columns] for line in lines],
    )
    summary = {
        "count": len(lines),
        "steps": [line.step for line in lines],
        "lines": [dataclasses.asdict(line) for line in lines],
    }
    return AnalysisOutput(summary, [figure], [table])


def draw_line(axis, shard: LoadedShard) -> None:
    arrays = shard.arrays
    points = arrays["points"]
    if "train" in arrays:
        train = arrays["train"][0]
        low, median, high = other_batch_quartiles(train, arrays["direction_indices"][0], seed=shard.step)
        axis.fill_between(
            points,
            low,
            high,
            color="tab:blue",
            alpha=0.2,
            linewidth=0,
            label="other mini-batches (quartiles)",
        )
        axis.plot(
            points,
            median,
            color="tab:blue",
            linewidth=0.8,
            linestyle=":",
            label="other mini-batches (median)",
        )
        axis.plot(
            points,
            train.astype(np.float64).mean(axis=0),
            color="black",
            linewidth=1.6,
            label="full batch (train split)",
        )
    if "direction" in arrays:
        axis.plot(
            points,
            arrays["direction"][0].astype(np.float64).mean(axis=0),
            color="tab:red",
            linewidth=1.2,
            label="direction-defining batch",
        )
    if "val" in arrays:
        axis.plot(
            points,
            arrays["val"][0].astype(np.float64).mean(axis=0),
            color="tab:green",
            linewidth=1.0,
            linestyle="--",
            label="validation split",
        )
    update_norm = float(arrays["update_norm"][0])
    axis.axvline(0.0, color="grey", linewidth=0.6)
    axis.axvline(
        update_norm,
        color="tab:orange",
        linewidth=0.8,
        linestyle="--",
        label=f"update step s_upd = {update_norm:.3g}",
    )
    axis.set_title(
        f"line at step {shard.step}" + (" (extrapolated)" if shard.metadata.get("is_extrapolation") else ""),
        fontsize=9,
    )
    axis.set_xlabel("step size s along the normalized update direction")
    axis.set_ylabel("cross-entropy loss (nats)")
    axis.grid(alpha=0.3)
