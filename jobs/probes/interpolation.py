"""The interpolation probe ("A Walk with SGD"): the training loss between consecutive iterates.

At step t: the mean loss over the whole training split at θ_α = (1 − α)·θ_t + α·θ_{t+1} for
``alphas`` values of α (``inclusive``: linspace(0, 1, n); ``exclusive``: the n interior points
of linspace(0, 1, n + 2)), the cosine between this step's mini-batch gradient and the previous
step's, and the distance ‖θ_t − θ_0‖ from the initialization.

The previous gradient is remembered only for steps whose successor is selected, and travels
in the checkpoint, so a resumed run measures the same cosines as an uninterrupted one.

Shard arrays: ``alphas`` float64 [n], ``train_loss`` float64 [n].
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from jobs.probe_fields import InterpolationFields
from jobs.probes.functional import evaluator_of, flat_parameters
from jobs.probes.registry import PROBES, Measurement, ProbeBase, ProbeContext, ProbeSetup


def alpha_points(count: int, endpoints: str) -> np.ndarray:
    if endpoints == "inclusive":
        return np.linspace(0.0, 1.0, count)
    return np.linspace(0.0, 1.0, count + 2)[1:-1]


class InterpolationProbe(ProbeBase):
    spec: InterpolationFields

    def __init__(self, spec: InterpolationFields, setup: ProbeSetup) -> None:
        super().__init__(spec, setup)
        self.evaluator = evaluator_of(spec, setup.model, self.chunk)
        self.initial_parameters = flat_parameters(setup.model)
        self.previous_step: Optional[int] = None
        self.previous_gradient: Optional[torch.Tensor] = None

    def wants(self, step: int) -> bool:
        return self.spec.selects(step) or self.spec.selects(step + 1)

    def observe(self, context: ProbeContext) -> None:
        if self.spec.selects(context.step + 1):
            self.previous_step, self.previous_gradient = context.step, context.gradient.clone()
        else:
            self.previous_step, self.previous_gradient = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"previous_step": self.previous_step, "previous_gradient": self.previous_gradient}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous_step = state.get("previous_step")
        gradient = state.get("previous_gradient")
        self.previous_gradient = None if gradient is None else gradient.to(self.setup.device)

    def measure(self, context: ProbeContext) -> Measurement:
        alphas = alpha_points(self.spec.alphas, self.spec.alpha_endpoints)
        update = context.params_after - context.params_before
        data = context.data
        seed = self.seed(context.step)
        losses = self.evaluator.losses(
            context.params_before, update, alphas, data.train_inputs, data.train_targets, seed
        )
        return Measurement(
            arrays={"alphas": alphas, "train_loss": losses.double().mean(dim=0).numpy()},
            metadata={
                "learning_rate": context.learning_rate,
                "update_norm": float(update.norm()),
                "gradient_cosine": self.gradient_cosine(context),
                "distance_from_init": float((context.params_before - self.initial_parameters).norm()),
                "alpha_endpoints": self.spec.alpha_endpoints,
                "bn_mode": self.spec.bn_mode,
                "precision": self.spec.precision,
                "eval_chunk": self.evaluator.chunk,
                "seed": seed,
            },
        )

    def gradient_cosine(self, context: ProbeContext) -> Optional[float]:
        """cos(g_t, g_{t−1}); None at the first step."""
        if self.previous_gradient is None or self.previous_step != context.step - 1:
            return None
        current, previous = context.gradient.double(), self.previous_gradient.double()
        denominator = float(current.norm() * previous.norm())
        return float(current @ previous) / denominator if denominator > 0 else None


@PROBES.register("interpolation")
def interpolation_probe(spec: InterpolationFields, setup: ProbeSetup) -> InterpolationProbe:
    return InterpolationProbe(spec, setup)
