"""``orch usage``: the GPU-hours (and CPU-hours) the attempts of a sweep took, grouped.

For an attempt Slurm ran, the hours come from accounting: each run of its job (``sacct
--duplicates --allocations``: the earlier runs of a requeued job, then its last) counts its
``ElapsedRaw`` seconds times the GPUs and CPUs of its ``AllocTRES``; the queue wait is its first
run's ``Start`` minus its ``Submit``. For an attempt of the local or debug executor, the registry's
start and end times and the run's requested GPUs and CPUs. Hours of a job's earlier runs are
*requeued*; hours of an attempt that ended FAILED, TIMEOUT, CANCELLED, LOST, OUT_OF_MEMORY, ... are
*failed*; the share of each is reported beside the total.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from sqlalchemy import Connection, select

from orchestrator.executors.slurm_states import sacct_epoch, sacct_job_batches
from orchestrator.registry.tables import RunState, attempts, runs, sweep_runs, sweeps
from orchestrator.views import flatten, run_memberships

SACCT_USAGE_FIELDS = ("JobID", "State", "ElapsedRaw", "AllocTRES", "Partition", "Submit", "Start")
BUILT_IN_GROUPS = ("sweep", "partition", "state", "executor")
FAILED_STATES = frozenset(RunState.RESUMABLE)


@dataclass(frozen=True)
class JobRun:
    """One run of a Slurm job as accounting recorded it."""

    state: str
    elapsed_s: float
    gpus: int
    cpus: int
    partition: str
    submitted: Optional[float]
    started: Optional[float]


@dataclass(frozen=True)
class AttemptUsage:
    """What one attempt took: its runs' hours, the part in earlier (requeued) runs, its queue wait."""

    run_id: str
    state: str
    executor: str
    partition: str
    gpu_hours: float
    cpu_hours: float
    requeued_gpu_hours: float
    queue_wait_s: Optional[float]
    source: str  # sacct or registry


@dataclass
class UsageGroup:
    """The attempts of one group and what they took."""

    group: str
    attempts: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    failed_gpu_hours: float = 0.0  # in attempts that failed, timed out, were cancelled or lost
    requeued_gpu_hours: float = 0.0  # in the earlier runs of requeued jobs
    queue_waits: list[float] = field(default_factory=list)

    def add(self, usage: AttemptUsage) -> None:
        self.attempts += 1
        self.gpu_hours += usage.gpu_hours
        self.cpu_hours += usage.cpu_hours
        self.requeued_gpu_hours += usage.requeued_gpu_hours
        if usage.state in FAILED_STATES:
            self.failed_gpu_hours += usage.gpu_hours
        if usage.queue_wait_s is not None:
            self.queue_waits.append(usage.queue_wait_s)

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "attempts": self.attempts,
            "gpu_hours": round(self.gpu_hours, 4),
            "cpu_hours": round(self.cpu_hours, 4),
            "failed_share": _share(self.failed_gpu_hours, self.gpu_hours),
            "requeued_share": _share(self.requeued_gpu_hours, self.gpu_hours),
            "mean_queue_wait_s": round(sum(self.queue_waits) / len(self.queue_waits), 1)
            if self.queue_waits
            else None,
        }


def _share(part: float, whole: float) -> Optional[float]:
    return round(part / whole, 4) if whole > 0 else None


@dataclass(frozen=True)
class AttemptRow:
    """An attempt as the registry holds it, with what grouping needs of its run."""

    run_id: str
    state: str
    executor: str
    job_id: Optional[str]
    submitted: float
    started: Optional[float]
    ended: Optional[float]
    spec: dict[str, Any]  # the run's resolved spec, flattened (``optimizer.name``)
    sweeps: tuple[str, ...]


def attempt_rows(connection: Connection, sweep: Optional[str]) -> list[AttemptRow]:
    """Every attempt that started (of the runs of ``sweep``, or all), with its run's spec and sweeps."""
    query = (
        select(
            attempts.c.run_id,
            attempts.c.state,
            attempts.c.executor,
            attempts.c.job_id,
            attempts.c.submitted_time,
            attempts.c.started_time,
            attempts.c.ended_time,
            runs.c.spec_json,
        )
        .join(runs, runs.c.id == attempts.c.run_id)
        .where(attempts.c.started_time.is_not(None))
        .order_by(attempts.c.id)
    )
    if sweep is not None:
        members = select(sweep_runs.c.run_id).join(sweeps, sweeps.c.id == sweep_runs.c.sweep_id)
        query = query.where(attempts.c.run_id.in_(members.where(sweeps.c.name == sweep)))
    found = connection.execute(query).all()
    specs: dict[str, dict[str, Any]] = {}
    for run_id, *_, spec_json in found:
        if run_id not in specs:
            specs[run_id] = flatten(json.loads(spec_json))
    memberships = run_memberships(connection, list(specs))  # of these runs only
    rows = []
    for run_id, state, executor, job_id, submitted, started, ended, _ in found:
        rows.append(
            AttemptRow(
                run_id,
                state,
                executor,
                job_id,
                submitted,
                started,
                ended,
                specs[run_id],
                tuple(sorted(name for name, _ in memberships.get(run_id, ()))),
            )
        )
    return rows


def attempt_usage(rows: Sequence[AttemptRow], job_runs: dict[str, list[JobRun]]) -> list[AttemptUsage]:
    """Each attempt's hours: from accounting where Slurm ran it, else from the registry's times."""
    usages = []
    for row in rows:
        runs_of_job = job_runs.get(row.job_id or "") if row.executor == "slurm" else None
        if runs_of_job:
            usages.append(_from_sacct(row, runs_of_job))
        else:
            usages.append(_from_registry(row))
    return usages


def _from_sacct(row: AttemptRow, job_runs: list[JobRun]) -> AttemptUsage:
    gpu_hours = sum(run.elapsed_s * run.gpus for run in job_runs) / 3600
    earlier = job_runs[:-1]
    first = job_runs[0]
    wait = first.started - first.submitted if first.started and first.submitted else None
    return AttemptUsage(
        row.run_id,
        row.state,
        row.executor,
        job_runs[-1].partition,
        gpu_hours,
        sum(run.elapsed_s * run.cpus for run in job_runs) / 3600,
        sum(run.elapsed_s * run.gpus for run in earlier) / 3600,
        wait,
        "sacct",
    )


def _from_registry(row: AttemptRow) -> AttemptUsage:
    ended = row.ended if row.ended is not None else time.time()
    elapsed = max(ended - (row.started or ended), 0.0)
    gpus, cpus = int(row.spec.get("resources.gpus") or 0), int(row.spec.get("resources.cpus") or 1)
    wait = row.started - row.submitted if row.started is not None else None
    partition = str(row.spec.get("resources.partition") or "-")
    return AttemptUsage(
        row.run_id,
        row.state,
        row.executor,
        partition,
        elapsed * gpus / 3600,
        elapsed * cpus / 3600,
        0.0,
        wait,
        "registry",
    )


def grouped(rows: Sequence[AttemptRow], usages: Sequence[AttemptUsage], by: str) -> list[UsageGroup]:
    """The usages summed per value of ``by`` (a built-in group or a dotted spec key), largest first."""
    groups: dict[str, UsageGroup] = {}
    for row, usage in zip(rows, usages):
        for key in _group_keys(row, usage, by):
            groups.setdefault(key, UsageGroup(key)).add(usage)
    return sorted(groups.values(), key=lambda group: (-group.gpu_hours, group.group))


def total(usages: Iterable[AttemptUsage]) -> UsageGroup:
    whole = UsageGroup("total")
    for usage in usages:
        whole.add(usage)
    return whole


def _group_keys(row: AttemptRow, usage: AttemptUsage, by: str) -> list[str]:
    if by == "sweep":
        return list(row.sweeps) or ["(no sweep)"]
    if by == "partition":
        return [usage.partition]
    if by == "state":
        return [usage.state]
    if by == "executor":
        return [usage.executor]
    return [json.dumps(row.spec.get(by)) if not isinstance(row.spec.get(by), str) else row.spec[by]]


def sacct_job_runs(run: Callable[[list[str]], str], job_ids: Sequence[str]) -> dict[str, list[JobRun]]:
    """The runs of each job (``123_4``) in accounting, oldest first: one ``sacct`` per 1 000 arrays."""
    wanted = set(job_ids)
    found: dict[str, list[JobRun]] = defaultdict(list)
    for arrays in sacct_job_batches(job_ids):
        command = [
            "sacct",
            "--duplicates",
            "--allocations",
            "--parsable2",
            "--noheader",
            f"--format={','.join(SACCT_USAGE_FIELDS)}",
            "--jobs",
            arrays,
        ]
        for line in run(command).splitlines():
            values = line.split("|")
            if len(values) == len(SACCT_USAGE_FIELDS) and values[0] in wanted:
                found[values[0]].append(_job_run(values))
    return {job_id: sorted(job_runs, key=lambda r: r.started or 0.0) for job_id, job_runs in found.items()}


def _job_run(values: list[str]) -> JobRun:
    _, state, elapsed, tres, partition, submitted, started = values
    return JobRun(
        state.split()[0] if state else "",
        float(elapsed) if elapsed.isdigit() else 0.0,
        tres_count(tres, "gres/gpu"),
        tres_count(tres, "cpu"),
        partition or "-",
        sacct_epoch(submitted),
        sacct_epoch(started),
    )


def tres_count(tres: str, name: str) -> int:
    """The count of ``name`` in an ``AllocTRES`` (``billing=2,cpu=2,gres/gpu=1,mem=1G,node=1``)."""
    match = re.search(rf"(?:^|,){re.escape(name)}=(\d+)(?:,|$)", tres)
    return int(match.group(1)) if match else 0
