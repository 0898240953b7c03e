"""Optimizers registered by name, all driven through one call: ``step(objective)``.

See :mod:`jobs.optim.contract` for the contract and docs/optimizers.md for each optimizer's
source, defaults and the ambiguities its fields name. Importing this package registers them all.
"""

from __future__ import annotations

from typing import Iterable

import torch

from jobs.optim import baselines, labpal, pal, pls, sls, torch_builtin  # noqa: F401  (each registers its builders)
from jobs.optim.base import Counting
from jobs.optim.contract import BatchProvider, Objective, StepReport, TrainingShape
from jobs.optim.registry import OPTIMIZERS, OptimizerBuilder
from jobs.optim.schedules import learning_rate
from jobs.optimizer_fields import OPTIMIZER_KINDS, OptimizerFields

__all__ = [
    "OPTIMIZERS",
    "BatchProvider",
    "Counting",
    "Objective",
    "OptimizerBuilder",
    "StepReport",
    "TrainingShape",
    "build_optimizer",
    "learning_rate",
]


def build_optimizer(
    params: Iterable[torch.nn.Parameter], spec: OptimizerFields, shape: TrainingShape, batches: BatchProvider
) -> torch.optim.Optimizer:
    """The optimizer ``spec.name`` with its own fields (``spec``: the run spec's ``optimizer``, the
    union of every optimizer's fields, or the optimizer's own dataclass)."""
    builder = OPTIMIZERS.get(spec.name)
    return builder(params, OPTIMIZER_KINDS.typed(spec), shape, batches)
