"""The line probe (Mutschler & Zell): per-sample losses along the update direction.

At step t the direction is the normalized actual update d = (θ_{t+1} − θ_t)/s_upd with
s_upd = ‖θ_{t+1} − θ_t‖, which for SGD is −g/‖g‖ and with momentum −m/‖m‖. With ``directions: k``
the probe instead measures k *noisy* gradient directions −g_j/‖g_j‖ from θ_t, each of a
different seeded mini-batch (the paper's Fig. 8), with s_upd_j = λ·‖g_j‖.

Points: ``arange(−interval, interval, resolution)`` (167 points by default) plus 0 and each
s_upd. At every point the loss of every sample of the recorded sets is kept: the training split
(``train``), the validation split (``val``) and the direction-defining batch (``direction``).
While the minimum of any recorded set's mean lies at the first or last point, the shell
[−(k+1)·interval, −k·interval) ∪ [k·interval, (k+1)·interval) is added, at most
``max_enlargements`` times; ``is_extrapolation`` says the minimum was still at an edge after the
last one. Differences from the authors' sampler: the grid is one ``arange`` over the interval as
the issue specifies (the authors anchor two half-grids at 0), the edge test looks at the whole
line measured so far (theirs looks at the newest shell only), and ``is_extrapolation`` can be true.

Shard arrays (``D`` directions, ``K`` points): ``points`` float64 [K]; ``train``, ``val``,
``direction`` float32 [D, samples, K]; ``direction_indices`` int64 [D, B]; ``update_norm`` and
``grad_norm`` float64 [D]; ``direction_vector`` float32 [D, parameters] with ``store_direction``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from jobs.data.augment import augment, batch_seed
from jobs.probe_fields import LineFields, plain_float32
from jobs.probes.functional import LineEvaluator, evaluator_of, gradient_at, probe_replica
from jobs.probes.precision import precision_report
from jobs.probes.registry import PROBES, Measurement, ProbeBase, ProbeContext, ProbeSetup, line_seed


def grid(start: float, stop: float, resolution: float) -> np.ndarray:
    """``arange(start, stop, resolution)`` computed as start + i·resolution (no accumulated drift)."""
    count = max(0, math.ceil((stop - start) / resolution - 1e-9))
    return start + resolution * np.arange(count, dtype=np.float64)


def base_points(interval: float, resolution: float, extra: list[float]) -> np.ndarray:
    return np.unique(np.concatenate([grid(-interval, interval, resolution), [0.0], extra]))


def shell_points(interval: float, resolution: float, shell: int) -> np.ndarray:
    left = grid(-(shell + 1) * interval, -shell * interval, resolution)
    right = grid(shell * interval, (shell + 1) * interval, resolution)
    return np.concatenate([left, right])


@dataclass
class LineDirection:
    """One direction of a line measurement and what defines it."""

    vector: torch.Tensor  # unit length
    update_norm: float  # s_upd
    grad_norm: float  # ‖g‖ of the direction-defining batch
    batch_indices: torch.Tensor
    augmentation_seed: int  # the draws the direction batch was augmented with


@dataclass
class LossSet:
    """Inputs and targets of one recorded set, per direction (the direction batch differs)."""

    name: str
    inputs: list[torch.Tensor]
    targets: list[torch.Tensor]
    chunk: Optional[int]  # None: the evaluator's chunk


class LineProbe(ProbeBase):
    spec: LineFields

    def __init__(self, spec: LineFields, setup: ProbeSetup) -> None:
        super().__init__(spec, setup)
        self.evaluator = evaluator_of(spec, setup.model, self.chunk)
        self.gradient_replica = probe_replica(setup.model, "batch") if spec.directions else None
        checks = spec.precision_check_every > 0 and not plain_float32(spec)
        # the twin is today's float32 path: one point per forward, contiguous tensors
        self.fp32_evaluator = (
            LineEvaluator(setup.model, spec.bn_mode, self.chunk, spec.forward_batch) if checks else None
        )

    def measure(self, context: ProbeContext) -> Measurement:
        seed = self.seed(context.step)
        directions = (
            self.noisy_directions(context, seed) if self.spec.directions else [self.update_direction(context)]
        )
        sets = self.loss_sets(context, directions)
        points = base_points(self.spec.interval, self.spec.resolution, [d.update_norm for d in directions])
        losses = self.measure_points(context, directions, sets, points, seed)
        enlargements = 0
        while enlargements < self.spec.max_enlargements and minimum_at_edge(losses):
            enlargements += 1
            shell = shell_points(self.spec.interval, self.spec.resolution, enlargements)
            points, losses = merge(
                points, losses, shell, self.measure_points(context, directions, sets, shell, seed)
            )
        metadata = self.metadata(context, directions, seed, enlargements)
        if self.checks_precision(context.step):
            fp32 = self.measure_points(context, directions, sets, points, seed, self.fp32_evaluator)
            metadata["precision_check"] = precision_report(points, losses, fp32, self.spec.interval)
        return Measurement(
            arrays=self.arrays(points, losses, directions),
            metadata=metadata,
            is_extrapolation=minimum_at_edge(losses),
        )

    def checks_precision(self, step: int) -> bool:
        """Whether this step's line is one of every ``precision_check_every``-th lines (counted in
        the probe's steps, so a resumed run checks the same lines)."""
        if self.fp32_evaluator is None:
            return False
        spec = self.spec
        number = sorted(spec.steps).index(step) if spec.steps else (step - spec.from_step) // spec.every
        return number % spec.precision_check_every == 0

    def update_direction(self, context: ProbeContext) -> LineDirection:
        update = context.params_after - context.params_before
        update_norm = float(update.norm())
        vector = update / update_norm if update_norm > 0 else torch.zeros_like(update)
        step_seed = batch_seed(self.setup.training.seed, context.step)
        return LineDirection(
            vector, update_norm, float(context.gradient.norm()), context.batch_indices.cpu(), step_seed
        )

    def noisy_directions(self, context: ProbeContext, seed: int) -> list[LineDirection]:
        data, batch_size = context.data, self.setup.training.batch_size
        generator = torch.Generator().manual_seed(seed)
        order = torch.cat(
            [
                torch.randperm(len(data.train_targets), generator=generator)
                for _ in range(self.spec.directions)
            ]
        )
        directions = []
        for index in range(self.spec.directions):
            batch = order[index * batch_size : (index + 1) * batch_size]
            on_device = batch.to(data.train_inputs.device)
            augmentation_seed = line_seed(seed, index, "noisy-batch")
            assert self.gradient_replica is not None
            gradient = gradient_at(
                self.gradient_replica,
                self.evaluator.layout,
                context.params_before,
                data.train_batch(on_device, augmentation_seed),
                data.train_targets[on_device],
                seed + index,
            )
            grad_norm = float(gradient.norm())
            vector = -gradient / grad_norm if grad_norm > 0 else torch.zeros_like(gradient)
            directions.append(
                LineDirection(
                    vector, (context.learning_rate or 0.0) * grad_norm, grad_norm, batch, augmentation_seed
                )
            )
        return directions

    def loss_sets(self, context: ProbeContext, directions: list[LineDirection]) -> list[LossSet]:
        """Training split augmented once per line (all points see the same draws), validation split
        augmented only with ``data.val_augment``, direction batches exactly as their step saw them."""
        data, sets, count = context.data, [], len(directions)
        everything = torch.arange(len(data.train_targets), device=data.train_inputs.device)
        for name in self.spec.record:
            if name == "train":
                train_inputs = data.train_batch(everything, line_seed(self.seed(context.step), 0, "augment"))
                sets.append(LossSet(name, [train_inputs] * count, [data.train_targets] * count, None))
            elif name == "val":
                val_inputs = data.val_inputs
                if data.val_augment and data.augmentation is not None:
                    val_inputs = augment(
                        val_inputs, data.augmentation, line_seed(self.seed(context.step), 1, "augment")
                    )
                sets.append(LossSet(name, [val_inputs] * count, [data.val_targets] * count, None))
            else:
                batches = [d.batch_indices.to(data.train_inputs.device) for d in directions]
                # the direction batch is one forward, so BatchNorm sees the batch the step saw
                chunk = max(len(batch) for batch in batches)
                inputs = [
                    data.train_batch(batch, d.augmentation_seed) for batch, d in zip(batches, directions)
                ]
                sets.append(LossSet(name, inputs, [data.train_targets[b] for b in batches], chunk))
        return sets

    def measure_points(
        self,
        context: ProbeContext,
        directions: list[LineDirection],
        sets: list[LossSet],
        points: np.ndarray,
        seed: int,
        evaluator: Optional[LineEvaluator] = None,
    ) -> dict[str, np.ndarray]:
        """Losses of each set at ``points``: {set: [D, samples, K]} (by ``evaluator``: default
        the probe's own, at its precision)."""
        evaluator = evaluator or self.evaluator
        measured = {}
        for set_index, loss_set in enumerate(sets):
            per_direction = []
            for direction_index, (direction, inputs, targets) in enumerate(
                zip(directions, loss_set.inputs, loss_set.targets)
            ):
                forward_seed = line_seed(seed, set_index, loss_set.name, salt=direction_index)
                losses = evaluator.losses(
                    context.params_before,
                    direction.vector,
                    points,
                    inputs,
                    targets,
                    forward_seed,
                    loss_set.chunk,
                )
                per_direction.append(losses.numpy())
            measured[loss_set.name] = np.stack(per_direction)
        return measured

    def arrays(
        self, points: np.ndarray, losses: dict[str, np.ndarray], directions: list[LineDirection]
    ) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"points": points, **losses}
        arrays["direction_indices"] = np.stack([d.batch_indices.numpy().astype(np.int64) for d in directions])
        arrays["update_norm"] = np.array([d.update_norm for d in directions], dtype=np.float64)
        arrays["grad_norm"] = np.array([d.grad_norm for d in directions], dtype=np.float64)
        if self.spec.store_direction:
            arrays["direction_vector"] = torch.stack([d.vector for d in directions]).float().cpu().numpy()
        return arrays

    def metadata(
        self, context: ProbeContext, directions: list[LineDirection], seed: int, enlargements: int
    ) -> dict[str, Any]:
        return {
            "kind": "noisy_directions" if self.spec.directions else "update_direction",
            "learning_rate": context.learning_rate,
            "update_norm": [d.update_norm for d in directions],
            "grad_norm": [d.grad_norm for d in directions],
            "optimizer_step": context.optimizer_step,
            "enlargements": enlargements,
            "interval": self.spec.interval,
            "resolution": self.spec.resolution,
            "bn_mode": self.spec.bn_mode,
            "precision": self.spec.precision,
            "eval_chunk": self.evaluator.chunk,
            "seed": seed,
            "sets": list(self.spec.record),
        }


def minimum_at_edge(losses: dict[str, np.ndarray]) -> bool:
    """Whether the minimum of any set's mean loss, in any direction, is at the first or last point."""
    for per_sample in losses.values():
        means = per_sample.astype(np.float64).mean(axis=1)  # [D, K]
        last = means.shape[1] - 1
        if any(int(np.argmin(line)) in (0, last) for line in means):
            return True
    return False


def merge(
    points: np.ndarray,
    losses: dict[str, np.ndarray],
    new_points: np.ndarray,
    new_losses: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    all_points = np.concatenate([points, new_points])
    order = np.argsort(all_points, kind="stable")
    merged = {name: np.concatenate([losses[name], new_losses[name]], axis=2)[:, :, order] for name in losses}
    return all_points[order], merged


@PROBES.register("line")
def line_probe(spec: LineFields, setup: ProbeSetup) -> LineProbe:
    return LineProbe(spec, setup)
