"""Reading ``sacct --parsable2`` and mapping Slurm job states onto the registry's states."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence

from orchestrator.executors import EndedRun, Observation, Phase, array_task_of

SACCT_IDS_PER_CALL = 1000


def sacct_job_batches(job_ids: Sequence[str]) -> Iterator[str]:
    """The arrays (``123``) the job ids (``123_4``, ``123``) belong to, comma-joined, at most
    SACCT_IDS_PER_CALL per ``sacct --jobs``: sacct is asked for whole arrays, since a task still
    pending inside its array's ``123_[4-5%2]`` line is not found under its own id."""
    arrays = sorted({job_id.partition("_")[0] for job_id in job_ids})
    for start in range(0, len(arrays), SACCT_IDS_PER_CALL):
        yield ",".join(arrays[start : start + SACCT_IDS_PER_CALL])


PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "RESIZING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "CONFIGURING"}
# a job slurmctld still schedules: its squeue line is the truth
QUEUED_STATES = PENDING_STATES | RUNNING_STATES
ENDED_STATES = {  # Slurm's state -> the registry's
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
    "TIMEOUT": "TIMEOUT",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY",
    "NODE_FAIL": "NODE_FAIL",
    "PREEMPTED": "PREEMPTED",
    "BOOT_FAIL": "BOOT_FAIL",
    "DEADLINE": "DEADLINE",
    "REVOKED": "CANCELLED",
    "SPECIAL_EXIT": "FAILED",
}


@dataclass(frozen=True)
class SacctRecord:
    job_id: str  # 123 or 123_4
    name: str
    state: str  # first word of sacct's State ("CANCELLED by 0" -> CANCELLED)
    exit_code: Optional[int]
    node: Optional[str]
    reason: Optional[str]
    started_time: Optional[float] = None  # sacct's Start, End (squeue's lines have neither)
    ended_time: Optional[float] = None
    earlier: tuple["SacctRecord", ...] = ()  # the job's runs before a requeue, oldest first

    @property
    def array_task(self) -> Optional[int]:
        return array_task_of(self.job_id)


def parse_sacct(text: str, wanted: Optional[set[str]]) -> dict[str, SacctRecord]:
    """Records by job id; a newer run of a job (a duplicate after a requeue) replaces the one before,
    which it keeps in ``earlier`` when that run had ended (NODE_FAIL, PREEMPTED, REQUEUED, ...).
    Runs are ordered by their start where both have one, whatever order sacct lists them in.

    Pending array tasks come as one line (``123_[0-5%2]``) and are expanded to one record each.
    Step lines (``123_4.0``, ``123_4.batch``) are folded into their job: a failed job whose step
    peaked above the job's memory request was killed for memory (without cgroups, Slurm's
    OverMemoryKill leaves the job FAILED and the step CANCELLED), and is OUT_OF_MEMORY.
    """
    records: dict[str, SacctRecord] = {}
    requested_mb: dict[str, float] = {}
    peak_step_mb: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        job_id, name, state, exit_code, node, reason = fields[:6]
        start, end = (fields[6], fields[7]) if len(fields) >= 8 else ("", "")
        max_rss, req_mem = (fields[8], fields[9]) if len(fields) >= 10 else ("", "")
        state = state.split()[0] if state else ""
        owner, is_step, _ = job_id.partition(".")
        if is_step:
            peak_step_mb[owner] = max(peak_step_mb.get(owner, 0.0), _megabytes(max_rss) or 0.0)
            continue
        for single_id in _expand(job_id):
            if wanted is None or single_id in wanted:
                record = SacctRecord(
                    single_id,
                    name,
                    state,
                    _exit_code(exit_code),
                    _none(node),
                    _none(reason),
                    sacct_epoch(start),
                    sacct_epoch(end),
                )
                newest = records.get(single_id)
                if started_before(record, newest):  # an older run listed after a newer one
                    assert newest is not None
                    records[single_id] = replace(newest, earlier=with_run(newest.earlier, record))
                    continue
                records[single_id] = replace(record, earlier=runs_before(newest))
                requested_mb[single_id] = _megabytes(req_mem) or 0.0
    for job_id, record in records.items():
        over_limit = requested_mb[job_id] and peak_step_mb.get(job_id, 0.0) > requested_mb[job_id]
        if record.state in ("FAILED", "CANCELLED") and over_limit:
            records[job_id] = replace(record, state="OUT_OF_MEMORY")  # killed by OverMemoryKill
    return records


def started_before(record: SacctRecord, newest: Optional[SacctRecord]) -> bool:
    """Whether ``record`` is a run of its job that started before the newest one seen so far:
    sacct does not promise to list a requeued job's runs oldest first."""
    if newest is None or record.started_time is None or newest.started_time is None:
        return False
    return record.started_time < newest.started_time


def with_run(earlier: tuple[SacctRecord, ...], run: SacctRecord) -> tuple[SacctRecord, ...]:
    """``earlier`` with one more ended run, oldest first."""
    return tuple(sorted((*earlier, replace(run, earlier=())), key=lambda ended: ended.started_time or 0.0))


def runs_before(replaced: Optional[SacctRecord]) -> tuple[SacctRecord, ...]:
    """The ended runs a newer record of the same job follows: the replaced record's own, and the
    replaced record itself when it is one that ended (not a pending line seen twice)."""
    if replaced is None:
        return ()
    ended = replaced.ended_time is not None and (
        replaced.state in ENDED_STATES or replaced.state == "REQUEUED"
    )
    return replaced.earlier + ((replace(replaced, earlier=()),) if ended else ())


def observation_of(record: Optional[SacctRecord]) -> Observation:
    if record is None:
        return Observation(Phase.GONE, reason="Slurm does not know this job (any more)")
    requeued = tuple(
        EndedRun(run.state, run.node, run.started_time, run.ended_time)
        for run in record.earlier
        if run.ended_time is not None
    )
    return replace(_observation_now(record), requeued=requeued)


def _observation_now(record: SacctRecord) -> Observation:
    if record.state in PENDING_STATES:
        return Observation(Phase.PENDING, reason=record.reason, node=None)
    if record.state in RUNNING_STATES:
        return Observation(Phase.RUNNING, node=record.node)
    if record.state in ENDED_STATES:
        reason = (
            f"Slurm: {record.state}"
            + (f" ({record.reason})" if record.reason else "")
            + f", exit code {record.exit_code}"
        )
        return Observation(Phase.ENDED, ENDED_STATES[record.state], record.exit_code, reason, record.node)
    return Observation(Phase.UNKNOWN, reason=f"Slurm state {record.state!r}")


def _expand(job_id: str) -> Iterator[str]:
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if match is None:
        yield job_id
        return
    array_id, ranges = match.group(1), match.group(2).split("%")[0]
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        for task in range(int(first), int(last or first) + 1):
            yield f"{array_id}_{task}"


def _exit_code(text: str) -> Optional[int]:
    code, _, _signal = text.partition(":")
    return int(code) if code.isdigit() else None


def sacct_epoch(text: str) -> Optional[float]:
    """Seconds since the epoch of sacct's ``2026-12-01T10:04:16`` (the cluster's local time); None
    for ``Unknown`` or ``None``."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _megabytes(text: str) -> Optional[float]:
    """sacct's MaxRSS / ReqMem (``404060K``, ``60M``, ``4Gn``) in megabytes."""
    match = re.fullmatch(r"([\d.]+)([KMGT]?)[nc]?", text.strip())
    if match is None:
        return None
    return (
        float(match.group(1))
        * {"K": 1 / 1024, "": 1 / (1024 * 1024), "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2)]
    )


def _none(text: str) -> Optional[str]:
    return None if text in ("", "None", "None assigned", "(null)") else text
