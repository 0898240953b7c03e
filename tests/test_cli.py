"""The ``orch`` commands end to end on the debug and local executors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.journal import Failed, Finished, read_events
from jobs.paths import AttemptPaths
from orchestrator.cli import main
from orchestrator.executors.processes import process_alive
from tests.conftest import SWEEPS_DIR, Orch, write_sweep

pytestmark = pytest.mark.both_backends

TINY = SWEEPS_DIR / "tiny.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def finished(orch: Orch) -> Orch:
    orch.ok("submit", TINY, "--executor", "debug")
    return orch


def test_status_counts_runs_per_state(finished: Orch) -> None:
    assert finished.ok("status", "--json").json() == [
        {
            "sweep": "tiny",
            "runs": 2,
            "counts": {"COMPLETED": 2},
            "waiting_for_slot": 0,
            "active": [],
            "stages": [],
            "smoke_failures": [],
        }
    ]
    assert "tiny" in finished.ok("status").stdout


def test_runs_filters_by_state_and_where(finished: Orch) -> None:
    assert len(finished.ok("runs", "--state", "completed", "--json").json()) == 2
    assert finished.ok("runs", "--state", "failed", "--json").json() == []
    selected = finished.ok(
        "runs", "--where", "optimizer.lr=0.05", "--where", "model.hidden=[16]", "--json"
    ).json()
    assert [run["swept"] for run in selected] == [{"optimizer.lr": 0.05}]
    # a typo is bad input, not an empty list
    assert finished("runs", "--sweep", "nope", "--json").exit_code == 2


def test_show_by_prefix_has_config_attempts_checkpoints_metrics(finished: Orch) -> None:
    run_id = finished.ok("runs", "--json").json()[0]["id"]

    shown = finished.ok("show", run_id[:6], "--json").json()

    assert shown["id"] == run_id
    assert shown["spec"]["training"]["steps"] == 60
    assert shown["attempts"][0]["executor"] == "debug"
    assert shown["attempts"][0]["provenance"]["python"].startswith("3.")
    assert [checkpoint["step"] for checkpoint in shown["checkpoints"]] == [20, 40, 60]
    assert shown["metrics"]["val_accuracy"]["last_step"] == 60
    assert "checkpoints" in finished.ok("show", run_id).stdout


def test_unknown_or_ambiguous_run_is_bad_input(finished: Orch) -> None:
    result = finished("show", "zzzz")
    assert result.exit_code == 2
    assert "no sweep or run matches 'zzzz'" in result.stderr and "accepted:" in result.stderr
    ambiguous = finished("show", "")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr


def test_export_formats_have_one_row_per_run(finished: Orch, tmp_path: Path) -> None:
    as_json = finished.ok("export", "--json").stdout
    rows = json.loads(as_json)
    assert len(rows) == 2
    assert {"id", "sweep", "state", "config.optimizer.lr", "final.val_accuracy"} <= rows[0].keys()
    assert rows[0]["sweep"] == "tiny"

    as_csv = list(csv.DictReader(io.StringIO(finished.ok("export", "--format", "csv").stdout)))
    assert [row["id"] for row in as_csv] == [row["id"] for row in rows]
    assert float(as_csv[0]["final.val_accuracy"]) == rows[0]["final.val_accuracy"]

    finished.ok("export", "--format", "parquet", "--out", tmp_path / "runs.parquet")
    table = pq.read_table(tmp_path / "runs.parquet")
    assert table.num_rows == 2 and table.column("final.val_accuracy").to_pylist() == [
        row["final.val_accuracy"] for row in rows
    ]

    assert finished("export", "--format", "parquet").exit_code == 2


def test_curves_writes_one_png_per_run(finished: Orch) -> None:
    written = finished.ok("curves", "tiny", "--json").json()["written"]

    assert len(written) == 2
    for path in written:
        assert Path(path).read_bytes().startswith(PNG_MAGIC)


def test_logs_reads_an_attempts_output(finished: Orch) -> None:
    run_id = finished.ok("runs", "--json").json()[0]["id"]
    logs = finished.ok("logs", run_id, "--json").json()
    assert logs["attempt"] == 1 and Path(logs["path"]).is_file()
    missing = finished("logs", run_id, "--attempt", "7")
    assert missing.exit_code == 2 and "accepted: 1..1" in missing.stderr


def test_commands_on_a_home_without_registry(orch: Orch) -> None:
    assert orch.ok("status", "--json").json() == []
    assert orch.ok("runs", "--json").json() == []
    assert orch.ok("sync", "--json").json()["attempts_checked"] == 0
    result = orch("show", "abc")
    assert result.exit_code == 2 and "no registry at" in result.stderr
    assert not orch.home.exists() and not orch.has_registry()


def test_python_dash_m_entry_point() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"], capture_output=True, text=True, check=True
    )
    assert "submit" in completed.stdout and "resume" in completed.stdout


@pytest.mark.subprocess
def test_cancel_then_resume_on_local_executor(orch: Orch, tmp_path: Path) -> None:
    long_sweep = write_sweep(
        tmp_path,
        "long",
        "name: long\ninclude: [problems/digits_mlp.yaml]\nbase: {training: {steps: 10000000, "
        "checkpoint_every: 100, heartbeat_seconds: 0.2}}\n",
    )
    run_id = orch.ok("submit", long_sweep, "--json").json()["submitted"][0]
    wait_for_state(orch, run_id, "RUNNING", step_at_least=100)
    assert orch.ok("status", "--json").json()[0]["active"][0]["eta_seconds"] > 0

    assert orch.ok("cancel", "long", "--json").json() == {"cancelled": [run_id]}
    assert orch.ok("runs", "--json").json()[0]["state"] == "CANCELLED"
    first = orch.ok("show", run_id, "--json").json()["attempts"][0]
    wait_until(lambda: not process_alive(first["pid"], "submitit"))
    last_event = read_events(AttemptPaths(Path(first["journal_dir"])))[-1].payload
    assert not isinstance(last_event, (Failed, Finished))  # stopped mid-run; the registry says why

    resumed = orch.ok("resume", run_id, "--json").json()
    assert resumed["submitted"] == [run_id]
    wait_for_state(orch, run_id, "RUNNING", step_at_least=1)
    attempts = orch.ok("show", run_id, "--json").json()["attempts"]
    assert attempts[0]["state"] == "CANCELLED" and attempts[1]["start_step"] >= 100
    orch.ok("cancel", run_id)
    wait_until(
        lambda: not process_alive(orch.ok("show", run_id, "--json").json()["attempts"][1]["pid"], "submitit")
    )


def wait_for_state(orch: Orch, run_id: str, state: str, step_at_least: int) -> None:
    def reached() -> bool:
        run = orch.ok("show", run_id, "--json").json()
        return run["state"] == state and run["step"] >= step_at_least

    wait_until(reached)


def wait_until(condition, timeout_seconds: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_a_diverged_run_shows_the_step_it_failed_at(orch: Orch, tmp_path: Path) -> None:
    """lr 1000 on digits: the evaluation at step 25 is NaN (no metric row: SQL has no NaN), the
    training loss at step 39; the run and its attempt say 38 steps done, not 0."""
    text = (
        "name: diverges\ninclude: [problems/digits_mlp.yaml]\nbase:\n  optimizer: {lr: 1000.0}\n  "
        "training: {steps: 300, eval_every: 25}\n"
    )
    orch("submit", write_sweep(tmp_path, "diverges", text), "--executor", "debug")

    [run] = orch.ok("runs", "--json").json()
    [attempt] = orch.ok("show", run["id"], "--json").json()["attempts"]
    failing_step = int(attempt["reason"].split(" at step ")[1].split()[0])
    assert run["state"] == "FAILED" and attempt["reason"].startswith(
        "FloatingPointError: training loss is nan"
    )
    assert run["step"] == attempt["end_step"] == failing_step - 1 > 25
    assert attempt["queue_wait_s"] == attempt["started_time"] - attempt["submitted_time"] >= 0
    assert attempt["elapsed_s"] == attempt["ended_time"] - attempt["started_time"] >= 0
    metrics = orch.ok("show", run["id"], "--json").json()["metrics"]
    assert metrics["train_loss"]["last_step"] == failing_step - 1 and "val_loss" not in metrics


@pytest.mark.parametrize("count", ["0", "-3", "two", "1.5"])
def test_max_parallel_is_a_whole_number_of_at_least_one(orch: Orch, count: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["--home", str(orch.home), "submit", str(SWEEPS_DIR / "tiny.yaml"), "--max-parallel", count])
    assert (
        exited.value.code == 2 and "--max-parallel" in stderr.getvalue() and "at least 1" in stderr.getvalue()
    )
    assert not orch.has_registry()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.4, "0s"), (42, "42s"), (185, "3m05s"), (7620, "2h07m"), (273600, "3d04h"), (-3, "0s")],
)
def test_durations_read_in_human_units(seconds: float | None, shown: str) -> None:
    from orchestrator.output import format_duration

    assert format_duration(seconds) == shown


def test_runs_no_longer_in_an_edited_sweep_file_are_shown_and_pruned(orch: Orch, tmp_path: Path) -> None:
    """tiny.yaml submitted, then edited (lr 0.05 dropped, 0.02 added): plan names the recorded run
    the file no longer plans, prune detaches it from the sweep and leaves the run and its files."""
    original = (SWEEPS_DIR / "tiny.yaml").read_text()
    sweep = write_sweep(tmp_path, "tiny", original)
    orch.ok("submit", sweep, "--executor", "debug")
    dropped = next(
        run["id"] for run in orch.ok("runs", "--json").json() if run["swept"] == {"optimizer.lr": 0.05}
    )
    sweep.write_text(original.replace("optimizer.lr: [0.1, 0.05]", "optimizer.lr: [0.1, 0.02]"))

    assert orch.ok("plan", sweep, "--json").json()["no_longer_in_file"] == [dropped]
    assert f"orch sweep prune {sweep}" in orch.ok("plan", sweep).stdout
    assert orch.ok("sweep", "prune", sweep, "--json").json() == {"sweep": "tiny", "detached": [dropped]}

    assert orch.ok("plan", sweep, "--json").json()["no_longer_in_file"] == []
    assert orch.ok("sweep", "prune", sweep, "--json").json()["detached"] == []
    runs = {run["id"]: run for run in orch.ok("runs", "--json").json()}
    assert runs[dropped]["sweeps"] == [] and runs[dropped]["state"] == "COMPLETED"
    assert Path(orch.ok("show", dropped, "--json").json()["run_dir"]).is_dir()
    assert [run["id"] for run in orch.ok("runs", "--sweep", "tiny", "--json").json()] == [
        run_id for run_id in runs if run_id != dropped
    ]
