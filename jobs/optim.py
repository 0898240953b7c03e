"""Optimizers registered by name, and learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import bisect
import math
from typing import Callable, Iterable

import torch

from jobs.catalog import Catalog
from jobs.spec import OptimizerSpec, ScheduleSpec

OptimizerBuilder = Callable[[Iterable[torch.nn.Parameter], OptimizerSpec], torch.optim.Optimizer]
OPTIMIZERS: Catalog[OptimizerBuilder] = Catalog("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    )


@OPTIMIZERS.register("adam")
def adam(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    beta1, beta2 = spec.betas
    return torch.optim.Adam(params, lr=spec.lr, betas=(beta1, beta2), eps=spec.eps, weight_decay=spec.weight_decay)


def learning_rate(base_lr: float, schedule: ScheduleSpec, step: int, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``: a pure function, so resuming needs no scheduler state."""
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return base_lr * (step + 1) / schedule.warmup_steps
    if schedule.name == "step":
        boundaries = sorted(math.ceil(fraction * total_steps) for fraction in schedule.milestones)
        return base_lr * schedule.gamma ** bisect.bisect_right(boundaries, step)
    return base_lr
