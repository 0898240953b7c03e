"""LABPAL against the authors' schedule, and its policy for fits that fail.

The schedule test re-states, independently and in float64, when the authors' code
(cogsys-tuebingen/LABPAL, source/optimizers/lab_pal.py) measures a new estimate and how many updates
reuse it; the policy tests pin what happens where the code would measure the same line for ever.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from jobs.optim import TrainingShape, build_optimizer
from jobs.optim.contract import Objective
from jobs.optim.labpal import FARTHER_REMEASUREMENTS, fitted_minimum
from jobs.spec import OptimizerSpec
from tests.test_optimizers import Quadratic

# k(t) = 1 for 500 steps
SHAPE = TrainingShape(total_steps=1000, steps_per_epoch=10, batch_size=128, train_size=40_000)


class Batches:
    """A batch provider whose batch of step t is ``objective_of(t)``."""

    def __init__(self, objective_of: Callable[[int], Callable[..., torch.Tensor]]) -> None:
        self.objective_of = objective_of

    def training_batch(self, step: int) -> Callable[..., torch.Tensor]:
        return self.objective_of(step)

    def search_batch(self, size: int, draw: int) -> Callable[..., torch.Tensor]:
        raise AssertionError("LABPAL asks for training batches only")


# The authors' schedule, re-stated. --------------------------------------------------------------


@dataclass
class Schedule:
    """What the re-statement of the schedule did: the steps whose batch ended a measurement, and θ after
    every step."""

    estimate_steps: list[int]
    thetas: list[torch.Tensor]


def authors_schedule(
    theta: torch.Tensor,
    hessian: torch.Tensor,
    minima: list[torch.Tensor],
    steps: int,
    reuse: int,
    gathered: int,
    adaptation: float,
    max_step: float,
    mode: str,
) -> Schedule:
    """The reuse schedule of the authors' LABPAL with k(t) = 1 and no momentum, on quadratics
    L_t(θ) = ½(θ − m_t)ᵀH(θ − m_t) + 1, one per step.

    A measurement takes ``gathered`` consecutive batches: the first one's gradient g fixes the line
    θ0 − s·g/‖g‖, and the line is fitted on the mean of all gathered batches. For quadratics the
    fitted parabola is exact, so its minimum is s_min = ḡ·u / uᵀHu with u = g/‖g‖ and ḡ the mean
    batches' gradient at θ0. The step s = α·min(s_min, s_max) (λ = s/‖g‖ for SGD) moves θ on the batch
    that ends the measurement, and that move is the first of the ``reuse`` updates that use s; the
    other reuse − 1 updates take one batch each, after which the next batch starts a new measurement.
    A fit without a descending minimum (s_min ≤ 0) keeps the previous s and λ.
    """
    theta = theta.clone()
    thetas: list[torch.Tensor] = []
    estimate_steps: list[int] = []
    measured: list[int] = []  # steps of the batches of the measurement under way
    updates_left = 0  # updates of the current window still to make
    step_size: Optional[float] = None
    learning_rate: Optional[float] = None
    for t in range(steps):
        if updates_left == 0:
            measured.append(t)
            if len(measured) == gathered:
                first_gradient = hessian @ (theta - minima[measured[0]])
                unit = first_gradient / first_gradient.norm()
                mean_gradient = hessian @ (theta - torch.stack([minima[s] for s in measured]).mean(0))
                minimum = float(mean_gradient @ unit / (unit @ hessian @ unit))
                if minimum > 0:
                    step_size = adaptation * min(minimum, max_step)
                    learning_rate = step_size / float(first_gradient.norm())
                assert step_size is not None, "the first fit of this problem succeeds"
                theta = theta - step_size * unit
                estimate_steps.append(t)
                measured, updates_left = [], reuse - 1
        else:
            gradient = hessian @ (theta - minima[t])
            assert step_size is not None and learning_rate is not None
            theta = theta - (
                step_size * gradient / gradient.norm() if mode == "nsgd" else learning_rate * gradient
            )
            updates_left -= 1
        thetas.append(theta)
    return Schedule(estimate_steps, thetas)


@pytest.mark.parametrize("mode", ["nsgd", "sgd"])
def test_labpal_reuses_an_estimate_for_as_many_updates_as_the_authors_code(mode: str) -> None:
    reuse, gathered, steps, dim = 5, 2, 22, 6
    generator = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
    hessian = basis @ torch.diag(torch.linspace(0.5, 4.0, dim, dtype=torch.float64)) @ basis.T
    minima = [0.3 * torch.randn(dim, generator=generator, dtype=torch.float64) for _ in range(steps)]
    start = torch.randn(dim, generator=generator, dtype=torch.float64)

    parameter = torch.nn.Parameter(start.clone())
    spec = OptimizerSpec(
        name="labpal",
        labpal_mode=mode,
        reuse_steps=reuse,
        approximation_samples=gathered * SHAPE.batch_size,
        noise_factor=1.0,
        max_step=10.0,
        measure_points=[0.0, 0.1, 1.0],
    )
    # s_max 10: the fitted minimum itself sets the steps. A quadratic is a parabola along any line, so
    # the measure points only set the fit's rounding (≈ ulp/(s_1·s_2)): far apart, it stays ~1e-14
    batches = Batches(lambda step: Quadratic(parameter, hessian, minima[step]))
    optimizer = build_optimizer([parameter], spec, SHAPE, batches)
    estimate_steps, thetas = [], []
    for step in range(steps):
        optimizer.step(batches.training_batch(step))
        if optimizer.last_report.forwards > 1:  # the gathered batches measured along the line
            estimate_steps.append(step)
        thetas.append(parameter.detach().clone())

    expected = authors_schedule(start, hessian, minima, steps, reuse, gathered, 1.8, 10.0, mode)
    # 2 batches measured, then the estimate's move and 4 updates
    assert expected.estimate_steps == [
        1,
        7,
        13,
        19,
    ]
    assert estimate_steps == expected.estimate_steps
    for step, (theta, expected_theta) in enumerate(zip(thetas, expected.thetas)):
        assert torch.allclose(theta, expected_theta, rtol=0, atol=1e-10), step


# The policy for a fit that fails before any estimate. ----------------------------------------------


class OnALine:
    """l(θ) = Σ c_i·θ^i of a one-element parameter: a line search's view of a loss whose shape along
    −g/‖g‖ (here +θ, since l'(0) = c_1 < 0) is chosen."""

    def __init__(self, parameter: torch.nn.Parameter, coefficients: list[float]) -> None:
        self.parameter, self.coefficients = parameter, coefficients

    def __call__(self, backward: bool = True) -> torch.Tensor:
        with torch.set_grad_enabled(backward):
            theta = self.parameter[0]
            loss = sum(coefficient * theta**power for power, coefficient in enumerate(self.coefficients))
            if backward:
                self.parameter.grad = None
                loss.backward()
        return loss.detach()


def parabola_minimum(points: list[float], losses: list[float]) -> float:
    """The vertex of the parabola through three points (Lagrange form: l(s) = a·s² + b·s + c)."""
    (x0, x1, x2), (f0, f1, f2) = points, losses
    a = f0 / ((x0 - x1) * (x0 - x2)) + f1 / ((x1 - x0) * (x1 - x2)) + f2 / ((x2 - x0) * (x2 - x1))
    b = -(
        f0 * (x1 + x2) / ((x0 - x1) * (x0 - x2))
        + f1 * (x0 + x2) / ((x1 - x0) * (x1 - x2))
        + f2 * (x0 + x1) / ((x2 - x0) * (x2 - x1))
    )
    return -b / (2 * a)


def line_problem(
    coefficients: list[float], reuse: int = 1000
) -> tuple[torch.optim.Optimizer, OnALine, torch.nn.Parameter]:
    """LABPAL&NSGD measuring on one batch (|B_a| = |B|), θ = 0 on the line l."""
    parameter = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    objective = OnALine(parameter, coefficients)
    spec = OptimizerSpec(
        name="labpal", approximation_samples=SHAPE.batch_size, noise_factor=1.0, reuse_steps=reuse
    )
    return build_optimizer([parameter], spec, SHAPE, Batches(lambda step: objective)), objective, parameter


def test_a_failed_first_fit_is_measured_again_farther_out_and_the_passes_are_counted() -> None:
    """l(s) = −s − s² + 10s⁴ is concave near 0: the parabolas through l at (0, 1e-4, 1e-2) and at
    ×10 open downwards; at ×100, (0, 1e-2, 1), the quartic makes it open upwards. Each measurement
    evaluates the one gathered batch at its two points, so the step costs 1 + 3·2 forward passes."""
    line = [0.0, -1.0, -1.0, 0.0, 10.0]
    optimizer, objective, parameter = line_problem(line)
    points = [0.0, 1e-2, 1.0]
    expected_step = 1.8 * parabola_minimum(points, [float(np.polyval(line[::-1], point)) for point in points])
    optimizer.step(objective)
    report = optimizer.last_report
    assert (report.forwards, report.backwards) == (1 + 3 * 2, 1)
    assert (optimizer.forwards_total, optimizer.backwards_total) == (7, 1)
    assert optimizer.update_step == pytest.approx(expected_step, rel=1e-9)
    assert float(parameter.detach()) == pytest.approx(expected_step, rel=1e-9)  # moved by s along −g/‖g‖ = +1
    assert report.step_length == pytest.approx(expected_step, rel=1e-9)
    optimizer.step(objective)  # the next step trains with it
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (1, 1)
    assert optimizer.last_report.step_length == pytest.approx(expected_step, rel=1e-9)


def test_without_any_fit_the_first_step_is_the_lowest_measured_point_capped_at_the_max_step() -> None:
    """l(s) = −s − s² is concave everywhere: no parabola opens upwards at any of the 1 + 3 scales; the
    lowest loss was measured at the farthest point, 10, so the step is s_max = 1 (not ×α)."""
    optimizer, objective, parameter = line_problem([0.0, -1.0, -1.0])
    optimizer.step(objective)
    report = optimizer.last_report
    assert (report.forwards, report.backwards) == (1 + (1 + FARTHER_REMEASUREMENTS) * 2, 1)
    assert optimizer.update_step == 1.0 and report.step_length == pytest.approx(1.0, abs=1e-12)
    assert float(parameter.detach()) == pytest.approx(1.0, abs=1e-12)
    optimizer.step(objective)  # trains: l falls from −2 at θ = 1 to −6 at θ = 2
    assert optimizer.last_report.learning_rate is not None
    assert float(objective(backward=False)) == pytest.approx(-6.0, abs=1e-9)


def test_a_failed_fit_after_an_accepted_one_keeps_it_without_measuring_again() -> None:
    """The authors' rule once an estimate exists: a parabola that does not open upwards leaves the
    last step in place (one measurement, no farther ones)."""
    parameter = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    fits, does_not = OnALine(parameter, [0.0, -1.0, 2.0]), OnALine(parameter, [0.0, -1.0, -1.0])
    batches = Batches(lambda step: fits if step == 0 else does_not)
    spec = OptimizerSpec(
        name="labpal", approximation_samples=SHAPE.batch_size, noise_factor=1.0, reuse_steps=2
    )
    optimizer = build_optimizer([parameter], spec, SHAPE, batches)
    optimizer.step(batches.training_batch(0))  # s_min = 1/4 on l = −s + 2s²
    assert optimizer.update_step == pytest.approx(1.8 * 0.25, rel=1e-9)
    optimizer.step(batches.training_batch(1))  # the second of the 2 updates
    optimizer.step(batches.training_batch(2))  # measures l = −s − s²: no fit
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (3, 1)
    assert optimizer.update_step == pytest.approx(1.8 * 0.25, rel=1e-9)
    assert optimizer.last_report.step_length == pytest.approx(1.8 * 0.25, rel=1e-9)


# The float32 stall. ---------------------------------------------------------------------------------


def digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """All 1 797 digits (pixels / 16) and a float32 ReLU MLP 64-32-32-32-10 with torch's default init, seed
    19."""
    inputs, targets = load_digits(return_X_y=True)
    widths = [64, 32, 32, 32]
    with torch.random.fork_rng():
        torch.manual_seed(19)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    return model, torch.tensor(inputs / 16.0, dtype=torch.float32), torch.tensor(targets)


def losses_along_the_gradient(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, points: list[float], dtype: torch.dtype
) -> list[float]:
    """The full-batch loss at θ0 − s·g/‖g‖ for each s, computed in ``dtype`` on a copy of the model."""
    model = copy.deepcopy(model).to(dtype)
    parameters = list(model.parameters())
    gradients = torch.autograd.grad(nn.functional.cross_entropy(model(inputs.to(dtype)), targets), parameters)
    length = torch.sqrt(sum((gradient**2).sum() for gradient in gradients))
    origin = [parameter.detach().clone() for parameter in parameters]
    losses = []
    with torch.no_grad():
        for point in points:
            for parameter, start, gradient in zip(parameters, origin, gradients):
                parameter.copy_(start - point * gradient / length)
            losses.append(float(nn.functional.cross_entropy(model(inputs.to(dtype)), targets)))
    return losses


def test_full_batch_float32_labpal_does_not_stall_where_the_first_fit_fails() -> None:
    """At θ0 of this MLP the full-batch loss falls by ~40 ulp from s = 0 to 1e-4 and ~3 100 ulp to
    1e-2 along −g/‖g‖; its curvature term a·s² at s = 1e-2 is a few ulp, so in float32 both fits
    (``exact`` and ``numpy_gradient``) give a ≤ 0 (asserted below; in float64 the same line fits a ≈ +0.1).
    Every measurement of that line gave the same failed fit: the code (and this one before the policy)
    measured again at every step, and the loss stayed at 2.3122 for as long as it ran. Now the second
    measurement, 10× farther out, fits, and training goes on."""
    model, inputs, targets = digits_mlp()
    points = [0.0, 1e-4, 1e-2]
    float32_losses = losses_along_the_gradient(model, inputs, targets, points, torch.float32)
    assert (
        fitted_minimum(points, float32_losses, "exact") is None
        and fitted_minimum(points, float32_losses, "numpy_gradient") is None
    )
    assert (
        fitted_minimum(
            points, losses_along_the_gradient(model, inputs, targets, points, torch.float64), "exact"
        )
        is not None
    )

    objective = Objective(model, inputs, targets, seed=0)
    size = len(targets)
    shape = TrainingShape(total_steps=100, steps_per_epoch=1, batch_size=size, train_size=size)
    spec = OptimizerSpec(name="labpal", approximation_samples=size, reuse_steps=5, noise_factor=1.0)
    optimizer = build_optimizer(list(model.parameters()), spec, shape, Batches(lambda step: objective))
    first_loss = float(objective(backward=False))
    optimizer.step(objective)
    assert optimizer.last_report.learning_rate is not None  # moved on the first step
    # one farther measurement
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (
        1 + 2 * 2,
        1,
    )
    for _ in range(19):
        optimizer.step(objective)
    assert float(objective(backward=False)) < first_loss - 0.3
