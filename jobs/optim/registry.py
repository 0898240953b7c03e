"""The optimizer catalog, in a module of its own: the optimizer modules register into it without
importing the package that imports them (no cycle)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from jobs.catalog import Catalog
from jobs.optim.contract import BatchProvider, TrainingShape

# (parameters, the optimizer's own fields: its dataclass in jobs/optimizer_fields.py, ...)
OptimizerBuilder = Callable[
    [Iterable[torch.nn.Parameter], Any, TrainingShape, BatchProvider], torch.optim.Optimizer
]
OPTIMIZERS: Catalog[OptimizerBuilder] = Catalog("optimizer")
