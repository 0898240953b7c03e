"""``orch analyze --executor slurm`` on the real single-node cluster: one array, a measured time,
no blocking without ``--wait``, failures and refusals reported without a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cluster.minicluster import MiniCluster, slurm_run
from tests.conftest import Orch, write_sweep

pytestmark = pytest.mark.slurm

WAIT_SECONDS = 300
PROBED = (
    "  model: {hidden: [16]}\n"
    "  training: {steps: 30, checkpoint_every: 10, eval_every: 10}\n"
    "  probes: [{type: line, every: 10, resolution: 0.02}]\n"
)


def slurm_sweep(tmp_path: Path, name: str, base: str, grid: str = "") -> Path:
    text = f"name: {name}\ninclude: [problems/digits_mlp.yaml]\nbase:\n  cluster: mini\n{base}"
    return write_sweep(tmp_path, name, text + (f"grid:\n{grid}" if grid else ""))


def trained(orch: Orch, tmp_path: Path) -> list[str]:
    """Three runs of the mini cluster with line shards at steps 0, 10, 20, trained in this process
    (the analyses are what goes to Slurm here)."""
    sweep = slurm_sweep(tmp_path, "probed", PROBED, "  optimizer.lr: [0.1, 0.05, 0.02]\n")
    orch.ok("submit", sweep, "--executor", "debug")
    assert orch.ok("status", "--json").json()[0]["counts"] == {"COMPLETED": 3}
    return [run["id"] for run in orch.ok("runs", "--json").json()]


def wait_until(condition, timeout_seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(1.0)


def test_analyses_go_out_as_one_array_with_a_measured_time_and_orch_returns(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    run_ids = trained(orch, tmp_path)

    submitted = orch.ok("analyze", "probed", "--figure", "polyfit", "--executor", "slurm", "--json").json()

    assert submitted["runs"] == 3 and len(submitted["arrays"]) == 1
    (array,) = submitted["arrays"]
    assert array["job_name"].startswith("orch:analyze:polyfit:") and array["job_ids"] == [
        f"{array['array_id']}_{task}" for task in range(3)
    ]
    # 3 small shards: the floor
    assert (array["partition"], array["time"], array["time_capped"]) == (
        "test",
        "0-00:07:00",
        False,
    )
    assert sorted(task["run"] for task in array["tasks"]) == sorted(run_ids)
    assert all(task["shards"] == 3 and task["bytes"] > 0 for task in array["tasks"]), array["tasks"]
    assert submitted["watch"][0] == f"squeue --jobs {array['array_id']}" and submitted["watch"][1].startswith(
        f"sacct --jobs {array['array_id']} "
    )
    script = next(Path(array["submitit_folder"]).glob("*_submission.sh")).read_text()
    assert (
        "#SBATCH --array=0-2%2" in script
        and "#SBATCH --time=7\n" in script
        and "#SBATCH --partition=test" in script
    )
    # no GPU for an analysis
    assert f"#SBATCH --job-name={array['job_name']}" in script and "--gres" not in script

    reports = [Path(task["report"]) for task in array["tasks"]]
    wait_until(lambda: all(report.is_file() for report in reports))
    assert all(json.loads(report.read_text())["summary"]["lines"] == 3 for report in reports)
    names = slurm_run(
        mini_cluster, "sacct", "-X", "-n", "-P", "-o", "JobName", "-j", array["array_id"]
    ).stdout.split()
    assert names and set(names) == {array["job_name"]}  # squeue and sacct say what the jobs are


def test_without_wait_it_prints_what_it_submitted_and_with_wait_every_file(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    trained(orch, tmp_path)

    printed = orch.ok("analyze", "probed", "--figure", "polyfit", "--executor", "slurm").stdout
    waited = orch.ok("analyze", "probed", "--figure", "polyfit", "--executor", "slurm", "--wait").stdout

    lines = printed.splitlines()
    assert lines[0] == "analyze polyfit: submitted 3 runs as 1 slurm array"
    array_id = lines[1].split()[1]
    assert (
        array_id.isdigit()
        and f"watch: squeue --jobs {array_id}" in printed
        and "submitit folder (scripts, logs): " in printed
    )
    assert (
        "--time 0-00:07:00 per run" in printed
        and "figures, tables and reports (<run>-polyfit.json) will be in: " in printed
    )
    written = [Path(line.strip()) for line in waited.splitlines() if line.startswith("  /")]
    assert waited.count(" polyfit: wrote 2 files") == 3 and len(written) == 6
    assert all(path.is_file() for path in written) and {path.suffix for path in written} == {".png", ".csv"}


def test_a_failed_analysis_job_is_exit_1_naming_its_log(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path
) -> None:
    run_ids = trained(orch, tmp_path)
    broken = (
        Path(orch.ok("show", run_ids[0], "--json").json()["run_dir"])
        / "shards"
        / "line"
        / "step_000000010.safetensors"
    )
    broken.write_bytes(b"not a shard")

    result = orch("analyze", "probed", "--figure", "polyfit", "--executor", "slurm", "--wait", "--json")

    assert result.exit_code == 1
    assert sorted(report["target"] for report in result.json()) == sorted(run_ids[1:])
    (problem,) = result.stderr.splitlines()
    assert problem.startswith(f"orch: run {run_ids[0]}: analysis job ") and "did not complete" in problem
    log = Path(problem.rpartition("its log: ")[2])
    assert log.is_file() and "Traceback" in log.read_text() and "Traceback" not in result.stderr


def test_an_array_sbatch_refuses_is_exit_2_without_a_traceback(
    orch: Orch, mini_cluster: MiniCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained(orch, tmp_path)
    own = tmp_path / "clusters"
    own.mkdir()
    # a partition the cluster lacks
    (own / "mini.yaml").write_text('partitions:\n  - {name: nosuch, max_time: "1-00:00:00"}\n')
    monkeypatch.setenv("ORCH_CLUSTERS", str(own))

    result = orch("analyze", "probed", "--figure", "polyfit", "--executor", "slurm")

    assert result.exit_code == 2 and result.stdout == ""
    (message,) = result.stderr.splitlines()  # sbatch's complaint is said once, in orch's line
    assert (
        message.startswith("orch: error: sbatch refused the analysis array orch:analyze:polyfit:")
        and "partition nosuch" in message
    )
    assert "invalid partition" in message.lower() and "accepted: " in message
