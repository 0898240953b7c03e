"""Optimizers registered by name, all driven through one call: ``step(objective)``.

See :mod:`jobs.optim.contract` for the contract and docs/optimizers.md for each optimizer's
source, defaults and the ambiguities its fields name. Importing this package registers them all.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from jobs.catalog import Catalog
from jobs.optim.base import Counting, TorchStep
from jobs.optim.contract import BatchProvider, Objective, StepReport, TrainingShape
from jobs.optim.schedules import learning_rate
from jobs.spec import OptimizerSpec

OptimizerBuilder = Callable[[Iterable[torch.nn.Parameter], OptimizerSpec, TrainingShape, BatchProvider], torch.optim.Optimizer]
OPTIMIZERS: Catalog[OptimizerBuilder] = Catalog("optimizer")

__all__ = ["OPTIMIZERS", "BatchProvider", "Counting", "Objective", "StepReport", "TrainingShape", "build_optimizer", "learning_rate"]


class SGD(TorchStep, torch.optim.SGD):
    pass


class Adam(TorchStep, torch.optim.Adam):
    pass


class AdamW(TorchStep, torch.optim.AdamW):
    pass


class RMSprop(TorchStep, torch.optim.RMSprop):
    pass


@OPTIMIZERS.register("sgd")
def sgd(params: Any, spec: OptimizerSpec, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay)


@OPTIMIZERS.register("adam")
def adam(params: Any, spec: OptimizerSpec, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return Adam(params, lr=spec.lr, betas=(spec.betas[0], spec.betas[1]), eps=spec.eps, weight_decay=spec.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params: Any, spec: OptimizerSpec, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return AdamW(params, lr=spec.lr, betas=(spec.betas[0], spec.betas[1]), eps=spec.eps, weight_decay=spec.weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: Any, spec: OptimizerSpec, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return RMSprop(params, lr=spec.lr, alpha=spec.rms_alpha, eps=spec.eps, momentum=spec.momentum, weight_decay=spec.weight_decay)


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(spec.name)(params, spec, shape, batches)


from jobs.optim import baselines as _baselines  # noqa: E402,F401  (registers its builders)
from jobs.optim import labpal as _labpal  # noqa: E402,F401
from jobs.optim import pal as _pal  # noqa: E402,F401
from jobs.optim import pls as _pls  # noqa: E402,F401
from jobs.optim import sls as _sls  # noqa: E402,F401
