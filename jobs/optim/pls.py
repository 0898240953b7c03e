"""PLS, the probabilistic line search (Mahsereci & Hennig 2015, 2017; dissertation §2.6.5, Alg. 5).

A line search spans several training-loop steps, as GOLS-I's: each ``step()`` evaluates the loss
and gradient once, on that step's own batch, at the point θ0 + α·d the search asked for (the
paper draws a new batch for every evaluation; the dissertation counts each batch as a step).

- **Search.** From the origin θ0 (an accepted point, whose batch loss f0, gradient g0 and noise
  are known) along d = momentum·d_prev − g0 (−g0 when that is no descent direction), in the
  paper's units: t = α/α0, y(t) = (f(t) − f0)/(α0·β), y'(t) = g(t)·d/β with β = |g0·d|, so
  y(0) = 0 and y'(0) = −1. The first evaluation is at t = 1, the base step α0.
- **Surrogate.** A Gaussian process with the once-integrated Wiener process kernel (a cubic
  spline; offset τ = 10, unit scale) on the values and slopes observed along the line, with
  Gaussian noise of the origin's batch: σ_f² and σ_f'² are the variances of the batch mean of the
  per-sample losses and of the per-sample slopes ℓ_j'·d (measured exactly, by one forward-mode
  pass along d at the origin; the paper approximates the latter from the per-coordinate
  gradient variances). The posterior mean is a cubic between observations.
- **Acceptance.** The probability that the (strong) Wolfe conditions hold, a = f(0) − f(t) +
  c1·t·f'(0) ≥ 0 and 0 ≤ b = f'(t) − c2·f'(0) ≤ b̄ = 2·c2·(|μ'(0)| + 2·√V'(0)), is a bivariate
  normal probability under the posterior; the newest point is accepted when it exceeds c_W, else
  the earlier point with the lowest mean among those that now do. After ``max_evaluations``
  evaluations without one, the point with the lowest posterior mean is taken (t = 0 included:
  then the search restarts from its origin).
- **Next point.** Candidates: the local minima of the posterior mean between neighbouring
  observations and one extrapolation, max t + e (e = 1, doubled each time it is chosen); the one
  with the largest expected improvement × Wolfe probability is evaluated next. If the posterior
  slope at 0 is positive and the first cell holds no minimum, 0.1·t_1 (the authors' code).
- **Between searches.** α0 ← 1.3·α_accepted; a running average ᾱ ← 0.9·ᾱ + 0.1·α_accepted
  replaces it when it leaves [ᾱ/100, 100·ᾱ] (the authors' code), which resets it after a failed
  search. An accepted point starts the next search with its own observation; one accepted before
  the newest is measured again on its batch (the batch provider's ``training_batch``).

Cost per step: one forward and one backward; one forward-mode pass more when a search ends, and a
forward and backward more when the point accepted is not the newest one. Objectives that are not
batches of samples (closed-form test functions) are taken as noise-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from jobs.optim.base import SearchOptimizer
from jobs.optim.contract import BatchProvider, Objective, TrainingShape, clone_all, dot, move_to, norm
from jobs.optim.registry import OPTIMIZERS
from jobs.optimizer_fields import PlsFields

# The paper's and the authors' MATLAB code's defaults.
PLS_C1 = 0.05  # first (sufficient decrease) Wolfe constant
PLS_C2 = 0.8  # second (curvature) Wolfe constant
PLS_WOLFE_THRESHOLD = 0.3  # c_W
# evaluations per line search (the dissertation's Alg. 5: 10; a Python translation of the MATLAB code: 7)
PLS_MAX_EVALUATIONS = 6
KERNEL_OFFSET = 10.0  # τ of the integrated Wiener process, in units of α0
STEP_GROWTH = 1.3  # the next search's α0: the accepted step times this
AVERAGE_DECAY = 0.9  # of the running average ᾱ of accepted steps
RESET_RANGE = 100.0  # α0 outside [ᾱ/100, 100·ᾱ] falls back to ᾱ
STEEP_FRACTION = 0.1  # a search whose surrogate rises from 0 tries 0.1·t_1 next
NON_FINITE_SHRINK = 0.01  # a non-finite evaluation at t restarts the search with α0·t·0.01
DETERMINISTIC_VARIANCE = 1e-9  # below: the Wolfe conditions are checked on the means
JITTER = 1e-10  # added to the Gram matrix's diagonal (noise-free observations)
QUADRATURE_NODES, QUADRATURE_WEIGHTS = np.polynomial.legendre.leggauss(64)
NORMAL_BOUND = 38.0  # Φ(38) is 1 in double precision


# -- the Gaussian process along the line -----------------------------------------------------------


def covariance(s: np.ndarray, s_orders: np.ndarray, t: np.ndarray, t_orders: np.ndarray) -> np.ndarray:
    """Prior covariances Cov(f^(i)(s), f^(j)(t)) of the once-integrated Wiener process for every
    pair of features (position, order 0 = value or 1 = slope), s, t ≥ 0: with a = s + τ,
    b = t + τ, k = min(a,b)³/3 + |a − b|·min(a,b)²/2 and its derivatives."""
    a, b = (
        np.asarray(s, dtype=np.float64)[:, None] + KERNEL_OFFSET,
        np.asarray(t, dtype=np.float64)[None, :] + KERNEL_OFFSET,
    )
    low = np.minimum(a, b)
    value_value = low**3 / 3 + np.abs(a - b) * low**2 / 2
    value_slope = np.where(b <= a, a * b - b * b / 2, a * a / 2)  # ∂k/∂t
    slope_value = np.where(a <= b, a * b - a * a / 2, b * b / 2)  # ∂k/∂s
    first, second = np.asarray(s_orders)[:, None] == 0, np.asarray(t_orders)[None, :] == 0
    return np.where(first, np.where(second, value_value, value_slope), np.where(second, slope_value, low))


class LineGP:
    """The posterior over f and f' along the line given noisy values and slopes at ``points``."""

    def __init__(
        self,
        points: list[float],
        values: list[float],
        slopes: list[float],
        value_noise: float,
        slope_noise: float,
    ) -> None:
        count = len(points)
        self.times = np.array(points + points, dtype=np.float64)
        self.orders = np.array([0] * count + [1] * count)
        noise = np.array([value_noise] * count + [slope_noise] * count, dtype=np.float64)
        self.gram = covariance(self.times, self.orders, self.times, self.orders) + np.diag(noise + JITTER)
        self.weights = np.linalg.solve(self.gram, np.array(values + slopes, dtype=np.float64))

    def posterior(self, times: list[float], orders: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the features (times[i], orders[i]) under the posterior."""
        cross = covariance(np.array(times), np.array(orders), self.times, self.orders)
        prior = covariance(np.array(times), np.array(orders), np.array(times), np.array(orders))
        return cross @ self.weights, prior - cross @ np.linalg.solve(self.gram, cross.T)

    def means(self, times: list[float], orders: list[int]) -> np.ndarray:
        """The posterior means alone (no covariance)."""
        return covariance(np.array(times), np.array(orders), self.times, self.orders) @ self.weights

    def mean(self, t: float, order: int = 0) -> float:
        return float(self.means([t], [order])[0])

    def variance(self, t: float, order: int = 0) -> float:
        return max(float(self.posterior([t], [order])[1][0, 0]), 0.0)


def mean_minimum_in(gp: LineGP, left: float, right: float) -> Optional[float]:
    """The local minimum of the posterior mean strictly inside [left, right], if any. Between
    observations μ is a cubic, so μ' is the quadratic through its values at both ends and the
    middle; the minimum is its root where it rises."""
    slopes = gp.means([left, (left + right) / 2, right], [1, 1, 1])
    start, middle, end = (float(value) for value in slopes)
    quadratic = 2 * (start + end - 2 * middle)  # μ'(left + u·(right − left)) = A·u² + B·u + C
    linear = end - start - quadratic
    discriminant = linear**2 - 4 * quadratic * start
    if discriminant < 0 or linear + math.sqrt(discriminant) <= 0:
        return None
    u = -2 * start / (linear + math.sqrt(discriminant))  # the root with rising μ' (stable form)
    return left + u * (right - left) if 0 < u < 1 else None


# -- the Wolfe probability -------------------------------------------------------------------------


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def bivariate_normal_cdf(h: float, k: float, rho: float) -> float:
    """P(X ≤ h, Y ≤ k) for standard normals with correlation ρ: Φ(h)·Φ(k) plus Sheppard's integral
    (1/2π)∫_0^{asin ρ} exp(−(h² + k² − 2hk·sin θ)/(2cos² θ)) dθ, by 64-point Gauss–Legendre."""
    h, k = min(max(h, -NORMAL_BOUND), NORMAL_BOUND), min(max(k, -NORMAL_BOUND), NORMAL_BOUND)
    rho = min(max(rho, -1.0 + 1e-12), 1.0 - 1e-12)
    limit = math.asin(rho)
    theta = limit * (QUADRATURE_NODES + 1) / 2
    sine, cosine_squared = np.sin(theta), np.cos(theta) ** 2
    integrand = np.exp(-(h * h + k * k - 2 * h * k * sine) / (2 * cosine_squared))
    return normal_cdf(h) * normal_cdf(k) + float(limit / 2 * (QUADRATURE_WEIGHTS @ integrand)) / (2 * math.pi)


def rectangle_probability(a_low: float, b_low: float, b_high: float, rho: float) -> float:
    """P(A > a_low, b_low < B < b_high) for standard normals with correlation ρ."""
    upper = normal_cdf(b_high) - bivariate_normal_cdf(a_low, b_high, rho)
    lower = normal_cdf(b_low) - bivariate_normal_cdf(a_low, b_low, rho)
    return min(max(upper - lower, 0.0), 1.0)


@dataclass(frozen=True)
class WolfeBelief:
    """The posterior's Gaussian over (a, b) of the Wolfe conditions at t, and b's upper limit b̄."""

    mean_a: float
    mean_b: float
    variance_a: float
    variance_b: float
    covariance_ab: float
    upper_b: float

    def probability(self) -> float:
        if self.variance_a < DETERMINISTIC_VARIANCE or self.variance_b < DETERMINISTIC_VARIANCE:
            return float(self.mean_a >= 0 and 0 <= self.mean_b <= self.upper_b)
        deviation_a, deviation_b = math.sqrt(self.variance_a), math.sqrt(self.variance_b)
        rho = self.covariance_ab / (deviation_a * deviation_b)
        return rectangle_probability(
            -self.mean_a / deviation_a,
            -self.mean_b / deviation_b,
            (self.upper_b - self.mean_b) / deviation_b,
            rho,
        )


def wolfe_belief(gp: LineGP, t: float, c1: float, c2: float) -> WolfeBelief:
    """a = f(0) − f(t) + c1·t·f'(0), b = f'(t) − c2·f'(0): linear maps of the joint posterior of
    (f(0), f'(0), f(t), f'(t)); b̄ = 2·c2·(|μ'(0)| + 2·√V'(0)) (strong Wolfe, the paper's bound)."""
    mean, cov = gp.posterior([0.0, 0.0, t, t], [0, 1, 0, 1])
    weights_a, weights_b = np.array([1.0, c1 * t, -1.0, 0.0]), np.array([0.0, -c2, 0.0, 1.0])
    upper = 2 * c2 * (abs(float(mean[1])) + 2 * math.sqrt(max(float(cov[1, 1]), 0.0)))
    return WolfeBelief(
        float(weights_a @ mean),
        float(weights_b @ mean),
        float(weights_a @ cov @ weights_a),
        float(weights_b @ cov @ weights_b),
        float(weights_a @ cov @ weights_b),
        upper,
    )


def expected_improvement(mean: float, deviation: float, best: float) -> float:
    """E[max(0, best − f(t))] for f(t) ~ N(mean, deviation²)."""
    gap = best - mean
    if deviation <= 0:
        return max(gap, 0.0)
    z = gap / deviation
    return gap * normal_cdf(z) + deviation * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


# -- the batch's noise -----------------------------------------------------------------------------


def variance_of_mean(samples: torch.Tensor) -> float:
    """The variance of the batch mean estimated from its m samples, (mean(x²) − mean(x)²)/(m − 1)."""
    values = samples.detach().double()
    if values.numel() < 2:
        return 0.0
    return max(float(((values**2).mean() - values.mean() ** 2) / (values.numel() - 1)), 0.0)


def per_sample_losses_and_slopes(
    objective: Objective, params: list[torch.Tensor], direction: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ_j(θ) and ℓ_j'·d of every sample of the batch, by one forward-mode pass along ``direction``
    with the objective's dropout draws and precision; BatchNorm's running statistics untouched."""
    model = objective.model
    tangent_of = {id(parameter): tangent for parameter, tangent in zip(params, direction)}
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    device = objective.inputs.device
    dtype = getattr(torch, objective.autocast or "float32")
    with (
        torch.no_grad(),
        forward_ad.dual_level(),
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
    ):
        torch.manual_seed(objective.seed)
        duals = {
            name: forward_ad.make_dual(p.detach(), tangent_of.get(id(p), torch.zeros_like(p)))
            for name, p in model.named_parameters()
        }
        with torch.autocast(device.type, dtype=dtype, enabled=objective.autocast is not None):
            logits = torch.func.functional_call(model, {**duals, **buffers}, (objective.inputs,))
        losses = F.cross_entropy(logits.float(), objective.targets, reduction="none")
        unpacked = forward_ad.unpack_dual(losses)
        return unpacked.primal.detach(), unpacked.tangent.detach()


# -- the optimizer ---------------------------------------------------------------------------------


@OPTIMIZERS.register("pls")
class PLS(SearchOptimizer):
    spec: PlsFields

    def __init__(self, params: Any, spec: PlsFields, shape: TrainingShape, batches: BatchProvider) -> None:
        super().__init__(params, spec, shape, batches)
        self.c1 = spec.pls_c1 if spec.pls_c1 is not None else PLS_C1
        self.c2 = spec.pls_c2 if spec.pls_c2 is not None else PLS_C2
        self.wolfe_threshold = (
            spec.pls_wolfe_threshold if spec.pls_wolfe_threshold is not None else PLS_WOLFE_THRESHOLD
        )
        self.max_evaluations = (
            spec.pls_max_evaluations if spec.pls_max_evaluations is not None else PLS_MAX_EVALUATIONS
        )
        self.searching = False  # False: the next evaluation starts a search (its point becomes the origin)
        self.base_step = spec.lr  # α0
        self.average_step = spec.lr  # ᾱ
        self.steps_taken = 0
        self.origin_loss = 0.0  # f0 (raw)
        self.origin_slope = 0.0  # g0·d (raw, < 0)
        self.value_variance = 0.0  # σ_f² and σ_f'² of the origin's batch (raw)
        self.slope_variance = 0.0
        self.direction_norm = 0.0
        self.points: list[float] = []  # t of this search's evaluations (t > 0), in order
        self.values: list[float] = []  # y(t), y'(t) (scaled)
        self.slopes: list[float] = []
        self.evaluation_steps: list[int] = []  # the loop step (batch) of each evaluation
        self.position = 0.0  # t of θ on the current line
        self.extrapolation = 1.0
        self.evaluated_points: list[float] = []  # the last search's t, for inspection

    # -- one step: one evaluation ------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Objective) -> torch.Tensor:  # type: ignore[override]  # the registry's step(objective)
        loss = self.evaluate(closure, backward=True)
        before = self.position * self.base_step
        if not self.searching:
            length = self._begin_search(closure, loss, self.gradients())
        else:
            length = self._observe_and_decide(closure, loss, before)
        self.steps_taken += 1
        self.finish(self.position * self.base_step if self.searching else None, length)
        return torch.tensor(loss)

    def _observe_and_decide(self, closure: Objective, loss: float, before: float) -> float:
        """Adds the evaluation at the current t to the line's observations, then accepts a point or
        moves to the next candidate; returns the step length ‖θ_after − θ_before‖."""
        slope = float(dot(self.gradients(), self._direction()))
        t = self.position
        if not (math.isfinite(loss) and math.isfinite(slope)):
            self._restart_from_origin(self.base_step * t * NON_FINITE_SHRINK)
            return abs(self.position * self.base_step - before) * self.direction_norm
        scale = self.base_step * abs(self.origin_slope)
        self.points.append(t)
        self.values.append((loss - self.origin_loss) / scale)
        self.slopes.append(slope / abs(self.origin_slope))
        self.evaluation_steps.append(self.steps_taken)
        gp = self.surrogate()
        accepted = self._accepted_index(gp)
        if accepted is None:
            self.position = self._next_point(gp)
            move_to(self.params, self._origin(), self._direction(), self.position * self.base_step)
            return abs(self.position * self.base_step - before) * self.direction_norm
        return self._accept(accepted, closure, loss, before)

    def _accepted_index(self, gp: LineGP) -> Optional[int]:
        """Index into ``points`` of the point to accept (−1: the origin), or None to go on."""
        probabilities = [self.wolfe_probability(gp, t) for t in self.points]
        if probabilities[-1] > self.wolfe_threshold:
            return len(self.points) - 1
        means = [gp.mean(t) for t in self.points]
        acceptable = [
            index for index, probability in enumerate(probabilities) if probability > self.wolfe_threshold
        ]
        if acceptable:
            return min(acceptable, key=lambda index: means[index])
        if len(self.points) >= self.max_evaluations:
            lowest = int(np.argmin(means))
            return lowest if means[lowest] < gp.mean(0.0) else -1
        return None

    def _next_point(self, gp: LineGP) -> float:
        """The candidate with the largest expected improvement × Wolfe probability."""
        known = sorted([0.0, *self.points])
        minima = [mean_minimum_in(gp, left, right) for left, right in zip(known, known[1:])]
        if minima[0] is None and gp.mean(0.0, order=1) > 0:
            return STEEP_FRACTION * known[1]
        extrapolation = known[-1] + self.extrapolation
        candidates = [t for t in minima if t is not None] + [extrapolation]
        best = min(gp.mean(t) for t in known)
        scores = [
            expected_improvement(gp.mean(t), math.sqrt(gp.variance(t)), best) * self.wolfe_probability(gp, t)
            for t in candidates
        ]
        chosen = candidates[int(np.argmax(scores))]
        if chosen == extrapolation:
            self.extrapolation *= 2
        return chosen

    def surrogate(self) -> LineGP:
        """The GP of the current search in scaled units (origin: y = 0, y' = −1, the origin's noise)."""
        scale = self.base_step * abs(self.origin_slope)
        return LineGP(
            [0.0, *self.points],
            [0.0, *self.values],
            [self.origin_slope / abs(self.origin_slope), *self.slopes],
            self.value_variance / scale**2,
            self.slope_variance / self.origin_slope**2,
        )

    def wolfe_probability(self, gp: LineGP, t: float) -> float:
        return wolfe_belief(gp, t, self.c1, self.c2).probability()

    # -- accepting a point, starting a search -------------------------------------------------

    def _accept(self, index: int, closure: Objective, loss: float, before: float) -> float:
        """Ends the search at ``points[index]`` (−1: the origin) and starts the next one; returns
        the length of the whole move of this step."""
        t = self.points[index] if index >= 0 else 0.0
        next_base = self._propagated_step(t * self.base_step)
        self.evaluated_points = list(self.points)
        if index < 0:
            self._restart_from_origin(next_base)
            return abs(self.position * self.base_step - before) * self.direction_norm
        if index == len(self.points) - 1:
            self.base_step = next_base
            return self._begin_search(closure, loss, self.gradients())
        start = clone_all(self.params)  # an earlier point: its batch again, at its position
        earlier = self.batches.training_batch(self.evaluation_steps[index])
        move_to(self.params, self._origin(), self._direction(), t * self.base_step)
        loss = self.evaluate(earlier, backward=True)
        self.base_step = next_base
        self._begin_search(earlier, loss, self.gradients())
        return float(norm(torch._foreach_sub(self.params, start)))

    def _propagated_step(self, accepted: float) -> float:
        """α0 of the next search: 1.3·α, or ᾱ when that is out of [ᾱ/100, 100·ᾱ]."""
        self.average_step = AVERAGE_DECAY * self.average_step + (1 - AVERAGE_DECAY) * accepted
        proposed = STEP_GROWTH * accepted
        if not self.average_step / RESET_RANGE <= proposed <= RESET_RANGE * self.average_step:
            return self.average_step
        return proposed

    def _begin_search(self, objective: Objective, loss: float, gradients: list[torch.Tensor]) -> float:
        """θ (where ``gradients`` were measured) becomes the origin; moves to t = 1 and returns the
        length of that move. No search (and no move) where the gradient vanishes."""
        direction = self._direction_candidate(gradients)
        slope = float(dot(gradients, direction))
        if not slope < 0:
            direction = list(torch._foreach_neg(gradients))
            slope = float(dot(gradients, direction))
        self.searching = math.isfinite(slope) and slope < 0 and math.isfinite(loss)
        self.points, self.values, self.slopes, self.evaluation_steps = [], [], [], []
        self.position, self.extrapolation = 0.0, 1.0
        if not self.searching:
            return 0.0
        self.value_variance, self.slope_variance = self._batch_noise(objective, direction)
        origin = clone_all(self.params)
        for parameter, start, step in zip(self.params, origin, direction):
            self.state[parameter]["origin"] = start
            self.state[parameter]["direction"] = step
        self.origin_loss, self.origin_slope = loss, slope
        self.direction_norm = float(norm(direction))
        self.position = 1.0
        move_to(self.params, origin, direction, self.base_step)
        return self.base_step * self.direction_norm

    def _restart_from_origin(self, base_step: float) -> None:
        """The same origin, direction and noise, a new base step; moves θ to its t = 1."""
        self.base_step = base_step
        self.points, self.values, self.slopes, self.evaluation_steps = [], [], [], []
        self.position, self.extrapolation = 1.0, 1.0
        move_to(self.params, self._origin(), self._direction(), self.base_step)

    def _direction_candidate(self, gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        """momentum·d_prev − g (the GOLS-I form); −g without momentum or a previous direction."""
        previous = [self.state[p].get("direction") for p in self.params]
        if not self.spec.momentum or previous[0] is None:
            return list(torch._foreach_neg(gradients))
        direction = list(torch._foreach_mul(previous, self.spec.momentum))
        torch._foreach_sub_(direction, gradients)
        return direction

    def _batch_noise(self, objective: Objective, direction: list[torch.Tensor]) -> tuple[float, float]:
        """σ_f², σ_f'² of the batch means at θ; zero for objectives that are not batches of samples."""
        if not isinstance(objective, Objective):
            return 0.0, 0.0
        losses, slopes = per_sample_losses_and_slopes(objective, self.params, direction)
        self._step_forwards += 1
        return variance_of_mean(losses), variance_of_mean(slopes)

    def _origin(self) -> list[torch.Tensor]:
        return [self.state[p]["origin"] for p in self.params]

    def _direction(self) -> list[torch.Tensor]:
        return [self.state[p]["direction"] for p in self.params]

    # -- checkpoints -------------------------------------------------------------------------

    STATE = (
        "searching",
        "base_step",
        "average_step",
        "steps_taken",
        "origin_loss",
        "origin_slope",
        "value_variance",
        "slope_variance",
        "direction_norm",
        "points",
        "values",
        "slopes",
        "evaluation_steps",
        "position",
        "extrapolation",
        "evaluated_points",
    )

    def extra_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STATE}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for name in self.STATE:
            if name in state:
                setattr(self, name, state[name])
