"""Analyses on synthetic shards with known answers, a memory bound, and `orch analyze` end to end."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from jobs.analyses.batch_size import batch_size, emulated_batch_line
from jobs.analyses.common import AnalysisOptions, RunInput, first_minimum, proportionality, window_grid
from jobs.analyses.shapes import full_batch_lines, pairwise_shape_distance, polyfit, shape_distance
from jobs.analyses.strategies import strategies
from jobs.analyses.walk import walk
from jobs.paths import RunPaths
from jobs.shards import write_shard
from tests.conftest import Orch, write_sweep

POINTS = np.sort(np.append(np.arange(-0.5, 0.5, 0.006), 0.0))  # the paper's grid with 0 inserted


def run_in(tmp_path: Path) -> RunInput:
    return RunInput("synthetic", RunPaths(tmp_path / "run"), "synthetic lines", tmp_path / "figures")


def write_line(
    run: RunInput,
    step: int,
    train: np.ndarray,
    direction: np.ndarray,
    grad_norm: float,
    direction_indices: np.ndarray | None = None,
) -> None:
    """A line shard as the line probe writes it: per-sample losses [1, samples, points]."""
    indices = np.arange(len(direction)) if direction_indices is None else direction_indices
    arrays = {
        "points": POINTS,
        "train": train[None].astype(np.float32),
        "direction": direction[None].astype(np.float32),
        "direction_indices": indices[None].astype(np.int64),
        "update_norm": np.array([0.1 * grad_norm]),
        "grad_norm": np.array([grad_norm]),
    }
    write_shard(
        run.paths,
        "line",
        step,
        arrays,
        {"kind": "update_direction", "resolution": 0.006, "learning_rate": 0.1},
    )


def parabola(curvature: float, minimum_at: float, offset: float = 0.0) -> np.ndarray:
    return 0.5 * curvature * (POINTS - minimum_at) ** 2 + offset


def test_polyfit_of_exact_parabolas_has_no_error_and_the_right_curvature(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    curvatures = [0.5, 2.0, 8.0]
    for step, curvature in enumerate(curvatures):
        line = parabola(curvature, 0.05, offset=1.0)
        write_line(run, step, np.tile(line, (4, 1)), np.tile(line, (2, 1)), grad_norm=1.0)

    output = polyfit(run, AnalysisOptions(window=0.2))

    table = np.loadtxt(output.tables[0], delimiter=",", skiprows=1)
    assert np.allclose(table[:, 2], 0.0, atol=1e-6)  # degree-2 MAE
    assert np.all(table[:, 1] > 1e-4)  # a straight line cannot follow a parabola
    assert np.allclose(table[:, 4], curvatures, rtol=1e-4)  # l''(0)
    assert np.allclose(table[:, 3], [-0.05 * c for c in curvatures], rtol=1e-3, atol=1e-6)  # l'(0) = −c·0.05
    assert output.figures[0].is_file() and output.summary["curvature_max"] == pytest.approx(8.0, rel=1e-4)


def test_identical_shapes_have_shape_distance_zero(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    for step in range(6):  # the same shape at different heights and a different loss level per sample
        line = parabola(3.0, 0.1, offset=2.0 - 0.3 * step)
        write_line(run, step, np.stack([line - 0.1, line + 0.1]), np.tile(line, (2, 1)), grad_norm=1.0)
    write_line(
        run, 6, np.tile(parabola(6.0, 0.1), (2, 1)), np.tile(parabola(6.0, 0.1), (2, 1)), grad_norm=1.0
    )

    output = shape_distance(run, AnalysisOptions(window=0.2, block=4))

    with np.load(output.tables[1], allow_pickle=False) as saved:
        distances = saved["distances"]
    assert np.allclose(distances[:6, :6], 0.0, atol=1e-6)
    grid = window_grid(0.2, 0.006)
    narrow, wide = (np.interp(grid, POINTS, parabola(curvature, 0.1)) for curvature in (6.0, 3.0))
    # a different curvature: another shape
    expected = np.abs((narrow - narrow.min()) - (wide - wide.min())).mean()
    assert distances[0, 6] == pytest.approx(expected, rel=1e-5) and distances[6, 0] == distances[0, 6]
    assert output.summary["median_consecutive"] == pytest.approx(0.0, abs=1e-6)


def test_blockwise_distances_equal_the_direct_computation() -> None:
    lines = np.random.default_rng(0).normal(size=(37, 11)).astype(np.float32)
    shifted = lines - lines.min(axis=1, keepdims=True)
    direct = np.abs(shifted[:, None, :] - shifted[None, :, :]).mean(axis=2)

    assert np.allclose(pairwise_shape_distance(lines, block=5), direct, atol=1e-6)


def test_s_opt_proportional_to_the_gradient_norm_gives_that_constant_with_r2_one(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    constant = 0.07
    for step, grad_norm in enumerate([0.5, 1.0, 1.7, 2.3, 3.1, 4.0]):
        line = parabola(2.0, constant * grad_norm, offset=1.0)
        write_line(run, step, np.tile(line, (3, 1)), np.tile(line, (2, 1)), grad_norm=grad_norm)

    output = strategies(run, AnalysisOptions(kernel=3))

    # losses are stored as float32
    assert output.summary["s_opt_over_grad_norm"] == pytest.approx(constant, rel=1e-4)
    assert output.summary["r_squared"] == pytest.approx(1.0, abs=1e-6)
    exact = output.summary["strategies"]["exact (direction batch)"]
    # the direction batch is the full batch here
    assert exact["mean_s_opt_minus_step"] == pytest.approx(0.0, abs=1e-9)
    assert [path.name for path in output.figures] == [
        "synthetic-strategies.png",
        "synthetic-strategies-proportionality.png",
    ]


def test_first_minimum_is_exact_for_a_parabola_off_the_grid_and_proportionality_fit() -> None:
    assert first_minimum(POINTS, parabola(5.0, 0.1234)) == pytest.approx(0.1234, abs=1e-12)
    assert first_minimum(POINTS, parabola(5.0, -0.2)) == 0.0  # rising from s = 0: no step helps
    x = np.array([1.0, 2.0, 3.0])
    assert proportionality(x, 2 * x) == pytest.approx((2.0, 1.0))


def test_an_interpolation_with_a_planted_bump_counts_as_one_barrier(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    alphas = np.linspace(0.0, 1.0, 10)
    for step in range(8):
        losses = 2.0 - 0.1 * step - 0.1 * alphas  # downhill, no barrier
        if step == 5:
            losses = losses + np.where(alphas == alphas[4], 0.5, 0.0)  # an interior point above both ends
        write_shard(
            run.paths,
            "interpolation",
            step,
            {"alphas": alphas, "train_loss": losses},
            {"gradient_cosine": 0.5, "distance_from_init": float(step)},
        )

    output = walk(run, AnalysisOptions(probe="interpolation", steps_per_epoch=4))

    assert output.summary["barriers"] == 1
    assert output.summary["barriers_per_epoch"] == {"0": 0, "1": 1}
    steps = np.loadtxt(output.tables[0], delimiter=",", skiprows=1)
    # height: ends 0.1 apart, floor at the lower end
    assert np.allclose(steps[[0, 1, 2, 3, 4, 6, 7], 2], 0.05)
    assert steps[5, 3] == 1.0 and output.figures[0].is_file()


def test_batch_size_emulation_gives_the_expected_slope_ratios(tmp_path: Path) -> None:
    run = run_in(tmp_path)
    batch = 8
    slopes = -np.arange(1.0, batch + 1)  # per-sample slopes of the direction batch: −1 … −8
    direction = 1.0 + slopes[:, None] * POINTS[None, :]
    train = np.ones((200, len(POINTS)))  # the rest of the training split is flat along this line
    train[:batch] = direction
    write_line(run, 0, train, direction, grad_norm=float(-slopes.mean()), direction_indices=np.arange(batch))

    output = batch_size(run, AnalysisOptions(batch_sizes=(4, 8, 16, 64)))

    ratios = {size: entry["median_slope_ratio"] for size, entry in output.summary["batch_sizes"].items()}
    mean_slope = -slopes.mean()
    assert ratios["8"] == pytest.approx(1.0)
    assert ratios["16"] == pytest.approx(8 / 16)  # 8 flat samples added
    assert ratios["64"] == pytest.approx(8 / 64)
    assert ratios["4"] == pytest.approx(np.mean([1.0, 2.0, 3.0, 4.0]) / mean_slope)  # the 4 steepest dropped
    line = emulated_batch_line(POINTS, direction, train, np.arange(batch), 16, 0, 0.006)
    assert line[np.searchsorted(POINTS, 0.0)] == pytest.approx(1.0)


def test_shape_distance_of_2000_lines_stays_under_its_memory_bound(tmp_path: Path) -> None:
    """2 000 lines of 167 points on |s| ≤ 0.5: the distance matrix is 16 MB (float32); the whole
    analysis, reading shards one at a time and filling the matrix in blocks of 128 lines, must
    stay under 48 MB of traced allocations."""
    run = run_in(tmp_path)
    rng = np.random.default_rng(0)
    base = parabola(4.0, 0.1)
    for step in range(2000):
        losses = (base + rng.normal(0.0, 0.01, size=(4, len(POINTS)))).astype(np.float32)
        write_line(run, step, losses, losses[:2], grad_norm=1.0)
    options = AnalysisOptions(window=0.5, block=128)

    tracemalloc.start()
    steps, lines = full_batch_lines(run, options, options.window)
    distances = pairwise_shape_distance(lines, options.block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert lines.shape == (2000, 167) and distances.shape == (2000, 2000)
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MB"


ANALYSED_SWEEP = """
name: analysed
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [16]}
  training: {steps: 60, checkpoint_every: 30, eval_every: 10, heartbeat_seconds: 0.2}
  probes:
    - {type: line, every: 10}
    - {type: line, name: noisy, directions: 3, steps: [0, 40], record: [train]}
    - {type: interpolation, every: 5}
    - {type: hessian_norm, every: 30, hessian_samples: 100}
grid: {optimizer.lr: [0.1, 0.3]}
seeds: 2
"""


def test_orch_analyze_draws_every_figure_of_a_sweep(orch: Orch, tmp_path: Path) -> None:
    orch.ok("submit", write_sweep(tmp_path, "analysed", ANALYSED_SWEEP), "--executor", "debug")
    figures = {
        "lines": [],
        "shape-distance": [],
        "polyfit": [],
        "strategies": [],
        "batch-size": [],
        "walk": [],
    }

    for name in figures:
        reports = orch.ok("analyze", "analysed", "--figure", name, "--window", "0.3", "--json").json()
        assert len(reports) == 4 and all(report["figures"] for report in reports), name
        figures[name] = [Path(path) for report in reports for path in report["figures"] + report["tables"]]
        if name == "walk":
            assert all(
                report["summary"]["hessian_spectral_norm"]["max"] > 0 and len(report["figures"]) == 2
                for report in reports
            )
    noisy = orch.ok(
        "analyze",
        "analysed",
        "--figure",
        "noisy-directions",
        "--probe",
        "noisy",
        "--where",
        "optimizer.lr=0.1",
        "--json",
    ).json()
    curves = orch.ok(
        "analyze", "analysed", "--figure", "curves", "--out", tmp_path / "views", "--json"
    ).json()
    table = orch.ok("analyze", "analysed", "--figure", "table", "--out", tmp_path / "views", "--json").json()

    assert all(path.is_file() and path.stat().st_size > 0 for paths in figures.values() for path in paths)
    assert (
        len(noisy) == 2 and noisy[0]["summary"]["directions"] == 3 and noisy[0]["summary"]["positions"] == 2
    )
    assert curves[0]["summary"]["groups"] == {"optimizer.lr=0.1": 2, "optimizer.lr=0.3": 2}
    markdown = (tmp_path / "views" / "analysed-table.md").read_text()
    assert "| optimizer.lr=0.1 | 2 |" in markdown and "final val_accuracy" in markdown
    assert table[0]["summary"]["groups"]["optimizer.lr=0.3"]["runs"] == 2
    assert orch("analyze", "--figure", "lines").exit_code == 2  # no target
    misnamed = orch("analyze", "analysed", "--figure", "table", "--group-by", "optimizer.learning_rate")
    assert (
        misnamed.exit_code == 2
        and "--group-by optimizer.learning_rate" in misnamed.stderr
        and "optimizer.lr" in misnamed.stderr
    )

    in_process = orch.ok(
        "analyze", "analysed", "--figure", "polyfit", "--where", "optimizer.lr=0.3", "--json"
    ).json()
    as_jobs = orch.ok(
        "analyze",
        "analysed",
        "--figure",
        "polyfit",
        "--where",
        "optimizer.lr=0.3",
        "--executor",
        "local",
        "--json",
    ).json()
    assert [report["summary"] for report in as_jobs] == [report["summary"] for report in in_process]
    # the job's report
    assert all(Path(report["figures"][0]).with_suffix(".json").is_file() for report in as_jobs)


SMALL_PROBED_SWEEP = """
name: small
include: [problems/digits_mlp.yaml]
base:
  model: {hidden: [8]}
  training: {steps: 20, checkpoint_every: 10, eval_every: 10}
  probes: [{type: line, every: 5, resolution: 0.05}]
zip: {cluster: [local, mini], optimizer.lr: [0.1, 0.2]}
"""


def small_sweep(orch: Orch, tmp_path: Path) -> None:
    orch.ok("submit", write_sweep(tmp_path, "small", SMALL_PROBED_SWEEP), "--executor", "debug")


def test_table_prints_every_file_it_wrote(orch: Orch, tmp_path: Path) -> None:
    small_sweep(orch, tmp_path)

    printed = orch.ok("analyze", "small", "--figure", "table", "--out", tmp_path / "views").stdout
    (report,) = orch.ok("analyze", "small", "--figure", "table", "--out", tmp_path / "views", "--json").json()

    written = [str(tmp_path / "views" / "small-table.csv"), str(tmp_path / "views" / "small-table.md")]
    assert report["tables"] == written and report["figures"] == []
    assert printed.splitlines()[:3] == ["small table: wrote 2 files", f"  {written[0]}", f"  {written[1]}"]
    assert all(Path(path).is_file() for path in written)


def test_the_shards_an_analysis_reads_are_measured_from_the_registry(orch: Orch, tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from orchestrator.analyze import shard_volumes
    from orchestrator.home import OrchHome
    from orchestrator.registry.engine import open_registry

    small_sweep(orch, tmp_path)
    run_ids = [run["id"] for run in orch.ok("runs", "--json").json()]
    folders = {run_id: Path(orch.ok("show", run_id, "--json").json()["run_dir"]) for run_id in run_ids}

    with Session(open_registry(OrchHome(orch.home))) as session:
        everything = shard_volumes(session, run_ids, "line", None)
        middle = shard_volumes(session, run_ids, "line", (5, 15))
        other_probe = shard_volumes(session, run_ids, "interpolation", None)

    for run_id, folder in folders.items():
        files = sorted((folder / "shards" / "line").glob("step_*.safetensors"))
        assert (everything[run_id].shards, everything[run_id].bytes) == (
            len(files),
            sum(path.stat().st_size for path in files),
        )
        assert middle[run_id].shards == 2  # steps 5 and 10
    assert len(files) == 4 and other_probe == {}


def test_an_analysis_job_asks_for_its_measured_time_with_margin_floor_and_partition_cap() -> None:
    from orchestrator.analyze import ANALYSIS_SAFETY_FACTOR, ShardVolume, job_time
    from orchestrator.profiles import load_profile

    mini = load_profile("mini")  # signal_delay_s 30; partitions up to 30 days
    assert ShardVolume(1000, 500 * 2**20).seconds == pytest.approx(6.0 + 1000 * 0.004 + 500 * 0.003)

    floor = job_time(ShardVolume().seconds, mini)  # 5 min + 30 s warning + 60 s Slurm slack
    assert (floor.minutes, floor.slurm_time, floor.capped) == (7, "0-00:07:00", False)
    measured = job_time(1000.0, mini)
    assert ANALYSIS_SAFETY_FACTOR == 4.0 and measured.minutes == 69  # ceil((1000 s × 4 + 30 s + 60 s) / 60 s)
    capped = job_time(1e9, mini)
    assert (capped.minutes, capped.capped) == (30 * 24 * 60, True)
    assert job_time(1e9, load_profile("local")).capped is False  # no partitions: no cap


def test_runs_of_two_clusters_go_out_as_two_arrays_named_for_the_figure(orch: Orch, tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from orchestrator.analyze import AnalyzeRequest, analysis_jobs, plan_arrays, selected_runs
    from orchestrator.home import OrchHome
    from orchestrator.registry.engine import open_registry

    small_sweep(orch, tmp_path)
    home = OrchHome(orch.home)
    request = AnalyzeRequest(figure="polyfit", targets=["small"], executor="debug")

    with Session(open_registry(home)) as session:
        runs = selected_runs(session, request.targets, request.where)
        arrays = plan_arrays(session, runs, analysis_jobs(runs, request), "debug", home)

    assert sorted(array.profile.name for array in arrays) == ["local", "mini"]
    assert all(len(array.tasks) == 1 and array.resources.gpus == 0 for array in arrays)
    submission = arrays[0].name.removeprefix("orch:analyze:polyfit:").removesuffix(".0")  # <time>-<random>
    assert [array.name for array in arrays] == [
        f"orch:analyze:polyfit:{submission}.0",
        f"orch:analyze:polyfit:{submission}.1",
    ]
    assert [array.folder.name for array in arrays] == [
        f"analyze-polyfit-{submission}.0",
        f"analyze-polyfit-{submission}.1",
    ]
    mini = next(array for array in arrays if array.profile.name == "mini")
    # the floor: 4 small shards
    assert (mini.resources.partition, mini.resources.time) == (
        "test",
        "0-00:07:00",
    )

    # debug waits, --wait or not
    reports = orch.ok("analyze", "small", "--figure", "polyfit", "--executor", "debug", "--json").json()
    assert sorted(report["summary"]["lines"] for report in reports) == [4, 4]


def test_slurm_analysis_without_slurm_here_is_a_user_error(
    orch: Orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_sweep(orch, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    result = orch("analyze", "small", "--figure", "polyfit", "--executor", "slurm")

    assert result.exit_code == 2 and result.stdout == ""
    assert (
        "--executor slurm: sbatch and scontrol not found on PATH" in result.stderr
        and "accepted:" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not list((orch.home / "results" / "submitit").glob("analyze-*"))
