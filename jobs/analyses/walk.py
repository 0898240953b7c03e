"""A Walk with SGD (Xing et al.): interpolations between consecutive iterates.

From the ``interpolation`` probe's shards (the training-set loss at θ_α = (1−α)θ_t + αθ_{t+1}):
the valley floor min_α L(θ_α) per step; the height above the floor
[L(θ_t) + L(θ_{t+1}) − 2·floor]/2; a barrier where an interior point is higher than both
endpoints; barriers per epoch (the paper's Table 1) and the mean height per epoch (Table 2);
the cosine of consecutive mini-batch gradients and ‖θ_t − θ_0‖ over training; and the Hessian's
spectral norm from a ``hessian_norm`` probe when the run has one. Heights and barriers need the
endpoints, so ``alpha_endpoints: inclusive`` (the default).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    output_path,
    write_figure,
    write_markdown_table,
    write_table,
)
from jobs.shards import iter_shards
from jobs.spec import spec_from_yaml

HESSIAN_PROBE = "hessian_norm"


def steps_per_epoch(run: RunInput, options: AnalysisOptions) -> Optional[int]:
    """From the options, else from the run's recorded split and batch size."""
    if options.steps_per_epoch:
        return options.steps_per_epoch
    if not run.paths.data_indices_file.is_file() or not run.paths.spec_file.is_file():
        return None
    with np.load(run.paths.data_indices_file, allow_pickle=False) as indices:
        samples = len(indices["train"])
    training = spec_from_yaml(run.paths.spec_file.read_text()).training
    full, remainder = divmod(samples, min(training.batch_size, samples))
    return full + (0 if training.drop_last or remainder == 0 else 1)


def interpolation_row(step: int, alphas: np.ndarray, losses: np.ndarray, metadata: dict) -> tuple:
    """(step, floor, height, barrier, gradient cosine, distance from init) of one interpolation."""
    floor = float(losses.min())
    if alphas[0] == 0.0 and alphas[-1] == 1.0:
        start, end = float(losses[0]), float(losses[-1])
        height = (start + end - 2 * floor) / 2
        barrier = float(len(losses) > 2 and losses[1:-1].max() > max(start, end))
    else:
        height, barrier = np.nan, np.nan
    cosine = metadata.get("gradient_cosine")
    return (
        step,
        floor,
        height,
        barrier,
        np.nan if cosine is None else float(cosine),
        float(metadata.get("distance_from_init", np.nan)),
    )


def walk(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    start, stop = options.steps if options.steps is not None else (None, None)
    rows, curve = [], []
    for shard in iter_shards(run.paths, options.probe, start, stop):
        alphas, losses = shard.arrays["alphas"], shard.arrays["train_loss"]
        rows.append(interpolation_row(shard.step, alphas, losses, shard.metadata))
        curve.append((shard.step + alphas, losses))
    if not rows:
        return AnalysisOutput({"steps": 0, "note": f"no shards of probe {options.probe!r}"})
    table = np.array(rows, dtype=np.float64)
    per_epoch = steps_per_epoch(run, options)
    epochs = (
        (table[:, 0] // per_epoch).astype(np.int64) if per_epoch else np.zeros(len(table), dtype=np.int64)
    )
    epoch_rows = [
        (
            int(epoch),
            int(np.nansum(table[epochs == epoch, 3])),
            float(np.nanmean(table[epochs == epoch, 2])),
            int((epochs == epoch).sum()),
        )
        for epoch in np.unique(epochs)
    ]
    summary = {
        "steps": len(rows),
        "steps_per_epoch": per_epoch,
        "barriers": int(np.nansum(table[:, 3])),
        "barriers_per_epoch": {str(epoch): count for epoch, count, _, _ in epoch_rows},
        "mean_height_per_epoch": {str(epoch): height for epoch, _, height, _ in epoch_rows},
        "final_distance_from_init": float(table[-1, 5]),
        "mean_gradient_cosine": float(np.nanmean(table[:, 4])) if np.isfinite(table[:, 4]).any() else None,
    }
    output = AnalysisOutput(summary)
    output.tables.append(
        write_table(
            output_path(run, "walk-steps", "csv"),
            [
                "step",
                "valley_floor",
                "height_above_floor",
                "barrier",
                "gradient_cosine",
                "distance_from_init",
            ],
            rows,
        )
    )
    output.tables.append(
        write_table(
            output_path(run, "walk-epochs", "csv"),
            ["epoch", "barriers", "mean_height_above_floor", "steps_measured"],
            epoch_rows,
        )
    )
    columns = ["epoch", "barriers crossed", "mean height above the valley floor (nats)", "steps measured"]
    output.tables.append(
        write_markdown_table(
            output_path(run, "walk-epochs", "md"),
            columns,
            [(epoch, barriers, f"{height:.4g}", count) for epoch, barriers, height, count in epoch_rows],
        )
    )
    output.figures.append(_plot_walk(run, options, table, curve, epoch_rows))
    hessian = [
        (shard.step, float(shard.metadata["spectral_norm"]))
        for shard in iter_shards(run.paths, HESSIAN_PROBE, start, stop, metadata_only=True)
    ]
    if hessian:
        output.summary["hessian_spectral_norm"] = {
            "first": hessian[0][1],
            "max": max(value for _, value in hessian),
            "last": hessian[-1][1],
        }
        output.tables.append(
            write_table(output_path(run, "hessian-norm", "csv"), ["step", "spectral_norm"], hessian)
        )
        output.figures.append(_plot_hessian(run, options, hessian))
    return output


def _plot_walk(run: RunInput, options: AnalysisOptions, table: np.ndarray, curve, epoch_rows):
    def draw(axes) -> None:
        for positions, losses in curve:
            axes[0].plot(positions, losses, color="tab:blue", linewidth=0.6)
        axes[0].plot(
            table[:, 0] + 0.5,
            table[:, 1],
            color="black",
            linewidth=0.8,
            linestyle=":",
            label="valley floor min_α L(θ_α)",
        )
        axes[0].set_xlabel("training step t (+ α between θ_t and θ_t+1)")
        axes[0].set_ylabel("training-set loss (nats)")
        axes[0].legend(fontsize=8)
        axes[1].plot(table[:, 0], table[:, 4], linewidth=0.7, label="cos(g_t, g_t−1)")
        axes[1].set_ylabel("cosine of consecutive mini-batch gradients")
        twin = axes[1].twinx()
        twin.plot(table[:, 0], table[:, 5], color="tab:red", linewidth=1.0)
        twin.set_ylabel("‖θ_t − θ_0‖", color="tab:red")
        axes[1].set_xlabel("training step")
        epochs = [row[0] for row in epoch_rows]
        axes[2].bar(epochs, [row[1] for row in epoch_rows], color="tab:orange", label="barriers crossed")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("barriers crossed per epoch")
        height_axis = axes[2].twinx()
        height_axis.plot(epochs, [row[2] for row in epoch_rows], color="tab:green", marker="o")
        height_axis.set_ylabel("mean height above the floor (nats)", color="tab:green")
        for axis in axes:
            axis.grid(alpha=0.3)

    return write_figure(output_path(run, "walk", options.image_format), draw, panels=3, title=run.title)


def _plot_hessian(run: RunInput, options: AnalysisOptions, hessian):
    def draw(axes) -> None:
        steps, values = zip(*hessian)
        axes[0].plot(steps, values, marker="o")
        axes[0].set_xlabel("training step")
        axes[0].set_ylabel("Hessian spectral norm (power iteration)")
        axes[0].grid(alpha=0.3)

    return write_figure(output_path(run, "hessian-norm", options.image_format), draw, title=run.title)
