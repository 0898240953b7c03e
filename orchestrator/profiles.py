"""Cluster profiles: what a cluster offers and how runs get there.

The shipped ones are ``configs/cluster/<name>.yaml``. A user's own, in the folders of
``$ORCH_CLUSTERS`` (``:``-separated) or else ``~/.config/orch/clusters/``, add profiles, or
override a shipped one key by key: ``~/.config/orch/clusters/tcml.yaml`` holding ``max_parallel: 8``
is TCML's profile with that one value changed. The first folder that has the name wins.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from jobs.spec import SLURM_MEM
from orchestrator.errors import SpecError
from orchestrator.home import OrchHome
from orchestrator.profile_files import PROFILES_DIR, profile_files, profile_names
from orchestrator.sbatch import SbatchOptions, sbatch_problems

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
    gpu_mem: Optional[str] = None  # one GPU's memory, e.g. 11G (a GTX 1080 Ti): bounds resources.pack


@dataclass
class ContainerRuntime:
    runtime: Optional[str] = None  # singularity | apptainer; None: jobs run on the host's Python
    image: Optional[str] = None  # default image for runs whose container.image is unset
    binds: list[str] = field(default_factory=list)  # src[:dst[:opts]] bound into every job
    python: str = "python3"  # the interpreter inside the image


NOTICE_EVENTS = ("finished", "first_failure", "stuck_pending", "digest")


@dataclass
class Notifications:
    """Notices about this cluster's sweeps, sent by the login-node side (sync), never by jobs.
    Off while ``urls`` is empty. Each URL is an apprise URL (``mailto://``, ``slack://``,
    ``matrix://``, ``ntfy://``, ``json://``; apprise's documentation lists them); credentials in
    them are never printed."""

    urls: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=lambda: list(NOTICE_EVENTS))
    pending_minutes: float = 120.0  # a run pending longer than this is stuck
    digest_hours: Optional[float] = None  # a digest of every sweep this often; None: no digest


@dataclass
class ClusterProfile:
    name: str = "local"
    executor: str = "local"  # the default --executor for runs on this cluster: local | slurm
    results_root: Optional[str] = None  # None: <home>/results
    data_root: Optional[str] = None  # default data.root of runs on this cluster
    max_parallel: int = 2  # array parallelism cap (Slurm's %N; a slot count on the local executor)
    # account, qos, constraint, mail, ... for every job; a run's resources.sbatch goes over it key by key
    sbatch: SbatchOptions = field(default_factory=SbatchOptions)
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
    notify: Notifications = field(default_factory=Notifications)

    @property
    def results_umask(self) -> int:
        return RESULTS_UMASKS[self.results_access]

    def results_path(self, home: OrchHome) -> Path:
        return (
            Path(self.results_root).expanduser().absolute()
            if self.results_root
            else home.default_results_root
        )

    def partition(self, name: str) -> Optional[PartitionLimit]:
        return next((partition for partition in self.partitions if partition.name == name), None)


def load_profile(name: str) -> ClusterProfile:
    """The profile ``name``; parsed once per process and file version (planning asks once per run)."""
    files = profile_files(name)
    if not files:
        raise SpecError(
            str(PROFILES_DIR / f"{name}.yaml"),
            "cluster",
            "unknown cluster profile",
            name,
            ", ".join(profile_names()),
        )
    return _parse_profile(name, tuple((path, path.stat().st_mtime_ns) for path in files))


@functools.lru_cache(maxsize=None)
def _parse_profile(name: str, files: tuple[tuple[Path, int], ...]) -> ClusterProfile:
    from omegaconf import OmegaConf  # here: status and sync read profiles only when they must
    from omegaconf.errors import OmegaConfBaseException

    merged = OmegaConf.structured(ClusterProfile(name=name))  # a profile is named by its file
    for path, _mtime_ns in files:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except OmegaConfBaseException as error:
            key = str(getattr(error, "full_key", "") or "(file)")
            raise SpecError(
                str(path),
                key,
                "invalid profile",
                str(error).splitlines()[0],
                "the fields of ClusterProfile in orchestrator/profiles.py",
            ) from None
    profile: ClusterProfile = OmegaConf.to_object(merged)  # type: ignore[assignment]  # a structured config's dataclass
    if profile.results_access not in RESULTS_UMASKS:
        raise SpecError(
            str(files[-1][0]),
            "results_access",
            "unknown access mode",
            profile.results_access,
            " or ".join(RESULTS_UMASKS),
        )
    for key, found, accepted in node_problems(profile.node):
        raise SpecError(str(files[-1][0]), f"node.{key}", "not a memory size", found, accepted)
    for key, found, accepted in notification_problems(profile.notify):
        raise SpecError(str(files[-1][0]), f"notify.{key}", "not a notification setting", found, accepted)
    for key, found, accepted in sbatch_problems(profile.sbatch):
        raise SpecError(
            str(files[-1][0]), f"sbatch.{key}", "not an sbatch option orch passes on", found, accepted
        )
    return profile


def node_problems(node: NodeShape) -> Iterator[tuple[str, object, str]]:
    for key in ("mem", "gpu_mem"):
        size = getattr(node, key)
        if size is not None and not re.fullmatch(SLURM_MEM, size):
            yield key, size, "a Slurm memory size such as 64000M or 11G, or null"


def notification_problems(notify: Notifications) -> Iterator[tuple[str, object, str]]:
    """(key, value found, what is accepted) of each notification setting that cannot be used."""
    unknown = [event for event in notify.events if event not in NOTICE_EVENTS]
    if unknown:
        yield "events", unknown, "a list of " + ", ".join(NOTICE_EVENTS)
    if not notify.pending_minutes > 0:
        yield "pending_minutes", notify.pending_minutes, "a number of minutes > 0"
    if notify.digest_hours is not None and not notify.digest_hours > 0:
        yield "digest_hours", notify.digest_hours, "a number of hours > 0, or null for no digest"
    for index, url in enumerate(notify.urls):
        if "://" not in url or any(character in url for character in "\n\r\t "):
            scheme = url.split("://")[0][:20] if "://" in url else "(none)"
            yield (
                f"urls[{index}]",
                f"a URL with scheme {scheme}",
                "an apprise URL such as json://host/path or mailto://...",
            )
