"""``orch analyze``: the papers' figures and tables for runs, sweeps or a ``--where`` selection.

Run analyses (``jobs.analyses.analysis``) read each run's shards one file at a time and write
their figures and CSVs into the run's ``figures/`` folder (or ``--out``). Sweep views
(``curves``, ``table``) read metric series from the registry and write one figure/table for the
whole selection into ``--out`` (default ``<home>/analyses``), grouped by ``--group-by`` keys
(default: the keys the sweeps vary, without the seed).

With ``--executor`` the run analyses go out as job arrays (:func:`plan_arrays`,
:func:`submit_arrays`): one array per cluster profile, launcher and resources (usually one in
all), each asking for the time its costliest run needs (:func:`job_time`). On Slurm ``orch``
prints what it submitted and returns unless ``--wait`` is given; local and debug jobs are always
waited for (:func:`waits`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from sqlalchemy.orm import Session

from jobs.analyses import analysis
from jobs.analyses.common import AnalysisOptions, AnalysisOutput, RunInput
from jobs.analyses.job import AnalysisJob, read_report, report_document
from jobs.paths import RunPaths
from jobs.spec import ResourcesSpec, slurm_time, spec_from_json, time_limit_minutes
from orchestrator.bulk import in_chunks
from orchestrator.containers import launcher_argv
from orchestrator.errors import UserError, bounded_list, one_paragraph
from orchestrator.executors import JobSettings, backend_class, get_backend
from orchestrator.home import OrchHome
from orchestrator.launch import results_umask
from orchestrator.profiles import ClusterProfile, load_profile
from orchestrator.registry.models import Run
from orchestrator.resources import SIGNAL_SLACK_S, ResourceProblem, resolve_resources
from orchestrator.safe_output import check_output_folder
from orchestrator.submit import profile_of, resolve_targets
from orchestrator.sweep import SEED_KEY
from orchestrator.views import (
    WhereClause,
    flat_spec,
    matches_where,
    metric_series_of,
    select_runs,
    swept_of,
    swept_values,
)

# The cost of one run's analysis, measured on the development machine (2 cores, local NVMe, page
# cache emptied before each run; docs/analyses.md, "Time of an analysis job"): the slowest of the
# run analyses per shard and per MiB of shards read, and what every job pays before its first shard.
ANALYSIS_START_S = 6.0  # imports (submitit, numpy, safetensors, matplotlib: 3 s) and the first figure (2.5 s)
ANALYSIS_S_PER_SHARD = (
    0.004  # walk: 2 000 interpolation shards (0.9 MiB) in 3.5 s idle, 7.5-8.5 s on a loaded machine
)
ANALYSIS_S_PER_MIB = 0.003  # batch-size: 40 line shards of 20 000 samples (513 MiB) in 1.4-1.5 s
ANALYSIS_SAFETY_FACTOR = 4.0  # a slower node, a shared file system (~80 MiB/s where this disk did 350)
ANALYSIS_FLOOR_MINUTES = 5  # no analysis job asks for less (queueing, a slow start)
MIB = 2**20


@dataclass(frozen=True)
class AnalysisReport:
    target: str  # a run id, or the selection of a sweep view
    analysis: str
    output: AnalysisOutput

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "analysis": self.analysis, **report_document(self.output)}

    @property
    def written(self) -> list[Path]:
        """Every file the analysis wrote: its figures, then its tables (CSV, Markdown, npz)."""
        return [*self.output.figures, *self.output.tables]


@dataclass(frozen=True)
class AnalyzeRequest:
    """What ``orch analyze`` was asked (the command line's options, typed; the field names are
    its destinations)."""

    figure: str
    targets: Sequence[str] = ()
    where: Sequence[WhereClause] = ()
    probe: Optional[str] = None
    steps: Optional[tuple[int, int]] = None
    out: Optional[Path] = None
    format: str = "png"
    window: float = 0.2
    stride: int = 1
    block: int = 256
    kernel: int = 25
    sgd_lr: Sequence[float] = (0.1, 0.05)
    pal_mu: float = 0.1
    batch_sizes: Sequence[int] = (32, 64, 128, 256, 512, 1024)
    steps_per_epoch: Optional[int] = None
    group_by: Optional[Sequence[str]] = None
    executor: Optional[str] = None
    wait: bool = False


def options_of(request: AnalyzeRequest, probe: str) -> AnalysisOptions:
    for name in ("stride", "block", "kernel", "steps_per_epoch"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} {value} is not allowed; accepted: an integer >= 1")
    if not all(
        math.isfinite(value) and value > 0 for value in (request.window, request.pal_mu, *request.sgd_lr)
    ):
        raise UserError(
            f"--window {request.window}, --pal-mu {request.pal_mu}, --sgd-lr {request.sgd_lr}: "
            "not all finite and positive; accepted: finite numbers > 0"
        )
    if min(request.batch_sizes) < 1:
        raise UserError(f"--batch-sizes {request.batch_sizes} is not allowed; accepted: integers >= 1")
    return AnalysisOptions(
        probe=request.probe or probe,
        steps=request.steps,
        image_format=request.format,
        window=request.window,
        stride=request.stride,
        block=request.block,
        kernel=request.kernel,
        sgd_learning_rates=tuple(request.sgd_lr),
        pal_measuring_step=request.pal_mu,
        batch_sizes=tuple(request.batch_sizes),
        steps_per_epoch=request.steps_per_epoch,
    )


def check_out_folder(out: Path | None, home: OrchHome) -> None:
    """``--out``: a folder (or a new one in an existing folder), not inside the home but for its
    analyses folder (the default of sweep views)."""
    if out is not None:
        check_output_folder("--out", out, [home.root], allowed=[default_sweep_folder(home)])


def default_sweep_folder(home: OrchHome) -> Path:
    return home.root / "analyses"


def selected_runs(session: Session, targets: Sequence[str], where: Sequence[WhereClause]) -> list[Run]:
    if not targets and not where:
        raise UserError(
            "orch analyze needs a target; accepted: sweep names, run ids (prefixes), or --where KEY=VALUE"
        )
    runs = resolve_targets(session, targets) if targets else select_runs(session, None, None, where)
    if targets and where:
        runs = [run for run in runs if matches_where(run, where)]
    return [run for run in runs if run.run_dir is not None]


def analysis_jobs(runs: Sequence[Run], request: AnalyzeRequest) -> list[AnalysisJob]:
    """One job per run: ``--figure`` with the command line's options, writing into the run's
    ``figures/`` folder or ``--out``."""
    options = options_of(request, analysis(request.figure).probe)
    jobs = []
    for run in runs:
        paths = RunPaths(Path(run.run_dir))  # type: ignore[arg-type]  # submitted runs only: a folder each
        run_input = RunInput(
            run.id, paths, f"run {run.id}: {swept_values(run)}", request.out or paths.run_dir / "figures"
        )
        jobs.append(AnalysisJob(request.figure, run_input, options))
    return jobs


def run_in_process(jobs: Sequence[AnalysisJob], profiles: Sequence[ClusterProfile]) -> list[AnalysisReport]:
    """The analyses, one after the other, in this process (no registry access: none may be open)."""
    reports = []
    for job, profile in zip(jobs, profiles):
        with results_umask(profile):  # figures in the run's folder get its profile's modes
            reports.append(
                AnalysisReport(job.run.run_id, job.name, analysis(job.name).run(job.run, job.options))
            )
    return reports


# -- the time an analysis job asks for ------------------------------------------------------------


@dataclass(frozen=True)
class ShardVolume:
    """What one run's analysis reads: the shards of its probe within ``--steps``, counted and sized
    as the registry records them (each file's bytes as its job published it; ``orch analyze``
    syncs first), so that a selection of 10 000 runs costs one query, not a walk of every folder."""

    shards: int = 0
    bytes: int = 0

    @property
    def seconds(self) -> float:
        """The analysis's time on the development machine: start, per shard and per MiB measured
        there on the slowest analysis (:data:`ANALYSIS_S_PER_SHARD`, :data:`ANALYSIS_S_PER_MIB`)."""
        return ANALYSIS_START_S + self.shards * ANALYSIS_S_PER_SHARD + self.bytes / MIB * ANALYSIS_S_PER_MIB


def shard_volumes(
    session: Session, run_ids: Sequence[str], probe: str, steps: Optional[tuple[int, int]]
) -> dict[str, ShardVolume]:
    """:class:`ShardVolume` of each run (absent: no shard of ``probe`` in the range), one grouped
    query per :data:`IN_CHUNK` runs."""
    from sqlalchemy import func, select

    from orchestrator.registry.tables import shards

    volumes = {}
    for chunk in in_chunks(run_ids):
        query = select(shards.c.run_id, func.count(), func.coalesce(func.sum(shards.c.bytes), 0))
        query = query.where(shards.c.run_id.in_(chunk), shards.c.probe == probe).group_by(shards.c.run_id)
        if steps is not None:
            query = query.where(shards.c.step >= steps[0], shards.c.step < steps[1])
        volumes.update(
            {run_id: ShardVolume(int(count), int(size)) for run_id, count, size in session.execute(query)}
        )
    return volumes


@dataclass(frozen=True)
class JobTime:
    """The ``--time`` of an analysis job and how it came about."""

    estimate_s: float  # ShardVolume.seconds of the costliest run of the array
    minutes: int  # asked for
    capped: bool  # the estimate needed more than the profile's longest partition allows

    @property
    def slurm_time(self) -> str:
        return slurm_time(self.minutes)


def job_time(estimate_s: float, profile: ClusterProfile) -> JobTime:
    """Minutes to ask for an analysis measured at ``estimate_s`` seconds on the development machine:
    times :data:`ANALYSIS_SAFETY_FACTOR`, at least :data:`ANALYSIS_FLOOR_MINUTES`, plus the
    profile's warning before the limit (``signal_delay_s`` and Slurm's slack: an analysis cannot
    checkpoint, so submitit ends it at the signal), rounded up to whole minutes, and at most the
    profile's longest partition (an analysis is not split into segments)."""
    needed_s = (
        max(estimate_s * ANALYSIS_SAFETY_FACTOR, ANALYSIS_FLOOR_MINUTES * 60)
        + profile.signal_delay_s
        + SIGNAL_SLACK_S
    )
    minutes = math.ceil(needed_s / 60)
    if profile.partitions:
        longest = math.floor(max(time_limit_minutes(partition.max_time) for partition in profile.partitions))
        if minutes > longest:
            return JobTime(estimate_s, longest, True)
    return JobTime(estimate_s, minutes, False)


# -- arrays of analysis jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisTask:
    """One run's analysis as a job, and what decides which array it joins."""

    job: AnalysisJob
    profile: ClusterProfile
    resources: ResourcesSpec  # the run's CPUs and memory, no GPU; time and partition still open
    launcher: tuple[str, ...]  # the run's container wrapper, () for this Python
    volume: ShardVolume

    @property
    def array_key(self) -> str:
        return json.dumps(
            [self.profile.name, self.launcher, dataclasses.asdict(self.resources)],
            sort_keys=True,
            default=str,
        )


@dataclass(frozen=True)
class AnalysisArray:
    """Analysis jobs submitted together: one profile, launcher and set of resources."""

    name: str  # the job name, orch:analyze:<figure>:<time>-<random>[.<array>]: what it is in squeue
    folder: Path  # submitit's files: scripts, logs, pickles
    profile: ClusterProfile
    resources: ResourcesSpec  # with the time of the costliest task and the partition that allows it
    launcher: tuple[str, ...]
    time: JobTime
    tasks: tuple[AnalysisTask, ...]


def plan_arrays(
    session: Session, runs: Sequence[Run], jobs: Sequence[AnalysisJob], executor: str, home: OrchHome
) -> list[AnalysisArray]:
    """The arrays that run ``jobs`` (one per run, :func:`analysis_jobs`) on ``executor``: runs
    grouped by profile, launcher and resources, each group cut at the cluster's MaxArraySize
    (Slurm). A run whose analysis does not fit its cluster, or no Slurm here, is an error before
    anything is submitted."""
    backend = get_backend(executor)
    backend.check_available()
    volumes = (
        shard_volumes(session, [run.id for run in runs], jobs[0].options.probe, jobs[0].options.steps)
        if jobs
        else {}
    )
    groups: dict[str, list[AnalysisTask]] = {}
    for run, job in zip(runs, jobs):
        task = analysis_task(run, job, volumes.get(run.id, ShardVolume()), home)
        groups.setdefault(task.array_key, []).append(task)
    chunk_size = backend.array_limit() or max(len(runs), 1)
    chunks = [
        tasks[start : start + chunk_size]
        for tasks in groups.values()
        for start in range(0, len(tasks), chunk_size)
    ]
    submission = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    return [
        array_of(tuple(tasks), submission, number if len(chunks) > 1 else None, home)
        for number, tasks in enumerate(chunks)
    ]


def analysis_task(run: Run, job: AnalysisJob, volume: ShardVolume, home: OrchHome) -> AnalysisTask:
    spec = spec_from_json(run.spec_json)
    profile = load_profile(spec.cluster)
    resources = replace(spec.resources, gpus=0, gpu_type=None, partition=None, time=None, segments=1)
    return AnalysisTask(
        job,
        profile,
        resources,
        tuple(launcher_argv(replace(spec, resources=resources), profile, home)),
        volume,
    )


def array_of(
    tasks: tuple[AnalysisTask, ...], submission: str, number: Optional[int], home: OrchHome
) -> AnalysisArray:
    first, figure = tasks[0], tasks[0].job.name
    needed = job_time(max(task.volume.seconds for task in tasks), first.profile)
    try:
        resources = resolve_resources(replace(first.resources, time=needed.slurm_time), first.profile)
    except ResourceProblem as problem:
        raise UserError(
            f"the analysis job of run {first.job.run.run_id} does not fit cluster "
            f"{first.profile.name}: resources.{problem.key} {problem.found}; accepted: "
            f"{problem.accepted}"
        ) from None
    suffix = "" if number is None else f".{number}"
    folder = first.profile.results_path(home) / "submitit" / f"analyze-{figure}-{submission}{suffix}"
    return AnalysisArray(
        f"orch:analyze:{figure}:{submission}{suffix}",
        folder,
        first.profile,
        resources,
        first.launcher,
        needed,
        tasks,
    )


# -- submitting and waiting -----------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedArray:
    array: AnalysisArray
    jobs: tuple[Any, ...]  # submitit Jobs, one per task, in the order of array.tasks

    @property
    def job_ids(self) -> list[str]:
        return [str(job.job_id) for job in self.jobs]

    @property
    def array_id(self) -> str:
        """Slurm's array job id (``123`` of ``123_4``); a local job's controller process id."""
        return self.job_ids[0].partition("_")[0] if self.jobs else ""


@dataclass(frozen=True)
class AnalysisSubmission:
    figure: str
    executor: str
    arrays: tuple[SubmittedArray, ...]

    @property
    def runs(self) -> int:
        return sum(len(submitted.array.tasks) for submitted in self.arrays)


@dataclass(frozen=True)
class AnalysisFailure:
    run_id: str
    job_id: str
    problem: str  # the last line of what submitit says of the job
    log: Path  # the job's stderr


def waits(executor: str, wait: bool) -> bool:
    """Whether ``orch analyze`` waits for its jobs: on a scheduler's queue (Slurm) only with
    ``--wait``; local jobs run on this machine within minutes and debug jobs in this very process,
    so those are always waited for."""
    return wait or not backend_class(executor).queued


def submit_arrays(arrays: Sequence[AnalysisArray], figure: str, executor_name: str) -> AnalysisSubmission:
    return AnalysisSubmission(
        figure, executor_name, tuple(submit_array(array, executor_name) for array in arrays)
    )


def submit_array(
    array: AnalysisArray, executor_name: str, dependency: Optional[str] = None
) -> SubmittedArray:
    """One ``executor.batch()``: a Slurm job array (sbatch once, after ``dependency``), local
    processes, or debug jobs."""
    from submitit.core.utils import FailedJobError

    backend = get_backend(executor_name)
    executor = backend.submitit_executor(analysis_settings(array, dependency))
    detached = backend.submission_context(array.folder)
    refusal = io.StringIO()  # submitit prints sbatch's complaint before raising it: said once, below
    try:
        with results_umask(array.profile), detached, contextlib.redirect_stderr(refusal), executor.batch():
            jobs = [executor.submit(task.job) for task in array.tasks]
    except FailedJobError as error:  # sbatch refused the array
        raise UserError(
            f"sbatch refused the analysis array {array.name} (cluster {array.profile.name}, partition "
            f"{array.resources.partition}, "
            f"--time {array.time.slurm_time}): "
            f"{one_paragraph(str(error).strip() or refusal.getvalue().strip(), 300)}; "
            "accepted: a partition, account, QOS and options this cluster accepts (the cluster "
            f"profile configs/cluster/{array.profile.name}.yaml or yours)"
        ) from None
    return SubmittedArray(array, tuple(jobs))


def analysis_settings(array: AnalysisArray, dependency: Optional[str] = None) -> JobSettings:
    """The array's submitit settings (its jobs never requeue: an analysis that runs out of time is
    reported as failed)."""
    profile = array.profile
    return JobSettings(
        resources=array.resources,
        folder=array.folder,
        max_parallel=profile.max_parallel,
        name=array.name,
        launcher=array.launcher,
        max_requeues=0,
        signal_delay_s=profile.signal_delay_s,
        sbatch=profile.sbatch,
        dependency=dependency,
    )


def collect_reports(submission: AnalysisSubmission) -> tuple[list[AnalysisReport], list[AnalysisFailure]]:
    """Waits for every job and reads its JSON report; a job that failed or ran out of time is a
    failure naming its log."""
    from submitit.core.utils import UncompletedJobError

    reports, failures = [], []
    for submitted in submission.arrays:
        for task, job in zip(submitted.array.tasks, submitted.jobs):
            try:
                reports.append(
                    AnalysisReport(task.job.run.run_id, task.job.name, read_report(Path(job.result())))
                )
            except UncompletedJobError as error:
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                failures.append(
                    AnalysisFailure(
                        task.job.run.run_id,
                        str(job.job_id),
                        lines[-1] if lines else type(error).__name__,
                        Path(job.paths.stderr),
                    )
                )
    return reports, failures


# -- sweep views ----------------------------------------------------------------------------------


def analyze_sweep(
    session: Session, runs: Sequence[Run], request: AnalyzeRequest, home: OrchHome
) -> AnalysisReport:
    from jobs.analyses.groups import RunCurves, curves, result_table

    keys = request.group_by or default_group_keys(runs)
    configs = {run.id: flat_spec(run) for run in runs}
    check_group_keys(keys, configs.values())
    selection = "+".join(request.targets) or "where"
    out_dir = request.out or default_sweep_folder(home)
    series = metric_series_of(session, [run.id for run in runs])
    collected = [RunCurves(run.id, configs[run.id], series[run.id]) for run in runs]
    title = f"{selection}: {len(runs)} runs grouped by {', '.join(keys) or '(nothing)'}"
    with results_umask(*{run_profile.name: run_profile for run_profile in map(profile_of, runs)}.values()):
        if request.figure == "curves":
            output = curves(collected, keys, out_dir, selection, request.format, title)
        else:
            output = result_table(collected, keys, out_dir, selection)
    return AnalysisReport(selection, request.figure, output)


def check_group_keys(keys: Sequence[str], configs: Iterable[dict[str, Any]]) -> None:
    """``--group-by`` keys must be keys of the runs' flattened specs: else bad input naming the
    keys of the same section (or all) that are accepted."""
    known = {key for config in configs for key in config}
    unknown = [key for key in keys if key not in known]
    if unknown:
        section = unknown[0].split(".")[0]
        related = sorted(key for key in known if key.split(".")[0] == section) or sorted(known)
        raise UserError(
            f"--group-by {', '.join(unknown)}: not a key of these runs' specs; accepted: dotted spec "
            f"keys, e.g. {', '.join(related)}"
        )


def default_group_keys(runs: Sequence[Run]) -> list[str]:
    """The keys the runs' sweeps vary, without the seed (their runs are averaged)."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update((key, None) for key in swept_of(run) if key != SEED_KEY)
    return list(keys)


# -- what orch analyze prints ---------------------------------------------------------------------


def print_reports(
    reports: Sequence[AnalysisReport], failures: Sequence[AnalysisFailure], as_json: bool
) -> int:
    """The reports (``--json``: a list of objects) on stdout, each failed job on stderr; returns the
    number of failures."""
    from orchestrator import output

    if as_json:
        output.print_json([report.as_json() for report in reports])
    for report in reports if not as_json else ():
        written = report.written
        print(
            f"{report.target} {report.analysis}: wrote {len(written)} file{'s' if len(written) != 1 else ''}"
            if written
            else f"{report.target} {report.analysis}: wrote no file"
        )
        for path in written:  # every figure and table, one per line
            print(f"  {path}")
        numbers = ", ".join(
            f"{key}={_short(value)}"
            for key, value in report.output.summary.items()
            if not isinstance(value, (dict, list))
        )
        if numbers:
            print(f"  {numbers}")
    for failure in failures:
        print(
            f"orch: run {failure.run_id}: analysis job {failure.job_id} did not complete: "
            f"{one_paragraph(failure.problem, 300)}; its log: {failure.log}",
            file=sys.stderr,
        )
    return len(failures)


def submission_document(submission: AnalysisSubmission) -> dict[str, Any]:
    """What ``orch analyze --executor slurm --json`` prints when it does not wait."""
    return {
        "figure": submission.figure,
        "executor": submission.executor,
        "runs": submission.runs,
        "arrays": [array_document(submitted) for submitted in submission.arrays],
        "watch": watch_commands(submission),
    }


def array_document(submitted: SubmittedArray) -> dict[str, Any]:
    array = submitted.array
    return {
        "job_name": array.name,
        "array_id": submitted.array_id,
        "job_ids": submitted.job_ids,
        "cluster": array.profile.name,
        "partition": array.resources.partition,
        "time": array.time.slurm_time,
        "time_minutes": array.time.minutes,
        "estimate_seconds": round(array.time.estimate_s, 1),
        "time_capped": array.time.capped,
        "max_parallel": array.profile.max_parallel,
        "submitit_folder": str(array.folder),
        "tasks": [
            {
                "run": task.job.run.run_id,
                "job_id": job_id,
                "shards": task.volume.shards,
                "bytes": task.volume.bytes,
                "report": str(task.job.report_file),
                "out_dir": str(task.job.run.out_dir),
            }
            for task, job_id in zip(array.tasks, submitted.job_ids)
        ],
    }


def watch_commands(submission: AnalysisSubmission) -> list[str]:
    """The command lines that show the arrays: squeue while they wait or run, sacct afterwards."""
    array_ids = ",".join(submitted.array_id for submitted in submission.arrays)
    if not backend_class(submission.executor).queued or not array_ids:
        return []
    return [
        shlex.join(["squeue", "--jobs", array_ids]),
        shlex.join(["sacct", "--jobs", array_ids, "--format", "JobID,JobName%60,State,Elapsed,ExitCode"]),
    ]


def print_submission(submission: AnalysisSubmission, as_json: bool) -> int:
    """What was submitted, where its output will be and how to watch it (``--json``:
    :func:`submission_document`); returns 0."""
    from orchestrator import output

    if as_json:
        output.print_json(submission_document(submission))
        return 0
    if not submission.arrays:
        print(f"analyze {submission.figure}: no submitted run selected; nothing was submitted")
        return 0
    arrays = len(submission.arrays)
    print(
        f"analyze {submission.figure}: submitted {submission.runs} "
        f"run{'s' if submission.runs != 1 else ''} as {arrays} {submission.executor} "
        f"array{'s' if arrays != 1 else ''}"
    )
    for submitted in submission.arrays:
        array = submitted.array
        capped = " (capped: the longest partition)" if array.time.capped else ""
        shards, size = (
            sum(task.volume.shards for task in array.tasks),
            sum(task.volume.bytes for task in array.tasks),
        )
        print(
            f"  array {submitted.array_id} {array.name}: {len(array.tasks)} runs, {shards} shards "
            f"({size / MIB:.1f} MiB)"
        )
        print(
            f"    cluster {array.profile.name}, partition {array.resources.partition or '(default)'}, "
            f"--time {array.time.slurm_time}{capped} per run, at most {array.profile.max_parallel} at "
            f"once; costliest run estimated at {array.time.estimate_s:.0f} s"
        )
        print(f"    submitit folder (scripts, logs): {array.folder}")
        folders = list(dict.fromkeys(str(task.job.run.out_dir) for task in array.tasks))
        print(
            f"    figures, tables and reports (<run>-{submission.figure}.json) will be in: "
            f"{bounded_list(folders, 400)}"
        )
    for command in watch_commands(submission):
        print(f"  watch: {command}")
    return 0


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
