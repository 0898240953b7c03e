"""The optimizers against closed-form answers, their pass counts, and bit-identical resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jobs.catalog import known_names
from jobs.journal import JournalWriter, Metrics, read_events
from jobs.optim import OPTIMIZERS, TrainingShape, build_optimizer, learning_rate
from jobs.optim.labpal import parabola_through
from jobs.optim.sls import smooth_accuracy
from jobs.paths import RunPaths
from jobs.spec import ModelSpec, OptimizerSpec, RunSpec, ScheduleSpec, TrainingSpec, violations
from jobs.train import train


class Quadratic:
    """L(θ) = ½(θ − θ*)ᵀ H (θ − θ*) + c, in the shape of a training objective (an exact parabola
    along every line)."""

    def __init__(
        self, parameter: torch.nn.Parameter, hessian: torch.Tensor, minimum: torch.Tensor, offset: float = 1.0
    ) -> None:
        self.parameter, self.hessian, self.minimum, self.offset = parameter, hessian, minimum, offset
        self.logits: Optional[torch.Tensor] = None
        self.targets = torch.zeros(1, dtype=torch.int64)
        self.first: Optional[tuple[float, torch.Tensor]] = None

    def __call__(self, backward: bool = True) -> torch.Tensor:
        with torch.set_grad_enabled(backward):
            delta = self.parameter - self.minimum
            loss = 0.5 * delta @ self.hessian @ delta + self.offset
            if backward:
                self.parameter.grad = None
                loss.backward()
        self.logits = torch.zeros(1, 2)
        if self.first is None:
            self.first = (float(loss), self.logits)
        return loss.detach()

    def value_at(self, theta: torch.Tensor) -> float:
        delta = theta - self.minimum
        return float(0.5 * delta @ self.hessian @ delta + self.offset)


class SameQuadratic:
    """A batch provider whose every batch is the same quadratic (so the large-batch loss is it too)."""

    def __init__(self, objective: Quadratic) -> None:
        self.objective = objective

    def training_batch(self, step: int) -> Quadratic:
        return self.objective

    def search_batch(self, size: int, draw: int) -> Quadratic:
        return self.objective


SHAPE = TrainingShape(total_steps=1000, steps_per_epoch=10, batch_size=128, train_size=40_000)


def quadratic_problem(
    name: str, dim: int = 6, seed: int = 0, **fields
) -> tuple[torch.optim.Optimizer, Quadratic, torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
    hessian = basis @ torch.diag(torch.linspace(0.5, 4.0, dim, dtype=torch.float64)) @ basis.T
    parameter = torch.nn.Parameter(torch.randn(dim, generator=generator, dtype=torch.float64))
    objective = Quadratic(parameter, hessian, torch.zeros(dim, dtype=torch.float64))
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name=name, **fields), SHAPE, SameQuadratic(objective)
    )
    return optimizer, objective, parameter


def exact_line_minimum(objective: Quadratic, theta: torch.Tensor) -> tuple[float, torch.Tensor]:
    """s* and the unit direction −g/‖g‖ of the exact minimum along the negative gradient."""
    gradient = objective.hessian @ (theta - objective.minimum)
    unit = -gradient / gradient.norm()
    return float(gradient.norm() / (unit @ objective.hessian @ unit)), unit


@pytest.mark.parametrize("adaptation, expect_cap", [(1.0, False), (1 / 0.6, False), (1.0, True)])
def test_pal_lands_on_alpha_times_the_exact_minimum_along_its_direction(
    adaptation: float, expect_cap: bool
) -> None:
    optimizer, objective, parameter = quadratic_problem(
        "pal", direction_adaptation=0.0, step_adaptation=adaptation, max_step=0.05 if expect_cap else None
    )
    theta = parameter.detach().clone()
    minimum, unit = exact_line_minimum(objective, theta)
    optimizer.step(objective)
    expected_step = min(adaptation * minimum, 0.05 if expect_cap else 3.16)
    assert torch.allclose(parameter.detach(), theta + expected_step * unit, rtol=0, atol=1e-10)
    report = optimizer.last_report
    assert (report.forwards, report.backwards) == (2, 1)
    assert report.step_length == pytest.approx(expected_step, rel=1e-10)
    assert report.learning_rate == pytest.approx(
        expected_step / float((objective.hessian @ theta).norm()), rel=1e-10
    )


def test_pal_with_direction_adaptation_uses_the_conjugate_like_direction() -> None:
    optimizer, objective, parameter = quadratic_problem("pal", direction_adaptation=0.4, step_adaptation=1.0)
    optimizer.step(objective)
    g1 = objective.hessian @ parameter.detach()
    theta = parameter.detach().clone()
    direction = g1 + 0.4 * optimizer.state[parameter]["direction"]  # d_2 = g_2 + β·d_1 (before the update)
    unit = -direction / direction.norm()
    minimum = float(-(g1 @ unit) / (unit @ objective.hessian @ unit))
    optimizer.step(objective)
    assert torch.allclose(parameter.detach(), theta + min(minimum, 3.16) * unit, atol=1e-10)


@pytest.mark.parametrize(
    "fit, factor, tolerance", [("exact", 1.0, 1e-8), ("numpy_gradient", 2.0, 1e-4)]
)  # the code's fit: 2·s* and a forward-difference slope
def test_labpal_estimates_the_exact_step_on_a_quadratic(fit: str, factor: float, tolerance: float) -> None:
    optimizer, objective, parameter = quadratic_problem(
        "labpal",
        approximation_samples=1280,
        noise_factor=1.0,
        step_adaptation=1.0,
        max_step=10.0,
        parabola_fit=fit,
    )
    theta = parameter.detach().clone()
    minimum, unit = exact_line_minimum(objective, theta)
    counts = []
    for _ in range(10):  # 1280 / 128 batches gathered, then the estimate and the first update
        optimizer.step(objective)
        counts.append((optimizer.last_report.forwards, optimizer.last_report.backwards))
    # the gathered batches again at 1e-4 and 1e-2
    assert counts == [(1, 1)] + [(1, 0)] * 8 + [(1 + 2 * 10, 0)]
    assert optimizer.update_step == pytest.approx(factor * minimum, rel=tolerance)
    assert torch.allclose(parameter.detach(), theta + optimizer.update_step * unit, atol=1e-9)
    assert optimizer.lr == pytest.approx(
        optimizer.update_step / float((objective.hessian @ theta).norm()), rel=1e-9
    )
    optimizer.step(objective)  # an NSGD update with the reused step
    assert optimizer.last_report.step_length == pytest.approx(optimizer.update_step, rel=1e-9)
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (1, 1)


def test_labpal_batch_schedule_and_step_accounting() -> None:
    shape = TrainingShape(total_steps=100, steps_per_epoch=10, batch_size=128, train_size=40_000)
    spec = OptimizerSpec(
        name="labpal",
        approximation_samples=256,
        reuse_steps=3,
        noise_factor=1.0,
        labpal_mode="sgd",
        step_adaptation=1.99,
    )
    # the capped moves keep 1e-3 ≤ ‖g‖ ≤ 100 (the guards) for 100 steps
    parameter = torch.nn.Parameter(torch.full((3,), 1000.0, dtype=torch.float64))
    objective = Quadratic(
        parameter, 0.01 * torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    optimizer = build_optimizer([parameter], spec, shape, SameQuadratic(objective))
    # changes after ⌊0.5·t_max⌋ and ⌊0.75·t_max⌋
    assert [optimizer.k(t) for t in (0, 50, 51, 75, 76, 99)] == [
        1,
        1,
        2,
        2,
        4,
        4,
    ]
    updates, estimates = [], []
    for step in range(100):
        optimizer.step(objective)
        updates.append(optimizer.last_report.learning_rate is not None)
        if optimizer.last_report.forwards > 1:  # the estimate re-evaluates the gathered batches
            estimates.append(step)
    # every consumed batch is a step. reuse_steps = 3 counts the estimate's own move as the first of
    # the 3 updates (the authors' amount_steps_to_reuse_lr), so 2 training updates follow it. While
    # k = 1: 2 gathered (the second ends in the estimate's move) + 2 updates, a window of 4 steps;
    # from step 51 k = 2: the |B_a| = 256 samples are the 2 direction-defining batches, then 2
    # updates of 2 batches each (6 steps); from step 76 k = 4: 4 batches to the estimate, 2 updates of 4
    assert updates[:10] == [False, True, True, True, False, True, True, True, False, True]
    assert updates[51:61] == [False, True] * 5
    assert updates[76:88] == [False, False, False, True] * 3
    # the switch to k = 2 at step 51 restarts the approximation (the window from step 48 ends
    # early); the one begun at step 75 restarts at the switch to k = 4 at step 76
    assert estimates == list(range(1, 50, 4)) + [52, 58, 64, 70] + [79, 91]
    assert optimizer.backwards_total < optimizer.forwards_total


def armijo_backtracks(initial: float, curvature: float, c: float, beta: float) -> int:
    """Shrinks until λ ≤ 2(1 − c)/h: Armijo's inequality on L = h/2·‖θ‖² along −g, solved for λ."""
    bound = 2 * (1 - c) / curvature
    return 0 if initial <= bound else math.ceil(math.log(bound / initial) / math.log(beta))


@pytest.mark.parametrize(
    "reset, initial", [("keep", 1.0), ("reset_to_max", 1.0), ("grow_per_epoch", 1.0 * 2 ** (1 / 10))]
)
def test_sls_backtracking_follows_the_armijo_inequality(reset: str, initial: float) -> None:
    curvature, c, beta = 3.0, 0.1, 0.9
    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    objective = Quadratic(
        parameter, curvature * torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    optimizer = build_optimizer(
        [parameter],
        OptimizerSpec(name="sls", lr=1.0, reset=reset, armijo_c=c, backtrack=beta),
        SHAPE,
        SameQuadratic(objective),
    )
    theta = parameter.detach().clone()
    optimizer.step(objective)
    shrinks = armijo_backtracks(initial, curvature, c, beta)
    accepted = initial * beta**shrinks
    assert optimizer.step_size == pytest.approx(accepted, rel=1e-12)
    assert torch.allclose(parameter.detach(), theta - accepted * curvature * theta, atol=1e-12)
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (2 + shrinks, 1)
    second_initial = {"keep": accepted, "reset_to_max": 1.0, "grow_per_epoch": accepted * 2 ** (1 / 10)}[
        reset
    ]
    optimizer.step(objective)
    assert optimizer.step_size == pytest.approx(
        second_initial * beta ** armijo_backtracks(second_initial, curvature, c, beta), rel=1e-12
    )


def test_sls_takes_the_fallback_step_when_nothing_passes_and_no_step_at_a_stationary_point() -> None:
    parameter = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    objective = Quadratic(
        parameter, torch.tensor([[1e9]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    )
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name="sls", lr=1.0, max_backtracks=5), SHAPE, SameQuadratic(objective)
    )
    optimizer.step(objective)
    assert float(parameter.detach()) == pytest.approx(1.0 - 1e-6 * 1e9, rel=1e-12)  # θ − fallback·g
    assert optimizer.last_report.forwards == 1 + 5
    stationary = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    flat = Quadratic(stationary, torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    optimizer = build_optimizer([stationary], OptimizerSpec(name="sls"), SHAPE, SameQuadratic(flat))
    optimizer.step(flat)
    assert optimizer.last_report.step_length == 0 and optimizer.last_report.forwards == 1


def test_smooth_accuracy_matches_a_hand_computed_value() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    targets = torch.tensor([0, 2])

    # sample 1: π = softmax(2, 0, −1): label 0 against the larger other, class 1
    # sample 2: π = softmax(0, 1, 0.5): label 2 against the larger other, class 1
    def margin(row: list[float], label: int, other: int) -> float:
        total = sum(math.exp(value) for value in row)
        return (math.exp(row[label]) - math.exp(row[other])) / total

    def expected(slope: float) -> float:
        margins = [margin([2.0, 0.0, -1.0], 0, 1), margin([0.0, 1.0, 0.5], 2, 1)]
        return sum(1 / (1 + math.exp(-slope * m)) for m in margins) / 2

    assert margin([2.0, 0.0, -1.0], 0, 1) == pytest.approx(0.72960, abs=1e-5)
    assert smooth_accuracy(logits, targets, 1.0) == pytest.approx(expected(1.0), abs=1e-6)
    assert smooth_accuracy(logits, targets, 5.0) == pytest.approx(expected(5.0), abs=1e-6)


def test_loss_based_sls_with_a_finite_difference_slope_accepts_as_the_inequality_says() -> None:
    curvature, c, beta, epsilon = 3.0, 0.1, 0.9, 1e-4
    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    objective = Quadratic(
        parameter, curvature * torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    spec = OptimizerSpec(
        name="accuracy_sls",
        lr=1.0,
        reset="keep",
        search_metric="loss",
        armijo_c=c,
        backtrack=beta,
        fd_epsilon=epsilon,
    )
    optimizer = build_optimizer([parameter], spec, SHAPE, SameQuadratic(objective))
    theta = parameter.detach().clone()
    g_squared = float((curvature * theta) @ (curvature * theta))
    slope = g_squared * (1 - epsilon * curvature / 2)  # (m0 − m_ε)/ε on the quadratic, exactly
    bound = 2 * (g_squared - c * slope) / (curvature * g_squared)  # m_λ ≤ m0 − λ·c·slope  ⇔  λ ≤ bound
    shrinks = math.ceil(math.log(bound) / math.log(beta))
    optimizer.step(objective)
    assert optimizer.step_size == pytest.approx(beta**shrinks, rel=1e-12)
    assert (optimizer.last_report.forwards, optimizer.last_report.backwards) == (2 + shrinks + 1, 1)


def test_gols_i_brackets_the_sign_change_of_the_directional_derivative() -> None:
    parameter = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    objective = Quadratic(parameter, torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name="gols_i", lr=0.1, step_scaling=2.0), SHAPE, SameQuadratic(objective)
    )
    # from θ = (1, 0): d = −g = (−1, 0), ‖d‖ = 1, minimum at α = 1 = α_max; α 0.1 → 0.2 → 0.4 → 0.8 → 1.6 >
    # α_max/η stops
    alphas = []
    for _ in range(5):
        optimizer.step(objective)
        alphas.append(optimizer.step_size)
    assert alphas[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert all(
        report == (1, 1) for report in [(optimizer.last_report.forwards, optimizer.last_report.backwards)]
    )


def test_alig_sgd_hd_and_cocob_follow_their_update_rules() -> None:
    parameter = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    objective = Quadratic(
        parameter, torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), offset=0.0
    )
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name="alig", lr=10.0), SHAPE, SameQuadratic(objective)
    )
    optimizer.step(objective)  # γ = L/(‖g‖² + δ) = 2.5/(5 + 1e-5)
    assert optimizer.last_report.learning_rate == pytest.approx(2.5 / (5 + 1e-5))
    assert torch.allclose(
        parameter.detach(), torch.tensor([2.0, -1.0], dtype=torch.float64) * (1 - 2.5 / (5 + 1e-5))
    )

    parameter = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    objective = Quadratic(parameter, torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    optimizer = build_optimizer(
        [parameter],
        OptimizerSpec(name="sgd_hd", lr=0.1, hypergradient_lr=0.01),
        SHAPE,
        SameQuadratic(objective),
    )
    optimizer.step(objective)  # g1 = (2, −1); θ = 0.9·θ0
    optimizer.step(objective)  # g2 = 0.9·g1; λ = 0.1 + 0.01·g2·g1 = 0.1 + 0.01·0.9·5
    assert optimizer.learning_rate == pytest.approx(0.1 + 0.01 * 0.9 * 5)

    parameter = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    objective = Quadratic(parameter, torch.eye(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    optimizer = build_optimizer(
        [parameter], OptimizerSpec(name="cocob", cocob_alpha=100.0), SHAPE, SameQuadratic(objective)
    )
    optimizer.step(objective)  # g = 1: L = 1, G = 1, θ_sum = −1, reward 0 → w = w1 + (−1)/(1·max(2, 100))·1
    assert float(parameter.detach()) == pytest.approx(1.0 - 1 / 100)


def test_schedules_of_the_sources() -> None:
    dissertation = ScheduleSpec(name="step", milestones=[0.5, 0.75], gamma=0.1)
    assert [learning_rate(1.0, dissertation, step, 100) for step in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    thesis = ScheduleSpec(name="cosine", warmup_steps=10, warmup_start_factor=0.25)
    rates = [learning_rate(4e-3, thesis, step, 110) for step in (0, 5, 10, 60, 110)]
    assert rates == pytest.approx([1e-3, 2.5e-3, 4e-3, 2e-3, 0.0], abs=1e-12)


def test_a_field_of_another_optimizer_is_refused_with_the_accepted_ones() -> None:
    spec = RunSpec(optimizer=OptimizerSpec(name="pal", momentum=0.9))
    problems = list(violations(spec, known_names()))
    assert problems and problems[0][0] == "optimizer.momentum"
    assert "not a field of optimizer pal" in problems[0][2] and "measuring_step" in problems[0][2]
    assert (
        list(
            violations(RunSpec(optimizer=OptimizerSpec(name="labpal", batch_factors=[1, 2])), known_names())
        )[0][0]
        == "optimizer.batch_factors"
    )


RESUME_CASES = {
    "sgd": OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4),
    "pls": OptimizerSpec(name="pls", lr=0.05, momentum=0.4, weight_decay=1e-4),
    "adam": OptimizerSpec(name="adam", lr=1e-3),
    "adamw": OptimizerSpec(
        name="adamw",
        lr=1e-3,
        weight_decay=1e-2,
        schedule=ScheduleSpec(name="cosine", warmup_steps=4, warmup_start_factor=0.25),
    ),
    "rmsprop": OptimizerSpec(name="rmsprop", lr=1e-3, momentum=0.9),
    "pal": OptimizerSpec(name="pal", weight_decay=1e-4),
    "labpal_nsgd": OptimizerSpec(
        name="labpal",
        approximation_samples=96,
        reuse_steps=2,
        noise_factor=1.0,
        batch_milestones=[0.3, 0.6],
        batch_factors=[1, 2, 2],
        untrusted_updates=1,
        average_last=2,
    ),
    "labpal_sgd": OptimizerSpec(
        name="labpal",
        labpal_mode="sgd",
        momentum=0.4,
        approximation_samples=64,
        reuse_steps=3,
        noise_factor=1.0,
    ),
    "sls": OptimizerSpec(name="sls", lr=1.0),
    "sa_sls": OptimizerSpec(name="accuracy_sls", lr=1.0, search_metric="smooth_accuracy"),
    "l_sls_small": OptimizerSpec(name="accuracy_sls", lr=1.0, search_metric="loss", search_batch="small"),
    "a_sls_big": OptimizerSpec(
        name="accuracy_sls",
        lr=1.0,
        search_metric="accuracy",
        search_batch="big",
        search_batch_size=256,
        search_every=4,
    ),
    "gols_i": OptimizerSpec(name="gols_i", lr=0.01, momentum=0.4),
    "alig": OptimizerSpec(name="alig", lr=1.0, momentum=0.9),
    "sgd_hd": OptimizerSpec(name="sgd_hd", lr=0.05),
    "cocob": OptimizerSpec(name="cocob"),
}


def test_every_registered_optimizer_has_a_resume_case() -> None:
    assert {spec.name for spec in RESUME_CASES.values()} == set(OPTIMIZERS.names())


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resumed_training_is_bit_identical(case: str, tmp_path: Path) -> None:
    spec = RunSpec(
        model=ModelSpec(hidden=[16], dropout=0.1),
        optimizer=RESUME_CASES[case],
        training=TrainingSpec(
            steps=14, batch_size=32, checkpoint_every=7, eval_every=7, heartbeat_seconds=60
        ),
    )
    whole, resumed = RunPaths(tmp_path / "whole"), RunPaths(tmp_path / "resumed")
    train(spec, whole, JournalWriter(whole.attempt("001-a")))
    train(spec, resumed, JournalWriter(resumed.attempt("001-a")))
    resumed.checkpoint_file(14).unlink()
    resumed.checkpoint_manifest(14).unlink()
    train(spec, resumed, JournalWriter(resumed.attempt("002-b")))  # from step 7

    first, second = load_file(whole.checkpoint_file(14)), load_file(resumed.checkpoint_file(14))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].numpy().tobytes() == second[name].numpy().tobytes(), name
    losses = metric_values(whole, "001-a", "train_loss")
    assert len(losses) == 14 and all(np.isfinite(losses))
    assert metric_values(resumed, "002-b", "train_loss") == losses[7:]


def metric_values(paths: RunPaths, attempt: str, name: str) -> list[float]:
    rows = [
        row
        for event in read_events(paths.attempt(attempt))
        if isinstance(event.payload, Metrics)
        for row in event.payload.rows
    ]
    return [row.value for row in sorted(rows, key=lambda row: row.step) if row.name == name]


def test_pass_counts_per_step_on_a_real_network(tmp_path: Path) -> None:
    counts = {}
    for name in ("sgd", "pal", "sls"):
        spec = RunSpec(
            optimizer=OptimizerSpec(name=name, **({"lr": 1.0} if name == "sls" else {})),
            training=TrainingSpec(steps=10, batch_size=64, eval_every=10, checkpoint_every=10),
        )
        paths = RunPaths(tmp_path / name)
        train(spec, paths, JournalWriter(paths.attempt("001-a")))
        forwards = metric_values(paths, "001-a", "forward_passes")[-1]
        backwards = metric_values(paths, "001-a", "backward_passes")[-1]
        counts[name] = (forwards / 10, backwards / 10)
    assert counts["sgd"] == (1.0, 1.0)
    assert counts["pal"] == (2.0, 1.0)
    assert counts["sls"][0] >= 2.0 and counts["sls"][1] == 1.0


def test_parabola_fit_is_exact_for_a_parabola() -> None:
    points = [0.0, 1e-4, 1e-2]
    a, b = parabola_through(points, [3 * x * x - 2 * x + 1 for x in points], "exact")
    assert (a, b) == pytest.approx((3.0, -2.0), rel=1e-6)
    assert dataclasses.replace(OptimizerSpec(), name="labpal").parabola_fit == "exact"
