"""The optimizer catalog, in a module of its own: the optimizer modules register into it without
importing the package that imports them (no cycle)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from jobs.catalog import Catalog
from jobs.optim.contract import BatchProvider, TrainingShape
from jobs.spec import OptimizerSpec

OptimizerBuilder = Callable[
    [Iterable[torch.nn.Parameter], OptimizerSpec, TrainingShape, BatchProvider], torch.optim.Optimizer
]
OPTIMIZERS: Catalog[OptimizerBuilder] = Catalog("optimizer")
