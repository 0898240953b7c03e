"""The container layer: the recipe (parsed with spython), the exact runtime command line, a real
Slurm array through the stand-in ``singularity``, and ``orch container check``.

No Singularity/Apptainer binary can be installed on the development machine. The stand-in
``tests/cluster/bin/singularity`` logs its argv and runs the inner command on the host; the test
with the real binary runs wherever one is on PATH.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

from jobs.spec import ContainerSpec, ResourcesSpec, RunSpec
from orchestrator.containers import launcher_argv
from orchestrator.home import PROJECT_ROOT, OrchHome
from orchestrator.profiles import load_profile
from tests.cluster.minicluster import MiniCluster
from tests.conftest import Orch, write_sweep

RECIPE = PROJECT_ROOT / "containers" / "line-orchestrator.def"
STANDIN_DIR = PROJECT_ROOT / "tests" / "cluster" / "bin"


def test_recipe_parses_and_installs_project_submitit_and_slurm_client() -> None:
    recipe = SingularityParser(str(RECIPE)).recipe["spython-base"]

    assert recipe.fromHeader.startswith("pytorch/pytorch:") and "cuda" in recipe.fromHeader
    copied = {line.split()[0] for line in recipe.files}
    assert {"pyproject.toml", "orchestrator", "jobs", "configs", "db"} <= copied
    post = "\n".join(recipe.install)
    assert "slurm-client" in post and "munge" in post
    assert "pip install --no-cache-dir /opt/line-orchestrator" in post
    assert "PYTHONUNBUFFERED=1" in recipe.environ


def test_launcher_is_the_exact_singularity_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    profile = load_profile("tcml")
    spec = RunSpec(
        cluster="tcml",
        resources=ResourcesSpec(gpus=1),
        container=ContainerSpec(image="/images/a b.sif", binds=["/scratch:/scratch"]),
    )

    argv = launcher_argv(spec, profile, OrchHome(tmp_path))

    home_results = str(Path("~/orch-results").expanduser())
    assert argv == (
        "singularity",
        "exec",
        "--nv",
        "--bind",
        home_results,
        "--bind",
        str(Path("~/datasets").expanduser()),
        "--bind",
        "/etc/slurm",
        "--bind",
        "/run/munge",
        "--bind",
        "/scratch:/scratch",
        "/images/a b.sif",
        "python3",
    )
    # what submitit pastes into the sbatch script survives the shell
    assert shlex.split(shlex.join(argv)) == list(argv)
    assert "--nv" not in launcher_argv(
        RunSpec(cluster="tcml", container=spec.container), profile, OrchHome(tmp_path)
    )


@pytest.mark.slurm
def test_sweep_runs_through_the_container_wrapper(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "line orchestrator.sif"  # a space: every element must be quoted
    image.write_bytes(b"stand-in image bytes")
    log = tmp_path / "singularity-argv.log"
    monkeypatch.setenv("PATH", f"{STANDIN_DIR}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SINGULARITY_STANDIN_LOG", str(log))
    sweep = write_sweep(
        tmp_path,
        "boxed",
        f"""
name: boxed
include: [problems/digits_mlp.yaml]
base:
  cluster: mini-container
  container: {{image: "{image}"}}
  model: {{hidden: [8]}}
  # the mini node's GPUs have no CUDA
  training: {{steps: 20, checkpoint_every: 10, eval_every: 10, device: cpu}}
  resources: {{gpus: 1}}
grid:
  optimizer.lr: [0.1, 0.05]
""",
    )

    result = orch("submit", sweep, "--wait", "--json")

    assert result.exit_code == 0, result.stdout + result.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2  # one per array task
    folder = next((orch.home / "results" / "submitit").iterdir())
    slurm_conf_dir = str(mini_cluster.slurm_conf.parent)
    expected = [
        str(STANDIN_DIR / "singularity"),
        "exec",
        "--nv",
        "--bind",
        str(orch.home / "results"),
        "--bind",
        slurm_conf_dir,
        "--bind",
        "/run/munge",
        str(image),
        "python3",
        "-u",
        "-m",
        "submitit.core._submit",
        str(folder),
    ]
    assert calls == [expected, expected]
    assert {attempt["image_sha256"] for attempt in _attempts(orch)} == {
        hashlib.sha256(b"stand-in image bytes").hexdigest()
    }


def test_container_check_reports_runtime_image_and_inside(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "image.sif"
    image.write_bytes(b"stand-in image bytes")
    monkeypatch.setenv("PATH", f"{STANDIN_DIR}:{Path(sys.executable).parent}:{os.environ['PATH']}")

    report = orch.ok("container", "check", "--cluster", "tcml", "--image", image, "--json").json()

    assert report["runtime"] == str(STANDIN_DIR / "singularity")
    assert report["runtime_version"] == "singularity-ce version 0.0.0-standin"
    assert report["image_sha256"] == hashlib.sha256(b"stand-in image bytes").hexdigest()
    assert report["inside"]["torch"] and report["inside"]["python"].startswith("3.")
    assert report["problems"] == []
    missing = orch("container", "check", "--cluster", "tcml", "--image", tmp_path / "nope.sif", "--json")
    assert missing.exit_code == 1 and "does not exist" in missing.json()["problems"][0]


@pytest.mark.skipif(
    not (shutil.which("singularity") or shutil.which("apptainer"))
    or shutil.which("singularity") == str(STANDIN_DIR / "singularity"),
    reason="no Singularity/Apptainer binary on PATH",
)
def test_real_runtime_reports_its_version() -> None:
    import subprocess

    runtime = shutil.which("singularity") or shutil.which("apptainer")
    completed = subprocess.run([runtime, "--version"], capture_output=True, text=True, check=True)  # type: ignore[list-item]  # the test is skipped without a runtime
    assert "version" in completed.stdout


def _attempts(orch: Orch) -> list[dict]:
    return [
        orch.ok("show", run["id"], "--json").json()["attempts"][-1]
        for run in orch.ok("runs", "--json").json()
    ]


def test_container_check_says_plainly_what_is_missing_and_how_to_build_the_image(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Singularity or Apptainer on PATH (this machine's case) and no image: a readable report
    that says so, the command that builds the image from the project's recipe, exit 1."""
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    image = tmp_path / "missing.sif"

    shown = orch("container", "check", "--cluster", "tcml", "--image", image)
    report = orch("container", "check", "--cluster", "tcml", "--image", image, "--json")

    assert shown.exit_code == report.exit_code == 1
    lines = shown.stdout.splitlines()
    assert (
        lines[:2] == ["container check of cluster tcml", "  runtime  not found"] and lines[4] == "2 problems:"
    )
    runtime_problem, image_problem = report.json()["problems"]
    assert "no Singularity or Apptainer here" in runtime_problem
    assert (
        image_problem.endswith(f"singularity build --fakeroot {image} {RECIPE}")
        and f"  - {image_problem}" in lines
    )
