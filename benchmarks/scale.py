"""Login-node speed at a lab's scale (issue 14): every row of the issue's table timed in one run,
on registries of 10^3 ... 10^5 runs built through the project's own code paths.

    python benchmarks/scale.py [--sizes 1000,10000,100000 | --quick] [--repeats 3] [--keep]

For each size N (a sweep of 5 swept keys x 10 seeds of the digits MLP, ``training.steps: 1``):

1. ``orch plan --json`` of the sweep (a subprocess: wall time, CPU time, peak RSS by ``wait4``);
2. ``record_submission`` (what ``orch submit`` does before any job runs) into a fresh registry,
   in one ``Session.begin()`` transaction: runs, memberships, PENDING attempts and spec files;
3. each attempt's journal written by the job's own writer (``JournalWriter`` and the training
   loop's ``Reporter``: Started, Metrics, CheckpointWritten, Finished and heartbeats, as a 1-step
   digits job writes them), then ``sync(engine)`` of the 4 N new events, then ``orch sync`` with
   nothing new;
5. ``orch status --json``, ``orch runs --sweep S --where optimizer.lr=V --json`` and
   ``orch export --format parquet`` on the synced registry;

and once: 4. ``orch plan`` of a 100-run sweep with the 1 000 completed runs of step 3 in the
registry against the same plan on an empty registry; 6. ``orch --help``; 7. the registry insert
of ``submit`` (``record_sweep``: the sweep, its runs with their spec texts and sections, the
memberships) of 500 runs against a plain ``sqlite3`` ``executemany`` of the same rows into a fresh registry.

Homes live under /dev/shm when it exists. The figures, their targets (the issue's), ratios
(measured / target: <= 1 is met) and the growth exponent between sizes are printed at the end.
Exit status 0 (a report), 1 when a row could not be measured (the error is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's code, also when another one is installed

from sqlalchemy import Engine, select, update  # noqa: E402  (after the sys.path line: this checkout's code)
from sqlalchemy.orm import Session  # noqa: E402  (after the sys.path line: this checkout's code)

from orchestrator.home import OrchHome  # noqa: E402  (after the sys.path line: this checkout's code)
from orchestrator.registry.engine import open_registry  # noqa: E402  (after the sys.path line: this checkout's code)
from orchestrator.registry.models import Attempt, SweepRun  # noqa: E402  (after the sys.path line: this checkout's code)

DEFAULT_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 10_000)
SEEDS = 10
SWEPT_KEYS = 5
HISTORY_RUNS = 1_000  # completed runs in the registry of row 4
HISTORY_PLAN_RUNS = 100
INSERT_RUNS = 500  # row 7
HELP_REPEATS = 5
REPEAT_BUDGET_SECONDS = 20.0  # a command repeats (best of --repeats) only while its repeats took less
COMMAND_TIMEOUT_SECONDS = 4 * 3600
MB = 1e6


@dataclass(frozen=True)
class Target:
    limit: float  # in the figure's unit
    at_size: Optional[int]  # the size the issue sets it for; None: every size

    def text(self, unit: str) -> str:
        where = f" at {_count(self.at_size)}" if self.at_size else ""
        return f"<= {self.limit:g} {unit}{where}"


# The table (issue 14), in the units the figures are printed in.
PLAN = "orch plan --json"
PLAN_RSS = "orch plan --json, peak RSS"
RECORD_PER_RUN = "record_submission, per run"
RECORD_TOTAL = "record_submission"
READ_SWEEP = "read_sweep (in-process, informative)"
SUBMIT_PER_RUN = "read_sweep + record_submission, per run (informative)"
SYNC_NEW = "sync(engine), 4 new events per attempt"
SYNC_NOTHING = "orch sync, nothing new"
HISTORY_EMPTY = "orch plan 100 runs, empty registry"
HISTORY_FULL = "orch plan 100 runs, 1 000 completed runs"
HISTORY_ADDED = "orch plan 100 runs: history adds"
STATUS = "orch status --json"
RUNS_WHERE = "orch runs --sweep S --where optimizer.lr=V --json"
EXPORT = "orch export --format parquet"
HELP = "orch --help"
INSERT_RATIO = "registry insert (record_sweep) / executemany, 500 runs"
TARGETS: dict[str, Target] = {
    PLAN: Target(3.0, 100_000),
    PLAN_RSS: Target(1000.0, None),
    RECORD_PER_RUN: Target(1.0, None),
    RECORD_TOTAL: Target(60.0, 100_000),
    SYNC_NEW: Target(5.0, 10_000),
    SYNC_NOTHING: Target(1.0, None),
    HISTORY_ADDED: Target(0.1, None),
    STATUS: Target(0.5, 100_000),
    RUNS_WHERE: Target(1.0, 100_000),
    EXPORT: Target(5.0, 100_000),
    HELP: Target(0.3, None),
    INSERT_RATIO: Target(10.0, None),
}
# totals: growth exponent
GROWING = (
    PLAN,
    RECORD_TOTAL,
    READ_SWEEP,
    SYNC_NEW,
    SYNC_NOTHING,
    STATUS,
    RUNS_WHERE,
    EXPORT,
)


@dataclass(frozen=True)
class Figure:
    operation: str
    size: Optional[int]  # runs in the sweep or registry; None: no size (start-up)
    value: float
    unit: str  # "s", "ms", "MB", "x"
    detail: str = ""  # counts, repeats, memory
    cpu_seconds: Optional[float] = None  # of the process that did the work, where known


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sizes_attempted: set[int] = field(default_factory=set)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        size = f"[{_count(figure.size)} runs] " if figure.size else ""
        target = TARGETS.get(figure.operation)
        verdict = f"; target {target.text(figure.unit)}" if target else ""
        notes = [f"{figure.cpu_seconds:.2f} s CPU"] if figure.cpu_seconds is not None else []
        notes += [figure.detail] if figure.detail else []
        detail = f" ({', '.join(notes)})" if notes else ""
        print(
            f"  {size}{figure.operation}: {_number(figure.value)} {figure.unit}{detail}{verdict}", flush=True
        )

    def fail(self, row: str, error: BaseException) -> None:
        where = traceback.extract_tb(error.__traceback__)
        place = f" at {Path(where[-1].filename).name}:{where[-1].lineno}" if where else ""
        message = " ".join(str(error).split())[:400]
        self.failures.append(f"{row}: {type(error).__name__}: {message}{place}")
        print(f"  {row}: NOT MEASURED: {type(error).__name__}: {message}{place}", flush=True)


@dataclass(frozen=True)
class CommandRun:
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout_file: Path


@dataclass(frozen=True)
class Workspace:
    """Where the homes, sweep files and outputs of one benchmark run live."""

    root: Path
    on_tmpfs: bool

    def home(self, name: str) -> OrchHome:
        return OrchHome(self.root / "homes" / name)

    def file(self, name: str) -> Path:
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        return self.root / "files" / name


# -- sweeps ---------------------------------------------------------------------------------------


def axis_lengths(grid_points: int, keys: int = SWEPT_KEYS) -> list[int]:
    """``keys`` axis lengths whose product is ``grid_points``, as even as the prime factors allow
    (largest first; an axis of length 1 where there are fewer prime factors than keys)."""
    lengths = [1] * keys
    for prime in sorted(_prime_factors(grid_points), reverse=True):
        lengths[lengths.index(min(lengths))] *= prime
    return sorted(lengths, reverse=True)


def _prime_factors(number: int) -> list[int]:
    factors, divisor = [], 2
    while divisor * divisor <= number:
        while number % divisor == 0:
            factors.append(divisor)
            number //= divisor
        divisor += 1
    return factors + ([number] if number > 1 else [])


def swept_values(key: str, count: int) -> list[Any]:
    """``count`` distinct valid values of one swept key of the digits MLP with SGD."""
    if key == "optimizer.lr":
        return [float(f"{0.3 * 0.8**index:.6g}") for index in range(count)]
    if key == "optimizer.weight_decay":
        return [float(f"{1e-5 * index:.6g}") for index in range(count)]
    if key == "optimizer.momentum":
        return [float(f"{0.95 * index / count:.6g}") for index in range(count)]
    if key == "training.batch_size":  # at most the 1 437 training samples of digits
        return (
            [16 * (index + 1) for index in range(count)]
            if count <= 89
            else [index + 1 for index in range(count)]
        )
    if key == "model.hidden":
        return [[32 + 8 * index, 32 + 8 * index] for index in range(count)]
    raise ValueError(f"no values for swept key {key}")


SWEEP_KEYS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "training.batch_size",
    "model.hidden",
)


def sweep_document(name: str, runs: int) -> dict[str, Any]:
    """Like configs/sweeps/demo.yaml, one training step: 5 swept keys x 10 seeds = ``runs`` runs."""
    if runs % SEEDS:
        raise ValueError(
            f"--sizes: {runs} is not a multiple of {SEEDS} seeds; accepted: sizes such as 1000,10000"
        )
    grid = {key: swept_values(key, length) for key, length in zip(SWEEP_KEYS, axis_lengths(runs // SEEDS))}
    return _sweep(name, f"scale benchmark: {runs} runs", grid, runs)


def history_sweep_document(name: str, history_grid: dict[str, list[Any]]) -> dict[str, Any]:
    """100 runs of the same kind as the history's (same model width): 10 learning rates x 10 seeds."""
    grid = {key: values[:1] for key, values in history_grid.items()}
    grid["optimizer.lr"] = swept_values("optimizer.lr", HISTORY_PLAN_RUNS // SEEDS)
    return _sweep(name, "scale benchmark: 100 runs planned against a history", grid, HISTORY_PLAN_RUNS)


def _sweep(name: str, description: str, grid: dict[str, list[Any]], runs: int) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "description": description,
        "include": ["problems/digits_mlp.yaml"],  # found under configs/ (sweep.py _include_path)
        "base": {"training": {"steps": 1}},  # a 1-step job evaluates and checkpoints at its last step
        "grid": grid,
        "seeds": SEEDS,
    }
    if runs > 250_000:
        document["max_runs"] = runs
    return document


def write_sweep(workspace: Workspace, document: dict[str, Any]) -> Path:
    path = workspace.file(f"{document['name']}.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# -- timing ---------------------------------------------------------------------------------------


def orch_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *arguments]


def orch_environment(home: OrchHome) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if key not in ("ORCH_DB_URL", "ORCH_TRACEBACK")
    }
    environment["ORCH_HOME"] = str(home.root)
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return environment


# A child's peak RSS as wait4 reports it includes the memory of the process it was forked from
# (up to its exec): measured from this benchmark's process it would be this process's size. A small
# interpreter in between starts the command and reports the command's own wall time, CPU time and
# peak RSS (JSON, into the file named by its first argument).
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_command(argv: list[str], home: OrchHome, workspace: Workspace, label: str) -> CommandRun:
    """One command, its stdout to a file; its wall time, CPU time and peak RSS (by wait4, through
    LAUNCHER)."""
    stdout_file, stderr_file, usage_file = (
        workspace.file(f"{label}.{suffix}") for suffix in ("out", "err", "usage")
    )
    launcher = [sys.executable, "-c", LAUNCHER, str(usage_file), *argv]
    with open(stdout_file, "wb") as stdout, open(stderr_file, "wb") as stderr:
        process = subprocess.Popen(
            launcher,
            stdout=stdout,
            stderr=stderr,
            env=orch_environment(home),
            cwd=workspace.root,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=COMMAND_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(
                f"{' '.join(argv[2:])} did not finish in {COMMAND_TIMEOUT_SECONDS} s"
            ) from None
    if returncode != 0:
        message = stderr_file.read_text(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"{' '.join(argv[2:])} exited {returncode}: {message[-1] if message else '(no stderr)'}"
        )
    usage = json.loads(usage_file.read_text())
    return CommandRun(usage["wall"], usage["cpu"], usage["maxrss_kib"] * 1024 / MB, stdout_file)


def best_run(run: Callable[[], CommandRun], repeats: int) -> tuple[CommandRun, int]:
    """The fastest of up to ``repeats`` runs; no more repeats once they took REPEAT_BUDGET_SECONDS."""
    runs = [run()]
    while len(runs) < repeats and sum(item.wall_seconds for item in runs) < REPEAT_BUDGET_SECONDS:
        runs.append(run())
    return min(runs, key=lambda item: item.wall_seconds), len(runs)


def command_detail(run: CommandRun, repeats: int, extra: str = "") -> str:
    best = f"best of {repeats}, " if repeats > 1 else ""
    return f"{best}peak RSS {run.peak_rss_mb:.0f} MB" + (f", {extra}" if extra else "")


# -- rows -----------------------------------------------------------------------------------------


def row_plan(report: Report, workspace: Workspace, sweep_file: Path, size: int, repeats: int) -> None:
    """Row 1: ``orch plan --json`` on a home without a registry."""
    home = workspace.home(f"plan-{size}")
    run, count = best_run(
        lambda: run_command(orch_command("plan", "--json", str(sweep_file)), home, workspace, f"plan-{size}"),
        repeats,
    )
    planned = len(json.loads(run.stdout_file.read_text())["runs"])
    if planned != size:
        raise RuntimeError(f"orch plan listed {planned} runs, the sweep has {size}")
    report.add(Figure(PLAN, size, run.wall_seconds, "s", command_detail(run, count), run.cpu_seconds))
    report.add(Figure(PLAN_RSS, size, run.peak_rss_mb, "MB"))


def row_record(report: Report, home: OrchHome, sweep_file: Path, size: int) -> None:
    """Row 2: read the sweep as ``orch submit`` does, then ``record_submission`` into a fresh
    registry, in one transaction."""
    from orchestrator.cli import read_sweep
    from orchestrator.submit import record_submission

    start, cpu = time.perf_counter(), time.process_time()
    plan = read_sweep(sweep_file)
    reading_seconds = time.perf_counter() - start
    report.add(Figure(READ_SWEEP, size, reading_seconds, "s", "", time.process_time() - cpu))
    engine = open_registry(home)
    try:
        seconds, cpu_seconds, submitted = timed_record_submission(engine, home, plan, record_submission)
    finally:
        engine.dispose()
    if submitted != size:
        raise RuntimeError(f"record_submission prepared {submitted} attempts, the sweep has {size} runs")
    report.add(Figure(RECORD_TOTAL, size, seconds, "s", "", cpu_seconds))
    report.add(Figure(RECORD_PER_RUN, size, 1000 * seconds / size, "ms"))
    report.add(Figure(SUBMIT_PER_RUN, size, 1000 * (reading_seconds + seconds) / size, "ms"))


def timed_record_submission(
    engine: Engine, home: OrchHome, plan: Any, record_submission: Callable[..., Any]
) -> tuple[float, float, int]:
    """Wall and CPU seconds of ``record_submission`` in its transaction (commit included), and the
    number of attempts it prepared."""
    from orchestrator.launch import SubmitChoices

    start, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as session, session.begin():
        _, groups = record_submission(session, home, plan, SubmitChoices(executor="local"))
    return time.perf_counter() - start, time.process_time() - cpu, sum(len(group) for group in groups)


def write_journals(home: OrchHome) -> tuple[int, float]:
    """Each attempt's journal as a 1-step digits job writes it, through the job's own writer and
    reporter; returns the number of journals and the seconds it took."""
    import torch

    from jobs.journal import CheckpointWritten, Finished, JournalWriter, Started
    from jobs.paths import AttemptPaths, RunPaths
    from jobs.provenance import collect_provenance
    from jobs.train import Reporter

    engine = open_registry(home)
    try:
        with engine.begin() as connection:  # claimed, as a launch leaves them (no job is submitted here)
            connection.execute(update(Attempt.__table__).values(held_back=False, reason=None))
        with Session(engine) as session:
            attempts = session.execute(
                select(Attempt.journal_dir, SweepRun.swept_json).join(
                    SweepRun, SweepRun.run_id == Attempt.run_id
                )
            ).all()
    finally:
        engine.dispose()
    provenance = collect_provenance(torch.device("cpu"))  # the same for every job of this machine
    start = time.perf_counter()
    for index, (journal_dir, swept_json) in enumerate(attempts):
        journal = JournalWriter(AttemptPaths(Path(journal_dir)))
        journal.append(Started(os.getpid(), os.uname().nodename, 0, 1, provenance))
        reporter = Reporter(journal, total_steps=1, heartbeat_seconds=5.0)
        reporter.tick(0, force=True)
        loss = 2.3 - (index % 97) / 1000
        reporter.record(
            1, train_loss=loss, train_accuracy=0.078125, lr=json.loads(swept_json)["optimizer.lr"]
        )
        reporter.record(1, val_loss=loss - 0.05, val_accuracy=0.128, forward_passes=1, backward_passes=1)
        reporter.flush()  # the loop's checkpoint publishes the buffered metrics first
        run_paths = RunPaths(Path(journal_dir).parent.parent)
        checkpoint = run_paths.checkpoint_file(1).relative_to(run_paths.run_dir)
        journal.append(CheckpointWritten(1, str(checkpoint), 52_280, f"{index:064x}"))
        reporter.tick(1, force=True)
        journal.append(Finished(final_step=1))
    return len(attempts), time.perf_counter() - start


def row_sync(report: Report, workspace: Workspace, home: OrchHome, size: int, repeats: int) -> None:
    """Row 3: journals written, ``sync(engine)`` of the new events, then ``orch sync`` with nothing new."""
    from orchestrator.sync import sync

    journals, writing_seconds = write_journals(home)
    print(
        f"  [{_count(size)} runs] (setup: {journals} journals written in {writing_seconds:.1f} s)", flush=True
    )
    engine = open_registry(home)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        result = sync(engine)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    finally:
        engine.dispose()
    if result.events_ingested != 4 * size:
        raise RuntimeError(f"sync ingested {result.events_ingested} events, the journals hold {4 * size}")
    detail = f"{result.attempts_checked} attempts, {result.events_ingested} events"
    report.add(Figure(SYNC_NEW, size, seconds, "s", detail, cpu_seconds))
    run, count = best_run(
        lambda: run_command(orch_command("sync", "--json"), home, workspace, f"sync-{size}"), repeats
    )
    ingested = json.loads(run.stdout_file.read_text())["events_ingested"]
    report.add(
        Figure(
            SYNC_NOTHING,
            size,
            run.wall_seconds,
            "s",
            command_detail(run, count, f"{ingested} events ingested"),
            run.cpu_seconds,
        )
    )


def row_queries(
    report: Report, workspace: Workspace, home: OrchHome, sweep: dict[str, Any], size: int, repeats: int
) -> None:
    """Row 5: status, runs --where and export on the synced registry."""
    status, count = best_run(
        lambda: run_command(orch_command("status", "--json"), home, workspace, f"status-{size}"), repeats
    )
    counted = sum(view["runs"] for view in json.loads(status.stdout_file.read_text()))
    report.add(
        Figure(
            STATUS,
            size,
            status.wall_seconds,
            "s",
            command_detail(status, count, f"{counted} runs counted"),
            status.cpu_seconds,
        )
    )
    lr_values = sweep["grid"]["optimizer.lr"]
    where = f"optimizer.lr={lr_values[0]!r}"
    query = orch_command("runs", "--sweep", sweep["name"], "--where", where, "--json")
    runs, count = best_run(lambda: run_command(query, home, workspace, f"runs-{size}"), repeats)
    matched = len(json.loads(runs.stdout_file.read_text()))
    if matched != size // len(lr_values):
        raise RuntimeError(
            f"orch runs --where {where} listed {matched} runs, expected {size // len(lr_values)}"
        )
    report.add(
        Figure(
            RUNS_WHERE,
            size,
            runs.wall_seconds,
            "s",
            command_detail(runs, count, f"{where}: {matched} runs"),
            runs.cpu_seconds,
        )
    )
    parquet = workspace.file(f"export-{size}.parquet")
    export = orch_command("export", "--format", "parquet", "--out", str(parquet))
    exported, count = best_run(lambda: run_command(export, home, workspace, f"export-{size}"), repeats)
    report.add(
        Figure(
            EXPORT,
            size,
            exported.wall_seconds,
            "s",
            command_detail(exported, count, f"{parquet.stat().st_size / MB:.1f} MB parquet"),
            exported.cpu_seconds,
        )
    )


def row_history(
    report: Report,
    workspace: Workspace,
    history_home: OrchHome,
    history_grid: dict[str, list[Any]],
    repeats: int,
) -> None:
    """Row 4: ``orch plan`` of 100 runs with 1 000 completed runs in the registry vs an empty
    registry (schema, no rows), interleaved, best of ``repeats`` each."""
    sweep_file = write_sweep(workspace, history_sweep_document("scale_history_plan", history_grid))
    empty_home = workspace.home("empty-registry")
    open_registry(empty_home).dispose()
    argv = orch_command("plan", "--json", str(sweep_file))
    empty_runs, full_runs = [], []
    while (
        not empty_runs
        or len(empty_runs) < repeats
        and sum(run.wall_seconds for run in empty_runs + full_runs) < REPEAT_BUDGET_SECONDS
    ):
        empty_runs.append(run_command(argv, empty_home, workspace, "plan-history-empty"))
        full_runs.append(run_command(argv, history_home, workspace, "plan-history-full"))
    empty, full = (min(runs, key=lambda item: item.wall_seconds) for runs in (empty_runs, full_runs))
    estimated = sum(
        row["estimate_seconds"] is not None for row in json.loads(full.stdout_file.read_text())["runs"]
    )
    report.add(
        Figure(
            HISTORY_EMPTY,
            HISTORY_PLAN_RUNS,
            empty.wall_seconds,
            "s",
            command_detail(empty, len(empty_runs)),
            empty.cpu_seconds,
        )
    )
    report.add(
        Figure(
            HISTORY_FULL,
            HISTORY_PLAN_RUNS,
            full.wall_seconds,
            "s",
            command_detail(full, len(full_runs), f"{estimated} runs estimated from the history"),
            full.cpu_seconds,
        )
    )
    report.add(
        Figure(
            HISTORY_ADDED,
            HISTORY_RUNS,
            full.wall_seconds - empty.wall_seconds,
            "s",
            "",
            full.cpu_seconds - empty.cpu_seconds,
        )
    )


def row_help(report: Report, workspace: Workspace) -> None:
    """Row 6: ``orch --help``, best of 5; the bare interpreter's start-up alongside."""
    home = workspace.home("help")
    bare = min(
        (run_command([sys.executable, "-c", "pass"], home, workspace, "python") for _ in range(HELP_REPEATS)),
        key=lambda item: item.wall_seconds,
    )
    runs = [run_command(orch_command("--help"), home, workspace, "help") for _ in range(HELP_REPEATS)]
    best = min(runs, key=lambda item: item.wall_seconds)
    report.add(
        Figure(
            HELP,
            None,
            best.wall_seconds,
            "s",
            command_detail(best, HELP_REPEATS, f"python -c pass: {bare.wall_seconds:.3f} s"),
            best.cpu_seconds,
        )
    )


def row_insert_ratio(report: Report, workspace: Workspace, repeats: int) -> None:
    """Row 7: the registry insert of ``submit`` (``record_sweep``: rows built from the plan, spec
    texts included) of 500 runs vs ``executemany`` of the rows it wrote (sweeps, spec_sections, runs,
    sweep_runs)
    into a fresh registry of the same schema, one transaction each."""
    from orchestrator.cli import read_sweep
    from orchestrator.submit import record_sweep

    plan = read_sweep(write_sweep(workspace, sweep_document("scale_insert", INSERT_RUNS)))
    recorded = []
    for attempt in range(max(1, repeats)):
        engine = open_registry(workspace.home(f"insert-{attempt}"))
        try:
            start = time.perf_counter()
            with Session(engine) as session, session.begin():
                record_sweep(session, plan)
            recorded.append(time.perf_counter() - start)
        finally:
            engine.dispose()
        if sum(recorded) > REPEAT_BUDGET_SECONDS:
            break
    rows = registry_rows(workspace.home("insert-0"))
    plain = min(
        timed_executemany(workspace.home(f"executemany-{attempt}"), rows)
        for attempt in range(max(3, repeats))
    )
    detail = (
        f"record_sweep {min(recorded):.3f} s (best of {len(recorded)}), executemany {1000 * plain:.1f} ms "
        f"of {sum(len(r) for _, _, r in rows)} rows"
    )
    report.add(Figure(INSERT_RATIO, INSERT_RUNS, min(recorded) / plain, "x", detail))


INSERTED_TABLES = ("sweeps", "spec_sections", "runs", "sweep_runs")  # foreign-key order


def registry_rows(home: OrchHome) -> list[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """(table, columns, rows) of the tables a submission writes, in foreign-key order."""
    with sqlite3.connect(home.registry_file) as connection:
        tables = []
        for table in INSERTED_TABLES:
            cursor = connection.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            tables.append((table, [column[0] for column in cursor.description], cursor.fetchall()))
    return tables


def timed_executemany(home: OrchHome, tables: list[tuple[str, list[str], list[tuple[Any, ...]]]]) -> float:
    """Seconds to insert ``tables`` with plain ``executemany`` into a fresh registry (migrated by
    orch, then opened with the registry's pragmas: rollback journal, foreign keys, BEGIN IMMEDIATE)."""
    open_registry(home).dispose()
    connection = sqlite3.connect(home.registry_file, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("PRAGMA foreign_keys=ON")
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        for table, columns, rows in tables:
            marks = ", ".join("?" * len(columns))
            connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608 - fixed table names
        connection.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        connection.close()


# -- one size -------------------------------------------------------------------------------------


def measure_size(
    report: Report, workspace: Workspace, size: int, repeats: int
) -> Optional[tuple[OrchHome, dict[str, Any]]]:
    """Rows 1, 2, 3 and 5 at one size; the synced home and its sweep (None when a row failed)."""
    print(f"\n== {_count(size)} runs (load {_load()})", flush=True)
    sweep = sweep_document(f"scale_{size}", size)
    sweep_file = write_sweep(workspace, sweep)
    home = workspace.home(f"registry-{size}")
    report.sizes_attempted.add(size)
    try:
        row_plan(report, workspace, sweep_file, size, repeats)
    except Exception as error:  # noqa: BLE001 - a report: the next rows still run where they can
        report.fail(f"row 1 (orch plan) at {_count(size)} runs", error)
    chain: list[tuple[str, Callable[[], None]]] = [  # each needs the registry the one before built
        ("row 2 (record_submission)", lambda: row_record(report, home, sweep_file, size)),
        ("row 3 (sync)", lambda: row_sync(report, workspace, home, size, repeats)),
        ("row 5 (status, runs, export)", lambda: row_queries(report, workspace, home, sweep, size, repeats)),
    ]
    for index, (label, step) in enumerate(chain):
        try:
            step()
        except Exception as error:  # noqa: BLE001 - a report: the next rows still run where they can
            report.fail(f"{label} at {_count(size)} runs", error)
            for skipped, _ in chain[index + 1 :]:
                print(f"  {skipped}: skipped (needs the registry of the row before)", flush=True)
            return None
    return home, sweep


def history_registry(
    report: Report, workspace: Workspace, built: dict[int, tuple[OrchHome, dict[str, Any]]], repeats: int
) -> Optional[tuple[OrchHome, dict[str, Any]]]:
    """The synced registry of 1 000 completed runs: the one measured (None if that failed), or one
    built for row 4 only."""
    if HISTORY_RUNS in report.sizes_attempted:
        return built.get(HISTORY_RUNS)
    print(f"\n== {_count(HISTORY_RUNS)} runs for row 4 (not among --sizes: built, measured too)", flush=True)
    return measure_size(report, workspace, HISTORY_RUNS, repeats)


# -- summary --------------------------------------------------------------------------------------


def summary_rows(figures: list[Figure]) -> list[list[str]]:
    """operation, size, measured, CPU, target, ratio, growth; an extrapolated row (~) where the target's
    size was not measured but two smaller ones were."""
    rows = []
    first_seen = {
        operation: index for index, operation in reversed(list(enumerate(item.operation for item in figures)))
    }
    for figure in sorted(figures, key=lambda item: (first_seen[item.operation], item.size or 0)):
        target = TARGETS.get(figure.operation)
        applies = target is not None and target.at_size in (None, figure.size)
        ratio = f"{figure.value / target.limit:.2f}" if applies and target else ""
        target_text = target.text(figure.unit) if target else ""
        cpu = f"{_number(figure.cpu_seconds)} s" if figure.cpu_seconds is not None else ""
        rows.append(
            [
                figure.operation,
                _count(figure.size),
                f"{_number(figure.value)} {figure.unit}",
                cpu,
                target_text,
                ratio,
                growth_text(figures, figure),
            ]
        )
        extrapolated = extrapolation(figures, figure)
        if extrapolated is not None and target is not None and target.at_size is not None:
            rows.append(
                [
                    figure.operation + " (extrapolated)",
                    f"~{_count(target.at_size)}",
                    f"~{_number(extrapolated)} {figure.unit}",
                    "",
                    target_text,
                    f"~{extrapolated / target.limit:.2f}",
                    "",
                ]
            )
    return rows


def same_operation(figures: list[Figure], figure: Figure) -> list[Figure]:
    return sorted(
        (item for item in figures if item.operation == figure.operation and item.size),
        key=lambda item: item.size or 0,
    )


def growth_text(figures: list[Figure], figure: Figure) -> str:
    """log(t2/t1)/log(n2/n1) from the next smaller size of the same operation (totals only)."""
    if figure.operation not in GROWING:
        return ""
    smaller = [item for item in same_operation(figures, figure) if (item.size or 0) < (figure.size or 0)]
    if not smaller or smaller[-1].value <= 0 or figure.value <= 0:
        return ""
    previous = smaller[-1]
    return (
        f"{math.log(figure.value / previous.value) / math.log((figure.size or 1) / (previous.size or 1)):.2f}"
    )


def extrapolation(figures: list[Figure], figure: Figure) -> Optional[float]:
    """At the target's size, from the two largest sizes measured below it (affine: a fixed cost
    plus a cost per run); only on the row of the largest size measured, None otherwise."""
    target = TARGETS.get(figure.operation)
    if target is None or target.at_size is None:
        return None
    below = [item for item in same_operation(figures, figure) if (item.size or 0) < target.at_size]
    if (
        len(below) < 2
        or below[-1] is not figure
        or any(item.size == target.at_size for item in same_operation(figures, figure))
    ):
        return None
    (n1, t1), (n2, t2) = ((item.size or 0, item.value) for item in below[-2:])
    if n1 == n2:
        return None
    per_run = max(0.0, (t2 - t1) / (n2 - n1))
    return t2 + per_run * (target.at_size - n2)


def print_summary(report: Report) -> None:
    header = ["operation", "size", "measured", "CPU", "target", "ratio", "growth"]
    rows = summary_rows(report.figures)
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    print(
        "\nsummary (ratio = measured / target: <= 1 is met; growth = log(t2/t1)/log(n2/n1) from the "
        "next smaller size;"
    )
    print(
        "~ = extrapolated to the target's size from the two largest sizes measured, a fixed cost plus "
        "a cost per run)"
    )
    for row in [header, ["-" * width for width in widths], *rows]:
        print(
            "  ".join(
                cell.ljust(width) if column < 2 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            )
        )
    for failure in report.failures:
        print(f"NOT MEASURED: {failure}")


# -- main -----------------------------------------------------------------------------------------


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=size_list,
        default=list(DEFAULT_SIZES),
        help="runs per sweep, comma-separated multiples of 10 (default 1000,10000,100000)",
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 only")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"best of this many runs of a command (while its runs took under {REPEAT_BUDGET_SECONDS:.0f} s)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the homes, sweep files and outputs (their folder is printed)",
    )
    options = parser.parse_args()
    if options.quick:
        options.sizes = list(QUICK_SIZES)
    return options


def size_list(text: str) -> list[int]:
    try:
        sizes = sorted({int(item.replace("_", "")) for item in text.split(",") if item.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: accepted: comma-separated numbers of runs, e.g. 1000,10000"
        ) from None
    if not sizes or any(size < SEEDS or size % SEEDS for size in sizes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: accepted: multiples of {SEEDS} (seeds), at least {SEEDS}"
        )
    return sizes


def make_workspace() -> Workspace:
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK)
    return Workspace(Path(tempfile.mkdtemp(prefix="orch-scale-", dir=shm if on_tmpfs else None)), on_tmpfs)


def describe_machine(workspace: Workspace) -> None:
    import sqlalchemy

    where = "registry on tmpfs" if workspace.on_tmpfs else "registry NOT on tmpfs (no writable /dev/shm)"
    print(f"scale benchmark (issue 14): {where}: {workspace.root}")
    print(
        f"code: {ROOT} ({_source_version()}); python {sys.version.split()[0]}, sqlite "
        f"{sqlite3.sqlite_version}, sqlalchemy {sqlalchemy.__version__}"
    )
    print(f"machine: {os.cpu_count()} CPUs; load average at start {_load()}")


def _source_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (f" with {len(changed)} modified files" if changed else "")


def main() -> int:
    options = arguments()
    workspace = make_workspace()
    describe_machine(workspace)
    report = Report()
    started = time.perf_counter()
    try:
        built = {}
        for size in options.sizes:
            synced = measure_size(report, workspace, size, options.repeats)
            if synced is not None:
                built[size] = synced
        print(f"\n== once (load {_load()})", flush=True)
        once: list[tuple[str, Callable[[], None]]] = [
            ("row 4 (plan with history)", lambda: history_row(report, workspace, built, options.repeats)),
            ("row 6 (orch --help)", lambda: row_help(report, workspace)),
            ("row 7 (insert ratio)", lambda: row_insert_ratio(report, workspace, options.repeats)),
        ]
        for label, step in once:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - a report: the next rows still run
                report.fail(label, error)
    finally:
        if options.keep:
            print(f"\nkept: {workspace.root}")
        else:
            shutil.rmtree(workspace.root, ignore_errors=True)
    print_summary(report)
    print(f"load average at end {_load()}; {time.perf_counter() - started:.0f} s in all")
    return 1 if report.failures else 0


def history_row(
    report: Report, workspace: Workspace, built: dict[int, tuple[OrchHome, dict[str, Any]]], repeats: int
) -> None:
    history = history_registry(report, workspace, built, repeats)
    if history is None:
        raise RuntimeError(f"no synced registry of {HISTORY_RUNS} completed runs (see the rows above)")
    home, sweep = history
    row_history(report, workspace, home, sweep["grid"], repeats)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _count(size: Optional[int]) -> str:
    return f"{size:,}".replace(",", " ") if size else "-"


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:#.3g}" if abs(value) < 10 else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
