"""The line study end to end: ResNet-20 on 8 % of CIFAR-10 with a line at every step, timed.

For each configuration of the line probe (precision, points per forward, memory format, compile
mode) one run of the line paper's problem (configs/problems/line_resnet20_cifar10_8pct.yaml:
4 000 training and 1 000 validation images, batch 128, 167 points + 0 + s_upd per line) goes
through ``orch submit --executor local --wait`` on this machine, each in its own orch home, and is
timed from the submit to its last shard. The data is CIFAR-10 in its distributed on-disk format
(python pickle batches, read by torchvision) with synthetic pixels and labels: no download.

Printed per configuration: the wall time, the seconds per line between the first and the last
shard (the steady state, after start-up and compilation), the 10 000-line study projected from
both (``start-up + lines x seconds per line``), and with ``--precision-check-every`` the largest
deviations from the plain float32 line that the shards' ``precision_check`` reports.

    python benchmarks/line_study.py --lines 200 --precision fp32 bf16   # on a GPU: issue 19
    python benchmarks/line_study.py --lines 3 --fraction 0.01 --resolution 0.2 --device cpu   # a check
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from jobs.paths import RunPaths
from jobs.probe_fields import COMPILE_MODES, MEMORY_FORMATS, PRECISIONS
from jobs.shards import iter_shards, shard_file

REPOSITORY = Path(__file__).resolve().parent.parent
CIFAR10_BATCH = 10_000  # images per file of the distributed CIFAR-10


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200, help="training steps, a line at each")
    parser.add_argument("--study-lines", type=int, default=10_000, help="the study to project")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--points-per-forward", type=int, nargs="+", default=[1])
    parser.add_argument("--memory-format", nargs="+", default=["contiguous"], choices=MEMORY_FORMATS)
    parser.add_argument("--compile-mode", nargs="+", default=["off"], choices=COMPILE_MODES)
    parser.add_argument(
        "--precision-check-every", type=int, default=0, help="re-measure every n-th line in float32"
    )
    parser.add_argument("--fraction", type=float, default=0.1, help="of the 40 000 / 10 000 split")
    parser.add_argument("--resolution", type=float, default=0.006, help="of the line's grid")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--time", default="04:00:00", help="the local executor's limit per run")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


@dataclass(frozen=True)
class Configuration:
    precision: str
    points_per_forward: int
    memory_format: str
    compile_mode: str

    @property
    def label(self) -> str:
        return f"{self.precision}-x{self.points_per_forward}-{self.memory_format}-{self.compile_mode}"


@dataclass(frozen=True)
class Timing:
    configuration: Configuration
    lines: int
    wall_s: float
    seconds_per_line: float
    start_up_s: float  # the wall time the lines do not explain: start, data, compilation, the end
    projected_study_h: float
    max_abs_mean_loss_difference: Optional[float]
    max_argmin_shift_steps: Optional[int]
    max_curvature_relative_difference: Optional[float]


def write_cifar10(root: Path, seed: int = 0) -> None:
    """CIFAR-10 as distributed (``cifar-10-batches-py``: five training batches and a test batch
    of 10 000 images each, pickled dicts of uint8 rows and labels), synthetic pixels and labels."""
    folder = root / "cifar-10-batches-py"
    if (folder / "batches.meta").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, size=(CIFAR10_BATCH, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, CIFAR10_BATCH).tolist(),
        }
        with open(folder / name, "wb") as handle:  # the format torchvision reads, not ours to choose
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{index}" for index in range(10)]}, handle)


def sweep_text(configuration: Configuration, options: argparse.Namespace, data_root: Path) -> str:
    probe = {
        "type": "line",
        "every": 1,
        "resolution": options.resolution,
        "precision": configuration.precision,
        "points_per_forward": configuration.points_per_forward,
        "memory_format": configuration.memory_format,
        "compile_mode": configuration.compile_mode,
        "precision_check_every": options.precision_check_every,
    }
    base = {
        "cluster": "local",
        "data": {"root": str(data_root), "verify_checksums": False, "fraction": options.fraction},
        "training": {
            "steps": options.lines,
            "checkpoint_every": options.lines,
            "eval_every": options.lines,
            "device": options.device,
        },
        "probes": [probe],
        "resources": {"gpus": 0 if options.device == "cpu" else 1, "gpu_type": None, "time": options.time},
    }
    include = REPOSITORY / "configs" / "problems" / "line_resnet20_cifar10_8pct.yaml"
    document = {"name": "study", "include": [str(include)], "base": base}
    return json.dumps(document, indent=1)  # JSON is YAML


def run(configuration: Configuration, options: argparse.Namespace, workdir: Path) -> Timing:
    home = workdir / configuration.label
    sweep = workdir / f"{configuration.label}.yaml"
    sweep.write_text(sweep_text(configuration, options, workdir / "data"))
    command = [sys.executable, "-m", "orchestrator", "--home", str(home), "submit", str(sweep)]
    start = time.perf_counter()
    completed = subprocess.run([*command, "--executor", "local", "--wait"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"{configuration.label}: orch submit exited {completed.returncode}\n{completed.stderr}")
    (run_dir,) = (home / "results" / "runs").iterdir()
    paths = RunPaths(run_dir)
    steps = [shard.step for shard in iter_shards(paths, "line", metadata_only=True)]
    stamps = sorted(shard_file(paths, "line", step).stat().st_mtime for step in steps)
    per_line = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    start_up = max(0.0, wall - per_line * len(steps))
    deviations = [
        deviation
        for shard in iter_shards(paths, "line", metadata_only=True)
        for per_direction in shard.metadata.get("precision_check", {}).values()
        for deviation in per_direction
    ]
    return Timing(
        configuration,
        len(steps),
        round(wall, 1),
        round(per_line, 3),
        round(start_up, 1),
        round((start_up + options.study_lines * per_line) / 3600, 2),
        largest(deviations, "max_abs_mean_loss_difference"),
        None if (shift := largest(deviations, "argmin_shift_steps")) is None else int(shift),
        largest(deviations, "curvature_relative_difference"),
    )


def largest(deviations: list[dict[str, float]], key: str) -> Optional[float]:
    values = [deviation[key] for deviation in deviations if deviation.get(key) is not None]
    return max(values) if values else None


def main() -> None:
    options = arguments()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="line-study-"))
    write_cifar10(workdir / "data")
    configurations = [
        Configuration(*combination)
        for combination in itertools.product(
            options.precision, options.points_per_forward, options.memory_format, options.compile_mode
        )
    ]
    timings = [run(configuration, options, workdir) for configuration in configurations]
    if options.json:
        print(json.dumps([asdict(timing) for timing in timings]))
        return
    print(f"{options.lines} lines per run, the study projected to {options.study_lines} lines; {workdir}")
    print(
        f"{'configuration':>40} {'lines':>6} {'wall s':>8} {'s/line':>7} {'start s':>8} {'study h':>8} "
        f"{'max |dloss|':>11} {'argmin':>6} {'curv':>7}"
    )
    for timing in timings:
        print(
            f"{timing.configuration.label:>40} {timing.lines:>6} {timing.wall_s:>8} "
            f"{timing.seconds_per_line:>7} {timing.start_up_s:>8} {timing.projected_study_h:>8} "
            f"{shown(timing.max_abs_mean_loss_difference):>11} {shown(timing.max_argmin_shift_steps):>6} "
            f"{shown(timing.max_curvature_relative_difference):>7}"
        )


def shown(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    main()
