"""A run's own sbatch options (``resources.sbatch``): checked at plan time like a profile's, put key
by key over the profile's, in the ``#SBATCH`` lines of its job script, and never in one array with
a run whose jobs get other options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.spec import SbatchOptions
from orchestrator import launch
from orchestrator.executors import ArraySubmission, get_backend
from orchestrator.sbatch import effective_sbatch
from tests.conftest import Orch, write_sweep

PROFILE = "lab"  # a user's own cluster profile: the local executor, with sbatch options for every job
PROFILE_TEXT = """\
name: lab
executor: local
max_parallel: 2
default_time: "00:15:00"
sbatch:
  account: lab-mz
  qos: normal
  mail_type: FAIL
  extra: [--nice=5, --hint=nomultithread]
"""


@pytest.fixture
def lab_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "clusters"
    folder.mkdir()
    (folder / f"{PROFILE}.yaml").write_text(PROFILE_TEXT)
    monkeypatch.setenv("ORCH_CLUSTERS", str(folder))
    return folder


def test_a_runs_options_go_over_the_profiles_key_by_key() -> None:
    profile = SbatchOptions(
        account="lab-mz",
        qos="normal",
        exclude="tcml-node[7-8]",
        extra=["--nice=5", "--hint=nomultithread", "--nice=6"],
    )
    run = SbatchOptions(
        qos="gpu-long", constraint="1080ti", mail_type="END", extra=["--reservation=paper", "--nice=10"]
    )

    merged = effective_sbatch(profile, run)

    assert merged == SbatchOptions(
        account="lab-mz",
        qos="gpu-long",
        constraint="1080ti",
        exclude="tcml-node[7-8]",
        mail_type="END",
        extra=["--hint=nomultithread", "--reservation=paper", "--nice=10"],
    )
    # a run without options of its own: the profile's
    assert effective_sbatch(profile, SbatchOptions()) == profile
    assert effective_sbatch(SbatchOptions(), run) == run
    assert profile.qos == "normal" and run.extra == ["--reservation=paper", "--nice=10"]  # neither is changed


BAD = [
    (
        "base:\n  resources: {sbatch: {qos: gpu-long, mail_type: SOMETIMES}}\n",
        "base.resources.sbatch.mail_type",
        "'SOMETIMES'",
        "a comma-separated list of NONE, BEGIN, END",
    ),
    (
        'grid:\n  resources.sbatch.mail_type: [END, "END,SOMETIMES"]\n  optimizer.lr: [0.1, 0.2]\n',
        "grid.resources.sbatch.mail_type",
        "'END,SOMETIMES'",
        "a comma-separated list of",
    ),
    (
        "base:\n  resources: {sbatch: {extra: [--nice=5, --wrap=evil]}}\n",
        "base.resources.sbatch.extra[1]",
        "'--wrap=evil'",
        "name one of --reservation, --licenses",
    ),
    (
        'base:\n  resources: {sbatch: {account: "lab\\nrm -rf ~"}}\n',
        "base.resources.sbatch.account",
        "'lab\\nrm -rf ~'",
        "text without control characters",
    ),
    (
        "base:\n  resources: {sbatch: {partition: day}}\n",
        "base.resources.sbatch.partition: unknown key",
        "'partition'",
        "account, qos, constraint, exclude, nodelist, mail_type, mail_user, extra",
    ),
]


@pytest.mark.parametrize("command", ["plan", "submit"])
@pytest.mark.parametrize(
    ("text", "key", "found", "accepted"),
    BAD,
    ids=["mail_type", "swept mail_type", "extra option", "newline", "unknown key"],
)
def test_an_sbatch_option_sbatch_must_not_get_is_refused_at_plan_time(
    orch: Orch, tmp_path: Path, command: str, text: str, key: str, found: str, accepted: str
) -> None:
    sweep = write_sweep(tmp_path, "bad", f"name: bad\ninclude: [problems/digits_mlp.yaml]\n{text}")

    refused = orch(command, sweep)

    assert refused.exit_code == 2, refused.stdout + refused.stderr
    message = refused.stderr
    assert (
        message.startswith(f"orch: error: {sweep}: ")
        and key in message
        and found in message
        and accepted in message
    ), message
    assert not orch.registry.exists() and not (orch.home / "results").exists()


class RecordingBackend:
    """The debug backend (jobs run in this process), keeping each array it is handed."""

    def __init__(self, arrays: list[ArraySubmission]) -> None:
        self.arrays = arrays
        self.debug = get_backend("debug")

    def submit(self, array: ArraySubmission) -> Any:
        self.arrays.append(array)
        return self.debug.submit(array)


def job_script(array: ArraySubmission, folder: Path) -> list[str]:
    """The lines of the job script sbatch would get for ``array`` (submitit's own script builder,
    fed the parameters the Slurm backend gives it)."""
    from submitit.slurm.slurm import _make_sbatch_string

    from orchestrator.executors.slurm import chunk_name, sbatch_parameters

    settings = array.settings
    parameters = sbatch_parameters(
        settings.resources,
        chunk_name(settings.name, 0),
        settings.max_parallel,
        settings.signal_delay_s,
        settings.sbatch,
    )
    return _make_sbatch_string(command="python -m x", folder=str(folder), **parameters).splitlines()  # type: ignore[arg-type]  # submitit's untyped **kwargs


def test_a_runs_sbatch_options_reach_its_job_script_and_split_arrays(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_profile: Path
) -> None:
    """Three runs: one asks for the profile's QOS by name, one leaves it to the profile, one asks
    for another QOS and its own mail and nice level. The first two get the same options and share
    an array; the third goes alone, with its options over the profile's in its #SBATCH lines."""
    arrays: list[ArraySubmission] = []
    monkeypatch.setattr(launch, "get_backend", lambda name: RecordingBackend(arrays))
    sweep = write_sweep(
        tmp_path,
        "qos",
        f"""\
name: qos
include: [problems/digits_mlp.yaml]
base:
  cluster: {PROFILE}
  model: {{hidden: [8]}}
  training: {{steps: 4, checkpoint_every: 2, eval_every: 2, device: cpu}}
  resources: {{gpus: 1, sbatch: {{constraint: "1080ti"}}}}
zip:
  optimizer.lr: [0.1, 0.2, 0.3]
  resources.sbatch.qos: [normal, null, gpu-long]
  resources.sbatch.mail_type: [null, null, "END,FAIL"]
  resources.sbatch.extra: [[], [], [--nice=10, --reservation=paper deadline]]
""",
    )

    orch.ok("submit", sweep, "--executor", "debug")

    assert sorted(len(array.requests) for array in arrays) == [1, 2]
    shared, alone = sorted(arrays, key=lambda array: len(array.requests), reverse=True)
    assert shared.settings.sbatch == SbatchOptions(
        account="lab-mz",
        qos="normal",
        constraint="1080ti",
        mail_type="FAIL",
        extra=["--nice=5", "--hint=nomultithread"],
    )
    assert alone.settings.sbatch == SbatchOptions(
        account="lab-mz",
        qos="gpu-long",
        constraint="1080ti",
        mail_type="END,FAIL",
        extra=["--hint=nomultithread", "--nice=10", "--reservation=paper deadline"],
    )
    script = job_script(alone, tmp_path)
    for line in (
        "#SBATCH --account=lab-mz",
        "#SBATCH --qos=gpu-long",
        "#SBATCH --constraint=1080ti",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --nice=10",
        "#SBATCH --hint=nomultithread",
        "#SBATCH --reservation='paper deadline'",
        "#SBATCH --gres=gpu:1",
    ):
        assert line in script, line
    assert "#SBATCH --nice=5" not in script and "#SBATCH --qos=normal" not in script
    assert {"#SBATCH --qos=normal", "#SBATCH --nice=5", "#SBATCH --mail-type=FAIL"} <= set(
        job_script(shared, tmp_path)
    )
    runs = orch.ok("runs", "--json").json()
    # device: cpu trains on this machine whatever resources.gpus says
    assert [run["state"] for run in runs] == ["COMPLETED"] * 3
    specs = {
        orch.ok("show", run["id"], "--json").json()["spec"]["resources"]["sbatch"]["qos"] for run in runs
    }
    assert specs == {"normal", None, "gpu-long"}  # each run records its own options, not the profile's


@pytest.mark.slurm
def test_a_runs_sbatch_options_are_accepted_by_sbatch(orch: Orch, mini_cluster: Any, tmp_path: Path) -> None:
    """On a real Slurm: runs with different nice levels go as two arrays whose scripts carry them,
    and sbatch takes the options (the runs complete)."""
    sweep = write_sweep(
        tmp_path,
        "nice",
        """\
name: nice
include: [problems/digits_mlp.yaml]
base:
  cluster: mini
  model: {hidden: [8]}
  training: {steps: 10, checkpoint_every: 5, eval_every: 5, device: cpu}
  resources: {gpus: 1, gpu_type: 1080ti, mem: 2G, sbatch: {mail_type: "END,FAIL", mail_user: me@example.org}}
zip:
  optimizer.lr: [0.1, 0.2]
  resources.sbatch.extra: [[--nice=10], [--nice=20]]
""",
    )

    submitted = orch("submit", sweep, "--wait", "--json")

    assert submitted.exit_code == 0, submitted.stdout + submitted.stderr
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 2}
    scripts = [
        path.read_text().splitlines()
        for path in (orch.home / "results" / "submitit").rglob("*_submission.sh")
    ]
    nice_lines = sorted(line for script in scripts for line in script if line.startswith("#SBATCH --nice"))
    assert nice_lines == ["#SBATCH --nice=10", "#SBATCH --nice=20"]
    assert all(
        "#SBATCH --mail-type=END,FAIL" in script and "#SBATCH --mail-user=me@example.org" in script
        for script in scripts
    )
