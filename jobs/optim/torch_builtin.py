"""PyTorch's own optimizers (SGD, Adam, AdamW, RMSprop) behind the ``step(objective)`` contract."""

from __future__ import annotations

from typing import Any

import torch

from jobs.optim.base import TorchStep
from jobs.optim.contract import BatchProvider, TrainingShape
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import AdamFields, AdamwFields, RmspropFields, SgdFields


class SGD(TorchStep, torch.optim.SGD):  # type: ignore[misc]  # step(objective): the run's Objective, not torch's closure
    pass


class Adam(TorchStep, torch.optim.Adam):  # type: ignore[misc]  # step(objective): the run's Objective, not torch's closure
    pass


class AdamW(TorchStep, torch.optim.AdamW):  # type: ignore[misc]  # step(objective): the run's Objective, not torch's closure
    pass


class RMSprop(TorchStep, torch.optim.RMSprop):  # type: ignore[misc]  # step(objective): the run's Objective, not torch's closure
    pass


@OPTIMIZERS.register("sgd")
def sgd(params: Any, spec: SgdFields, shape: TrainingShape, batches: BatchProvider) -> torch.optim.Optimizer:
    return SGD(
        params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    )


@OPTIMIZERS.register("adam")
def adam(
    params: Any, spec: AdamFields, shape: TrainingShape, batches: BatchProvider
) -> torch.optim.Optimizer:
    return Adam(
        params, lr=spec.lr, betas=(spec.betas[0], spec.betas[1]), eps=spec.eps, weight_decay=spec.weight_decay
    )


@OPTIMIZERS.register("adamw")
def adamw(
    params: Any, spec: AdamwFields, shape: TrainingShape, batches: BatchProvider
) -> torch.optim.Optimizer:
    return AdamW(
        params, lr=spec.lr, betas=(spec.betas[0], spec.betas[1]), eps=spec.eps, weight_decay=spec.weight_decay
    )


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    params: Any, spec: RmspropFields, shape: TrainingShape, batches: BatchProvider
) -> torch.optim.Optimizer:
    return RMSprop(
        params,
        lr=spec.lr,
        alpha=spec.rms_alpha,
        eps=spec.eps,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
    )
