"""Runtime estimates from the registry's history, and the partition, ``--time`` and segments they imply.

Seconds per step are measured on completed attempts of similar runs (same model and width, same
probes with the same speed settings, same kind of GPU). A run whose sweep sets no
``resources.time`` gets the shortest partition that fits its estimate times the profile's margin;
a run longer than every partition is split into segments of the longest partition's limit, each
ending in a checkpoint and a requeue.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.spec import MAX_PACK, ResourcesSpec, RunSpec, memory_megabytes, slurm_time, time_limit_minutes
from orchestrator.planner import PlannedRun
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, Run, RunState
from orchestrator.sweep import SweepPlan

# a probe's type and the settings that change its speed and memory by integer factors
ProbeKind = tuple[str, str, int, str, str]
SimilarityKey = tuple[str, tuple[int, ...], tuple[ProbeKind, ...], str, bool]
PROBE_SPEED_DEFAULTS = (
    ("precision", "fp32"),
    ("points_per_forward", 1),
    ("memory_format", "contiguous"),
    ("compile_mode", "off"),
)
MINIMUM_JOB_MINUTES = 5  # startup (imports, data) is not in the per-step figure


def similarity_key(spec: RunSpec) -> SimilarityKey:
    return _similarity(
        spec.model.name,
        spec.model.hidden,
        [probe_kind(probe.type, partial(getattr, probe)) for probe in spec.probes],
        spec.resources.gpu_type,
        spec.resources.gpus,
    )


def recorded_similarity_key(spec: Mapping[str, Any]) -> SimilarityKey:
    """:func:`similarity_key` of a spec as the registry holds it (``runs.spec_json``, parsed)."""
    model, resources = spec["model"], spec["resources"]
    return _similarity(
        model["name"],
        model["hidden"],
        [probe_kind(probe["type"], probe.get) for probe in spec["probes"]],
        resources["gpu_type"],
        resources["gpus"],
    )


def probe_kind(probe_type: str, setting: Callable[[str, Any], Any]) -> ProbeKind:
    """A probe's type and speed settings (``setting(name, default)``); a spec recorded before a
    setting existed has its default."""
    precision, points_per_forward, memory_format, compile_mode = (
        setting(name, default) for name, default in PROBE_SPEED_DEFAULTS
    )
    return probe_type, precision, points_per_forward, memory_format, compile_mode


def _similarity(
    model: str, hidden: Sequence[int], probes: Sequence[ProbeKind], gpu_type: Optional[str], gpus: int
) -> SimilarityKey:
    return (model, tuple(hidden), tuple(sorted(probes)), gpu_type or "", gpus > 0)


def seconds_per_step(session: Session) -> dict[SimilarityKey, float]:
    """The median seconds per training step of completed attempts, per kind of run (one query;
    each run's spec parsed from its JSON once)."""
    samples: dict[SimilarityKey, list[float]] = {}
    completed = (
        select(
            Attempt.started_time,
            Attempt.ended_time,
            Attempt.start_step,
            Run.total_steps,
            Run.id,
            Run.spec_json,
        )
        .join(Run, Attempt.run_id == Run.id)
        .where(
            Attempt.state == RunState.COMPLETED,
            Attempt.started_time.is_not(None),
            Attempt.ended_time.is_not(None),
        )
    )
    keys: dict[str, SimilarityKey] = {}
    for started, ended, start_step, total_steps, run_id, spec_json in session.execute(completed):
        steps = total_steps - (start_step or 0)
        if steps > 0 and ended and started is not None:  # the query selects started attempts only
            if run_id not in keys:
                keys[run_id] = recorded_similarity_key(json.loads(spec_json))
            samples.setdefault(keys[run_id], []).append((ended - started) / steps)
    return {key: statistics.median(values) for key, values in samples.items()}


MemoryKey = tuple[SimilarityKey, str, int]  # and the data set and batch size
CUDA_CONTEXT_BYTES = 512 * 2**20  # a process's CUDA context and kernels, beside its tensors
ALLOCATOR_SLACK = 1.25  # PyTorch's caching allocator reserves more than its tensors hold
GPU_MEMORY_USABLE = 0.9  # of the card's memory: the driver and fragmentation take the rest


def memory_key(spec: RunSpec) -> MemoryKey:
    return similarity_key(spec), spec.data.name, spec.training.batch_size


def recorded_memory_key(spec: Mapping[str, Any]) -> MemoryKey:
    return recorded_similarity_key(spec), spec["data"]["name"], spec["training"]["batch_size"]


def peak_gpu_memory(session: Session) -> dict[MemoryKey, int]:
    """The largest peak GPU memory (``torch.cuda.max_memory_allocated``) a completed attempt of
    each kind of run measured (one query)."""
    measured = (
        select(Attempt.peak_gpu_bytes, Run.id, Run.spec_json)
        .join(Run, Attempt.run_id == Run.id)
        .where(Attempt.state == RunState.COMPLETED, Attempt.peak_gpu_bytes.is_not(None))
    )
    peaks: dict[MemoryKey, int] = {}
    keys: dict[str, MemoryKey] = {}
    for peak, run_id, spec_json in session.execute(measured):
        if run_id not in keys:
            keys[run_id] = recorded_memory_key(json.loads(spec_json))
        peaks[keys[run_id]] = max(peaks.get(keys[run_id], 0), peak or 0)
    return peaks


def offered_pack(peak_bytes: Optional[int], profile: ClusterProfile) -> Optional[int]:
    """How many runs of a measured peak fit one GPU of the profile's nodes, each with its own CUDA
    context and allocator slack (None when either is unknown)."""
    if peak_bytes is None or profile.node.gpu_mem is None:
        return None
    usable = memory_megabytes(profile.node.gpu_mem) * 2**20 * GPU_MEMORY_USABLE
    per_run = peak_bytes * ALLOCATOR_SLACK + CUDA_CONTEXT_BYTES
    return max(1, min(MAX_PACK, int(usable // per_run)))


@dataclass(frozen=True)
class Scheduled:
    run: PlannedRun  # with partition, time and segments from the estimate where the sweep left them open
    estimate_seconds: Optional[float]
    # runs that share a GPU by the peak memory similar runs measured (resources.pack)
    pack_offered: Optional[int] = None


def schedule(run: PlannedRun, profile: ClusterProfile, history: dict[SimilarityKey, float]) -> Scheduled:
    per_step = history.get(similarity_key(run.spec))
    if per_step is None:
        return Scheduled(run, None)
    estimate = per_step * run.spec.training.steps
    if run.time_was_given or not profile.partitions:
        return Scheduled(run, estimate)
    resources = fit_partition(run.spec.resources, estimate * profile.time_margin / 60, profile)
    return Scheduled(replace(run, spec=replace(run.spec, resources=resources)), estimate)


def fit_partition(resources: ResourcesSpec, needed_minutes: float, profile: ClusterProfile) -> ResourcesSpec:
    needed = max(needed_minutes, MINIMUM_JOB_MINUTES)
    by_length = sorted(profile.partitions, key=lambda p: time_limit_minutes(p.max_time))
    for partition in by_length:
        if needed <= time_limit_minutes(partition.max_time):
            return replace(resources, partition=partition.name, time=slurm_time(needed), segments=1)
    longest = by_length[-1]
    segments = math.ceil(needed / time_limit_minutes(longest.max_time))
    return replace(resources, partition=longest.name, time=longest.max_time, segments=segments)


def schedule_plan(session: Optional[Session], plan: SweepPlan) -> list[Scheduled]:
    """Every run of ``plan`` scheduled with the registry's history (none without a registry).
    Runs that share their model, probes, resources, cluster and length (the planner's runs share
    the section objects) are scheduled once."""
    history = seconds_per_step(session) if session is not None else {}
    peaks = peak_gpu_memory(session) if session is not None else {}
    if not history and not peaks:
        return [Scheduled(run, None) for run in plan.runs]
    outcomes: dict[tuple[Any, ...], Scheduled] = {}
    scheduled = []
    for run in plan.runs:
        spec = run.spec
        key = (
            id(spec.model),
            id(spec.probes),
            id(spec.resources),
            spec.cluster,
            spec.training.steps,
            spec.training.batch_size,
            spec.data.name,
            run.time_was_given,
        )
        if key not in outcomes:
            profile = load_profile(spec.cluster)
            outcome = schedule(run, profile, history)
            outcomes[key] = replace(outcome, pack_offered=offered_pack(peaks.get(memory_key(spec)), profile))
        outcome = outcomes[key]
        resources = outcome.run.spec.resources
        same = resources is spec.resources
        scheduled.append(
            Scheduled(
                run if same else replace(run, spec=replace(spec, resources=resources)),
                outcome.estimate_seconds,
                outcome.pack_offered,
            )
        )
    return scheduled
