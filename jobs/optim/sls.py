"""Backtracking Armijo line searches: SLS (Vaswani et al. 2019) and the accuracy-based searches.

**SLS** (the authors' code): per step on one batch, λ ← reset(λ_prev), capped at ``max_step``;
try θ' = θ − λ·g and shrink λ ← β_b·λ until L(θ') ≤ L(θ) − c·λ·‖g‖² (at most ``max_backtracks``
tries, else a step of ``fallback_step``); no search and no step while ‖g‖ < ``min_grad_norm``.
The reset modes are named, since the thesis and the code number them differently: ``keep``,
``reset_to_max`` (back to ``lr``), ``grow_per_epoch`` (×γ^(1/steps per epoch), the code's default).

**l-SLS, a-SLS, sa-SLS** (thesis Alg. 3-5): the same loop, but the Armijo test uses a metric m on
a search batch with a finite-difference slope at ε: m0 = m(θ), m_ε = m(θ − ε·g), m_λ = m(θ − λ·g);
loss: slope = (m0 − m_ε)/ε, accept m_λ ≤ m0 − λ·c·slope; accuracy and smooth accuracy
(mean σ(s·(π_y − max_{k≠y} π_k))): slope = (m_ε − m0)/ε, accept m_λ ≥ m0 + λ·c·slope. The search
batch is the training batch (``same``), a fresh one per try (``small``, 128), or a big one every
``search_every`` steps (``big``: the thesis text's 1 000 every 1 000th step; its code 1 024 every
100th) with plain SGD steps at the last λ between searches. With ``same``, m0 comes from the
gradient pass and m_ε is measured once per step: the values are those of the thesis' loop, which
measured both again at every try (its 4.04 forwards per step become ≈ 3.0 here).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from jobs.optim.base import SearchOptimizer
from jobs.optim.contract import BatchProvider, Objective, TrainingShape, clone_all, move_to, norm
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import AccuracySlsFields, SlsFields

SEARCH_BATCH_SIZES = {"small": 128, "big": 1000}
SEARCH_EVERY = {"same": 1, "small": 1, "big": 1000}


def reset_step_size(previous: float, spec: SlsFields, steps_per_epoch: int) -> float:
    if spec.reset == "reset_to_max":
        step_size = spec.lr
    elif spec.reset == "grow_per_epoch":
        step_size = previous * spec.growth ** (1.0 / steps_per_epoch)
    else:
        step_size = previous
    return min(step_size, spec.max_step) if spec.max_step is not None else step_size


def smooth_accuracy(logits: torch.Tensor, targets: torch.Tensor, slope_factor: float) -> float:
    """Mean σ(s·(π_label − max_{k≠label} π_k)) with π = softmax(logits) (thesis Alg. 5)."""
    probabilities = torch.softmax(logits.float(), dim=1)
    label_probability = probabilities.gather(1, targets[:, None]).squeeze(1)
    others = probabilities.scatter(1, targets[:, None], float("-inf"))
    margin = label_probability - others.max(dim=1).values
    return float(torch.sigmoid(slope_factor * margin).mean())


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == targets).float().mean())


class ArmijoSearch(SearchOptimizer):
    """Shared by SLS and the accuracy-based searches: λ, the reset, the backtracking loop."""

    spec: SlsFields

    def __init__(self, params: Any, spec: SlsFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.step_size = spec.lr
        self.steps_taken = 0

    def gradient_at_origin(self, closure: Objective) -> tuple[float, list[torch.Tensor], float]:
        """The batch loss at θ, its gradient and the gradient's norm."""
        loss = self.evaluate(closure, backward=True)
        gradients = self.gradients()
        return loss, gradients, float(norm(gradients))

    def extra_state(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "steps_taken": self.steps_taken}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step_size = state.get("step_size", self.spec.lr)
        self.steps_taken = state.get("steps_taken", 0)

    def backtrack(
        self, origin: list[torch.Tensor], gradients: list[torch.Tensor], accepts: Callable[[float, int], bool]
    ) -> float:
        """Try λ, β_b·λ, … from the reset λ; ``accepts(λ, attempt)`` sees θ = origin − λ·g and may
        move θ. Leaves θ at the accepted point (or the fallback step) and returns its λ."""
        step_size = reset_step_size(self.step_size, self.spec, self.shape.steps_per_epoch)
        taken = self.spec.fallback_step
        for attempt in range(self.spec.max_backtracks):
            move_to(self.params, origin, gradients, -step_size)
            if accepts(step_size, attempt):
                taken = step_size
                break
            step_size *= self.spec.backtrack
        self.step_size = step_size
        move_to(self.params, origin, gradients, -taken)
        return taken


@OPTIMIZERS.register("sls")
class SLS(ArmijoSearch):
    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss, gradients, gradient_norm = self.gradient_at_origin(closure)
        taken = 0.0
        if gradient_norm >= self.spec.min_grad_norm:
            decrease = self.spec.armijo_c * gradient_norm**2
            taken = self.backtrack(
                clone_all(self.params),
                gradients,
                lambda lr, _: self.evaluate(closure, backward=False) <= loss - lr * decrease,
            )
        self.steps_taken += 1
        self.finish(taken, taken * gradient_norm)
        return torch.tensor(loss)


@OPTIMIZERS.register("accuracy_sls")
class AccuracySLS(ArmijoSearch):
    """l-SLS (``search_metric: loss``), a-SLS (``accuracy``), sa-SLS (``smooth_accuracy``)."""

    spec: AccuracySlsFields

    def __init__(
        self, params: Any, spec: AccuracySlsFields, shape: TrainingShape, batches: BatchProvider
    ) -> None:
        super().__init__(params, spec, shape, batches)
        self.search_size = spec.search_batch_size or SEARCH_BATCH_SIZES.get(
            spec.search_batch, shape.batch_size
        )
        self.search_every = spec.search_every or SEARCH_EVERY[spec.search_batch]
        self.maximizes = spec.search_metric != "loss"

    def metric(self, objective: Objective, loss: Optional[float] = None) -> float:
        """m at the current parameters (``loss`` given: the objective was just evaluated here)."""
        if loss is None:
            loss = self.evaluate(objective, backward=False)
        assert objective.logits is not None
        if self.spec.search_metric == "accuracy":
            return accuracy(objective.logits, objective.targets)
        if self.spec.search_metric == "smooth_accuracy":
            return smooth_accuracy(objective.logits, objective.targets, self.spec.slope_factor)
        return loss

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss, gradients, gradient_norm = self.gradient_at_origin(closure)
        taken = 0.0
        if self.steps_taken % self.search_every != 0:
            taken = self.step_size
            torch._foreach_add_(self.params, gradients, alpha=-taken)
        elif gradient_norm >= self.spec.min_grad_norm:
            origin = clone_all(self.params)
            if self.spec.search_batch == "same":
                m0 = self.metric(closure, loss)
                m_epsilon = self._metric_at(closure, origin, gradients, -self.spec.fd_epsilon)
                taken = self.backtrack(
                    origin, gradients, lambda lr, _: self._armijo(m0, m_epsilon, self.metric(closure), lr)
                )
            else:
                taken = self.backtrack(
                    origin,
                    gradients,
                    lambda lr, attempt: self._fresh_batch_test(origin, gradients, lr, attempt),
                )
        self.steps_taken += 1
        self.finish(taken, taken * gradient_norm)
        return torch.tensor(loss)

    def _metric_at(
        self, search: Objective, origin: list[torch.Tensor], gradients: list[torch.Tensor], scale: float
    ) -> float:
        move_to(self.params, origin, gradients, scale)
        return self.metric(search)

    def _armijo(self, m0: float, m_epsilon: float, m_step: float, step_size: float) -> bool:
        """The Armijo condition of thesis Alg. 4."""
        epsilon, c = self.spec.fd_epsilon, self.spec.armijo_c
        if self.maximizes:
            return m_step >= m0 + step_size * c * (m_epsilon - m0) / epsilon
        return m_step <= m0 - step_size * c * (m0 - m_epsilon) / epsilon

    def _fresh_batch_test(
        self, origin: list[torch.Tensor], gradients: list[torch.Tensor], step_size: float, attempt: int
    ) -> bool:
        """Thesis Alg. 3 on another batch: a new search batch for each try, m0 and m_ε measured on it."""
        search = self.batches.search_batch(
            self.search_size, self.steps_taken * self.spec.max_backtracks + attempt
        )
        m_step = self.metric(search)
        m0 = self._metric_at(search, origin, gradients, 0.0)
        m_epsilon = self._metric_at(search, origin, gradients, -self.spec.fd_epsilon)
        return self._armijo(m0, m_epsilon, m_step, step_size)
