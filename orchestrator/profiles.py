"""Cluster profiles (``configs/cluster/<name>.yaml``): what a cluster offers and how runs get there."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.errors import SpecError
from orchestrator.home import CONFIGS_DIR, OrchHome

PROFILES_DIR = CONFIGS_DIR / "cluster"
RESULTS_UMASKS = {"private": 0o077, "group": 0o027}


@dataclass
class PartitionLimit:
    name: str
    max_time: str  # Slurm time, e.g. 1-00:00:00


@dataclass
class NodeShape:
    """What one node offers; None leaves that resource unchecked (a workstation of unknown shape)."""

    gpus: Optional[int] = None
    gpu_type: Optional[str] = None  # the gres type, e.g. 1080ti
    cpus: Optional[int] = None
    mem: Optional[str] = None  # Slurm memory size, e.g. 60G


@dataclass
class ContainerRuntime:
    runtime: Optional[str] = None  # singularity | apptainer; None: jobs run on the host's Python
    image: Optional[str] = None  # default image for runs whose container.image is unset
    binds: list[str] = field(default_factory=list)  # src[:dst[:opts]] bound into every job
    python: str = "python3"  # the interpreter inside the image


@dataclass
class ClusterProfile:
    name: str = "local"
    executor: str = "local"  # the default --executor for runs on this cluster: local | slurm
    results_root: Optional[str] = None  # None: <home>/results
    data_root: Optional[str] = None  # default data.root of runs on this cluster
    max_parallel: int = 2  # array parallelism cap (Slurm's %N; a slot count on the local executor)
    partitions: list[PartitionLimit] = field(default_factory=list)  # shortest first; empty: no partitions
    default_time: str = "00:15:00"  # --time of runs that do not set resources.time
    time_margin: float = 1.25  # an estimate times this must fit the partition's limit
    node: NodeShape = field(default_factory=NodeShape)
    container: ContainerRuntime = field(default_factory=ContainerRuntime)
    signal_delay_s: int = 90  # USR2 this long before the time limit: checkpoint and requeue
    lost_after_s: float = 600.0  # a job the scheduler does not know, silent this long, is LOST
    # Who may read what runs write (spec, checkpoints, shards, journals, logs): "private" (files
    # 0600, folders 0700: the owner only, like the registry) or "group" (0640/0750: a lab that
    # shares results through a common Unix group). Applied as the umask of submit and of the jobs.
    results_access: str = "private"

    @property
    def results_umask(self) -> int:
        return RESULTS_UMASKS[self.results_access]

    def results_path(self, home: OrchHome) -> Path:
        return Path(self.results_root).expanduser().absolute() if self.results_root else home.default_results_root

    def partition(self, name: str) -> Optional[PartitionLimit]:
        return next((partition for partition in self.partitions if partition.name == name), None)


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> ClusterProfile:
    """The profile ``name``; parsed once per process and file version (planning asks once per run)."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(str(path), "cluster", "unknown cluster profile", name, ", ".join(profile_names()))
    return _parse_profile(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _parse_profile(path: Path, _mtime_ns: int) -> ClusterProfile:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ClusterProfile), OmegaConf.load(path))
    except OmegaConfBaseException as error:
        key = str(getattr(error, "full_key", "") or "(file)")
        raise SpecError(str(path), key, "invalid profile", str(error).splitlines()[0], "the fields of ClusterProfile in orchestrator/profiles.py") from None
    profile: ClusterProfile = OmegaConf.to_object(merged)  # type: ignore[assignment]
    if profile.results_access not in RESULTS_UMASKS:
        raise SpecError(str(path), "results_access", "unknown access mode", profile.results_access, " or ".join(RESULTS_UMASKS))
    return profile
