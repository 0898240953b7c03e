"""PLS (jobs/optim/pls.py) against closed forms: the integrated Wiener process posterior, the Wolfe
probability, the step it accepts on a noise-free quadratic, the batch noise; and a digits run
through the real training loop, bit-identical after a resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from jobs.catalog import known_names
from jobs.journal import JournalWriter
from jobs.optim import TrainingShape, build_optimizer
from jobs.optim.contract import Objective
from jobs.optim.pls import (
    LineGP,
    bivariate_normal_cdf,
    expected_improvement,
    mean_minimum_in,
    per_sample_losses_and_slopes,
    rectangle_probability,
    variance_of_mean,
    wolfe_belief,
)
from jobs.paths import RunPaths
from jobs.spec import OptimizerSpec, RunSpec, TrainingSpec, violations
from jobs.train import train
from tests.test_optimizers import metric_values

TAU = 10.0  # the kernel's offset
SHAPE = TrainingShape(total_steps=1000, steps_per_epoch=10, batch_size=128, train_size=40_000)


# -- the Gaussian process ------------------------------------------------------------------------


def kernel_by_the_formulas(s: float, s_order: int, t: float, t_order: int) -> float:
    """Dissertation Eq. 2.29-2.33, their case-split forms (m = 1): k, k^∂ = ∂k/∂λ', ∂k = ∂k/∂λ, ∂k^∂."""
    a, b = s + TAU, t + TAU
    if (s_order, t_order) == (0, 0):
        return 0.5 * a * b * b - b**3 / 6 if s > t else 0.5 * a * a * b - a**3 / 6
    if (s_order, t_order) == (0, 1):
        return a * b - 0.5 * b * b if s > t else 0.5 * a * a
    if (s_order, t_order) == (1, 0):
        return 0.5 * b * b if s > t else a * b - 0.5 * a * a
    return min(a, b)


def posterior_by_hand(
    points: list[float], values: list[float], slopes: list[float], t: float, order: int
) -> tuple[float, float]:
    """Eq. 2.34/2.35 with noise-free observations, every entry from ``kernel_by_the_formulas``."""
    features = [(p, 0) for p in points] + [(p, 1) for p in points]
    gram = np.array([[kernel_by_the_formulas(p, i, q, j) for q, j in features] for p, i in features])
    cross = np.array([kernel_by_the_formulas(t, order, q, j) for q, j in features])
    mean = cross @ np.linalg.solve(gram, np.array(values + slopes))
    variance = kernel_by_the_formulas(t, order, t, order) - cross @ np.linalg.solve(gram, cross)
    return float(mean), float(variance)


def test_one_exact_observation_gives_a_line_with_the_wiener_process_variances() -> None:
    """From f(0) = 0, f'(0) = −1 alone: μ(t) = −t, V(t) = t³/3, V'(t) = t (the increments of the
    integrated Wiener process; hand-derived: G⁻¹z = (0.06, −0.4) for τ = 10)."""
    gp = LineGP([0.0], [0.0], [-1.0], 0.0, 0.0)
    for t in (0.5, 1.0, 3.0):
        assert gp.mean(t) == pytest.approx(-t, abs=1e-7)
        assert gp.mean(t, order=1) == pytest.approx(-1.0, abs=1e-8)
        assert gp.variance(t) == pytest.approx(t**3 / 3, rel=1e-6)
        assert gp.variance(t, order=1) == pytest.approx(t, rel=1e-6)


def test_the_posterior_of_a_quadratic_interpolates_and_matches_the_kernel_formulas() -> None:
    """f(t) = (t − 1)² − 1 observed exactly at 0 and 2: the mean between them is the Hermite cubic
    through the observations, i.e. the quadratic itself; beyond 2 it is the tangent line."""
    points, values, slopes = [0.0, 2.0], [0.0, 0.0], [-2.0, 2.0]
    gp = LineGP(points, values, slopes, 0.0, 0.0)
    for t, value, slope in [
        (0.0, 0.0, -2.0),
        (2.0, 0.0, 2.0),
        (1.0, -1.0, 0.0),
        (0.5, -0.75, -1.0),
        (3.0, 2.0, 2.0),
    ]:
        assert gp.mean(t) == pytest.approx(value, abs=1e-6)
        assert gp.mean(t, order=1) == pytest.approx(slope, abs=1e-6)
    assert gp.variance(0.0) == pytest.approx(0.0, abs=1e-8) and gp.variance(2.0, order=1) == pytest.approx(
        0.0, abs=1e-8
    )
    for t, order in [(1.0, 0), (1.0, 1), (0.3, 0), (3.5, 0)]:
        mean, variance = posterior_by_hand(points, values, slopes, t, order)
        assert gp.mean(t, order) == pytest.approx(mean, abs=1e-6)
        assert gp.variance(t, order) == pytest.approx(variance, rel=1e-5, abs=1e-8)
    assert gp.variance(1.0) > 0.01  # between the observations the belief is uncertain
    assert mean_minimum_in(gp, 0.0, 2.0) == pytest.approx(1.0, abs=1e-6)
    # still falling
    assert mean_minimum_in(LineGP([0.0, 0.5], [0.0, -0.75], [-2.0, -1.0], 0.0, 0.0), 0.0, 0.5) is None


def test_noise_makes_the_mean_smooth_instead_of_interpolating() -> None:
    exact = LineGP([0.0, 1.0], [0.0, 0.5], [-1.0, 1.0], 0.0, 0.0)
    noisy = LineGP([0.0, 1.0], [0.0, 0.5], [-1.0, 1.0], 0.1, 0.1)
    assert exact.mean(1.0) == pytest.approx(0.5, abs=1e-7)
    assert noisy.mean(1.0) != pytest.approx(0.5, abs=1e-3)
    assert 0 < noisy.variance(1.0) < 0.1


# -- the Wolfe probability -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, k, rho",
    [
        (0.0, 0.0, 0.0),
        (0.3, -1.2, 0.5),
        (-0.7, 0.4, -0.8),
        (1.5, 2.0, 0.95),
        (-2.0, -1.0, -0.3),
        (0.2, 0.25, 0.999),
        (3.0, -3.0, 0.6),
    ],
)
def test_bivariate_normal_cdf_matches_scipy(h: float, k: float, rho: float) -> None:
    expected = stats.multivariate_normal.cdf(
        [h, k],
        mean=[0.0, 0.0],
        cov=[[1.0, rho], [rho, 1.0]],
        abseps=1e-10,
        releps=1e-10,
        rng=np.random.default_rng(0),
    )
    assert bivariate_normal_cdf(h, k, rho) == pytest.approx(expected, abs=1e-7)


def rectangle_by_quadrature(a_low: float, b_low: float, b_high: float, rho: float) -> float:
    """∫_{a_low}^∞ φ(x)·[Φ((b_high − ρx)/s) − Φ((b_low − ρx)/s)] dx, s = √(1 − ρ²)."""
    s = math.sqrt(1 - rho**2)

    def inner(x: float) -> float:
        return stats.norm.pdf(x) * (
            stats.norm.cdf((b_high - rho * x) / s) - stats.norm.cdf((b_low - rho * x) / s)
        )

    return integrate.quad(inner, a_low, np.inf, epsabs=1e-12, epsrel=1e-10)[0]


@pytest.mark.parametrize(
    "a_low, b_low, b_high, rho", [(-1.0, -0.5, 2.0, 0.3), (0.5, -2.0, 0.1, -0.6), (-3.0, 1.0, 1.5, 0.9)]
)
def test_the_rectangle_probability_matches_a_numerical_integral(
    a_low: float, b_low: float, b_high: float, rho: float
) -> None:
    assert rectangle_probability(a_low, b_low, b_high, rho) == pytest.approx(
        rectangle_by_quadrature(a_low, b_low, b_high, rho), abs=1e-8
    )


def test_the_wolfe_probability_is_the_bivariate_normal_mass_of_both_conditions() -> None:
    """A noisy GP along the line; at several t the probability equals scipy's mass of the Gaussian
    over (a, b) on a ≥ 0, 0 ≤ b ≤ b̄, with (a, b) formed from the joint posterior by hand."""
    gp = LineGP([0.0, 1.0, 0.6], [0.0, -0.3, -0.45], [-1.0, 0.4, -0.2], 0.02, 0.05)
    c1, c2 = 0.05, 0.8
    for t in (0.6, 1.0, 1.7):
        mean, cov = gp.posterior([0.0, 0.0, t, t], [0, 1, 0, 1])
        weights = np.array([[1.0, c1 * t, -1.0, 0.0], [0.0, -c2, 0.0, 1.0]])
        moments_mean, moments_cov = weights @ mean, weights @ cov @ weights.T
        upper = 2 * c2 * (abs(mean[1]) + 2 * math.sqrt(cov[1, 1]))
        expected = stats.multivariate_normal.cdf(
            [60.0, upper],
            mean=moments_mean,
            cov=moments_cov,
            lower_limit=[0.0, 0.0],
            abseps=1e-10,
            releps=1e-10,
            rng=np.random.default_rng(0),
        )
        probability = wolfe_belief(gp, t, c1, c2).probability()
        assert probability == pytest.approx(expected, abs=1e-6)
        assert 0.0 < probability < 1.0


def test_exact_observations_check_the_wolfe_conditions_on_the_means() -> None:
    # y(t) = −t + t²/2 (minimum at t = 1): at 1 both conditions hold, at 1.9 the strong bound fails (y' = 0.9
    # > 0.8)
    points = [0.0, 1.0, 1.9]
    gp = LineGP(points, [-t + t * t / 2 for t in points], [-1 + t for t in points], 0.0, 0.0)
    assert wolfe_belief(gp, 1.0, 0.05, 0.8).probability() == 1.0
    assert wolfe_belief(gp, 1.9, 0.05, 0.8).probability() == 0.0


def test_expected_improvement_of_a_normal() -> None:
    assert expected_improvement(1.0, 0.0, 0.5) == 0.0 and expected_improvement(
        0.2, 0.0, 0.5
    ) == pytest.approx(0.3)
    samples = np.random.default_rng(0).normal(0.3, 0.4, 2_000_000)
    assert expected_improvement(0.3, 0.4, 0.5) == pytest.approx(np.maximum(0.5 - samples, 0).mean(), rel=2e-3)


# -- the search on a noise-free quadratic --------------------------------------------------------


class Quadratic:
    """L(θ) = ½θᵀHθ + 1 in the shape of a training objective; not a batch of samples, so exact."""

    def __init__(self, parameter: torch.nn.Parameter, hessian: torch.Tensor) -> None:
        self.parameter, self.hessian = parameter, hessian
        self.logits: Optional[torch.Tensor] = None
        self.first: Optional[tuple[float, torch.Tensor]] = None

    def __call__(self, backward: bool = True) -> torch.Tensor:
        with torch.set_grad_enabled(backward):
            loss = 0.5 * self.parameter @ self.hessian @ self.parameter + 1.0
            if backward:
                self.parameter.grad = None
                loss.backward()
        self.logits = torch.zeros(1, 2)
        return loss.detach()

    def training_batch(self, step: int) -> "Quadratic":  # the batch provider: every batch is this quadratic
        return self

    def search_batch(self, size: int, draw: int) -> "Quadratic":
        return self


def quadratic_search(
    base_factor: float, steps: int, **fields: object
) -> tuple[torch.optim.Optimizer, torch.Tensor, torch.Tensor, float]:
    """PLS from θ0 with α0 = base_factor·α* (α*: the exact minimum along −g); runs until the first
    search ends or ``steps`` steps. Returns the optimizer, θ0, g0 and α*."""
    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    hessian = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    objective = Quadratic(parameter, hessian)
    theta, gradient = parameter.detach().clone(), hessian @ parameter.detach()
    exact = float(gradient @ gradient / (gradient @ hessian @ gradient))
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name="pls", lr=base_factor * exact, **fields), SHAPE, objective
    )
    for _ in range(steps):
        optimizer.step(objective)
        assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (1, 1)
        if optimizer.evaluated_points:
            break
    return optimizer, theta, gradient, exact


def accepted_step(optimizer: torch.optim.Optimizer, theta: torch.Tensor, gradient: torch.Tensor) -> float:
    """α of the new origin: θ0 − α·g0."""
    (parameter,) = optimizer.params
    return float((theta - optimizer.state[parameter]["origin"]) @ gradient / (gradient @ gradient))


@pytest.mark.parametrize(
    "base_factor, evaluations, accepted",
    [
        (0.8, [1.0], 0.8),  # both Wolfe conditions hold at t = 1
        (1.5, [1.0], 1.5),  # y'(1) = +0.5 ≤ c2 = 0.8: still strong Wolfe
        (3.0, [1.0, 1 / 3], 1.0),  # overshoot: the cubic minimum of the mean is the exact minimum
        (0.06, [1.0, 2.0, 4.0], 0.24),  # too short: extrapolations max t + 1, then + 2 (doubled)
    ],
)
def test_the_search_accepts_the_wolfe_point_on_a_noise_free_quadratic(
    base_factor: float, evaluations: list[float], accepted: float
) -> None:
    optimizer, theta, gradient, exact = quadratic_search(base_factor, steps=8)
    assert optimizer.evaluated_points == pytest.approx(evaluations, abs=1e-7)
    assert accepted_step(optimizer, theta, gradient) == pytest.approx(accepted * exact, rel=1e-7)
    average = 0.9 * base_factor * exact + 0.1 * accepted * exact
    assert optimizer.base_step == pytest.approx(
        1.3 * accepted * exact, rel=1e-7
    ) and optimizer.average_step == pytest.approx(average)
    (parameter,) = optimizer.params  # θ now at the next search's t = 1
    assert torch.allclose(
        parameter.detach(),
        optimizer.state[parameter]["origin"] + optimizer.base_step * optimizer.state[parameter]["direction"],
        atol=1e-12,
    )


def test_a_step_far_out_of_the_running_average_falls_back_to_it() -> None:
    optimizer, theta, gradient, exact = quadratic_search(1000.0, steps=8)
    assert accepted_step(optimizer, theta, gradient) == pytest.approx(exact, rel=1e-6)
    assert optimizer.base_step == pytest.approx(0.9 * 1000 * exact + 0.1 * exact, rel=1e-6)  # 1.3·α* < ᾱ/100


def test_without_a_wolfe_point_the_lowest_mean_is_taken_after_the_budget() -> None:
    optimizer, theta, gradient, exact = quadratic_search(0.001, steps=8, pls_max_evaluations=2)
    assert optimizer.evaluated_points == pytest.approx([1.0, 2.0])
    assert accepted_step(optimizer, theta, gradient) == pytest.approx(0.002 * exact, rel=1e-7)


# -- the batch's noise ---------------------------------------------------------------------------


def test_per_sample_slopes_are_the_per_sample_gradients_along_the_direction() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    inputs, targets = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    params = list(model.parameters())
    direction = [torch.randn_like(p) for p in params]
    losses, slopes = per_sample_losses_and_slopes(
        Objective(model, inputs, targets, seed=3), params, direction
    )
    for sample in range(6):  # the objective's loss: cross-entropy of the logits in float32
        loss = torch.nn.functional.cross_entropy(
            model(inputs[sample : sample + 1]).float(), targets[sample : sample + 1]
        )
        gradients = torch.autograd.grad(loss, params)
        assert float(losses[sample]) == pytest.approx(float(loss.detach()), rel=1e-6)
        assert float(slopes[sample]) == pytest.approx(
            float(sum((g * d).sum() for g, d in zip(gradients, direction))), rel=1e-5
        )
    values = np.array([1.0, 2.0, 4.0, 7.0])
    assert variance_of_mean(torch.tensor(values)) == pytest.approx(values.var(ddof=1) / 4)
    assert variance_of_mean(torch.tensor([3.0])) == 0.0


# -- the spec and the training loop --------------------------------------------------------------


def test_pls_fields_default_to_the_papers_and_belong_to_pls_only() -> None:
    spec = OptimizerSpec(name="pls")
    assert (spec.pls_c1, spec.pls_c2, spec.pls_wolfe_threshold, spec.pls_max_evaluations) == (
        None,
        None,
        None,
        None,
    )
    optimizer = build_optimizer(
        [torch.nn.Parameter(torch.zeros(2))],
        spec,
        SHAPE,
        Quadratic(torch.nn.Parameter(torch.zeros(2)), torch.eye(2)),
    )
    assert (optimizer.c1, optimizer.c2, optimizer.wolfe_threshold, optimizer.max_evaluations) == (
        0.05,
        0.8,
        0.3,
        6,
    )
    assert [
        key
        for key, _, _ in violations(RunSpec(optimizer=OptimizerSpec(name="sgd", pls_c1=0.1)), known_names())
    ] == ["optimizer.pls_c1"]
    assert (
        list(
            violations(
                RunSpec(
                    optimizer=OptimizerSpec(name="pls", pls_c1=0.3, pls_wolfe_threshold=0.1, momentum=0.9)
                ),
                known_names(),
            )
        )
        == []
    )


def test_a_pls_digits_run_trains_through_the_training_loop(tmp_path: Path) -> None:
    spec = RunSpec(
        optimizer=OptimizerSpec(name="pls", lr=0.1),
        training=TrainingSpec(
            steps=150, batch_size=64, eval_every=50, checkpoint_every=150, heartbeat_seconds=60
        ),
    )
    paths = RunPaths(tmp_path)
    train(spec, paths, JournalWriter(paths.attempt("001-a")))
    losses = metric_values(paths, "001-a", "train_loss")
    assert len(losses) == 150 and all(np.isfinite(losses))
    assert np.mean(losses[-30:]) < 0.4 * np.mean(losses[:10])
    assert metric_values(paths, "001-a", "val_accuracy")[-1] > 0.8
    forwards, backwards = (
        metric_values(paths, "001-a", "forward_passes")[-1],
        metric_values(paths, "001-a", "backward_passes")[-1],
    )
    # one evaluation per step, a forward-mode pass per search
    assert 150 <= backwards < forwards < 2 * backwards
