"""Cluster profiles (``configs/cluster/<name>.yaml``): where results and data live, how to run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.errors import SpecError
from orchestrator.home import CONFIGS_DIR, OrchHome

PROFILES_DIR = CONFIGS_DIR / "cluster"


@dataclass
class ClusterProfile:
    name: str = "local"
    results_root: Optional[str] = None  # None: <home>/results
    data_root: Optional[str] = None  # default data.root of runs on this cluster
    max_parallel: int = 2  # array parallelism cap (Slurm's %N; a slot count on the local executor)

    def results_path(self, home: OrchHome) -> Path:
        return Path(self.results_root).expanduser().absolute() if self.results_root else home.default_results_root


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> ClusterProfile:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(str(path), "cluster", "unknown cluster profile", name, ", ".join(profile_names()))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ClusterProfile), OmegaConf.load(path))
    except OmegaConfBaseException as error:
        raise SpecError(str(path), str(getattr(error, "full_key", "") or "(file)"), "invalid profile", str(error).splitlines()[0], "see orchestrator/profiles.py") from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
