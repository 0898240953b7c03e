"""The container runtime wrapper: how a job's Python is started inside a Singularity/Apptainer image.

submitit runs ``<python> -u -m submitit.core._submit FOLDER`` in the job; with a container the
"python" is ``singularity exec [--nv] --bind … IMAGE python3``. The argv is built here as a list;
the Slurm backend quotes every element when it pastes it into the sbatch script.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from jobs.atomic import publish_json, sha256_file
from jobs.spec import RunSpec
from orchestrator.home import CONFIGS_DIR, OrchHome
from orchestrator.profiles import ClusterProfile

RECIPE = CONFIGS_DIR.parent / "containers" / "line-orchestrator.def"  # the image's Singularity recipe
RUNTIMES = ("singularity", "apptainer")  # Apptainer is Singularity's successor: same commands
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
    """Results (journals, checkpoints, submitit's folders), data, Slurm's config and munge, then the
    user's."""
    slurm_conf_dir = str(Path(os.environ.get("SLURM_CONF", DEFAULT_SLURM_CONF)).parent)
    paths = [
        str(profile.results_path(home)),
        spec.data.root or profile.data_root,
        slurm_conf_dir,
        MUNGE_SOCKET_DIR,
    ]
    binds = [str(Path(path).expanduser()) for path in paths if path]
    binds += [*profile.container.binds, *spec.container.binds]
    return list(dict.fromkeys(binds))


def image_sha256(image: Path, cache_file: Path) -> str:
    """sha256 of an image file, cached by (path, mtime, size): a multi-GB .sif is hashed once."""
    stat = image.stat()
    key = f"{image.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if key not in cache:
        cache[key] = sha256_file(image)
        publish_json(cache_file, cache)
    return cache[key]


@dataclass(frozen=True)
class ContainerReport:
    runtime: Optional[str]  # the binary found on PATH
    runtime_version: Optional[str]
    image: Optional[str]
    image_sha256: Optional[str]
    inside: dict[str, str]  # Python, torch, CUDA as the image reports them
    problems: list[str]


INSIDE_PROBE = (
    "import json, platform, torch, submitit; "
    "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__, "
    "'cuda': str(torch.version.cuda), 'cuda_available': str(torch.cuda.is_available()), 'submitit': "
    "submitit.__version__}))"
)


def check_container(profile: ClusterProfile, image: Optional[Path], cache_file: Path) -> ContainerReport:
    """What ``orch container check`` reports: the runtime, its version, the image and what runs inside."""
    problems: list[str] = []
    runtime = shutil.which(profile.container.runtime) if profile.container.runtime else None
    if profile.container.runtime is None:
        problems.append(f"cluster {profile.name} runs jobs without a container (container.runtime is null)")
    elif runtime is None:
        others = [name for name in RUNTIMES if name != profile.container.runtime and shutil.which(name)]
        problems.append(
            f"{profile.container.runtime} is not on PATH: this machine cannot run the image"
            + (
                f" ({others[0]} is: set container.runtime: {others[0]} in the cluster profile)"
                if others
                else " (no Singularity or Apptainer here: run this check on a machine that has one, e.g. a "
                "cluster node; `module load singularity` where the cluster uses modules)"
            )
        )
    version = _output([runtime, "--version"], problems) if runtime else None
    digest = None
    if image is None:
        problems.append(
            f"no image: set container.image in the run spec or in configs/cluster/{profile.name}.yaml"
        )
    elif not image.is_file():
        problems.append(
            f"image {image} does not exist; build it from the recipe on a machine with Singularity: "
            f"{build_command(profile, image)}"
        )
    else:
        digest = image_sha256(image, cache_file)
    inside: dict[str, str] = {}
    if runtime and digest:
        probe = _output([runtime, "exec", str(image), profile.container.python, "-c", INSIDE_PROBE], problems)
        inside = json.loads(probe.splitlines()[-1]) if probe else {}
    return ContainerReport(runtime, version, str(image) if image else None, digest, inside, problems)


def build_command(profile: ClusterProfile, image: Path) -> str:
    """The command that builds the image from the project's recipe (``--fakeroot``: as a user)."""
    return shlex.join(
        [profile.container.runtime or RUNTIMES[0], "build", "--fakeroot", str(image), str(RECIPE)]
    )


def report_lines(report: ContainerReport, cluster: str) -> list[str]:
    """``orch container check`` for a person: what was found, then each problem on its own line."""
    inside = (
        ", ".join(f"{key} {value}" for key, value in report.inside.items())
        or "not run (needs the runtime and the image)"
    )
    lines = [
        f"container check of cluster {cluster}",
        f"  runtime  {report.runtime or 'not found'}"
        + (f" ({report.runtime_version})" if report.runtime_version else ""),
        f"  image    {report.image or 'none set'}"
        + (f" (sha256 {report.image_sha256[:12]}…)" if report.image_sha256 else ""),
        f"  inside   {inside}",
    ]
    if not report.problems:
        return [*lines, "ok: jobs of this cluster can run in this image"]
    return [
        *lines,
        f"{len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}:",
        *(f"  - {problem}" for problem in report.problems),
    ]


def _output(argv: list[str], problems: list[str]) -> Optional[str]:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        problems.append(f"{shlex.join(argv)}: {error}")
        return None
    if completed.returncode != 0:
        problems.append(
            f"{shlex.join(argv)} exited {completed.returncode}: {completed.stderr.strip()[-500:]}"
        )
        return None
    return completed.stdout.strip()
