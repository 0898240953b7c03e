"""The fields of each probe type, one dataclass per type, registered under the type's name.

The probe itself (torch) sits in ``jobs/probes/<module>.py`` and gets its own dataclass here
(:meth:`SpecKinds.typed`); this module imports no torch because the login node validates sweeps,
bounds a line's memory and computes run ids with these fields. Sweep files and ``spec.yaml`` write
each probe as one mapping: ``jobs.spec.ProbeSpec`` is the union of these classes, and a field of
another type may stand there only at its default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from jobs.schema import MAX_LINE_POINTS, MAX_SAMPLES, MAX_STEPS, KindFields, Problems, SpecKinds, checked

LOSS_SETS = ("train", "val", "direction")
PRECISIONS = ("fp32", "tf32", "bf16")
MEMORY_FORMATS = ("contiguous", "channels_last")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # torch.compile's modes


@dataclass
class ProbeFields(KindFields):
    """A landscape probe run inside the training loop (``jobs/probes``).

    A probe at step ``t`` looks at the update from θ_t to θ_{t+1}. Which steps: ``steps`` when
    given, else every ``every``-th step from ``from_step`` up to (not including) ``to_step``.
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

    @property
    def label(self) -> str:
        """The probe's shard folder and registry name."""
        return self.name or self.type

    def selects(self, step: int) -> bool:
        if self.steps:
            return step in self.steps
        in_range = step >= self.from_step and (self.to_step is None or step < self.to_step)
        return in_range and (step - self.from_step) % self.every == 0


PROBE_KINDS: SpecKinds[ProbeFields] = SpecKinds(ProbeFields, "type", "a {} probe")


def eval_chunk_field() -> Any:
    """Samples per forward that share BatchNorm statistics; None: training.batch_size."""
    return checked(None, ge=1, le=MAX_SAMPLES)


@dataclass
class LossEvaluationFields(ProbeFields):
    """What the probes that evaluate losses at many points share."""

    # batch: BatchNorm on batch statistics (train mode)
    bn_mode: str = checked("batch", choices=("batch", "eval"))
    eval_chunk: Optional[int] = eval_chunk_field()
    # tf32 (GPU matmuls) or bf16 autocast: explicit only
    precision: str = checked("fp32", choices=PRECISIONS)
    # samples per forward (speed only); None: see jobs/probes/functional.py
    forward_batch: Optional[int] = checked(None, ge=1, le=MAX_SAMPLES, fingerprint=False)
    # points per forward, their parameter sets stacked (vmap); speed only, float rounding aside
    points_per_forward: int = checked(1, ge=1, le=MAX_LINE_POINTS, fingerprint=False)
    # channels_last: NHWC convolutions (a GPU's tensor cores); speed only, float rounding aside
    memory_format: str = checked("contiguous", choices=MEMORY_FORMATS, fingerprint=False)
    # torch.compile of the forward (reduce-overhead: and CUDA graphs on a GPU), its kernels cached in
    # the run's folder for the requeued jobs; off: eager. Speed only, float rounding aside
    compile_mode: str = checked("off", choices=COMPILE_MODES, fingerprint=False)


def plain_float32(probe: LossEvaluationFields) -> bool:
    """Whether ``probe`` measures by the plain float32 path: eager, one point per forward,
    contiguous tensors, float32 (bit-identical between runs and resumes)."""
    plain_layout = probe.points_per_forward == 1 and probe.memory_format == "contiguous"
    return probe.precision == "fp32" and plain_layout and probe.compile_mode == "off"


@PROBE_KINDS.register("line")
@dataclass
class LineFields(LossEvaluationFields):
    """The loss along the update direction (jobs/probes/line.py)."""

    interval: float = checked(0.5, gt=0.0)
    resolution: float = checked(0.006, gt=0.0)
    # every n-th line measured other than by the plain float32 path (tf32, bf16, stacked points,
    # channels_last, compiled) is measured again by it and the shard says how far apart they are
    # (jobs/probes/precision.py); 0: never. Not part of the run's id: the measured lines are the
    # same, the check only adds a report beside them
    precision_check_every: int = checked(0, ge=0, le=MAX_STEPS, fingerprint=False)
    max_enlargements: int = checked(5, ge=0, le=1000)
    record: list[str] = checked(list(LOSS_SETS), choices=LOSS_SETS)
    # 0: the update direction; k: k noisy gradient directions (Fig. 8)
    directions: int = checked(0, ge=0, le=10_000)
    store_direction: bool = False

    def problems(self) -> Problems:
        if not self.record:
            yield "record", self.record, "at least one of " + ", ".join(LOSS_SETS)
        if line_points_bound(self) > MAX_LINE_POINTS:
            yield "resolution", self.resolution, _line_points_accepted(self)


@PROBE_KINDS.register("interpolation")
@dataclass
class InterpolationFields(LossEvaluationFields):
    """The loss between consecutive iterates (jobs/probes/interpolation.py)."""

    alphas: int = checked(10, ge=2, le=10**6)
    alpha_endpoints: str = checked("inclusive", choices=("inclusive", "exclusive"))


@PROBE_KINDS.register("hessian_norm")
@dataclass
class HessianNormFields(ProbeFields):
    """The Hessian's spectral norm by power iteration (jobs/probes/hessian.py): BatchNorm on batch
    statistics, float32."""

    eval_chunk: Optional[int] = eval_chunk_field()
    hessian_samples: int = checked(1000, ge=1, le=MAX_SAMPLES)
    power_iterations: int = checked(20, ge=1, le=10**6)
    power_tolerance: float = checked(1e-3, gt=0.0)


def line_points_bound(probe: LineFields) -> float:
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


def line_memory_bytes(probe: ProbeFields, train_samples: int, val_samples: int, batch_size: int) -> float:
    """Bytes of the per-sample losses one line of a line probe holds (float32 [directions,
    samples, points] per recorded set), at its most points; 0 for other probe types."""
    if probe.type != "line":
        return 0
    line = PROBE_KINDS.typed(probe)
    assert isinstance(line, LineFields)
    samples = {"train": train_samples, "val": val_samples, "direction": batch_size}
    recorded = sum(samples[name] for name in line.record if name in samples)
    return 4 * max(1, line.directions) * recorded * line_points_bound(line)


def _line_points_accepted(probe: LineFields) -> str:
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
