"""The run spec: the one schema shared by the login-node side and the jobs.

Dataclasses used as OmegaConf structured configs. They are the single source of truth for
defaults, types and value checks. A field's metadata may carry:

- ``check``: a :class:`Check` (numeric bounds, choices, regular expression, catalog name); the
  bounds of a list field hold for each of its items;
- ``fingerprint=False``: the field cannot change results (resources, cluster, log cadence) and is
  left out of the run id.

Every number must be finite and every string free of control characters, whatever its check;
every integer has an upper bound a real run stays far below (and SQLite's 64-bit integers hold).

This module imports nothing heavy: the login node validates sweeps without loading torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Check:
    """Constraints on one field's value beyond its type."""

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_hint: str = ""
    catalog: str = ""  # name of a catalog of known names (models, datasets, optimizers, probes)
    max_items: Optional[int] = None  # of a list

    def bounds(self) -> str:
        """The numeric bounds in words ("> 0 and < 1"); empty without bounds."""
        limits = [(">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)]
        return " and ".join(f"{sign} {_number_text(limit)}" for sign, limit in limits if limit is not None)

    def describe(self, noun: str = "a number") -> str:
        return f"{noun} {self.bounds()}"

    def within_bounds(self, value: float) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def violation(self, value: Any, known_names: Mapping[str, Sequence[str]]) -> Optional[str]:
        """What is accepted, if ``value`` is not; None when it passes (None always does: "the default")."""
        if value is None:
            return None
        if isinstance(value, list):
            return self.list_violation(value)
        if is_number(value) and not self.within_bounds(value):
            return self.describe()
        if self.choices and value not in self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            return self.pattern_hint or f"a string matching {self.pattern}"
        if self.catalog:
            known = known_names.get(self.catalog, ())
            if value not in known:
                return f"a known {self.catalog[:-1]}: " + (
                    ", ".join(sorted(known)) or "(none registered yet)"
                )
        return None

    def list_violation(self, items: list[Any]) -> Optional[str]:
        if self.max_items is not None and len(items) > self.max_items:
            return f"a list of at most {self.max_items} items" + (
                f", each {self.bounds()}" if self.bounds() else ""
            )
        if self.choices and any(item not in self.choices for item in items):
            return "a list of " + ", ".join(self.choices)
        if any(is_number(item) and not self.within_bounds(item) for item in items):
            return self.describe("a list of numbers")
        return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_text(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def value_problem(value: Any) -> Optional[str]:
    """What is accepted instead of a value no field takes: an infinite or NaN number, a string with
    control characters (a newline, an escape sequence, a NUL); None for any other value."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, float) and not math.isfinite(item) for item in items):
        return "finite numbers" if isinstance(value, list) else "a finite number"
    if any(
        isinstance(item, str) and any(unicodedata.category(c) in CONTROL_CATEGORIES for c in item)
        for item in items
    ):
        return "text without control characters (newlines, tabs, escape sequences, NUL)"
    return None


# Upper bounds no real run comes near; they keep every count far inside SQLite's 64-bit integers.
MAX_STEPS = 10**9  # training steps, and any step count or step number
MAX_SEED = 2**32 - 1
MAX_SAMPLES = 10**8  # batch sizes and sample counts (the largest data set here has 73 257)
MAX_WIDTH = 65536  # units or channels of one hidden layer
MAX_HIDDEN_LAYERS = 1000
MAX_HIDDEN_WEIGHTS = 10**10  # weights between consecutive hidden layers (40 GB as float32)
MAX_LINE_POINTS = 100_000  # points of one line, all enlargements included (the paper's: 169)


def checked(default: Any = dataclasses.MISSING, *, fingerprint: bool = True, **check: Any) -> Any:
    """A dataclass field with a value check (see :class:`Check`)."""
    metadata = {"check": Check(**check), "fingerprint": fingerprint}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def unfingerprinted(default: Any) -> Any:
    """A field that cannot change results: left out of the run id."""
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata={"fingerprint": False})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"fingerprint": False})
    return field(default=default, metadata={"fingerprint": False})


SLURM_TIME = r"(\d{1,4}-)?\d{1,7}(:\d{1,2}){0,2}"
SLURM_TIME_HINT = "a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
SLURM_MEM = r"\d{1,12}[KMGT]?"


@dataclass
class ModelSpec:
    name: str = checked("mlp", catalog="models")
    # widths (mlp) or channels (cnn)
    hidden: list[int] = checked([64], ge=1, le=MAX_WIDTH, max_items=MAX_HIDDEN_LAYERS)
    activation: str = checked("relu", choices=("relu", "tanh", "gelu"))
    dropout: Optional[float] = checked(None, ge=0.0, lt=1.0)  # after each hidden block; None: no dropout
    # None: the source's (docs/models.md)
    init: Optional[str] = checked(None, choices=("kaiming_normal", "pytorch_default"))
    channels_last: Optional[bool] = None  # NHWC memory format for speed on GPUs; None: the faithful NCHW
    # mixed-precision training forwards; None: the faithful float32
    autocast: Optional[str] = checked(None, choices=("bfloat16", "float16"))


@dataclass
class DataSpec:
    name: str = checked("digits", catalog="datasets")
    root: Optional[str] = unfingerprinted(None)  # data set directory; None: the cluster profile's
    val_fraction: float = checked(0.2, gt=0.0, lt=1.0)  # used when train_size is None
    split_seed: int = checked(42, ge=0, le=MAX_SEED)
    # samples of the official training set kept for training; the rest: validation
    train_size: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES)
    # then keep this fraction of each part (line paper: 0.1)
    fraction: Optional[float] = checked(None, gt=0.0, le=1.0)
    # None/split: from the training set; test: the official test set
    val_source: Optional[str] = checked(None, choices=("split", "test"))
    mean: list[float] = field(default_factory=list)  # empty: the source's normalization constants
    std: list[float] = field(default_factory=list)
    # random crop with this zero padding; None: the source's (CIFAR-10 4, CIFAR-100 8)
    crop_padding: Optional[int] = checked(None, ge=0, le=256)
    flip: Optional[bool] = None  # random horizontal flips; None: the source's
    val_augment: Optional[bool] = (
        None  # augment validation too (the line paper's code did, by accident); None: no
    )
    # torchvision's md5 check of the files; None: on (false: e.g. a re-packed private copy)
    verify_checksums: Optional[bool] = unfingerprinted(None)
    # pin the split: the job fails if it differs
    indices_sha256: Optional[str] = checked(
        None, fingerprint=False, pattern=r"[0-9a-f]{64}", pattern_hint="a sha256 in hex"
    )


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
class OptimizerSpec:
    """One optimizer: a name and its fields, flat; ``OPTIMIZER_FIELDS`` says which belong to which.

    Defaults are the sources' (PAPERS.md §4-§8, docs/optimizers.md); setting a field the chosen
    optimizer does not have is an error at plan time, as for probes.
    """

    name: str = checked("sgd", catalog="optimizers")
    # SGD-like: the learning rate; SLS/GOLS-I: the initial step; ALIG: the maximal lr
    lr: float = checked(0.1, gt=0.0)
    # torch optimizers: their own; line searches: an L2 term wd/2·‖θ‖² in the searched loss
    weight_decay: float = checked(0.0, ge=0.0)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    # PyTorch form buf = m·buf + g (SGD, RMSProp, LABPAL, GOLS-I, ALIG)
    momentum: float = checked(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = checked(1e-8, gt=0.0)
    rms_alpha: float = checked(0.99, gt=0.0, lt=1.0)  # RMSProp's discounting factor
    # PAL (dissertation Alg. 8; project default: the thesis' μ 0.1, α 1/0.6, β 0.4, s_max 3.16)
    measuring_step: float = checked(0.1, gt=0.0)  # μ
    step_adaptation: Optional[float] = checked(None, gt=0.0)  # α; None: PAL 1/0.6, LABPAL 1.8
    direction_adaptation: float = checked(0.4, ge=0.0, lt=1.0)  # β, conjugate-like d = g + β·d_prev
    max_step: Optional[float] = checked(None, gt=0.0)  # s_max; None: PAL 3.16, LABPAL 1.0, SLS no cap
    exact_directional_derivative: bool = (
        True  # PAL with β > 0: b = −g·d/‖d‖ (False: −‖d‖, the code's cheap option)
    )
    # LABPAL (dissertation Alg. 9 and the authors' code)
    # LABPAL&SGD reuses λ; LABPAL&NSGD reuses the step along g/‖g‖
    labpal_mode: str = checked("nsgd", choices=("sgd", "nsgd"))
    reuse_steps: int = checked(1000, ge=1, le=MAX_STEPS)  # n_SGD: updates with one estimate
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
    # SLS (Vaswani et al.'s code) and the accuracy-based searches (thesis Alg. 3-5)
    armijo_c: float = checked(0.1, gt=0.0, lt=1.0)
    backtrack: float = checked(0.9, gt=0.0, lt=1.0)  # β_b
    # the code's option 1; numbers differ between sources
    reset: str = checked("grow_per_epoch", choices=SLS_RESETS)
    growth: float = checked(2.0, ge=1.0)  # γ: grow_per_epoch multiplies by γ^(1/steps per epoch)
    max_backtracks: int = checked(100, ge=1, le=10**6)
    fallback_step: float = checked(1e-6, ge=0.0)  # taken when no step passes
    min_grad_norm: float = checked(1e-8, ge=0.0)  # below: no search, no step
    search_metric: str = checked("loss", choices=SEARCH_METRICS)  # l-SLS, a-SLS, sa-SLS
    slope_factor: float = checked(1.0, gt=0.0)  # s of the smooth accuracy σ(s·(π_y − max π_k))
    fd_epsilon: float = checked(1e-4, gt=0.0)  # finite-difference slope
    search_batch: str = checked("same", choices=SEARCH_BATCHES)
    # None: small 128, big 1 000 (code: 1 024)
    search_batch_size: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES)
    # steps between searches; None: same/small 1, big 1 000 (code: 100)
    search_every: Optional[int] = checked(None, ge=1, le=MAX_STEPS)
    # GOLS-I (Kafka & Wilke), ALIG, SGD-HD, COCOB
    wolfe_c2: float = checked(0.9, gt=0.0, lt=1.0)
    step_scaling: float = checked(2.0, gt=1.0)  # η
    min_step: float = checked(1e-8, gt=0.0)
    alig_delta: float = checked(1e-5, gt=0.0)
    hypergradient_lr: float = checked(0.001, gt=0.0)  # β of SGD-HD
    cocob_alpha: float = checked(100.0, gt=0.0)
    # PLS (Mahsereci & Hennig; jobs/optim/pls.py): lr is α0, the first search's base step. None: the paper's
    # first Wolfe (sufficient decrease) constant; None: 0.05
    pls_c1: Optional[float] = checked(None, gt=0.0, lt=1.0)
    pls_c2: Optional[float] = checked(None, gt=0.0, lt=1.0)  # second Wolfe (curvature) constant; None: 0.8
    # c_W, accept at Wolfe probability above it; None: 0.3
    pls_wolfe_threshold: Optional[float] = checked(None, gt=0.0, lt=1.0)
    # evaluations (steps) per line search; None: 6
    pls_max_evaluations: Optional[int] = checked(None, ge=1, le=1000)


COMMON_OPTIMIZER_FIELDS = ("name",)
_SCHEDULED = ("lr", "weight_decay", "schedule")
_LINE_SEARCH = ("weight_decay", "max_step")
_SLS = (
    "lr",
    "weight_decay",
    "max_step",
    "backtrack",
    "armijo_c",
    "reset",
    "growth",
    "max_backtracks",
    "fallback_step",
    "min_grad_norm",
)
OPTIMIZER_FIELDS = {
    "sgd": (*_SCHEDULED, "momentum", "nesterov"),
    "adam": (*_SCHEDULED, "betas", "eps"),
    "adamw": (*_SCHEDULED, "betas", "eps"),
    "rmsprop": (*_SCHEDULED, "rms_alpha", "eps", "momentum"),
    "pal": (
        *_LINE_SEARCH,
        "measuring_step",
        "step_adaptation",
        "direction_adaptation",
        "exact_directional_derivative",
    ),
    "labpal": (
        *_LINE_SEARCH,
        "labpal_mode",
        "step_adaptation",
        "momentum",
        "reuse_steps",
        "approximation_samples",
        "approximation_scales_with_k",
        "measure_points",
        "parabola_fit",
        "batch_milestones",
        "batch_factors",
        "noise_factor",
        "average_last",
        "untrusted_updates",
    ),
    "sls": _SLS,
    "accuracy_sls": (
        *_SLS,
        "search_metric",
        "slope_factor",
        "fd_epsilon",
        "search_batch",
        "search_batch_size",
        "search_every",
    ),
    "gols_i": ("lr", "weight_decay", "max_step", "momentum", "wolfe_c2", "step_scaling", "min_step"),
    "alig": ("lr", "weight_decay", "momentum", "alig_delta"),
    "sgd_hd": ("lr", "weight_decay", "hypergradient_lr"),
    "cocob": ("weight_decay", "cocob_alpha"),
    "pls": (
        "lr",
        "weight_decay",
        "momentum",
        "pls_c1",
        "pls_c2",
        "pls_wolfe_threshold",
        "pls_max_evaluations",
    ),
}


def foreign_fields(spec: Any, own: set[str]) -> Iterator[tuple[str, Any, str]]:
    """(field, value, its owners in words) for each field of ``spec`` outside ``own`` that is set
    to something other than its default (fields that belong to another optimizer or probe type)."""
    defaults = type(spec)()
    for spec_field in dataclasses.fields(spec):
        value = getattr(spec, spec_field.name)
        if spec_field.name not in own and value != getattr(defaults, spec_field.name):
            yield spec_field.name, value, ", ".join(sorted(own))


def optimizer_violations(optimizer: OptimizerSpec) -> Iterator[tuple[str, Any, str]]:
    """Fields set that the chosen optimizer does not have; malformed LABPAL schedules."""
    own = set(COMMON_OPTIMIZER_FIELDS) | set(OPTIMIZER_FIELDS.get(optimizer.name, ()))
    for name, value, accepted in foreign_fields(optimizer, own):
        yield f"optimizer.{name}", value, f"not a field of optimizer {optimizer.name}; its fields: {accepted}"
    if len(optimizer.batch_factors) != len(optimizer.batch_milestones) + 1:
        yield (
            "optimizer.batch_factors",
            optimizer.batch_factors,
            f"one factor more than batch_milestones ({len(optimizer.batch_milestones)})",
        )
    if (
        len(optimizer.measure_points) != 3
        or sorted(set(optimizer.measure_points)) != optimizer.measure_points
    ):
        yield (
            "optimizer.measure_points",
            optimizer.measure_points,
            "three increasing step sizes, the first usually 0",
        )
    if len(optimizer.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in optimizer.betas):
        yield "optimizer.betas", optimizer.betas, "two numbers in [0, 1)"


@dataclass
class TrainingSpec:
    steps: int = checked(1000, ge=1, le=MAX_STEPS)
    # also at most the training split (checked at plan time)
    batch_size: int = checked(64, ge=1, le=MAX_SAMPLES)
    seed: int = checked(0, ge=0, le=MAX_SEED)
    checkpoint_every: int = checked(100, ge=1, le=MAX_STEPS)
    eval_every: int = checked(50, ge=1, le=MAX_STEPS)
    drop_last: bool = True
    device: str = checked("auto", choices=("auto", "cpu", "cuda"))
    # also publish a checkpoint this often
    checkpoint_minutes: Optional[float] = checked(30.0, gt=0.0, fingerprint=False)
    # >= 0.1 s: each heartbeat is a published file
    heartbeat_seconds: float = checked(5.0, ge=0.1, fingerprint=False)
    # a diverged run fails at once instead of burning GPU time
    fail_on_nonfinite_loss: bool = unfingerprinted(True)


PROBE_TYPES = ("line", "interpolation", "hessian_norm")
LOSS_SETS = ("train", "val", "direction")


@dataclass
class ProbeSpec:
    """A landscape probe run inside the training loop (``jobs/probes``).

    A probe at step ``t`` looks at the update from θ_t to θ_{t+1}. Which steps: ``steps`` when
    given, else every ``every``-th step from ``from_step`` up to (not including) ``to_step``.
    Fields other than the common ones belong to some probe types only (see ``PROBE_FIELDS``);
    setting a field the probe's type does not have is an error.
    """

    type: str = checked("line", catalog="probes")
    # None: the type
    name: Optional[str] = checked(
        None, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*", pattern_hint="letters, digits, '_', '.', '-'"
    )
    every: int = checked(1, ge=1, le=MAX_STEPS)
    steps: list[int] = checked([], ge=0, le=MAX_STEPS)
    from_step: int = checked(0, ge=0, le=MAX_STEPS)
    to_step: Optional[int] = checked(None, ge=1, le=MAX_STEPS)  # exclusive; None: the end of training
    # batch: BatchNorm on batch statistics (train mode)
    bn_mode: str = checked("batch", choices=("batch", "eval"))
    # samples per forward (BN statistics); None: training.batch_size
    eval_chunk: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES)
    # tf32 (GPU matmuls) or bf16 autocast: explicit only
    precision: str = checked("fp32", choices=("fp32", "tf32", "bf16"))
    # samples per forward (speed only); None: see jobs/probes/functional.py
    forward_batch: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES, fingerprint=False)
    # line
    interval: float = checked(0.5, gt=0.0)
    resolution: float = checked(0.006, gt=0.0)
    max_enlargements: int = checked(5, ge=0, le=1000)
    record: list[str] = checked(list(LOSS_SETS), choices=LOSS_SETS)
    # 0: the update direction; k: k noisy gradient directions (Fig. 8)
    directions: int = checked(0, ge=0, le=10_000)
    store_direction: bool = False
    # interpolation
    alphas: int = checked(10, ge=2, le=10**6)
    alpha_endpoints: str = checked("inclusive", choices=("inclusive", "exclusive"))
    # hessian_norm
    hessian_samples: int = checked(1000, ge=1, le=MAX_SAMPLES)
    power_iterations: int = checked(20, ge=1, le=10**6)
    power_tolerance: float = checked(1e-3, gt=0.0)

    @property
    def label(self) -> str:
        """The probe's shard folder and registry name."""
        return self.name or self.type

    def selects(self, step: int) -> bool:
        if self.steps:
            return step in self.steps
        in_range = step >= self.from_step and (self.to_step is None or step < self.to_step)
        return in_range and (step - self.from_step) % self.every == 0


COMMON_PROBE_FIELDS = ("type", "name", "every", "steps", "from_step", "to_step", "eval_chunk")
# probes that evaluate losses at many points
LOSS_EVALUATION_FIELDS = (
    "bn_mode",
    "precision",
    "forward_batch",
)
PROBE_FIELDS = {
    "line": (
        *LOSS_EVALUATION_FIELDS,
        "interval",
        "resolution",
        "max_enlargements",
        "record",
        "directions",
        "store_direction",
    ),
    "interpolation": (*LOSS_EVALUATION_FIELDS, "alphas", "alpha_endpoints"),
    "hessian_norm": (
        "hessian_samples",
        "power_iterations",
        "power_tolerance",
    ),  # BatchNorm on batch statistics, fp32
}


def probe_violations(probes: Sequence[ProbeSpec]) -> Iterator[tuple[str, Any, str]]:
    """Fields set for another probe type, duplicate probe names, an empty ``record``."""
    seen: set[str] = set()
    for index, probe in enumerate(probes):
        own = set(COMMON_PROBE_FIELDS) | set(PROBE_FIELDS.get(probe.type, ()))
        for name, value, accepted in foreign_fields(probe, own):
            yield (
                f"probes[{index}].{name}",
                value,
                f"not a field of a {probe.type} probe; its fields: {accepted}",
            )
        if probe.type == "line" and not probe.record:
            yield f"probes[{index}].record", probe.record, "at least one of " + ", ".join(LOSS_SETS)
        if probe.type == "line" and line_points_bound(probe) > MAX_LINE_POINTS:
            yield f"probes[{index}].resolution", probe.resolution, _line_points_accepted(probe)
        if probe.label in seen:
            yield (
                f"probes[{index}].name",
                probe.name,
                f"a name other than {probe.label!r}, which an earlier probe has",
            )
        seen.add(probe.label)


def line_points_bound(probe: ProbeSpec) -> float:
    """The most points one line of ``probe`` measures (``jobs/probes/line.py``): the grid
    ``arange(-interval, interval, resolution)``, 0 and one s_upd per direction, and two half-shells
    of ``interval / resolution`` points per enlargement. Infinite when that ratio is not finite."""
    if not (probe.resolution > 0 and math.isfinite(probe.interval)):
        return 0  # a non-positive, infinite or NaN value fails its own check
    per_interval = probe.interval / probe.resolution
    if not math.isfinite(per_interval) or per_interval > MAX_LINE_POINTS:
        return math.inf
    directions = max(1, probe.directions)
    return (
        math.ceil(2 * per_interval - 1e-9)
        + 1
        + directions
        + probe.max_enlargements * 2 * math.ceil(per_interval - 1e-9)
    )


def line_memory_bytes(probe: ProbeSpec, train_samples: int, val_samples: int, batch_size: int) -> float:
    """Bytes of the per-sample losses one line of a line probe holds (float32 [directions,
    samples, points] per recorded set), at its most points; 0 for other probe types."""
    if probe.type != "line":
        return 0
    samples = {"train": train_samples, "val": val_samples, "direction": batch_size}
    recorded = sum(samples[name] for name in probe.record if name in samples)
    return 4 * max(1, probe.directions) * recorded * line_points_bound(probe)


def _line_points_accepted(probe: ProbeSpec) -> str:
    """The smallest resolution that keeps ``line_points_bound`` within MAX_LINE_POINTS (each
    ceil adds at most one point), rounded up to three digits."""
    halves = 2 + 2 * probe.max_enlargements
    room = MAX_LINE_POINTS - 2 - max(1, probe.directions) - probe.max_enlargements * 2
    smallest = _round_up(probe.interval * halves / room)
    return (
        f"a resolution >= {smallest:.3g} for interval {probe.interval:g} and max_enlargements "
        f"{probe.max_enlargements} "
        f"(at most {MAX_LINE_POINTS} points per line; a smaller interval or fewer enlargements also work)"
    )


def _round_up(number: float) -> float:
    """``number`` rounded up to three significant digits (so the value printed is large enough)."""
    if not math.isfinite(number) or number <= 0:
        return number
    scale = 10.0 ** (math.floor(math.log10(number)) - 2)
    return math.ceil(number / scale * (1 - 1e-12)) * scale


def model_violations(model: ModelSpec) -> Iterator[tuple[str, Any, str]]:
    """Hidden layers whose weights no node could hold."""
    weights = sum(width_in * width_out for width_in, width_out in zip(model.hidden, model.hidden[1:]))
    if weights > MAX_HIDDEN_WEIGHTS:
        yield (
            "model.hidden",
            model.hidden,
            f"hidden layers with at most {MAX_HIDDEN_WEIGHTS} weights between them (these have {weights})",
        )


SBATCH_MAIL_TYPES = (
    "NONE",
    "BEGIN",
    "END",
    "FAIL",
    "REQUEUE",
    "ALL",
    "INVALID_DEPEND",
    "STAGE_OUT",
    "TIME_LIMIT",
    "TIME_LIMIT_90",
    "TIME_LIMIT_80",
    "TIME_LIMIT_50",
    "ARRAY_TASKS",
)
SBATCH_EXTRA_OPTIONS = (
    "reservation",
    "licenses",
    "hint",
    "gres-flags",
    "begin",
    "nice",
    "wckey",
    "cluster-constraint",
    "mcs-label",
)
SBATCH_EXTRA_OPTION = re.compile(r"--(?P<name>[a-z][a-z-]*)(?:=(?P<value>.+))?", re.DOTALL)
SBATCH_VALUE = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


@dataclass
class SbatchOptions:
    """sbatch options passed through to the jobs: a cluster profile's ``sbatch:`` (every job of the
    cluster) and a run's ``resources.sbatch`` (its own, key by key over the profile's; see
    ``orchestrator/sbatch.py``). None leaves an option to the profile, or to Slurm. submitit writes
    each as ``#SBATCH --name=<shell-quoted value>``; :func:`sbatch_problems` says what may go there."""

    account: Optional[str] = None  # --account: whom the allocation is charged to
    qos: Optional[str] = None
    constraint: Optional[str] = None  # node features, e.g. "1080ti&ib"
    exclude: Optional[str] = None  # nodes never to use, e.g. "tcml-node[7-8]"
    nodelist: Optional[str] = None
    mail_type: Optional[str] = None  # comma-separated, from SBATCH_MAIL_TYPES
    mail_user: Optional[str] = None
    # "--name=value" or "--flag", name from SBATCH_EXTRA_OPTIONS
    extra: list[str] = field(default_factory=list)

    def parameters(self) -> dict[str, object]:
        """submitit's ``SlurmExecutor.update_parameters`` keywords for these options."""
        named = {key: value for key, value in vars(self).items() if key != "extra" and value is not None}
        extra = {
            match["name"]: match["value"] if match["value"] is not None else True
            for match in map(SBATCH_EXTRA_OPTION.fullmatch, self.extra)
            if match
        }
        return {**named, **({"additional_parameters": extra} if extra else {})}


def sbatch_extra_name(option: str) -> Optional[str]:
    """The option's name (``reservation`` of ``--reservation=x``); None for text that is no option."""
    match = SBATCH_EXTRA_OPTION.fullmatch(option)
    return match["name"] if match else None


def sbatch_problems(options: SbatchOptions) -> Iterator[tuple[str, Any, str]]:
    """(key under ``sbatch.``, value found, what is accepted) of each option that cannot go to sbatch."""
    for key, value in vars(options).items():
        if key == "extra" or value is None:
            continue
        if not isinstance(value, str) or not SBATCH_VALUE.fullmatch(value):
            yield (
                key,
                value,
                "one line of printable text (no newlines or control characters), at most 512 characters",
            )
    if options.mail_type is not None and not set(options.mail_type.split(",")) <= set(SBATCH_MAIL_TYPES):
        yield "mail_type", options.mail_type, "a comma-separated list of " + ", ".join(SBATCH_MAIL_TYPES)
    for index, option in enumerate(options.extra):
        name = sbatch_extra_name(option) if isinstance(option, str) else None
        if name not in SBATCH_EXTRA_OPTIONS or not SBATCH_VALUE.fullmatch(option):
            allowed = ", ".join(f"--{allowed_name}" for allowed_name in SBATCH_EXTRA_OPTIONS)
            yield (
                f"extra[{index}]",
                option,
                f"--name=value (or --flag), one line, name one of {allowed}; account, qos, constraint, "
                "exclude, nodelist, mail_type and mail_user have keys of their own",
            )


@dataclass
class ResourcesSpec:
    """What one job asks the scheduler for; checked against the cluster profile at plan time."""

    partition: Optional[str] = None  # None: the shortest partition of the profile that fits ``time``
    # None: profile default
    time: Optional[str] = checked(None, pattern=SLURM_TIME, pattern_hint=SLURM_TIME_HINT)
    gpus: int = checked(0, ge=0, le=1024)
    gpu_type: Optional[str] = None  # a gres type of the profile's nodes (1080ti); None: any
    cpus: int = checked(1, ge=1, le=100_000)
    mem: str = checked("4G", pattern=SLURM_MEM, pattern_hint="a Slurm memory size such as 4000, 500M or 16G")
    # jobs of ``time`` the run may take, requeued at each time limit
    segments: int = checked(1, ge=1, le=10_000)
    # this run's own, key by key over the profile's sbatch options
    sbatch: SbatchOptions = unfingerprinted(SbatchOptions)


def resources_violations(resources: ResourcesSpec) -> Iterator[tuple[str, Any, str]]:
    """sbatch options of the run that cannot go to sbatch (the checks of a profile's ``sbatch:``)."""
    for key, found, accepted in sbatch_problems(resources.sbatch):
        yield f"resources.sbatch.{key}", found, accepted


@dataclass
class ContainerSpec:
    image: Optional[str] = None  # a .sif image; None: the cluster profile's default (or none)
    binds: list[str] = unfingerprinted([])


@dataclass
class RunSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    probes: list[ProbeSpec] = field(default_factory=list)
    resources: ResourcesSpec = unfingerprinted(ResourcesSpec)
    container: ContainerSpec = field(default_factory=ContainerSpec)
    cluster: str = unfingerprinted("local")


def memory_megabytes(slurm_mem: str) -> float:
    """Megabytes of a Slurm memory size (a bare number is megabytes, as for ``--mem``)."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)", slurm_mem.strip()).groups()  # type: ignore[union-attr]  # spec-checked sizes
    return int(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def slurm_time(minutes: float) -> str:
    """``D-HH:MM:SS`` for a number of minutes (rounded up to whole seconds)."""
    days, rest = divmod(math.ceil(round(minutes * 60, 6)), 24 * 3600)
    hours, rest = divmod(rest, 3600)
    return f"{days}-{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def time_limit_minutes(slurm_time: str) -> float:
    """Minutes of a Slurm time string (the formats of ``SLURM_TIME``)."""
    days = 0
    rest = slurm_time
    if "-" in rest:
        day_text, rest = rest.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in rest.split(":")]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return days * 24 * 60 + hours * 60 + minutes + seconds / 60


def violations(
    spec: Any, known_names: Mapping[str, Sequence[str]], prefix: str = ""
) -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value found, what is accepted) for each value that fails its check (an infinite
    number or a string with control characters fails in any field)."""
    for spec_field in dataclasses.fields(spec):
        yield from field_violations(spec_field, getattr(spec, spec_field.name), known_names, prefix)
    if isinstance(spec, RunSpec):
        for name, section_check in SECTION_CHECKS.items():
            yield from section_check(getattr(spec, name))


def field_violations(
    spec_field: dataclasses.Field, value: Any, known_names: Mapping[str, Sequence[str]], prefix: str = ""
) -> Iterator[tuple[str, Any, str]]:
    """The violations of one field's own checks (nested dataclasses and lists of them included)."""
    key = f"{prefix}{spec_field.name}"
    check = spec_field.metadata.get("check")
    if dataclasses.is_dataclass(value):
        yield from violations(value, known_names, key + ".")
    elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        for index, item in enumerate(value):
            yield from violations(item, known_names, f"{key}[{index}].")
    elif value_problem(value) is not None:
        bounds = check.bounds() if check is not None else ""
        yield key, value, f"{value_problem(value)} {bounds}".strip()
    elif check is not None:
        accepted = check.violation(value, known_names)
        if accepted is not None:
            yield key, value, accepted


# The checks of a run spec that look at several fields of one section, after every field's own check.
SECTION_CHECKS: dict[str, Callable[[Any], Iterator[tuple[str, Any, str]]]] = {
    "model": model_violations,
    "probes": probe_violations,
    "optimizer": optimizer_violations,
    "resources": resources_violations,
}


def spec_to_yaml(spec: RunSpec) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(spec))


def spec_from_yaml(text: str) -> RunSpec:
    """The typed spec of a resolved ``spec.yaml`` (as written at submission)."""
    return _typed_spec(text)


def spec_from_json(text: str) -> RunSpec:
    """The typed spec of a resolved spec as JSON (the registry's ``runs.spec_json``)."""
    return _typed_spec(json.loads(text))


def _typed_spec(document: str | dict[str, Any]) -> RunSpec:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(RunSpec), OmegaConf.create(document))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]  # a structured config's dataclass
