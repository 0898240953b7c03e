"""The container runtime wrapper: how a job's Python is started inside a Singularity/Apptainer image.

submitit runs ``<python> -u -m submitit.core._submit FOLDER`` in the job; with a container the
"python" is ``singularity exec [--nv] --bind … IMAGE python3``. The argv is built here as a list;
the Slurm backend quotes every element when it pastes it into the sbatch script.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from jobs.spec import RunSpec
from orchestrator.home import OrchHome
from orchestrator.profiles import ClusterProfile

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
MUNGE_SOCKET_DIR = "/run/munge"  # scontrol (submitit's requeue) authenticates through it


def container_image(spec: RunSpec, profile: ClusterProfile) -> Optional[Path]:
    image = spec.container.image or profile.container.image
    return Path(image).expanduser() if image else None


def launcher_argv(spec: RunSpec, profile: ClusterProfile, home: OrchHome) -> tuple[str, ...]:
    """The argv that starts Python for the job; () runs the submitting interpreter on the node."""
    runtime, image = profile.container.runtime, container_image(spec, profile)
    if runtime is None or image is None:
        return ()
    argv = [runtime, "exec"]
    if spec.resources.gpus:
        argv.append("--nv")
    for bind in container_binds(spec, profile, home):
        argv += ["--bind", bind]
    return (*argv, str(image), profile.container.python)


def container_binds(spec: RunSpec, profile: ClusterProfile, home: OrchHome) -> list[str]:
    """Results (journals, checkpoints, submitit's folders), data, Slurm's config and munge, then the user's."""
    slurm_conf_dir = str(Path(os.environ.get("SLURM_CONF", DEFAULT_SLURM_CONF)).parent)
    paths = [str(profile.results_path(home)), spec.data.root or profile.data_root, slurm_conf_dir, MUNGE_SOCKET_DIR]
    binds = [str(Path(path).expanduser()) for path in paths if path]
    binds += [*profile.container.binds, *spec.container.binds]
    return list(dict.fromkeys(binds))
