"""What every optimizer of the registry shares: pass counting, reports, extra state in state_dict."""

from __future__ import annotations

from typing import Any, Optional, Protocol, cast

import torch

from jobs.optim.contract import (
    BatchProvider,
    Objective,
    StepReport,
    TrainingShape,
    gradients_of,
    l2_penalty,
    parameters_of,
)


class Counting:
    """Pass counters (cumulative, checkpointed) and the last step's report."""

    scheduled = False  # True: the loop sets each step's learning rate from optimizer.schedule
    forwards_total = 0
    backwards_total = 0
    last_report: Optional[StepReport] = None

    def count(self, forwards: int, backwards: int) -> None:
        self.forwards_total += forwards
        self.backwards_total += backwards

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]  # a mixin: torch's Optimizer follows it in every subclass's MRO
        state["counts"] = [self.forwards_total, self.backwards_total]
        state["search"] = self.extra_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.forwards_total, self.backwards_total = state_dict.pop("counts", [0, 0])
        self.load_extra_state(state_dict.pop("search", {}))
        super().load_state_dict(state_dict)  # type: ignore[misc]  # a mixin: torch's Optimizer follows it in every subclass's MRO


class TorchStep(Counting):
    """``step(objective)`` for torch's own optimizers: one forward and backward, then their update."""

    scheduled = True

    def step(self, closure: Objective) -> torch.Tensor:
        loss = closure()
        super().step()  # type: ignore[misc]  # a mixin: torch's Optimizer follows it in every subclass's MRO
        self.count(1, 1)
        self.last_report = StepReport(1, 1, float(self.param_groups[0]["lr"]), None)  # type: ignore[attr-defined]  # param_groups: torch's Optimizer follows this mixin
        return loss


class SearchFields(Protocol):
    """What the base of the line searches reads of an optimizer's fields."""

    weight_decay: float


class SearchOptimizer(Counting, torch.optim.Optimizer):
    """Base of the line searches: one parameter group, weight decay as an L2 term of the searched loss.
    The parameter group holds no learning rate: each search reports the step it takes."""

    def __init__(self, params: Any, spec: SearchFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, {})
        self.spec = spec
        self.shape = shape
        self.batches = batches
        self.params = parameters_of(self.param_groups)
        self._step_forwards = 0
        self._step_backwards = 0

    def evaluate(self, objective: Objective, backward: bool) -> float:
        """The searched loss at the current parameters; with ``backward`` its gradient in ``.grad``."""
        loss = objective(backward)
        self._step_forwards += 1
        self._step_backwards += int(backward)
        if self.spec.weight_decay:
            with torch.no_grad():
                loss = loss + l2_penalty(self.params, self.spec.weight_decay)
                if backward:
                    for parameter in self.params:
                        if parameter.grad is None:
                            parameter.grad = torch.zeros_like(parameter)
                    torch._foreach_add_(
                        cast(list[torch.Tensor], [p.grad for p in self.params]),  # all set just above
                        self.params,
                        alpha=self.spec.weight_decay,
                    )
        return float(loss)

    def gradients(self) -> list[torch.Tensor]:
        return gradients_of(self.params)

    def finish(self, learning_rate: Optional[float], step_length: Optional[float]) -> StepReport:
        report = StepReport(self._step_forwards, self._step_backwards, learning_rate, step_length)
        self.count(self._step_forwards, self._step_backwards)
        self._step_forwards = self._step_backwards = 0
        self.last_report = report
        return report
