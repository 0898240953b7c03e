"""``orch analyze``: the papers' figures and tables for runs, sweeps or a ``--where`` selection.

Run analyses (``jobs.analyses.analysis``) read each run's shards one file at a time and write
their figures and CSVs into the run's ``figures/`` folder (or ``--out``). Sweep views
(``curves``, ``table``) read metric series from the registry and write one figure/table for the
whole selection into ``--out`` (default ``<home>/analyses``), grouped by ``--group-by`` keys
(default: the keys the sweeps vary, without the seed).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy.orm import Session

from jobs.analyses import analysis
from jobs.analyses.job import AnalysisJob, read_report, report_document
from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput
from jobs.paths import RunPaths
from jobs.spec import spec_from_json
from orchestrator.containers import launcher_argv
from orchestrator.errors import UserError
from orchestrator.executors.local import streams_detached
from orchestrator.home import OrchHome
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Run
from orchestrator.resources import ResourceProblem, resolve_resources
from orchestrator.safe_output import check_output_folder
from orchestrator.submit import profile_of, resolve_targets, results_umask
from orchestrator.sweep import SEED_KEY
from orchestrator.views import WhereClause, flat_spec, matches_where, metric_series, run_row, select_runs, swept_values

ANALYSIS_TIME = "04:00:00"  # --time of an analysis job: shards are read once, in order


@dataclass(frozen=True)
class AnalysisReport:
    target: str  # a run id, or the selection of a sweep view
    analysis: str
    output: AnalysisOutput

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "analysis": self.analysis, **report_document(self.output)}


def options_of(arguments: argparse.Namespace, probe: str) -> AnalysisOptions:
    for name in ("stride", "block", "kernel", "steps_per_epoch"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} {value} is not allowed; accepted: an integer >= 1")
    if not all(math.isfinite(value) and value > 0 for value in (arguments.window, arguments.pal_mu, *arguments.sgd_lr)):
        raise UserError(f"--window {arguments.window}, --pal-mu {arguments.pal_mu}, --sgd-lr {arguments.sgd_lr}: not all finite and positive; accepted: finite numbers > 0")
    if min(arguments.batch_sizes) < 1:
        raise UserError(f"--batch-sizes {arguments.batch_sizes} is not allowed; accepted: integers >= 1")
    return AnalysisOptions(
        probe=arguments.probe or probe, steps=arguments.steps, image_format=arguments.format, window=arguments.window,
        stride=arguments.stride, block=arguments.block, kernel=arguments.kernel, sgd_learning_rates=tuple(arguments.sgd_lr), pal_measuring_step=arguments.pal_mu,
        batch_sizes=tuple(arguments.batch_sizes), steps_per_epoch=arguments.steps_per_epoch,
    )  # fmt: skip


def check_out_folder(out: Path | None, home: OrchHome) -> None:
    """``--out``: a folder (or a new one in an existing folder), not inside the home but for its
    analyses folder (the default of sweep views)."""
    if out is not None:
        check_output_folder("--out", out, [home.root], allowed=[default_sweep_folder(home)])


def default_sweep_folder(home: OrchHome) -> Path:
    return home.root / "analyses"


def selected_runs(session: Session, targets: Sequence[str], where: Sequence[WhereClause]) -> list[Run]:
    if not targets and not where:
        raise UserError("orch analyze needs a target; accepted: sweep names, run ids (prefixes), or --where KEY=VALUE")
    runs = resolve_targets(session, targets) if targets else select_runs(session, None, None, where)
    if targets and where:
        runs = [run for run in runs if matches_where(run, where)]
    return [run for run in runs if run.run_dir is not None]


def analyze_runs(runs: Sequence[Run], arguments: argparse.Namespace, home: OrchHome) -> list[AnalysisReport]:
    options = options_of(arguments, analysis(arguments.figure).probe)
    jobs = []
    for run in runs:
        paths = RunPaths(Path(run.run_dir))  # type: ignore[arg-type]
        run_input = RunInput(run.id, paths, f"run {run.id}: {swept_values(run)}", arguments.out or paths.run_dir / "figures")
        jobs.append(AnalysisJob(arguments.figure, run_input, options))
    if arguments.executor is None:
        return [in_process(job, run) for job, run in zip(jobs, runs)]
    return submitted_analyses(runs, jobs, arguments.executor, home)


def in_process(job: AnalysisJob, run: Run) -> AnalysisReport:
    with results_umask(profile_of(run)):  # figures in the run's folder get its profile's modes
        return AnalysisReport(job.run.run_id, job.name, analysis(job.name).run(job.run, job.options))


def submitted_analyses(runs: Sequence[Run], jobs: Sequence[AnalysisJob], executor_name: str, home: OrchHome) -> list[AnalysisReport]:
    """Each analysis as a job on ``executor_name``; waits for them and reads their JSON reports."""
    submission = "analyze-" + time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    submitted = []
    for run, job in zip(runs, jobs):
        spec = spec_from_json(run.spec_json)
        profile = load_profile(spec.cluster)
        try:
            resources = resolve_resources(replace(spec.resources, gpus=0, gpu_type=None, partition=None, time=ANALYSIS_TIME, segments=1), profile)
        except ResourceProblem as problem:
            raise UserError(f"an analysis job of run {run.id} does not fit cluster {profile.name}: {problem.found}; accepted: {problem.accepted}") from None
        launcher = launcher_argv(replace(spec, resources=resources), profile, home)
        folder = profile.results_path(home) / "submitit" / submission
        executor = analysis_executor(executor_name, folder, launcher, resources, profile, submission)
        # a local job must not hold orch's stdout (orch analyze … | cat would wait for it)
        with results_umask(profile), streams_detached(folder / "controller.log") if executor_name == "local" else contextlib.nullcontext():
            submitted.append(executor.submit(job))
    return [AnalysisReport(job.run.run_id, job.name, read_report(Path(handle.result()))) for job, handle in zip(jobs, submitted)]


def analysis_executor(name: str, folder: Path, launcher: Sequence[str], resources: Any, profile: ClusterProfile, job_name: str) -> Any:
    import submitit

    python = shlex.join(launcher) if launcher else shlex.quote(sys.executable)
    if name == "debug":
        return submitit.DebugExecutor(folder=folder)
    if name == "local":
        return submitit.LocalExecutor(folder=folder, python=python)
    from orchestrator.executors.slurm import sbatch_parameters

    executor = submitit.SlurmExecutor(folder=folder, python=python)
    executor.update_parameters(**sbatch_parameters(resources, job_name, profile.max_parallel, profile.signal_delay_s, profile.sbatch))
    return executor


def analyze_sweep(session: Session, runs: Sequence[Run], arguments: argparse.Namespace, home: OrchHome) -> AnalysisReport:
    from jobs.analyses.groups import RunCurves, curves, result_table

    keys = arguments.group_by or default_group_keys(runs)
    configs = {run.id: flat_spec(run) for run in runs}
    known = {key for config in configs.values() for key in config}
    unknown = [key for key in keys if key not in known]
    if unknown:
        section = unknown[0].split(".")[0]
        related = sorted(key for key in known if key.split(".")[0] == section) or sorted(known)
        raise UserError(f"--group-by {', '.join(unknown)}: not a key of these runs' specs; accepted: dotted spec keys, e.g. {', '.join(related)}")
    selection = "+".join(arguments.targets) or "where"
    out_dir = arguments.out or default_sweep_folder(home)
    collected = [RunCurves(run.id, configs[run.id], metric_series(session, run.id)) for run in runs]
    title = f"{selection}: {len(runs)} runs grouped by {', '.join(keys) or '(nothing)'}"
    with results_umask(*{run_profile.name: run_profile for run_profile in map(profile_of, runs)}.values()):
        if arguments.figure == "curves":
            output = curves(collected, keys, out_dir, selection, arguments.format, title)
        else:
            output = result_table(collected, keys, out_dir, selection)
    return AnalysisReport(selection, arguments.figure, output)


def default_group_keys(runs: Sequence[Run]) -> list[str]:
    """The keys the runs' sweeps vary, without the seed (their runs are averaged)."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update((key, None) for key in run_row(run)["swept"] if key != SEED_KEY)
    return list(keys)


def print_reports(reports: Sequence[AnalysisReport]) -> None:
    for report in reports:
        written = ", ".join(str(path) for path in report.output.figures) or "no figure"
        numbers = ", ".join(f"{key}={_short(value)}" for key, value in report.output.summary.items() if not isinstance(value, (dict, list)))
        print(f"{report.target} {report.analysis}: {written}")
        if numbers:
            print(f"  {numbers}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
