"""Partition, --time and segments from a runtime estimate (TCML's partitions)."""

from __future__ import annotations

from jobs.spec import ResourcesSpec, RunSpec, TrainingSpec
from orchestrator.estimates import fit_partition, schedule, similarity_key
from orchestrator.planner import PlannedRun
from orchestrator.profiles import load_profile

TCML = load_profile("tcml")


def test_shortest_partition_that_fits_with_margin() -> None:
    assert fit_partition(ResourcesSpec(), 3, TCML) == ResourcesSpec(
        partition="test", time="0-00:05:00", segments=1
    )
    assert fit_partition(ResourcesSpec(), 16, TCML).partition == "day"
    assert fit_partition(ResourcesSpec(), 2 * 24 * 60, TCML) == ResourcesSpec(
        partition="week", time="2-00:00:00", segments=1
    )


def test_runs_longer_than_every_partition_are_split_into_segments() -> None:
    fitted = fit_partition(ResourcesSpec(), 75 * 24 * 60, TCML)
    assert (fitted.partition, fitted.time, fitted.segments) == ("month", "30-00:00:00", 3)


def test_estimate_from_history_chooses_resources_unless_time_was_given() -> None:
    spec = RunSpec(
        cluster="tcml",
        training=TrainingSpec(steps=100_000),
        resources=ResourcesSpec(partition="day", time="1-00:00:00"),
    )
    history = {similarity_key(spec): 0.5}  # 50 000 s, with the 1.25 margin 17.4 h: day

    open_run = schedule(PlannedRun("a", spec, {}, time_was_given=False), TCML, history)
    given_run = schedule(PlannedRun("a", spec, {}, time_was_given=True), TCML, history)

    assert open_run.estimate_seconds == 50_000
    assert (open_run.run.spec.resources.partition, open_run.run.spec.resources.time) == ("day", "0-17:21:40")
    assert given_run.run.spec.resources.time == "1-00:00:00"
    assert schedule(PlannedRun("a", spec, {}, False), TCML, {}).estimate_seconds is None


def test_history_is_the_median_seconds_per_step_of_completed_attempts_of_the_same_kind(
    orch, tmp_path
) -> None:
    """seconds_per_step reads the registry in one query and each run's spec from its JSON: the
    figures equal those computed by hand from the attempts and the specs as planned."""
    import statistics
    from pathlib import Path

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from orchestrator.estimates import seconds_per_step
    from orchestrator.home import OrchHome
    from orchestrator.registry.engine import open_registry
    from orchestrator.registry.models import Attempt, RunState
    from orchestrator.sweep import load_sweep
    from tests.conftest import SWEEPS_DIR

    tiny = SWEEPS_DIR / "tiny.yaml"
    orch.ok("submit", tiny, "--executor", "debug")
    planned = {run.run_id: run.spec for run in load_sweep(Path(tiny)).runs}
    with Session(open_registry(OrchHome(orch.home))) as session:
        attempts = session.scalars(select(Attempt).where(Attempt.state == RunState.COMPLETED)).all()
        by_hand: dict = {}
        for attempt in attempts:
            steps = attempt.run.total_steps - (attempt.start_step or 0)
            by_hand.setdefault(similarity_key(planned[attempt.run_id]), []).append(
                (attempt.ended_time - attempt.started_time) / steps
            )

        history = seconds_per_step(session)

    assert len(attempts) == 2 and len(by_hand) == 1
    assert history == {key: statistics.median(values) for key, values in by_hand.items()}


def test_a_probes_speed_settings_make_another_kind_of_run_and_old_records_read_as_the_defaults() -> None:
    """A bf16 line, stacked points or a compiled forward run at other speeds (and memory) than the
    plain float32 line: their history is kept apart. A spec recorded before those settings existed
    (no such keys in its JSON) is the plain kind."""
    from dataclasses import asdict

    from jobs.spec import ProbeSpec
    from orchestrator.estimates import recorded_similarity_key

    def line_run(**settings: object) -> RunSpec:
        return RunSpec(probes=[ProbeSpec(type="line", **settings)])  # type: ignore[arg-type]

    plain = line_run()
    kinds = {
        similarity_key(spec)
        for spec in [
            plain,
            line_run(precision="bf16"),
            line_run(points_per_forward=8),
            line_run(memory_format="channels_last"),
            line_run(compile_mode="reduce-overhead"),
        ]
    }
    assert len(kinds) == 5
    assert similarity_key(line_run(forward_batch=256, precision_check_every=10)) == similarity_key(plain)

    recorded = asdict(plain)
    for name in ("precision", "points_per_forward", "memory_format", "compile_mode"):
        del recorded["probes"][0][name]
    assert recorded_similarity_key(recorded) == similarity_key(plain)
    bf16 = line_run(precision="bf16")
    assert recorded_similarity_key(asdict(bf16)) == similarity_key(bf16)
