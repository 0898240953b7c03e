"""Partition, --time and segments from a runtime estimate (TCML's partitions)."""

from __future__ import annotations

from jobs.spec import ResourcesSpec, RunSpec, TrainingSpec
from orchestrator.estimates import fit_partition, schedule, similarity_key
from orchestrator.profiles import load_profile
from orchestrator.sweep import PlannedRun

TCML = load_profile("tcml")


def test_shortest_partition_that_fits_with_margin() -> None:
    assert fit_partition(ResourcesSpec(), 3, TCML) == ResourcesSpec(partition="test", time="0-00:05:00", segments=1)
    assert fit_partition(ResourcesSpec(), 16, TCML).partition == "day"
    assert fit_partition(ResourcesSpec(), 2 * 24 * 60, TCML) == ResourcesSpec(partition="week", time="2-00:00:00", segments=1)


def test_runs_longer_than_every_partition_are_split_into_segments() -> None:
    fitted = fit_partition(ResourcesSpec(), 75 * 24 * 60, TCML)
    assert (fitted.partition, fitted.time, fitted.segments) == ("month", "30-00:00:00", 3)


def test_estimate_from_history_chooses_resources_unless_time_was_given() -> None:
    spec = RunSpec(cluster="tcml", training=TrainingSpec(steps=100_000), resources=ResourcesSpec(partition="day", time="1-00:00:00"))
    history = {similarity_key(spec): 0.5}  # 50 000 s, with the 1.25 margin 17.4 h: day

    open_run = schedule(PlannedRun("a", spec, {}, time_was_given=False), TCML, history)
    given_run = schedule(PlannedRun("a", spec, {}, time_was_given=True), TCML, history)

    assert open_run.estimate_seconds == 50_000
    assert (open_run.run.spec.resources.partition, open_run.run.spec.resources.time) == ("day", "0-17:21:40")
    assert given_run.run.spec.resources.time == "1-00:00:00"
    assert schedule(PlannedRun("a", spec, {}, False), TCML, {}).estimate_seconds is None
