"""Runtime estimates from the registry's history, and the partition, ``--time`` and segments they imply.

Seconds per step are measured on completed attempts of similar runs (same model and width, same
probes, same kind of GPU). A run whose sweep sets no ``resources.time`` gets the shortest partition
that fits its estimate times the profile's margin; a run longer than every partition is split into
segments of the longest partition's limit, each ending in a checkpoint and a requeue.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.spec import RunSpec, ResourcesSpec, slurm_time, spec_from_yaml, time_limit_minutes
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Attempt, RunState
from orchestrator.sweep import PlannedRun, SweepPlan

SimilarityKey = tuple[str, tuple[int, ...], tuple[str, ...], str, bool]
MINIMUM_JOB_MINUTES = 5  # startup (imports, data) is not in the per-step figure


def similarity_key(spec: RunSpec) -> SimilarityKey:
    probes = tuple(sorted(probe.type for probe in spec.probes))
    return (spec.model.name, tuple(spec.model.hidden), probes, spec.resources.gpu_type or "", spec.resources.gpus > 0)


def seconds_per_step(session: Session) -> dict[SimilarityKey, float]:
    """The median seconds per training step of completed attempts, per kind of run."""
    samples: dict[SimilarityKey, list[float]] = {}
    completed = select(Attempt).where(Attempt.state == RunState.COMPLETED, Attempt.started_time.is_not(None))
    for attempt in session.scalars(completed):
        steps = attempt.run.total_steps - (attempt.start_step or 0)
        if steps > 0 and attempt.ended_time:
            key = similarity_key(spec_from_yaml(attempt.run.spec_yaml))
            samples.setdefault(key, []).append((attempt.ended_time - attempt.started_time) / steps)
    return {key: statistics.median(values) for key, values in samples.items()}


@dataclass(frozen=True)
class Scheduled:
    run: PlannedRun  # with partition, time and segments from the estimate where the sweep left them open
    estimate_seconds: Optional[float]


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
    """Every run of ``plan`` scheduled with the registry's history (none without a registry)."""
    history = seconds_per_step(session) if session is not None else {}
    return [schedule(run, load_profile(run.spec.cluster), history) for run in plan.runs]
