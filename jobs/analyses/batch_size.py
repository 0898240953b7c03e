"""Emulated batch sizes on measured lines (Mutschler & Zell, Fig. 7).

A line stores the per-sample losses of its direction batch (B samples) and of the training split.
A batch of size b is emulated on the same line: b > B adds b − B training samples that are not
in the direction batch, drawn without replacement (seeded by the step); b < B drops the B − b
samples with the steepest directional derivative at 0 (the most negative per-sample slope). On
each emulated batch's mean line: its slope l'_b(0) (central difference), the SGD step
s = λ·|l'_b(0)| and PAL's step (μ, slope l'_b(0)), and the full-batch improvement
l(0) − l(s) of both. The ratio |l'_b(0)| / |l'_B(0)| shows how the slope shrinks as the batch
grows; √(B/b) is what pure sampling noise would give.
"""

from __future__ import annotations

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    line_shards,
    mean_line,
    output_path,
    resolution_of,
    slope_at_zero,
    write_figure,
    write_table,
)
from jobs.analyses.strategies import pal_step


def emulated_batch_line(
    points: np.ndarray,
    direction: np.ndarray,
    train: np.ndarray,
    direction_indices: np.ndarray,
    size: int,
    seed: int,
    spacing: float,
) -> np.ndarray:
    """The mean line of an emulated batch of ``size`` samples."""
    batch = len(direction)
    if size <= batch:
        # drop the steepest descents
        keep = np.argsort(slope_at_zero(points, direction, spacing))[batch - size :]
        return mean_line(direction[keep])
    others = np.setdiff1d(np.arange(len(train)), direction_indices)
    added = np.random.default_rng(seed).choice(others, size=min(size - batch, len(others)), replace=False)
    return mean_line(np.concatenate([direction, train[added]]))


def batch_size(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    rate, mu = options.sgd_learning_rates[0], options.pal_measuring_step
    rows = []
    for shard in line_shards(run, options):
        arrays = shard.arrays
        if "train" not in arrays or "direction" not in arrays:
            continue
        points, train, direction = arrays["points"], arrays["train"][0], arrays["direction"][0]
        full, spacing = mean_line(train), resolution_of(shard.metadata)
        reference = abs(float(slope_at_zero(points, mean_line(direction), spacing)))
        for size in options.batch_sizes:
            line = emulated_batch_line(
                points, direction, train, arrays["direction_indices"][0], size, shard.step, spacing
            )
            slope = float(slope_at_zero(points, line, spacing))
            sgd, pal = rate * abs(slope), pal_step(points, line, slope, mu)
            improvement = [
                float(np.interp(0.0, points, full) - np.interp(step, points, full)) for step in (sgd, pal)
            ]
            rows.append(
                (
                    shard.step,
                    size,
                    slope,
                    abs(slope) / reference if reference > 0 else np.nan,
                    sgd,
                    improvement[0],
                    pal,
                    improvement[1],
                )
            )
    if not rows:
        return AnalysisOutput({"lines": 0, "note": "no line shards with train and direction losses"})
    table = np.array(rows, dtype=np.float64)
    batch = len(direction)
    per_size = {}
    for size in options.batch_sizes:
        chosen = table[table[:, 1] == size]
        per_size[str(size)] = {
            "median_slope_ratio": float(np.nanmedian(chosen[:, 3])),
            "noise_only_ratio": float(np.sqrt(batch / size)),
            "mean_sgd_improvement": float(chosen[:, 5].mean()),
            "mean_pal_improvement": float(chosen[:, 7].mean()),
        }
    output = AnalysisOutput(
        {
            "lines": len(rows) // len(options.batch_sizes),
            "direction_batch": batch,
            "sgd_lr": rate,
            "pal_mu": mu,
            "batch_sizes": per_size,
        }
    )
    columns = [
        "step",
        "batch_size",
        "slope",
        "slope_ratio",
        "sgd_step",
        "sgd_improvement",
        "pal_step",
        "pal_improvement",
    ]
    output.tables.append(write_table(output_path(run, "batch-size", "csv"), columns, rows))

    def draw(axes) -> None:
        sizes = np.array(options.batch_sizes, dtype=np.float64)
        summary = [per_size[str(size)] for size in options.batch_sizes]
        axes[0].plot(
            sizes,
            [entry["median_slope_ratio"] for entry in summary],
            marker="o",
            label="measured (median over lines)",
        )
        axes[0].plot(
            sizes,
            [entry["noise_only_ratio"] for entry in summary],
            linestyle="--",
            label=f"√({batch}/b), sampling noise only",
        )
        axes[0].set_ylabel(f"|l'_b(0)| / |l'_{batch}(0)|")
        axes[1].plot(
            sizes, [entry["mean_sgd_improvement"] for entry in summary], marker="o", label=f"SGD λ={rate:g}"
        )
        axes[1].plot(
            sizes, [entry["mean_pal_improvement"] for entry in summary], marker="s", label=f"PAL μ={mu:g}"
        )
        axes[1].set_ylabel("mean full-batch improvement l(0) − l(s) (nats)")
        for axis in axes:
            axis.set_xscale("log", base=2)
            axis.set_xlabel("emulated batch size b (samples)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)

    output.figures.append(
        write_figure(output_path(run, "batch-size", options.image_format), draw, panels=2, title=run.title)
    )
    return output
