"""The fields of each optimizer, one dataclass per optimizer, registered under its name.

The optimizer itself (torch) sits in ``jobs/optim/<module>.py`` and gets its own dataclass here
(:meth:`SpecKinds.typed`); this module imports no torch because the login node validates sweeps
and computes run ids with these fields. Sweep files and ``spec.yaml`` write one ``optimizer:``
mapping: ``jobs.spec.OptimizerSpec`` is the union of these classes, and a field of another
optimizer may stand there only at its default.

Defaults are the sources' (PAPERS.md §4-§8, docs/optimizers.md). A field several optimizers
have is declared by one function below, so its type, default and checks are the same in each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from jobs.schema import MAX_SAMPLES, MAX_STEPS, KindFields, Problems, SpecKinds, checked


@dataclass
class ScheduleSpec:
    """The learning rate of step t as a pure function of t (``jobs/optim/schedules.py``).

    ``constant``; ``step``: ×gamma at each milestone (fractions of training.steps; the
    dissertation's λ/10 at 50 % and λ/100 at 75 % is milestones [0.5, 0.75], gamma 0.1);
    ``cosine``: cosine decay to 0 after the warm-up (the thesis' AdamW). A linear warm-up over
    ``warmup_steps`` precedes any of them, from ``warmup_start_factor`` × lr.
    """

    name: str = checked("constant", choices=("constant", "step", "cosine"))
    milestones: list[float] = field(default_factory=list)  # fractions of training.steps
    gamma: float = checked(0.1, gt=0.0)
    warmup_steps: int = checked(0, ge=0, le=MAX_STEPS)
    warmup_start_factor: Optional[float] = checked(None, ge=0.0, le=1.0)  # None: lr·(t+1)/warmup_steps


SLS_RESETS = ("keep", "reset_to_max", "grow_per_epoch")
SEARCH_METRICS = ("loss", "accuracy", "smooth_accuracy")
SEARCH_BATCHES = ("same", "small", "big")


@dataclass
class OptimizerFields(KindFields):
    """What every optimizer has: its name."""

    name: str = checked("sgd", catalog="optimizers")


OPTIMIZER_KINDS: SpecKinds[OptimizerFields] = SpecKinds(OptimizerFields, "name", "optimizer {}")


# Fields several optimizers have.
def learning_rate_field() -> Any:
    """SGD-like: the learning rate; SLS/GOLS-I: the initial step; ALIG: the maximal lr; PLS: α0."""
    return checked(0.1, gt=0.0)


def weight_decay_field() -> Any:
    """torch optimizers: their own; line searches: an L2 term wd/2·‖θ‖² in the searched loss."""
    return checked(0.0, ge=0.0)


def schedule_field() -> Any:
    return field(default_factory=ScheduleSpec)


def momentum_field() -> Any:
    """PyTorch form buf = m·buf + g (SGD, RMSProp, LABPAL, GOLS-I, ALIG, PLS)."""
    return checked(0.0, ge=0.0, lt=1.0)


def eps_field() -> Any:
    return checked(1e-8, gt=0.0)


def max_step_field() -> Any:
    """s_max; None: PAL 3.16, LABPAL 1.0, GOLS-I its own, SLS no cap."""
    return checked(None, gt=0.0)


def step_adaptation_field() -> Any:
    """α; None: PAL 1/0.6, LABPAL 1.8."""
    return checked(None, gt=0.0)


@dataclass
class ScheduledFields(OptimizerFields):
    """What torch's optimizers share: a learning rate on a schedule the training loop applies."""

    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    schedule: ScheduleSpec = schedule_field()


@OPTIMIZER_KINDS.register("sgd")
@dataclass
class SgdFields(ScheduledFields):
    momentum: float = momentum_field()
    nesterov: bool = False


@OPTIMIZER_KINDS.register("adam")
@dataclass
class AdamFields(ScheduledFields):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = eps_field()

    def problems(self) -> Problems:
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            yield "betas", self.betas, "two numbers in [0, 1)"


@OPTIMIZER_KINDS.register("adamw")
@dataclass
class AdamwFields(AdamFields):
    pass


@OPTIMIZER_KINDS.register("rmsprop")
@dataclass
class RmspropFields(ScheduledFields):
    momentum: float = momentum_field()
    eps: float = eps_field()
    rms_alpha: float = checked(0.99, gt=0.0, lt=1.0)  # RMSProp's discounting factor


@OPTIMIZER_KINDS.register("pal")
@dataclass
class PalFields(OptimizerFields):
    """PAL (dissertation Alg. 8; project default: the thesis' μ 0.1, α 1/0.6, β 0.4, s_max 3.16)."""

    weight_decay: float = weight_decay_field()
    measuring_step: float = checked(0.1, gt=0.0)  # μ
    step_adaptation: Optional[float] = step_adaptation_field()
    direction_adaptation: float = checked(0.4, ge=0.0, lt=1.0)  # β, conjugate-like d = g + β·d_prev
    max_step: Optional[float] = max_step_field()
    # with β > 0: b = −g·d/‖d‖ (False: −‖d‖, the code's cheap option)
    exact_directional_derivative: bool = True


@OPTIMIZER_KINDS.register("labpal")
@dataclass
class LabpalFields(OptimizerFields):
    """LABPAL (dissertation Alg. 9 and the authors' code)."""

    weight_decay: float = weight_decay_field()
    momentum: float = momentum_field()
    step_adaptation: Optional[float] = step_adaptation_field()
    max_step: Optional[float] = max_step_field()
    # LABPAL&SGD reuses λ; LABPAL&NSGD reuses the step along g/‖g‖
    labpal_mode: str = checked("nsgd", choices=("sgd", "nsgd"))
    # n_SGD: updates with one estimate, the estimate's own update the first (the authors' count)
    reuse_steps: int = checked(1000, ge=1, le=MAX_STEPS)
    approximation_samples: int = checked(1280, ge=1, le=MAX_SAMPLES)  # |B_a|
    approximation_scales_with_k: bool = False  # the code averages k(t)·|B_a| samples; Alg. 9: |B_a|
    # where the large-batch loss is fitted (code: 0, 1.77e-4, 1e-2)
    measure_points: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-2])
    # the code's np.gradient fit halves the curvature (docs/optimizers.md)
    parabola_fit: str = checked("exact", choices=("exact", "numpy_gradient"))
    # k(t) changes here (fractions of training.steps)
    batch_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    # k(t) before, between and after the milestones
    batch_factors: list[int] = checked([1, 2, 4], ge=1, le=10_000)
    # ε of Eq. 6.8 scaling k(t); None: 128/|B|·|D|/40 000 as the code
    noise_factor: Optional[float] = checked(None, gt=0.0)
    average_last: int = checked(25, ge=1, le=MAX_STEPS)  # the code averages the last estimates ...
    untrusted_updates: int = checked(400, ge=0, le=MAX_STEPS)  # ... once this many updates were made

    def problems(self) -> Problems:
        if len(self.batch_factors) != len(self.batch_milestones) + 1:
            yield (
                "batch_factors",
                self.batch_factors,
                f"one factor more than batch_milestones ({len(self.batch_milestones)})",
            )
        if len(self.measure_points) != 3 or sorted(set(self.measure_points)) != self.measure_points:
            yield "measure_points", self.measure_points, "three increasing step sizes, the first usually 0"


@OPTIMIZER_KINDS.register("sls")
@dataclass
class SlsFields(OptimizerFields):
    """SLS (Vaswani et al.'s code)."""

    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    max_step: Optional[float] = max_step_field()
    armijo_c: float = checked(0.1, gt=0.0, lt=1.0)
    backtrack: float = checked(0.9, gt=0.0, lt=1.0)  # β_b
    # the code's option 1; numbers differ between sources
    reset: str = checked("grow_per_epoch", choices=SLS_RESETS)
    growth: float = checked(2.0, ge=1.0)  # γ: grow_per_epoch multiplies by γ^(1/steps per epoch)
    max_backtracks: int = checked(100, ge=1, le=10**6)
    fallback_step: float = checked(1e-6, ge=0.0)  # taken when no step passes
    min_grad_norm: float = checked(1e-8, ge=0.0)  # below: no search, no step


@OPTIMIZER_KINDS.register("accuracy_sls")
@dataclass
class AccuracySlsFields(SlsFields):
    """The accuracy-based searches (thesis Alg. 3-5): l-SLS, a-SLS, sa-SLS."""

    search_metric: str = checked("loss", choices=SEARCH_METRICS)
    slope_factor: float = checked(1.0, gt=0.0)  # s of the smooth accuracy σ(s·(π_y − max π_k))
    fd_epsilon: float = checked(1e-4, gt=0.0)  # finite-difference slope
    search_batch: str = checked("same", choices=SEARCH_BATCHES)
    # None: small 128, big 1 000 (code: 1 024)
    search_batch_size: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES)
    # steps between searches; None: same/small 1, big 1 000 (code: 100)
    search_every: Optional[int] = checked(None, ge=1, le=MAX_STEPS)


@OPTIMIZER_KINDS.register("gols_i")
@dataclass
class GolsIFields(OptimizerFields):
    """GOLS-I (Kafka & Wilke)."""

    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    momentum: float = momentum_field()
    max_step: Optional[float] = max_step_field()
    wolfe_c2: float = checked(0.9, gt=0.0, lt=1.0)
    step_scaling: float = checked(2.0, gt=1.0)  # η
    min_step: float = checked(1e-8, gt=0.0)


@OPTIMIZER_KINDS.register("alig")
@dataclass
class AligFields(OptimizerFields):
    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    momentum: float = momentum_field()
    alig_delta: float = checked(1e-5, gt=0.0)


@OPTIMIZER_KINDS.register("sgd_hd")
@dataclass
class SgdHdFields(OptimizerFields):
    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    hypergradient_lr: float = checked(0.001, gt=0.0)  # β of SGD-HD


@OPTIMIZER_KINDS.register("cocob")
@dataclass
class CocobFields(OptimizerFields):
    weight_decay: float = weight_decay_field()
    cocob_alpha: float = checked(100.0, gt=0.0)


@OPTIMIZER_KINDS.register("pls")
@dataclass
class PlsFields(OptimizerFields):
    """PLS (Mahsereci & Hennig; jobs/optim/pls.py): lr is α0, the first search's base step; None
    stands for the paper's value."""

    lr: float = learning_rate_field()
    weight_decay: float = weight_decay_field()
    momentum: float = momentum_field()
    pls_c1: Optional[float] = checked(None, gt=0.0, lt=1.0)  # first Wolfe (sufficient decrease); None: 0.05
    pls_c2: Optional[float] = checked(None, gt=0.0, lt=1.0)  # second Wolfe (curvature) constant; None: 0.8
    # c_W, accept at Wolfe probability above it; None: 0.3
    pls_wolfe_threshold: Optional[float] = checked(None, gt=0.0, lt=1.0)
    pls_max_evaluations: Optional[int] = checked(None, ge=1, le=1000)  # evaluations per search; None: 6
