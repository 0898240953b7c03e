"""Learning-rate schedules as pure functions of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import bisect
import math

from jobs.spec import ScheduleSpec


def learning_rate(base_lr: float, schedule: ScheduleSpec, step: int, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``."""
    warmup = schedule.warmup_steps
    if warmup and step < warmup:
        if schedule.warmup_start_factor is None:
            return base_lr * (step + 1) / warmup
        start = schedule.warmup_start_factor
        return base_lr * (start + (1.0 - start) * step / warmup)
    if schedule.name == "step":
        boundaries = sorted(math.ceil(fraction * total_steps) for fraction in schedule.milestones)
        return base_lr * schedule.gamma ** bisect.bisect_right(boundaries, step)
    if schedule.name == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr
