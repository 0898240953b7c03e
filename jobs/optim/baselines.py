"""The dissertation's other baselines: GOLS-I, ALIG, SGD-HD and COCOB (PAPERS.md §8).

- **GOLS-I** (Kafka & Wilke 2019, as compared in dissertation ch. 6): a gradient-only line search
  with dynamic mini-batch sub-sampling: every directional derivative D(α) = ∇L(θ0 + α·d)·d/‖d‖ is
  measured on the step's own batch, so one search spans several training-loop steps (a step is a
  consumed batch). Direction d = momentum·d_prev − g; the first α is the last accepted one,
  clipped to [``min_step``, min(1/‖d‖, ``max_step`` or 1e7)]. Accept at once if 0 ≤ D ≤ c2·|D(0)|;
  while D < 0 grow α ×η (until D ≥ 0 or α > α_max/η); while D > 0 shrink α /η (until D < 0 or
  α < η·α_min). An accepted point's gradient starts the next search. (The LABPAL repository's
  GOLSI changes α in the grow/shrink phases without moving θ; this one moves θ to θ0 + α·d.)
- **ALIG** (Berrada et al. 2020): γ = min(``lr``, L/(‖g‖² + δ)); with momentum μ the Nesterov form
  of the authors' code, z ← μ·z − γ·g, θ ← θ + μ·z − γ·g.
- **SGD-HD** (Baydin et al. 2018): λ_t = λ_{t−1} + β·g_t·g_{t−1}, θ ← θ − λ_t·g_t.
- **COCOB-Backprop** (Orabona & Tommasi 2017), per coordinate, with the restriction factor α.

Weight decay is an L2 term of the loss for all four (``SearchOptimizer.evaluate``).
"""

from __future__ import annotations

from typing import Any

import torch

from jobs.optim.base import SearchOptimizer
from jobs.optim.contract import BatchProvider, Objective, TrainingShape, clone_all, dot, move_to, norm
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import AligFields, CocobFields, GolsIFields, SgdHdFields

GOLS_MAX_STEP = 1e7


@OPTIMIZERS.register("gols_i")
class GOLSI(SearchOptimizer):
    spec: GolsIFields

    def __init__(self, params: Any, spec: GolsIFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.phase = "direction"  # direction | check | increase | decrease
        self.step_size = spec.lr
        self.max_step_size = GOLS_MAX_STEP
        self.initial_derivative = 0.0
        self.direction_norm = 1.0

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss = self.evaluate(closure, backward=True)
        if self.phase == "direction" or self._accepts(self._directional_derivative()):
            self._new_direction()
        else:
            before = self.step_size
            self.step_size = (
                self.step_size * self.spec.step_scaling
                if self.phase == "increase"
                else self.step_size / self.spec.step_scaling
            )
            self._move()
            self.finish(self.step_size, abs(self.step_size - before) * self.direction_norm)
        return torch.tensor(loss)

    def _directional_derivative(self) -> float:
        directions = [self.state[p]["direction"] for p in self.params]
        return float(dot(self.gradients(), directions)) / self.direction_norm

    def _accepts(self, derivative: float) -> bool:
        """Whether the search ends here; otherwise sets the phase (grow or shrink α)."""
        spec, alpha = self.spec, self.step_size
        if self.phase == "check":
            if 0 <= derivative <= spec.wolfe_c2 * abs(self.initial_derivative):
                return True
            if derivative < 0 and alpha < self.max_step_size:
                self.phase = "increase"
            elif derivative > 0 and alpha > spec.min_step:
                self.phase = "decrease"
            else:
                return True
            return False
        if self.phase == "increase":
            return derivative >= 0 or alpha > self.max_step_size / spec.step_scaling
        return derivative < 0 or alpha < spec.min_step * spec.step_scaling

    def _new_direction(self) -> None:
        """d from the gradient just measured; θ0 is here; move to θ0 + α·d."""
        directions = [self.state[p].setdefault("direction", torch.zeros_like(p)) for p in self.params]
        torch._foreach_mul_(directions, self.spec.momentum)
        torch._foreach_sub_(directions, self.gradients())
        for parameter, origin in zip(self.params, clone_all(self.params)):
            self.state[parameter]["origin"] = origin
        self.direction_norm = float(norm(directions)) or 1e-8
        self.initial_derivative = float(dot(self.gradients(), directions)) / self.direction_norm
        cap = self.spec.max_step if self.spec.max_step is not None else GOLS_MAX_STEP
        self.max_step_size = min(1.0 / self.direction_norm, cap)
        self.step_size = min(max(self.step_size, self.spec.min_step), self.max_step_size)
        self._move()
        self.phase = "check"
        self.finish(self.step_size, self.step_size * self.direction_norm)

    def _move(self) -> None:
        origins = [self.state[p]["origin"] for p in self.params]
        move_to(self.params, origins, [self.state[p]["direction"] for p in self.params], self.step_size)

    def extra_state(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "step_size": self.step_size,
            "max_step_size": self.max_step_size,
            "initial_derivative": self.initial_derivative,
            "direction_norm": self.direction_norm,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


@OPTIMIZERS.register("alig")
class ALIG(SearchOptimizer):
    spec: AligFields

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss = self.evaluate(closure, backward=True)
        gradients = self.gradients()
        squared_norm = float(norm(gradients)) ** 2
        step_size = min(self.spec.lr, loss / (squared_norm + self.spec.alig_delta))
        momentum = self.spec.momentum
        if momentum:
            buffers = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in self.params]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, gradients, alpha=-step_size)
            torch._foreach_add_(self.params, buffers, alpha=momentum)
        torch._foreach_add_(self.params, gradients, alpha=-step_size)
        self.finish(step_size, step_size * squared_norm**0.5 if not momentum else None)
        return torch.tensor(loss)


@OPTIMIZERS.register("sgd_hd")
class SGDHD(SearchOptimizer):
    spec: SgdHdFields

    def __init__(self, params: Any, spec: SgdHdFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.learning_rate = spec.lr

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss = self.evaluate(closure, backward=True)
        gradients = self.gradients()
        previous = [self.state[p].get("previous_gradient", torch.zeros_like(p)) for p in self.params]
        self.learning_rate += self.spec.hypergradient_lr * float(dot(gradients, previous))
        torch._foreach_add_(self.params, gradients, alpha=-self.learning_rate)
        # kept, not copied: each backward allocates new ones
        for parameter, gradient in zip(self.params, gradients):
            self.state[parameter]["previous_gradient"] = gradient
        self.finish(self.learning_rate, abs(self.learning_rate) * float(norm(gradients)))
        return torch.tensor(loss)

    def extra_state(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.learning_rate = state.get("learning_rate", self.spec.lr)


@OPTIMIZERS.register("cocob")
class COCOB(SearchOptimizer):
    spec: CocobFields

    EPSILON = 1e-8
    ZERO_STATES = ("reward", "bet", "negative_gradient_sum", "absolute_gradient_sum")

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss = self.evaluate(closure, backward=True)
        gradients = self.gradients()
        states = [self.state[parameter] for parameter in self.params]
        if not states[0]:
            self._initialize(states)

        def of(name: str) -> list[torch.Tensor]:
            return [state[name] for state in states]

        absolute = torch._foreach_abs(gradients)
        scale, absolute_sum, negative_sum, reward, previous_bet = (
            of("scale"),
            of("absolute_gradient_sum"),
            of("negative_gradient_sum"),
            of("reward"),
            of("bet"),
        )
        torch._foreach_maximum_(scale, absolute)
        torch._foreach_add_(absolute_sum, absolute)
        torch._foreach_sub_(negative_sum, gradients)
        torch._foreach_sub_(reward, torch._foreach_mul(previous_bet, gradients))
        torch._foreach_clamp_min_(reward, 0.0)
        denominator = torch._foreach_maximum(
            torch._foreach_add(absolute_sum, scale), torch._foreach_mul(scale, self.spec.cocob_alpha)
        )
        torch._foreach_mul_(denominator, scale)
        bet = torch._foreach_mul(
            torch._foreach_div(negative_sum, denominator), torch._foreach_add(scale, reward)
        )
        change = norm(torch._foreach_sub(bet, previous_bet))
        for state, new_bet in zip(states, bet):
            state["bet"] = new_bet
        torch._foreach_copy_(self.params, torch._foreach_add(of("initial"), bet))
        self.finish(None, float(change))
        return torch.tensor(loss)

    def _initialize(self, states: list[dict[str, Any]]) -> None:
        for parameter, state, initial in zip(self.params, states, clone_all(self.params)):
            state["initial"] = initial
            for name in self.ZERO_STATES:
                state[name] = torch.zeros_like(parameter)
            state["scale"] = torch.full_like(parameter, self.EPSILON)
