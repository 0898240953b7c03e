"""How far a line measured at a reduced precision (tf32, bf16) lies from the same line in float32.

The line probe's ``precision_check_every: n`` measures every n-th line a second time in float32,
on the same parameters, points, samples and random draws, and keeps per recorded set and
direction what a conclusion drawn from the line depends on:

- ``max_abs_mean_loss_difference``: the largest difference of the full-batch mean loss over the
  points (the line itself);
- ``argmin_shift_steps``: how many points apart the two lines' minima are (the step a line search
  would take);
- ``curvature_relative_difference``: |a_r − a_f| / |a_f| of the leading coefficients of degree-2
  fits of the two mean-loss lines over the base interval (the curvature the paper's parabolic
  approximation reads off).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LineDeviation:
    """One direction's reduced-precision line against its float32 twin."""

    max_abs_mean_loss_difference: float
    argmin_shift_steps: int
    curvature_relative_difference: float


def line_deviation(
    points: np.ndarray, reduced: np.ndarray, fp32: np.ndarray, interval: float
) -> LineDeviation:
    """``reduced`` and ``fp32``: per-sample losses [samples, K] at ``points`` [K]."""
    reduced_mean = reduced.astype(np.float64).mean(axis=0)
    fp32_mean = fp32.astype(np.float64).mean(axis=0)
    inside = np.abs(points) <= interval
    reduced_curvature = np.polyfit(points[inside], reduced_mean[inside], 2)[0]
    fp32_curvature = np.polyfit(points[inside], fp32_mean[inside], 2)[0]
    difference = abs(reduced_curvature - fp32_curvature)
    return LineDeviation(
        max_abs_mean_loss_difference=float(np.max(np.abs(reduced_mean - fp32_mean))),
        argmin_shift_steps=int(abs(int(np.argmin(reduced_mean)) - int(np.argmin(fp32_mean)))),
        curvature_relative_difference=float(difference / abs(fp32_curvature))
        if fp32_curvature
        else float(difference),
    )


def precision_report(
    points: np.ndarray, reduced: dict[str, np.ndarray], fp32: dict[str, np.ndarray], interval: float
) -> dict[str, list[dict[str, float | int]]]:
    """{set: [one deviation per direction]} for the shard's metadata; sets as [D, samples, K]."""
    return {
        name: [
            asdict(line_deviation(points, reduced[name][direction], fp32[name][direction], interval))
            for direction in range(reduced[name].shape[0])
        ]
        for name in reduced
    }
