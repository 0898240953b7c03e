"""LABPAL, the large-batch parabolic approximation line search (dissertation ch. 6, Alg. 9).

Two phases, one training-loop step (one batch of |B_i| = training.batch_size) per ``step()``:

- **approximate**: the first k(t) batches give the direction (their mean gradient, with optional
  momentum) and, with the following ones, the loss at θ0 averaged over |B_a| samples
  (``approximation_samples``; k(t)·|B_a| with ``approximation_scales_with_k``, as the code). The
  gathered batches (asked again from the batch provider by their step numbers) are then evaluated
  at the other two ``measure_points`` along −d/‖d‖; a parabola through the three means gives
  s_min, and s = α·min(s_min, s_max) (the code caps before α). NSGD reuses s, SGD reuses λ = s/‖d‖;
  after ``untrusted_updates`` updates the estimate is the mean of the last ``average_last``.
  θ then moves to θ0 − s·d/‖d‖.
- **train**: the rest of the ``reuse_steps`` updates, each on the mean gradient of k(t) batches:
  NSGD θ ← θ − s·d/‖d‖, SGD θ ← θ − λ·d. As in the authors' code, the estimate's own move is the
  first of the ``reuse_steps`` updates, so ``reuse_steps − 1`` training updates follow it.

A failed fit (not a > 0 > b) keeps the last estimate, as the code does. Before any estimate was
accepted the code measures again, which stalls training where the fit fails every time (a full
batch in float32, where the curvature term a·s² at the measure points is a few ulp). Here the same gathered
batches are measured again at the measure points ×10, up to ``FARTHER_REMEASUREMENTS`` times (the
extra forward passes count in that step's report); if no fit succeeds, the step is the measured
point of lowest loss below l(0), at most s_max (else the nearest measure point), for one window.

k(t) = ``batch_factors`` switched at ``batch_milestones`` (fractions of t_max = training.steps,
changing after ⌊m·t_max⌋), times the noise factor ε of Eq. 6.8 (128/|B|·|D|/40 000, at least 1).
A step is one consumed batch, line-search batches included. ``parabola_fit: numpy_gradient``
reproduces the code's fit, whose np.gradient edge differences halve the curvature (s_min twice the
parabola's minimum); the default fits the parabola exactly, as Alg. 9 states.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Optional

import numpy as np
import torch

from jobs.optim.base import SearchOptimizer
from jobs.optim.contract import BatchProvider, Objective, TrainingShape, dot, norm
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import LabpalFields

LABPAL_STEP_ADAPTATION = 1.8
LABPAL_MAX_STEP = 1.0
EPSILON = 1e-6
# The policy for a first fit that fails (docs/optimizers.md): module constants, not spec fields,
# because it only acts where the authors' code and Alg. 9 would measure the same line again and
# again; a run that fits its first parabola never reaches it.
FARTHER_REMEASUREMENTS = 3  # at most this many re-measurements of the gathered batches ...
REMEASURE_SCALE = 10.0  # ... each at the previous measure points times this


def parabola_through(points: list[float], losses: list[float], fit: str) -> tuple[float, float]:
    """(a, b) of the parabola a·s² + b·s + c through three (point, loss) pairs."""
    if fit == "numpy_gradient":
        slopes = np.gradient(losses, points)
        return float(np.gradient(slopes, points)[0] / 2), float(slopes[0])
    (x0, x1, x2), (f0, f1, f2) = points, losses
    first, second = (f1 - f0) / (x1 - x0), (f2 - f1) / (x2 - x1)
    a = (second - first) / (x2 - x0)
    return a, first - a * (x0 + x1)


def fitted_minimum(points: list[float], losses: list[float], fit: str) -> Optional[float]:
    """s_min of the parabola through the three measurements; None unless it opens upwards and descends at
    0."""
    a, b = parabola_through(points, losses, fit)
    return -b / (2 * a) if a > 0 > b else None


def lowest_measured_point(points: list[float], losses: list[float]) -> Optional[float]:
    """The measured point (after 0) of lowest finite loss below the loss at 0; None if none is lower."""
    below = [
        (loss, point)
        for point, loss in zip(points[1:], losses[1:])
        if math.isfinite(loss) and loss < losses[0]
    ]
    return min(below)[1] if below else None


@OPTIMIZERS.register("labpal")
class LABPAL(SearchOptimizer):
    spec: LabpalFields

    def __init__(self, params: Any, spec: LabpalFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.adaptation = spec.step_adaptation if spec.step_adaptation is not None else LABPAL_STEP_ADAPTATION
        self.max_step = spec.max_step if spec.max_step is not None else LABPAL_MAX_STEP
        noise = (
            spec.noise_factor
            if spec.noise_factor is not None
            else 128 / shape.batch_size * shape.train_size / 40_000
        )
        self.factors = [max(int(factor * noise), 1) for factor in spec.batch_factors]
        self.boundaries = [
            math.floor(milestone * shape.total_steps) + 1 for milestone in spec.batch_milestones
        ]
        self.steps_seen = 0
        self.phase = "approximate"
        self.batch_factor = self.factors[0]
        self.gathered: list[int] = []  # steps of the batches gathered for the current estimate
        self.loss_sum = 0.0
        self.sampled = 0  # batches averaged into the current training update
        self.direction_norm = 0.0
        self.update_step: Optional[float] = None  # s (NSGD) ...
        self.lr: Optional[float] = None  # ... and λ (SGD)
        self.history: list[list[float]] = []  # raw [s, λ] estimates, averaged after untrusted_updates
        self.updates = 0
        self.updates_since_estimate = 0

    def k(self, step: int) -> int:
        return self.factors[bisect.bisect_right(self.boundaries, step)]

    def approximation_batches(self) -> int:
        batches = math.ceil(self.spec.approximation_samples / self.shape.batch_size)
        if self.spec.approximation_scales_with_k:
            batches *= self.batch_factor
        return max(batches, self.batch_factor)

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        k = self.k(self.steps_seen)
        if k != self.batch_factor and self.sampled == 0:
            self.batch_factor = k
            self._start_approximation()
        if self.phase == "train" and (
            self.update_step is None or self.updates_since_estimate >= self.spec.reuse_steps
        ):
            self._start_approximation()
        loss = self._gather(closure) if self.phase == "approximate" else self._train(closure)
        self.steps_seen += 1
        return torch.tensor(loss)

    def _start_approximation(self) -> None:
        self.phase = "approximate"
        self.gathered, self.loss_sum, self.sampled = [], 0.0, 0

    def _accumulate_gradient(self, count: int) -> None:
        """Running mean of the gradients of the current k(t) batches in state["batch_mean"]. The
        first batch's gradients are kept, not copied: every backward allocates fresh ones."""
        gradients = self.gradients()
        states = [self.state[parameter] for parameter in self.params]
        if count == 1 or any("batch_mean" not in state for state in states):
            for state, gradient in zip(states, gradients):
                state["batch_mean"] = gradient
            return
        means = [state["batch_mean"] for state in states]
        torch._foreach_mul_(means, (count - 1) / count)
        torch._foreach_add_(means, gradients, alpha=1 / count)

    def _direction(self) -> list[torch.Tensor]:
        """d: the batch mean gradient, through the momentum buffer when momentum > 0."""
        states = [self.state[parameter] for parameter in self.params]
        if not self.spec.momentum:
            for state in states:
                state["direction"] = state["batch_mean"]
            return [state["direction"] for state in states]
        directions = [
            state.setdefault("direction", torch.zeros_like(parameter))
            for state, parameter in zip(states, self.params)
        ]
        torch._foreach_mul_(directions, self.spec.momentum)
        torch._foreach_add_(directions, [state["batch_mean"] for state in states])
        return directions

    def _gather(self, closure: Objective) -> float:
        index = len(self.gathered) + 1
        if index <= self.batch_factor:
            loss = self.evaluate(closure, backward=True)
            self._accumulate_gradient(index)
        else:
            loss = self.evaluate(closure, backward=False)
        self.loss_sum += loss
        self.gathered.append(self.steps_seen)
        # keep training with the last estimate
        if index == self.batch_factor and not self._direction_usable():
            self.phase = "train" if self.update_step is not None else "approximate"
            self.gathered, self.loss_sum, self.updates_since_estimate = [], 0.0, 0
        elif index == self.approximation_batches():
            self._estimate()
            return loss
        self.finish(None, 0.0)
        return loss

    def _direction_usable(self) -> bool:
        """The code's guards: a descent direction with 1e-3 ≤ ‖d‖ ≤ 100."""
        gradients = [self.state[p]["batch_mean"] for p in self.params]
        direction = self._direction()
        self.direction_norm = float(norm(direction))
        slope = -float(dot(gradients, direction)) / max(self.direction_norm, EPSILON)
        return math.isfinite(self.direction_norm) and 1e-3 <= self.direction_norm <= 100 and slope < 0

    def _estimate(self) -> None:
        """Fit the parabola through the large-batch losses at the measure points, then move θ from θ0 by
        the step: a new estimate, the last one where the fit fails, or the policy's first step."""
        points = list(self.spec.measure_points)
        means = [self.loss_sum / len(self.gathered)]
        position = self._measure_along_direction(points[1:], means, 0.0)
        minimum = fitted_minimum(points, means, self.spec.parabola_fit)
        if minimum is not None:
            self._record_estimate(minimum)
        elif self.update_step is None:
            position = self._first_step_without_fit(points, means, position)
        assert self.update_step is not None
        target = self.update_step
        directions = [self.state[p]["direction"] for p in self.params]
        torch._foreach_add_(self.params, directions, alpha=-(target - position) / self.direction_norm)
        self.phase = "train"
        self.updates_since_estimate = (
            1  # this move is the first of the reuse_steps updates (the authors' count)
        )
        self.updates += 1
        self.gathered, self.loss_sum = [], 0.0
        self.finish(target / self.direction_norm, target)

    def _measure_along_direction(self, points: list[float], means: list[float], position: float) -> float:
        """Append to ``means`` the mean loss of the gathered batches at each point along −d/‖d‖
        (moving θ there from ``position``); returns the new position."""
        directions = [self.state[p]["direction"] for p in self.params]
        for point in points:
            torch._foreach_add_(self.params, directions, alpha=-(point - position) / self.direction_norm)
            position = point
            losses = [
                self.evaluate(self.batches.training_batch(step), backward=False) for step in self.gathered
            ]
            means.append(float(np.nanmean(losses)))
        return position

    def _first_step_without_fit(self, points: list[float], means: list[float], position: float) -> float:
        """No estimate yet and the fit failed: measure the gathered batches again farther out
        (points ×REMEASURE_SCALE each time, at most FARTHER_REMEASUREMENTS times) until a fit
        succeeds; else take the lowest measured point below l(0), at most s_max, or the nearest
        measure point. Sets the step (a fallback is not averaged into later estimates); returns θ's
        position."""
        measured_points, measured_means = list(points), list(means)
        for retry in range(1, FARTHER_REMEASUREMENTS + 1):
            farther = [point * REMEASURE_SCALE**retry for point in points]
            farther_means = means[:1]
            position = self._measure_along_direction(farther[1:], farther_means, position)
            minimum = fitted_minimum(farther, farther_means, self.spec.parabola_fit)
            if minimum is not None:
                self._record_estimate(minimum)
                return position
            measured_points += farther[1:]
            measured_means += farther_means[1:]
        lowest = lowest_measured_point(measured_points, measured_means)
        step = min(lowest, self.max_step) if lowest is not None else points[1]
        self.update_step, self.lr = step, max(step / max(self.direction_norm, EPSILON), EPSILON)
        return position

    def _record_estimate(self, minimum: float) -> None:
        """s = α·min(s_min, s_max) (and λ = s/‖d‖), averaged with the last ones after untrusted_updates."""
        step = max(min(minimum, self.max_step) * self.adaptation, EPSILON)
        raw = [step, max(step / max(self.direction_norm, EPSILON), EPSILON)]
        if self.updates > self.spec.untrusted_updates:
            self.history = (self.history + [raw])[-self.spec.average_last :]
            self.update_step, self.lr = (float(np.mean(column)) for column in zip(*self.history))
        else:
            self.update_step, self.lr = raw

    def _train(self, closure: Objective) -> float:
        loss = self.evaluate(closure, backward=True)
        self.sampled += 1
        self._accumulate_gradient(self.sampled)
        if self.sampled < self.batch_factor:
            self.finish(None, 0.0)
            return loss
        assert self.update_step is not None and self.lr is not None
        directions = self._direction()
        direction_norm = max(float(norm(directions)), EPSILON)
        if self.spec.labpal_mode == "nsgd":
            learning_rate = max(self.update_step / direction_norm, EPSILON)
        else:
            learning_rate = self.lr
        torch._foreach_add_(self.params, directions, alpha=-learning_rate)
        self.sampled = 0
        self.updates += 1
        self.updates_since_estimate += 1
        self.finish(learning_rate, learning_rate * direction_norm)
        return loss

    def extra_state(self) -> dict[str, Any]:
        return {
            "steps_seen": self.steps_seen,
            "phase": self.phase,
            "batch_factor": self.batch_factor,
            "gathered": list(self.gathered),
            "loss_sum": self.loss_sum,
            "sampled": self.sampled,
            "direction_norm": self.direction_norm,
            "update_step": self.update_step,
            "lr": self.lr,
            "history": [list(row) for row in self.history],
            "updates": self.updates,
            "updates_since_estimate": self.updates_since_estimate,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
