"""PAL, the parabolic approximation line search (dissertation ch. 4, Alg. 8; Mutschler & Zell 2020).

One step on one batch: l0 = L(θ) with its gradient g; direction d = g + β·d_prev (the code's
"direction adaptation", conjugate-like; β = 0: d = g); b = the directional derivative along
−d/‖d‖; l_μ = L(θ − μ·d/‖d‖) on the same batch and random state; a = (l_μ − l0 − b·μ)/μ².
a > 0 and b < 0: s = α·(−b/2a); a ≤ 0 and b < 0: s = μ; else s = 0; then s = min(s, s_max), and
θ moves from the measuring point to θ − s·d/‖d‖. Costs 2 forwards and 1 backward.

As the authors' PyTorch code: α multiplies before the cap; moves are relative (no parameter copy);
‖d‖ = 0 is replaced by 1e-10. Where the code returns from a non-finite a or b leaving θ at the
measuring point, this implementation goes back to θ (s = 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from jobs.optim.base import SearchOptimizer
from jobs.optim.contract import BatchProvider, Objective, TrainingShape, dot, norm
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import PalFields

PAL_STEP_ADAPTATION = 1 / 0.6
PAL_MAX_STEP = 3.16


def parabola_step(l0: float, l_mu: float, b: float, mu: float, adaptation: float, max_step: float) -> float:
    """PAL's update step s from the loss at 0 and μ and the slope b at 0."""
    a = (l_mu - l0 - b * mu) / mu**2
    if not (math.isfinite(a) and math.isfinite(b)):
        return 0.0
    if a > 0 and b < 0:
        step = -b / (2 * a) * adaptation
    elif b < 0:
        step = mu
    else:
        step = 0.0
    return min(step, max_step)


@OPTIMIZERS.register("pal")
class PAL(SearchOptimizer):
    spec: PalFields

    def __init__(self, params: Any, spec: PalFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.adaptation = spec.step_adaptation if spec.step_adaptation is not None else PAL_STEP_ADAPTATION
        self.max_step = spec.max_step if spec.max_step is not None else PAL_MAX_STEP

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        mu = self.spec.measuring_step
        l0 = self.evaluate(closure, backward=True)
        direction, b = self._direction_and_slope()
        direction_norm = float(norm(direction)) or 1e-10
        torch._foreach_add_(self.params, direction, alpha=-mu / direction_norm)
        l_mu = self.evaluate(closure, backward=False)
        step = parabola_step(l0, l_mu, b / direction_norm, mu, self.adaptation, self.max_step)
        torch._foreach_add_(self.params, direction, alpha=-(step - mu) / direction_norm)
        self.finish(step / direction_norm, step)
        return torch.tensor(l0)

    def _direction_and_slope(self) -> tuple[list[torch.Tensor], float]:
        """d and b·‖d‖ (the slope along −d/‖d‖ times ‖d‖)."""
        gradients = self.gradients()
        beta = self.spec.direction_adaptation
        if beta == 0:
            return gradients, -(float(norm(gradients)) ** 2)
        buffers = [self.state[p].setdefault("direction", torch.zeros_like(p)) for p in self.params]
        torch._foreach_mul_(buffers, beta)
        torch._foreach_add_(buffers, gradients)
        if self.spec.exact_directional_derivative:
            return buffers, -float(dot(gradients, buffers))
        return buffers, -float(dot(buffers, buffers))
