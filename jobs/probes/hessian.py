"""The Hessian spectral-norm probe: power iteration on Hessian-vector products at θ_t.

The loss is the mean cross-entropy over a fixed sample set (``hessian_samples`` training samples
drawn once with the run's seed), BatchNorm on batch statistics (train mode) in chunks of
``eval_chunk``, dropout draws fixed per chunk so every product sees the same function. Iteration
stops after ``power_iterations`` products or when the estimate changes by less than
``power_tolerance`` (relative). ‖Hv‖ of the unit iterate v converges to the spectral norm, the
Rayleigh quotient v·Hv to the eigenvalue of largest magnitude (its sign tells which end).

Shard arrays: ``estimates`` float64 [iterations] (‖Hv‖ per iteration).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from jobs.probe_fields import HessianNormFields
from jobs.probes.functional import ParameterLayout, probe_replica, reseed
from jobs.probes.registry import PROBES, Measurement, ProbeBase, ProbeContext, ProbeSetup, line_seed


class HessianNormProbe(ProbeBase):
    spec: HessianNormFields

    def __init__(self, spec: HessianNormFields, setup: ProbeSetup) -> None:
        super().__init__(spec, setup)
        self.layout = ParameterLayout.of(setup.model)
        self.replica = probe_replica(setup.model, "batch")
        targets = setup.data.train_targets
        generator = torch.Generator().manual_seed(line_seed(setup.training.seed, 0, spec.label))
        chosen = torch.randperm(len(targets), generator=generator)[: spec.hessian_samples].sort().values
        self.sample_indices = chosen
        self.inputs = setup.data.train_inputs[chosen.to(targets.device)]
        self.targets = targets[chosen.to(targets.device)]

    def hessian_vector_product(self, position: torch.Tensor, vector: torch.Tensor, seed: int) -> torch.Tensor:
        flat = position.detach().clone().requires_grad_(True)
        product = torch.zeros_like(position)
        total = len(self.targets)
        for chunk_index, start in enumerate(range(0, total, self.chunk)):
            inputs, targets = (
                self.inputs[start : start + self.chunk],
                self.targets[start : start + self.chunk],
            )
            reseed(position.device, seed + chunk_index)
            logits = functional_call(self.replica, self.layout.unflatten(flat), (inputs,))
            loss = F.cross_entropy(logits, targets) * (len(targets) / total)
            (gradient,) = torch.autograd.grad(loss, flat, create_graph=True)
            (chunk_product,) = torch.autograd.grad(gradient @ vector, flat)
            product += chunk_product
        return product

    def measure(self, context: ProbeContext) -> Measurement:
        seed = self.seed(context.step)
        generator = torch.Generator().manual_seed(seed)
        vector = torch.randn(self.layout.size, generator=generator, dtype=torch.float32).to(
            context.params_before.device
        )
        vector /= vector.norm()
        estimates: list[float] = []
        rayleigh, converged = 0.0, False
        for _ in range(self.spec.power_iterations):
            product = self.hessian_vector_product(context.params_before, vector, seed)
            rayleigh = float(vector @ product)
            norm = float(product.norm())
            estimates.append(norm)
            converged = norm == 0.0 or (
                len(estimates) > 1 and abs(norm - estimates[-2]) <= self.spec.power_tolerance * norm
            )
            if converged:
                break
            vector = product / norm
        return Measurement(
            arrays={"estimates": np.array(estimates, dtype=np.float64)},
            metadata={
                "spectral_norm": estimates[-1],
                "rayleigh_quotient": rayleigh,
                "iterations": len(estimates),
                "converged": converged,
                "samples": len(self.targets),
                "eval_chunk": self.chunk,
                "learning_rate": context.learning_rate,
                "seed": seed,
            },
        )


@PROBES.register("hessian_norm")
def hessian_norm_probe(spec: HessianNormFields, setup: ProbeSetup) -> HessianNormProbe:
    return HessianNormProbe(spec, setup)
