"""The one contract between the training loop and every optimizer.

The loop hands ``optimizer.step(objective)`` an :class:`Objective`: the loss of the step's batch as
a function of the model's current parameters. Every call evaluates the same samples with the same
random state (dropout draws seeded by (run seed, step)), with or without a backward pass, so a
line search can probe the batch loss at as many points as it needs. Optimizers that need other
batches (LABPAL's large-batch estimate, the accuracy searches' ``small``/``big`` search batches)
ask the :class:`BatchProvider` they were built with. Each optimizer counts its passes and reports
the step it took in a :class:`StepReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepReport:
    """What the last ``step()`` did."""

    forwards: int  # forward passes of this step (a forward with backward counts once in each)
    backwards: int
    learning_rate: Optional[float]  # λ of the update: its length over the direction's norm; None: no update
    # ‖θ_{t+1} − θ_t‖ (0 when it only measured); None: not known (torch's optimizers)
    step_length: Optional[float]


class Objective:
    """The loss of one fixed batch at the model's current parameters: the closure of ``step``.

    ``objective()`` runs forward and backward (gradients replace the previous ones);
    ``objective(backward=False)`` runs forward only, without building a graph. Both return the
    detached mean cross-entropy and keep the logits of the call in ``logits``.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        seed: int,
        autocast: Optional[str] = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.seed = seed
        self.autocast = autocast
        self.logits: Optional[torch.Tensor] = None
        self.first: Optional[tuple[float, torch.Tensor]] = None  # loss and logits of the first call (θ_t)

    def __call__(self, backward: bool = True) -> torch.Tensor:
        device = self.inputs.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            with torch.set_grad_enabled(backward), self._precision(device):
                if backward:
                    for parameter in self.model.parameters():
                        parameter.grad = None
                logits = self.model(self.inputs)
                loss = F.cross_entropy(logits.float(), self.targets)
            if backward:
                loss.backward()
        self.logits = logits.detach()
        if self.first is None:
            self.first = (float(loss.detach()), self.logits)
        return loss.detach()

    def _precision(self, device: torch.device) -> Any:
        dtype = getattr(torch, self.autocast or "float32")
        return torch.autocast(device.type, dtype=dtype, enabled=self.autocast is not None)


class BatchProvider(Protocol):
    """Batches other than the current one, as objectives (same model, same precision)."""

    def training_batch(self, step: int) -> Objective:
        """The training batch of ``step`` exactly as the loop builds it (augmentation, dropout)."""
        ...

    def search_batch(self, size: int, draw: int) -> Objective:
        """``size`` training samples, the ``draw``-th search batch of the run (seeded by run seed and
        draw)."""
        ...


@dataclass(frozen=True)
class TrainingShape:
    """What some optimizers need to know about the run (SLS's epoch length, LABPAL's t_max)."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int
    train_size: int


# Flat-list arithmetic on parameters and gradients (torch._foreach_* kernels where they exist).


def parameters_of(param_groups: Iterable[dict[str, Any]]) -> list[torch.Tensor]:
    return [p for group in param_groups for p in group["params"]]


def gradients_of(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def clone_all(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    copies = [torch.empty_like(t) for t in tensors]
    torch._foreach_copy_(copies, [t.detach() for t in tensors])
    return copies


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def dot(first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
    """Σ a·b over the lists, as one dot product of the concatenations (3 kernels, not 2 per tensor)."""
    return torch.dot(flat(first), flat(second))


def norm(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


@torch.no_grad()
def move_to(
    params: list[torch.Tensor], origin: list[torch.Tensor], direction: list[torch.Tensor], scale: float
) -> None:
    """θ ← origin + scale·direction."""
    torch._foreach_copy_(params, origin)
    if scale != 0.0:
        torch._foreach_add_(params, direction, alpha=scale)


def l2_penalty(params: list[torch.Tensor], weight_decay: float) -> torch.Tensor:
    """wd/2·‖θ‖², the weight decay the line searches add to the loss they search."""
    return 0.5 * weight_decay * norm(params) ** 2
