"""A run's resources resolved against its cluster profile at plan time.

Impossible requests (unknown partition or GPU type, more than a node has, a time above the
partition's limit or too short to train in before the time-limit signal) are errors naming the
allowed values; where a profile does not state its nodes'
memory, FALLBACK_NODE_MEMORY caps ``mem``. What the spec leaves open is filled in:
``time`` from the profile's default, ``partition`` as the shortest partition that fits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from jobs.spec import ResourcesSpec, memory_megabytes, slurm_time, time_limit_minutes
from orchestrator.profiles import ClusterProfile

FALLBACK_NODE_MEMORY = (
    "64G"  # the cap on resources.mem and on a probe's memory where a profile leaves node.mem open
)
SIGNAL_SLACK_S = 60  # Slurm sends the time-limit signal up to a minute before it was asked to
START_S = 30  # a job's start (interpreter, torch, data, checkpoint) before its first step


class ResourceProblem(Exception):
    def __init__(self, key: str, found: Any, accepted: str) -> None:
        super().__init__(f"resources.{key}: {found!r}; accepted: {accepted}")
        self.key = key  # under resources., e.g. "gpus"
        self.found = found
        self.accepted = accepted


def resolve_resources(resources: ResourcesSpec, profile: ClusterProfile) -> ResourcesSpec:
    _check_node(resources, profile)
    time = resources.time or profile.default_time
    _check_time_to_train(time, profile)
    partition = resources.partition or _shortest_fitting_partition(time, profile)
    _check_partition(partition, time, resources, profile)
    return replace(resources, time=time, partition=partition)


def _check_node(resources: ResourcesSpec, profile: ClusterProfile) -> None:
    node = profile.node
    if node.gpus is not None and resources.gpus > node.gpus:
        raise ResourceProblem(
            "gpus", resources.gpus, f"0..{node.gpus} (GPUs per node of cluster {profile.name})"
        )
    if resources.gpu_type is not None and node.gpu_type is not None and resources.gpu_type != node.gpu_type:
        raise ResourceProblem(
            "gpu_type",
            resources.gpu_type,
            f"{node.gpu_type} or null (the GPU type of cluster {profile.name})",
        )
    if node.cpus is not None and resources.cpus > node.cpus:
        raise ResourceProblem(
            "cpus", resources.cpus, f"1..{node.cpus} (CPUs per node of cluster {profile.name})"
        )
    if node.mem is not None and memory_megabytes(resources.mem) > memory_megabytes(node.mem):
        raise ResourceProblem(
            "mem", resources.mem, f"at most {node.mem} (memory per node of cluster {profile.name})"
        )
    if node.mem is None and memory_megabytes(resources.mem) > memory_megabytes(FALLBACK_NODE_MEMORY):
        raise ResourceProblem(
            "mem",
            resources.mem,
            f"at most {FALLBACK_NODE_MEMORY} (cluster {profile.name} does not state its nodes' memory)",
        )


def _check_time_to_train(time: str, profile: ClusterProfile) -> None:
    """A job is signalled ``signal_delay_s`` (and up to :data:`SIGNAL_SLACK_S` more) before its
    limit and then checkpoints and requeues: a limit within that and its start leaves no time to
    train, and the run requeues until submitit gives up."""
    shortest_s = profile.signal_delay_s + SIGNAL_SLACK_S + START_S
    if time_limit_minutes(time) * 60 < shortest_s:
        raise ResourceProblem(
            "time",
            time,
            f"at least {slurm_time(shortest_s / 60)} on cluster {profile.name}: its jobs are signalled "
            f"{profile.signal_delay_s} s "
            f"(signal_delay_s) and up to {SIGNAL_SLACK_S} s more before the limit to checkpoint and "
            f"requeue, and take about {START_S} s to start",
        )


def node_memory(profile: ClusterProfile) -> tuple[float, str]:
    """Bytes one job may hold at most, and where that number comes from (in words): the node's
    memory when the profile knows it, else FALLBACK_NODE_MEMORY."""
    if profile.node.mem is not None:
        return memory_megabytes(
            profile.node.mem
        ) * 2**20, f"{profile.node.mem} (the memory of a node of cluster {profile.name})"
    return memory_megabytes(
        FALLBACK_NODE_MEMORY
    ) * 2**20, f"{FALLBACK_NODE_MEMORY} (cluster {profile.name} does not state its nodes' memory)"


def _shortest_fitting_partition(time: str, profile: ClusterProfile) -> Optional[str]:
    if not profile.partitions:
        return None
    fitting = [p for p in profile.partitions if time_limit_minutes(time) <= time_limit_minutes(p.max_time)]
    if not fitting:
        raise ResourceProblem(
            "time", time, f"at most {_longest(profile)} (the longest partition of cluster {profile.name})"
        )
    return min(fitting, key=lambda p: time_limit_minutes(p.max_time)).name


def _check_partition(
    partition: Optional[str], time: str, resources: ResourcesSpec, profile: ClusterProfile
) -> None:
    if not profile.partitions or partition is None:
        return  # a cluster without partitions (the local executor) takes any name
    limit = profile.partition(partition)
    if limit is None:
        names = ", ".join(p.name for p in profile.partitions)
        raise ResourceProblem(
            "partition", partition, f"{names} or null (the shortest that fits) on cluster {profile.name}"
        )
    if time_limit_minutes(time) > time_limit_minutes(limit.max_time):
        raise ResourceProblem(
            "time",
            resources.time,
            f"at most {limit.max_time} on partition {partition} (or a longer partition)",
        )


def _longest(profile: ClusterProfile) -> str:
    return max(profile.partitions, key=lambda p: time_limit_minutes(p.max_time)).max_time
