"""The run spec: YAML round trip, fingerprint scope."""

from __future__ import annotations

from dataclasses import replace

from jobs.spec import ContainerSpec, ResourcesSpec, RunSpec, TrainingSpec, spec_from_yaml, spec_to_yaml, time_limit_minutes
from orchestrator.fingerprint import run_id


def test_yaml_round_trip() -> None:
    spec = RunSpec(training=TrainingSpec(steps=7, seed=3))
    assert spec_from_yaml(spec_to_yaml(spec)) == spec


def test_fields_that_cannot_change_results_do_not_change_the_run_id() -> None:
    spec = RunSpec()
    same = [
        replace(spec, resources=ResourcesSpec(partition="week", time="2-00:00:00", gpus=4, cpus=8, mem="64G")),
        replace(spec, container=replace(spec.container, binds=["/data:/data"])),
        replace(spec, training=replace(spec.training, heartbeat_seconds=60.0)),
        replace(spec, data=replace(spec.data, root="/scratch/data")),
    ]
    different = [
        replace(spec, training=replace(spec.training, seed=1)),
        replace(spec, optimizer=replace(spec.optimizer, lr=0.2)),
        replace(spec, container=ContainerSpec(image="other.sif")),
    ]
    assert {run_id(variant) for variant in same} == {run_id(spec)}
    assert len({run_id(variant) for variant in different} | {run_id(spec)}) == 4


def test_slurm_time_limits_in_minutes() -> None:
    assert time_limit_minutes("30") == 30
    assert time_limit_minutes("01:30:00") == 90
    assert time_limit_minutes("1-02") == 26 * 60
    assert time_limit_minutes("2-00:00:30") == 2 * 24 * 60 + 0.5
