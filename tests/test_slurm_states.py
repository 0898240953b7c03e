"""Reading Slurm's answers: what the mini-cluster's sacct and squeue printed around a node failure
(``kill -9`` of slurmd while task 0 of array 1 ran; slurmctld requeued it as NODE_FAIL)."""

from __future__ import annotations

import time

import pytest

from orchestrator.executors import EndedRun, Phase
from orchestrator.executors.slurm_states import observation_of, parse_sacct

# sacct --duplicates --parsable2 --noheader --format=JobID,JobName,State,ExitCode,NodeList,Reason,Start,End -X
AFTER_NODE_FAIL = """\
1_0|job.sh|NODE_FAIL|0:0|vm|None|2026-12-01T10:03:29|2026-12-01T10:04:16
1_1|job.sh|PENDING|0:0|None assigned|None|Unknown|Unknown
1_0|job.sh|PENDING|0:0|None assigned|BeginTime|Unknown|Unknown
"""


def epoch(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def test_a_job_requeued_after_its_node_failed_keeps_the_failed_run_as_history() -> None:
    records = parse_sacct(AFTER_NODE_FAIL, wanted={"1_0", "1_1"})

    requeued = observation_of(records["1_0"])

    assert (requeued.phase, requeued.reason) == (Phase.PENDING, "BeginTime")
    assert requeued.requeued == (
        EndedRun("NODE_FAIL", "vm", epoch("2026-12-01T10:03:29"), epoch("2026-12-01T10:04:16")),
    )
    assert observation_of(records["1_1"]).requeued == ()


def test_each_requeue_is_kept_in_order_and_a_pending_line_seen_twice_is_not_one() -> None:
    text = (
        AFTER_NODE_FAIL
        + "1_0|job.sh|REQUEUED|0:0|vm|None|2026-12-01T10:05:10|2026-12-01T10:07:00\n"
        + "1_1|job.sh|PENDING|0:0|None assigned|Resources|Unknown|Unknown\n"
        + "1_0|job.sh|COMPLETED|0:0|vm|None|2026-12-01T10:08:00|2026-12-01T10:09:30\n"
    )
    records = parse_sacct(text, wanted=None)

    finished = observation_of(records["1_0"])

    assert (finished.phase, finished.state) == (Phase.ENDED, "COMPLETED")
    assert [(run.state, run.ended_time) for run in finished.requeued] == [
        ("NODE_FAIL", epoch("2026-12-01T10:04:16")),
        ("REQUEUED", epoch("2026-12-01T10:07:00")),
    ]
    assert observation_of(records["1_1"]).requeued == ()


def test_runs_of_a_requeued_job_listed_newest_first_are_read_oldest_first() -> None:
    """sacct does not promise to list a requeued job's runs in order (sites see them shuffled): the
    run that started last is the job's state, the others its history, oldest first."""
    text = (
        "34|job.sh|COMPLETED|0:0|vm|None|2026-12-02T00:18:58|2026-12-02T00:20:11\n"
        "34|job.sh|REQUEUED|0:0|vm|None|2026-12-02T00:17:25|2026-12-02T00:18:42\n"
        "34|job.sh|REQUEUED|0:0|vm|None|2026-12-02T00:16:00|2026-12-02T00:17:20\n"
    )
    finished = observation_of(parse_sacct(text, wanted=None)["34"])

    assert (finished.phase, finished.state) == (Phase.ENDED, "COMPLETED")
    assert [run.started_time for run in finished.requeued] == [
        epoch("2026-12-02T00:16:00"),
        epoch("2026-12-02T00:17:25"),
    ]


def test_a_job_squeue_has_waiting_again_before_accounting_saw_the_requeue_has_that_run_as_history() -> None:
    from orchestrator.executors.slurm import earlier_runs

    # NODE_FAIL is still its newest record
    [accounting] = parse_sacct(AFTER_NODE_FAIL.splitlines()[0], wanted=None).values()
    # squeue: pending again (BeginTime)
    [waiting] = parse_sacct("1_0|job.sh|PENDING||||", wanted=None).values()
    [running] = parse_sacct("1_0|job.sh|COMPLETING||vm|None", wanted=None).values()

    assert [run.state for run in earlier_runs(waiting, accounting)] == ["NODE_FAIL"]
    assert earlier_runs(running, accounting) == ()  # a job still ending is no requeue


@pytest.mark.parametrize(
    ("tres", "gpus", "cpus"),
    [
        ("billing=2,cpu=2,gres/gpu:1080ti=1,gres/gpu=1,mem=2G,node=1", 1, 2),
        ("billing=4,cpu=4,gres/gpu=4,mem=16G,node=1", 4, 4),
        ("billing=1,cpu=1,mem=1G,node=1", 0, 1),
        ("", 0, 0),
    ],
)
def test_the_allocated_gpus_and_cpus_of_an_alloc_tres(tres: str, gpus: int, cpus: int) -> None:
    from orchestrator.usage import tres_count

    assert (tres_count(tres, "gres/gpu"), tres_count(tres, "cpu")) == (gpus, cpus)
