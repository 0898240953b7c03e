"""Update-step strategies on measured lines (Mutschler & Zell, Fig. 6).

For each line: s_opt, the first minimum of the full-batch line walking from s = 0 along the
update direction (refined by the parabola through its neighbours), and the step each strategy
would take from the same point:

- ``sgd λ``: s = λ·‖g‖ (g: the direction batch's gradient);
- ``pal μ``: PAL's parabola on the direction-batch line, l'(0) = −‖g‖ (Eq. 2), no α, no cap;
- ``fbpal μ``: the same on the full-batch line, l'(0) by a central difference at 0;
- ``exact``: the first minimum of the direction-batch line;
- ``update``: the step the run actually took, s_upd = ‖θ_{t+1} − θ_t‖.

Per strategy: s, s_opt − s and the full-batch improvement l(0) − l(s), smoothed over lines with a
moving average of ``kernel`` lines; and s_opt against ‖g‖ with the least-squares constant c of
s_opt ≈ c·‖g‖ and its R². The lines should be along the negative gradient (plain SGD) for the
‖g‖-based strategies to mean what the paper means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jobs.analyses.common import (
    AnalysisOptions,
    AnalysisOutput,
    RunInput,
    first_minimum,
    line_shards,
    mean_line,
    moving_average,
    output_path,
    proportionality,
    resolution_of,
    slope_at_zero,
    write_figure,
    write_table,
)
from jobs.optim.pal import parabola_step


def pal_step(points: np.ndarray, values: np.ndarray, slope: float, measuring_step: float) -> float:
    at_zero, at_mu = float(np.interp(0.0, points, values)), float(np.interp(measuring_step, points, values))
    return parabola_step(at_zero, at_mu, slope, measuring_step, 1.0, math.inf)


def strategy_steps(
    points: np.ndarray,
    full: np.ndarray,
    direction: np.ndarray,
    gradient_norm: float,
    update_norm: float,
    spacing: float,
    options: AnalysisOptions,
) -> dict[str, float]:
    mu = options.pal_measuring_step
    steps = {f"sgd λ={rate:g}": rate * gradient_norm for rate in options.sgd_learning_rates}
    steps[f"pal μ={mu:g}"] = pal_step(points, direction, -gradient_norm, mu)
    steps[f"fbpal μ={mu:g}"] = pal_step(points, full, float(slope_at_zero(points, full, spacing)), mu)
    steps["exact (direction batch)"] = first_minimum(points, direction)
    steps["update"] = update_norm
    return steps


def strategies(run: RunInput, options: AnalysisOptions) -> AnalysisOutput:
    rows: list[list[float]] = []
    names: list[str] = []
    for shard in line_shards(run, options):
        arrays = shard.arrays
        if "train" not in arrays or "direction" not in arrays:
            continue
        points, full, direction = (
            arrays["points"],
            mean_line(arrays["train"][0]),
            mean_line(arrays["direction"][0]),
        )
        gradient_norm, update_norm = float(arrays["grad_norm"][0]), float(arrays["update_norm"][0])
        optimum = first_minimum(points, full)
        steps = strategy_steps(
            points, full, direction, gradient_norm, update_norm, resolution_of(shard.metadata), options
        )
        names = list(steps)
        row = [
            shard.step,
            gradient_norm,
            optimum,
            float(full[np.searchsorted(points, 0.0)] - np.interp(optimum, points, full)),
        ]
        for step in steps.values():
            row += [step, optimum - step, float(np.interp(0.0, points, full) - np.interp(step, points, full))]
        rows.append(row)
    if not rows:
        return AnalysisOutput({"lines": 0, "note": "no line shards with train and direction losses"})
    table = np.array(rows, dtype=np.float64)
    constant, r_squared = proportionality(table[:, 1], table[:, 2])
    summary: dict[str, Any] = {
        "lines": len(rows),
        "s_opt_over_grad_norm": constant,
        "r_squared": r_squared,
        "kernel": options.kernel,
        "strategies": {},
    }
    for index, name in enumerate(names):
        column = 4 + 3 * index
        summary["strategies"][name] = {
            "mean_step": float(table[:, column].mean()),
            "mean_s_opt_minus_step": float(table[:, column + 1].mean()),
            "mean_improvement": float(table[:, column + 2].mean()),
        }
    summary["mean_optimal_improvement"] = float(table[:, 3].mean())
    columns = ["step", "grad_norm", "s_opt", "optimal_improvement"] + [
        f"{name} {what}" for name in names for what in ("step", "s_opt_minus_step", "improvement")
    ]
    output = AnalysisOutput(summary)
    output.tables.append(write_table(output_path(run, "strategies", "csv"), columns, rows))
    output.figures.append(_plot_strategies(run, options, table, names))
    output.figures.append(_plot_proportionality(run, options, table, constant, r_squared))
    return output


def _plot_strategies(run: RunInput, options: AnalysisOptions, table: np.ndarray, names: list[str]):
    def draw(axes) -> None:
        steps = table[:, 0]
        axes[0].plot(
            steps,
            moving_average(table[:, 2], options.kernel),
            color="black",
            linewidth=1.6,
            label="s_opt (full batch)",
        )
        axes[2].plot(
            steps,
            moving_average(table[:, 3], options.kernel),
            color="black",
            linewidth=1.6,
            label="s_opt (full batch)",
        )
        for index, name in enumerate(names):
            column = 4 + 3 * index
            for axis, offset in zip(axes, range(3)):
                axis.plot(
                    steps,
                    moving_average(table[:, column + offset], options.kernel),
                    linewidth=0.9,
                    label=name,
                )
        labels = ("update step s along the line", "s_opt − s", "full-batch improvement l(0) − l(s) (nats)")
        for axis, label in zip(axes, labels):
            axis.set_xlabel("training step")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        axes[1].set_title(f"moving average over {options.kernel} lines", fontsize=9)

    return write_figure(output_path(run, "strategies", options.image_format), draw, panels=3, title=run.title)


def _plot_proportionality(
    run: RunInput, options: AnalysisOptions, table: np.ndarray, constant: float, r_squared: float
):
    def draw(axes) -> None:
        axis = axes[0]
        points = axis.scatter(table[:, 1], table[:, 2], c=table[:, 0], s=6, cmap="viridis")
        grid = np.linspace(0.0, table[:, 1].max(), 50)
        axis.plot(
            grid, constant * grid, color="tab:red", label=f"s_opt = {constant:.4g}·‖g‖ (R² = {r_squared:.3f})"
        )
        axis.set_xlabel("‖g‖ of the direction batch")
        axis.set_ylabel("s_opt, first minimum of the full-batch line")
        axis.figure.colorbar(points, ax=axis, label="training step")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)

    return write_figure(
        output_path(run, "strategies-proportionality", options.image_format),
        draw,
        width=6.0,
        height=4.5,
        title=run.title,
    )
