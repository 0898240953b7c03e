"""Planning is exactly what it was: the run ids, resolved specs and swept values of every shipped
sweep, and of sweeps that exercise interpolation, mapping- and list-valued keys and conversions,
match tests/data/planned_runs.json, written by the planner before it was made fast
(``python -m tests.test_plan_fidelity`` rewrites it: only when a change of run ids is intended),
both the memoized way and the exact way (OmegaConf for each point)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from jobs.spec import RunSpec, spec_to_yaml
from orchestrator.errors import SpecError
from orchestrator.fingerprint import SpecTexts, spec_json
from orchestrator.home import CONFIGS_DIR
from orchestrator.planner import SectionBuilder
from orchestrator.sweep import load_sweep
from tests.conftest import SWEEPS_DIR
from tests.datasets import write_cifar10

GOLDEN = Path(__file__).parent / "data" / "planned_runs.json"
SWEEPS = (
    sorted((CONFIGS_DIR / "sweeps").glob("*.yaml"))
    + sorted(SWEEPS_DIR.glob("*.yaml"))
    + sorted((SWEEPS_DIR / "fidelity").glob("*.yaml"))
)


def sweep_label(path: Path) -> str:
    return str(path.relative_to(CONFIGS_DIR.parent))


def planned_digest(path: Path, spec_text: Callable[[RunSpec], str]) -> dict[str, object]:
    """The run ids in order, and one hash over each run's resolved spec file, swept values and
    whether its time limit was given."""
    plan = load_sweep(path)
    specs = hashlib.sha256()
    for run in plan.runs:
        specs.update(spec_text(run.spec).encode())
        specs.update(json.dumps(run.swept, sort_keys=True).encode())
        specs.update(b"time given" if run.time_was_given else b"time open")
    return {"run_ids": [run.run_id for run in plan.runs], "specs_sha256": specs.hexdigest()}


@pytest.fixture()
def staged_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the tcml profile's data_root is ~/datasets
    write_cifar10(tmp_path / "datasets", np.random.default_rng(0), 2, monkeypatch)


# swept keys in interpolations or in each other
EXACT_ONLY = {
    "tests/sweeps/fidelity/interpolated.yaml",
    "tests/sweeps/fidelity/mappings.yaml",
}


# recorded by the exact way already
LARGE = {
    "configs/sweeps/dissertation_ch4_grid.yaml",
    "configs/sweeps/dissertation_ch6_grid.yaml",
}
WAYS = [
    (path, way)
    for path in SWEEPS
    for way in ("memoized", "exact")
    if way == "memoized" or sweep_label(path) not in LARGE
]


@pytest.mark.parametrize(("path", "way"), WAYS, ids=[f"{sweep_label(path)}-{way}" for path, way in WAYS])
def test_planning_gives_the_recorded_runs(
    path: Path, way: str, staged_cifar10: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ways_taken = []
    create = SectionBuilder.create.__func__  # type: ignore[attr-defined]  # a classmethod's function

    def recording_create(cls, *arguments):
        builder = create(cls, *arguments) if way == "memoized" else None
        ways_taken.append("memoized" if builder is not None else "exact")
        return builder

    monkeypatch.setattr(SectionBuilder, "create", classmethod(recording_create))
    recorded = json.loads(GOLDEN.read_text())[sweep_label(path)]

    planned = planned_digest(path, SpecTexts().yaml)  # the recorded hashes are of spec_to_yaml's texts

    assert planned["run_ids"] == recorded["run_ids"]
    assert planned["specs_sha256"] == recorded["specs_sha256"]
    assert ways_taken == ["exact" if way == "exact" or sweep_label(path) in EXACT_ONLY else "memoized"]


@pytest.mark.parametrize("path", SWEEPS, ids=sweep_label)
def test_the_composed_spec_json_is_the_whole_specs(path: Path, staged_cifar10: None) -> None:
    texts = SpecTexts()
    for run in load_sweep(path).runs:
        assert texts.json(run.spec) == spec_json(run.spec)


def test_every_sweep_is_recorded() -> None:
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(map(sweep_label, SWEEPS))


def write_golden() -> None:
    monkeypatch = pytest.MonkeyPatch()
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        monkeypatch.setenv("HOME", home)
        write_cifar10(Path(home) / "datasets", np.random.default_rng(0), 2, monkeypatch)
        GOLDEN.write_text(
            json.dumps(
                {sweep_label(path): planned_digest(path, spec_to_yaml) for path in SWEEPS},
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
    monkeypatch.undo()


if __name__ == "__main__":
    write_golden()
    sys.exit(0)


def test_a_value_of_the_shared_part_that_every_point_replaces_is_never_checked(tmp_path: Path) -> None:
    """Each point's sections are checked: the shared part's bad learning rate is replaced by every
    point, while its bad momentum is not and is reported where it was written (the exact way)."""
    from tests.conftest import write_sweep

    replaced = write_sweep(
        tmp_path,
        "replaced",
        "name: replaced\ninclude: [problems/digits_mlp.yaml]\nbase: {optimizer: {lr: -1.0}}\ngrid: "
        "{optimizer.lr: [0.1, 0.2]}\n",
    )
    kept = write_sweep(
        tmp_path,
        "kept",
        "name: kept\ninclude: [problems/digits_mlp.yaml]\nbase: {optimizer: {momentum: -5.0}}\ngrid: "
        "{optimizer.lr: [0.1, 0.2]}\n",
    )

    assert [run.spec.optimizer.lr for run in load_sweep(replaced).runs] == [0.1, 0.2]
    with pytest.raises(SpecError) as raised:
        load_sweep(kept)
    assert (raised.value.key, raised.value.found) == ("base.optimizer.momentum", -5.0)
