"""The run spec: YAML round trip, fingerprint scope, and the checks of every field."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import replace
from typing import Any, Iterator

import pytest

from jobs.catalog import known_names
from jobs.spec import (
    ContainerSpec,
    ProbeSpec,
    ResourcesSpec,
    RunSpec,
    SbatchOptions,
    TrainingSpec,
    spec_from_json,
    spec_from_yaml,
    spec_to_yaml,
    time_limit_minutes,
    violations,
)
from orchestrator.fingerprint import run_id, spec_json


def test_yaml_round_trip() -> None:
    spec = RunSpec(training=TrainingSpec(steps=7, seed=3))
    assert spec_from_yaml(spec_to_yaml(spec)) == spec


def test_fields_that_cannot_change_results_do_not_change_the_run_id() -> None:
    spec = RunSpec()
    same = [
        replace(
            spec, resources=ResourcesSpec(partition="week", time="2-00:00:00", gpus=4, cpus=8, mem="64G")
        ),
        replace(
            spec,
            resources=ResourcesSpec(
                sbatch=SbatchOptions(
                    qos="gpu-long", constraint="1080ti", mail_type="END", extra=["--nice=10"]
                )
            ),
        ),
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


def test_a_spec_recorded_before_resources_had_sbatch_options_still_reads() -> None:
    """Registries hold ``runs.spec_json`` of runs planned before ``resources.sbatch`` existed: such a
    spec reads with the default (no options of its own: the profile's) and keeps its run id."""
    spec = RunSpec(training=TrainingSpec(steps=7), resources=ResourcesSpec(gpus=1, time="01:00:00"))
    document = json.loads(spec_json(spec))
    del document["resources"]["sbatch"]
    old_json = json.dumps(document)
    assert "sbatch" not in old_json

    read = spec_from_json(old_json)

    assert read == spec and read.resources.sbatch == SbatchOptions()
    assert run_id(read) == run_id(spec)
    given = replace(
        spec,
        resources=replace(
            spec.resources, sbatch=SbatchOptions(qos="gpu-long", extra=["--hint=nomultithread"])
        ),
    )
    assert spec_from_json(spec_json(given)) == given and spec_from_yaml(spec_to_yaml(given)) == given


@pytest.mark.parametrize(
    ("options", "key", "accepted"),
    [
        (
            SbatchOptions(mail_type="END,SOMETIMES"),
            "resources.sbatch.mail_type",
            "comma-separated list of NONE, BEGIN, END",
        ),
        (
            SbatchOptions(extra=["--nice=1", "--wrap=rm -rf ~"]),
            "resources.sbatch.extra[1]",
            "name one of --reservation",
        ),
        (SbatchOptions(extra=["nice=1"]), "resources.sbatch.extra[0]", "--name=value (or --flag)"),
        (SbatchOptions(qos="x" * 513), "resources.sbatch.qos", "at most 512 characters"),
    ],
)
def test_a_runs_sbatch_options_are_checked_like_a_profiles(
    options: SbatchOptions, key: str, accepted: str
) -> None:
    spec = RunSpec(resources=ResourcesSpec(sbatch=options))
    found = accepted_by_key(spec)
    assert key in found and any(accepted in text for text in found[key]), found
    assert (
        accepted_by_key(
            RunSpec(
                resources=ResourcesSpec(
                    sbatch=SbatchOptions(qos="gpu-long", mail_type="END,FAIL", extra=["--nice=10"])
                )
            )
        )
        == {}
    )


def test_slurm_time_limits_in_minutes() -> None:
    assert time_limit_minutes("30") == 30
    assert time_limit_minutes("01:30:00") == 90
    assert time_limit_minutes("1-02") == 26 * 60
    assert time_limit_minutes("2-00:00:30") == 2 * 24 * 60 + 0.5


# -- every field's checks, found by walking the schema ------------------------------------------------

SQLITE_MAX_INT = 2**63 - 1


def leaf_fields(node: Any = RunSpec, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted key, type hint, field) of every field that is not a nested spec; probes as probes[0]."""
    hints = typing.get_type_hints(node)
    for spec_field in dataclasses.fields(node):
        hint = hints[spec_field.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        if dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{spec_field.name}.")
        elif dataclasses.is_dataclass(inner):
            yield from leaf_fields(inner, f"{prefix}{spec_field.name}[0].")
        else:
            yield f"{prefix}{spec_field.name}", hint, spec_field


def base_type(hint: Any) -> Any:
    """int for int, Optional[int] and list[int]; likewise float, str."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return base_type(args[0]) if args else hint


def with_value(spec: Any, dotted_key: str, value: Any) -> Any:
    """``spec`` with the field at ``dotted_key`` (``probes[0].interval`` included) set to ``value``."""
    head, _, rest = dotted_key.partition(".")
    if head.endswith("[0]"):
        name = head[:-3]
        items = getattr(spec, name) or [typing.get_args(typing.get_type_hints(type(spec))[name])[0]()]
        return replace(spec, **{name: [with_value(items[0], rest, value)]})
    if not rest:
        return replace(spec, **{head: value})
    return replace(spec, **{head: with_value(getattr(spec, head), rest, value)})


def accepted_by_key(spec: RunSpec) -> dict[str, list[str]]:
    """What each key that fails its checks would accept (a key may fail several)."""
    found: dict[str, list[str]] = {}
    for key, _, accepted in violations(spec, known_names()):
        found.setdefault(key, []).append(accepted)
    return found


def fields_of(kind: type) -> list[tuple[str, Any, dataclasses.Field]]:
    return [(key, hint, spec_field) for key, hint, spec_field in leaf_fields() if base_type(hint) is kind]


FLOAT_FIELDS = fields_of(float)
INT_FIELDS = fields_of(int)
STR_FIELDS = fields_of(str)


def test_the_schema_walk_finds_the_fields() -> None:
    assert {
        "optimizer.lr",
        "probes[0].interval",
        "optimizer.betas",
        "data.mean",
        "training.heartbeat_seconds",
    } <= {key for key, _, _ in FLOAT_FIELDS}
    assert {"training.steps", "model.hidden", "probes[0].steps", "resources.gpus"} <= {
        key for key, _, _ in INT_FIELDS
    }


@pytest.mark.parametrize("key", [key for key, _, _ in FLOAT_FIELDS])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_every_float_field_refuses_non_finite_values(key: str, value: float) -> None:
    hint = dict((k, h) for k, h, _ in FLOAT_FIELDS)[key]
    given = [0.5, value] if typing.get_origin(hint) is list else value
    spec = with_value(RunSpec(), key, given)

    found = accepted_by_key(spec)

    assert key in found, f"{key} = {given!r} passes"
    assert any("finite" in accepted for accepted in found[key]), found[key]


@pytest.mark.parametrize("key", [key for key, _, _ in INT_FIELDS])
def test_every_integer_field_has_an_upper_bound_that_sqlite_holds(key: str) -> None:
    spec_field = dict((k, f) for k, _, f in INT_FIELDS)[key]
    check = spec_field.metadata.get("check")

    assert check is not None and check.le is not None, f"{key} has no upper bound"
    assert check.le <= SQLITE_MAX_INT
    too_large = (
        [check.le + 1]
        if typing.get_origin(spec_field.type) is list or "list" in str(spec_field.type)
        else check.le + 1
    )
    assert key in accepted_by_key(with_value(RunSpec(), key, too_large))


@pytest.mark.parametrize("key", [key for key, _, _ in STR_FIELDS])
@pytest.mark.parametrize(
    "text", ["a\nb", "a\x1b[31mb", "a\x00b", "a\u2028b"], ids=["newline", "escape", "nul", "line-separator"]
)
def test_every_string_field_refuses_control_characters(key: str, text: str) -> None:
    hint = dict((k, h) for k, h, _ in STR_FIELDS)[key]
    spec = with_value(RunSpec(), key, [text] if typing.get_origin(hint) is list else text)

    found = accepted_by_key(spec)

    assert key in found
    assert any("control characters" in accepted for accepted in found[key]), found[key]


@pytest.mark.parametrize(
    ("interval", "resolution", "enlargements", "directions"),
    [(0.5, 0.006, 5, 0), (0.5, 0.006, 0, 3), (1.0, 0.1, 2, 0), (0.3, 0.07, 4, 8), (2.0, 0.5, 1, 1)],
)
def test_the_line_points_bound_holds_every_point_the_probe_measures(
    interval: float, resolution: float, enlargements: int, directions: int
) -> None:
    from jobs.probes.line import base_points, shell_points
    from jobs.spec import line_points_bound

    update_norms = [0.0123 * (index + 1) for index in range(max(1, directions))]
    measured = len(base_points(interval, resolution, update_norms)) + sum(
        len(shell_points(interval, resolution, shell)) for shell in range(1, enlargements + 1)
    )
    probe = ProbeSpec(
        interval=interval, resolution=resolution, max_enlargements=enlargements, directions=directions
    )

    assert measured <= line_points_bound(probe) <= measured + 2 + max(1, directions)


def test_a_line_of_too_many_points_is_refused_naming_the_resolution_it_needs() -> None:
    from jobs.spec import MAX_LINE_POINTS, line_points_bound

    fine = RunSpec(probes=[ProbeSpec(every=10)])
    tiny = RunSpec(probes=[ProbeSpec(every=10, resolution=1e-12)])
    vast = RunSpec(probes=[ProbeSpec(every=10, interval=1e300)])

    assert list(violations(fine, known_names())) == []
    for spec in (
        tiny,
        vast,
        RunSpec(probes=[ProbeSpec(every=10, resolution=1e-6, directions=40, max_enlargements=100)]),
    ):
        (accepted,) = accepted_by_key(spec)["probes[0].resolution"]
        assert f"at most {MAX_LINE_POINTS} points per line" in accepted
        suggested = float(accepted.split("a resolution >= ")[1].split(" ")[0])
        # the advice works
        assert line_points_bound(replace(spec.probes[0], resolution=suggested)) <= MAX_LINE_POINTS
    assert line_points_bound(ProbeSpec(resolution=5e-324)) == math.inf
