"""How many more jobs this user may submit now: the limits that bind them, against what they hold.

Slurm refuses a submission as a whole when it would exceed a submit limit (``sbatch: error:
AssocMaxSubmitJobLimit``), and each task of an array counts as one job. The limits read here:

- the cluster's ``MaxJobCount`` (``scontrol show config``), against every job slurmctld holds;
- the user's associations (``sacctmgr show assoc where user=…``): ``MaxSubmitJobs`` and
  ``GrpSubmitJobs`` of the user's rows against the user's jobs, and ``GrpSubmitJobs`` of each
  account the user has a row in against that account's jobs;
- the QOS of those associations (``sacctmgr show qos``): ``MaxSubmitJobsPerUser`` against the
  user's jobs, ``GrpSubmitJobs`` against the QOS's jobs.

``MaxJobs`` (running at once) refuses nothing: jobs beyond it wait with the reason
``AssocMaxJobsLimit``; it is reported, not counted. The slots are the smallest room left under any
of them (conservative where a user has several accounts); without accounting (no ``sacctmgr``, or
limits not enforced) only ``MaxJobCount`` binds.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

Runner = Callable[[list[str]], str]  # a Slurm command line -> its standard output (SlurmError if it fails)

ASSOC_FIELDS = ("Account", "User", "MaxSubmitJobs", "MaxJobs", "GrpSubmitJobs", "QOS")
QOS_FIELDS = ("Name", "MaxSubmitJobsPerUser", "GrpSubmitJobs")


@dataclass(frozen=True)
class Limit:
    """One submit limit and how many jobs count against it now."""

    name: str  # where it comes from, as a user would look it up: "assoc root/alice MaxSubmitJobs"
    limit: int
    used: int

    @property
    def room(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True)
class SubmitLimits:
    """The submit limits that bind this user now; ``slots``: how many more jobs fit."""

    limits: list[Limit]
    max_array_size: int
    max_running: Optional[int] = None  # the smallest MaxJobs: how many run at once (reported only)
    notes: list[str] = field(default_factory=list)  # what could not be read

    @property
    def slots(self) -> int:
        return min((limit.room for limit in self.limits), default=0)

    @property
    def binding(self) -> Optional[Limit]:
        """The limit with the least room."""
        return min(self.limits, key=lambda limit: limit.room, default=None)


def read_submit_limits(run: Runner, user: Optional[str] = None) -> SubmitLimits:
    """The limits of ``user`` (this one by default) and the jobs counting against each, read with
    one ``scontrol show config``, one ``squeue`` of every job, and two ``sacctmgr`` calls."""
    user = user or getpass.getuser()
    config = run(["scontrol", "show", "config"])
    jobs = [
        line.split("|") for line in run(["squeue", "--noheader", "--array", "--format=%u|%a|%q"]).splitlines()
    ]
    jobs = [job for job in jobs if len(job) == 3]
    limits = [Limit("cluster MaxJobCount", _config_int(config, "MaxJobCount") or 10_000, len(jobs))]
    notes: list[str] = []
    try:
        associations = _parsed(run(_sacctmgr("assoc", ASSOC_FIELDS, f"user={user}")), ASSOC_FIELDS)
    except RuntimeError as error:  # no accounting here: only the cluster's limits bind
        return SubmitLimits(limits, _config_int(config, "MaxArraySize") or 1001, None, [str(error)])
    mine = sum(job[0] == user for job in jobs)
    accounts = sorted({row["Account"] for row in associations})
    for row in associations:
        where = f"assoc {row['Account']}/{user}"
        limits += [
            Limit(f"{where} {name}", int(row[name]), mine)
            for name in ("MaxSubmitJobs", "GrpSubmitJobs")
            if row[name].isdigit()
        ]
    for account_row in _parsed(
        run(_sacctmgr("assoc", ASSOC_FIELDS, f"account={','.join(accounts)}")), ASSOC_FIELDS
    ):
        if not account_row["User"] and account_row["GrpSubmitJobs"].isdigit():
            used = sum(job[1] == account_row["Account"] for job in jobs)
            limits.append(
                Limit(
                    f"account {account_row['Account']} GrpSubmitJobs", int(account_row["GrpSubmitJobs"]), used
                )
            )
    qos_names = sorted({name for row in associations for name in row["QOS"].split(",") if name})
    if qos_names:
        for qos in _parsed(run(_sacctmgr("qos", QOS_FIELDS, f"name={','.join(qos_names)}")), QOS_FIELDS):
            per_user = sum(job[0] == user and job[2] == qos["Name"] for job in jobs)
            if qos["MaxSubmitJobsPerUser"].isdigit():
                limits.append(
                    Limit(
                        f"qos {qos['Name']} MaxSubmitJobsPerUser", int(qos["MaxSubmitJobsPerUser"]), per_user
                    )
                )
            if qos["GrpSubmitJobs"].isdigit():
                used = sum(job[2] == qos["Name"] for job in jobs)
                limits.append(Limit(f"qos {qos['Name']} GrpSubmitJobs", int(qos["GrpSubmitJobs"]), used))
    running = [int(row["MaxJobs"]) for row in associations if row["MaxJobs"].isdigit()]
    return SubmitLimits(
        limits, _config_int(config, "MaxArraySize") or 1001, min(running, default=None), notes
    )


def _sacctmgr(entity: str, fields: tuple[str, ...], condition: str) -> list[str]:
    return [
        "sacctmgr",
        "--noheader",
        "--parsable2",
        "show",
        entity,
        "where",
        condition,
        f"format={','.join(fields)}",
    ]


def _parsed(output: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    rows = []
    for line in output.splitlines():
        values = line.split("|")
        if len(values) >= len(fields):
            rows.append(dict(zip(fields, values)))
    return rows


def _config_int(config: str, key: str) -> Optional[int]:
    match = re.search(rf"^{key}\s*=\s*(\d+)", config, re.MULTILINE)
    return int(match.group(1)) if match else None
