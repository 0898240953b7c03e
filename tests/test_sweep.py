"""Sweep expansion: grid × union of grids × zip × seeds, and where each run's values come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.catalog import known_names
from orchestrator.errors import SpecError
from orchestrator.sweep import load_sweep

PER_OPTIMIZER = """
name: per_optimizer
include: [problems/digits_mlp.yaml]
base: {optimizer: {weight_decay: 0.0001}, training: {steps: 20}}
grid: {model.hidden: [[8], [16]]}
grids:
  - {optimizer.name: [sgd], optimizer.lr: [0.1, 0.01, 0.001]}
  - {optimizer.name: [pal], optimizer.measuring_step: [1.0, 0.1], optimizer.step_adaptation: [1.0, 1.25]}
  - {optimizer.name: [sls]}
seeds: [1, 2]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_grids_expand_to_the_union_of_their_products(tmp_path: Path) -> None:
    plan = load_sweep(write(tmp_path, PER_OPTIMIZER), known_names())

    by_optimizer: dict[str, list] = {}
    for run in plan.runs:
        by_optimizer.setdefault(run.spec.optimizer.name, []).append(run)
    assert len(plan.runs) == 2 * (3 + 2 * 2 + 1) * 2
    assert {name: len(runs) for name, runs in by_optimizer.items()} == {"sgd": 12, "pal": 16, "sls": 4}
    assert sorted({run.spec.optimizer.lr for run in by_optimizer["sgd"]}) == [0.001, 0.01, 0.1]
    assert {run.spec.optimizer.weight_decay for run in plan.runs} == {0.0001}  # the base's value, in every alternative
    assert {run.spec.optimizer.lr for run in by_optimizer["sls"]} == {0.1}  # a key an alternative leaves out: the default
    assert {(run.spec.optimizer.measuring_step, run.spec.optimizer.step_adaptation) for run in by_optimizer["pal"]} == {
        (1.0, 1.0), (1.0, 1.25), (0.1, 1.0), (0.1, 1.25)
    }
    assert "optimizer.measuring_step" not in by_optimizer["sgd"][0].swept  # keys an alternative leaves out are not swept
    assert len({run.run_id for run in plan.runs}) == len(plan.runs)


def test_an_error_names_the_alternative_of_grids_that_set_the_value(tmp_path: Path) -> None:
    text = PER_OPTIMIZER.replace("optimizer.lr: [0.1, 0.01, 0.001]", "optimizer.lr: [0.1, -1.0]")

    with pytest.raises(SpecError) as raised:
        load_sweep(write(tmp_path, text), known_names())

    assert "grids[0].optimizer.lr" in str(raised.value)
    assert "-1.0" in str(raised.value)


REPRODUCTIONS = {  # sweep → runs per optimizer (configurations × seeds)
    "dissertation_ch4_grid": {"adam": 30, "sgd": 36, "rmsprop": 24, "pal": 48, "sls": 48, "alig": 36, "cocob": 24, "sgd_hd": 36},
    "dissertation_ch6_grid": {"sgd": 36, "pal": 54, "labpal": 216, "gols_i": 144, "sls": 48},
    "thesis_main_cifar10": {"adamw": 4, "sgd": 8, "sls": 4, "accuracy_sls": 8},
    "line_paper_lr": {"sgd": 12},
}


@pytest.mark.parametrize("sweep", sorted(REPRODUCTIONS))
def test_reproduction_sweeps_plan_the_papers_run_counts(sweep: str, orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from orchestrator.home import CONFIGS_DIR
    from tests.datasets import write_cifar10

    monkeypatch.setenv("HOME", str(tmp_path))  # the tcml profile's data_root is ~/datasets
    write_cifar10(tmp_path / "datasets", np.random.default_rng(0), 2, monkeypatch)

    runs = orch.ok("plan", "--json", CONFIGS_DIR / "sweeps" / f"{sweep}.yaml").json()["runs"]

    per_optimizer: dict[str, int] = {}
    for run in runs:
        name = run["swept"].get("optimizer.name", "sgd")
        per_optimizer[name] = per_optimizer.get(name, 0) + 1
    assert per_optimizer == REPRODUCTIONS[sweep]
    assert len({run["id"] for run in runs}) == sum(REPRODUCTIONS[sweep].values())


def test_line_searches_on_digits_run_end_to_end(orch) -> None:
    """configs/sweeps/line_searches_digits.yaml through the orchestrator: every run completes and
    records the passes its optimizer makes (400 steps each)."""
    from orchestrator.home import CONFIGS_DIR

    orch.ok("submit", CONFIGS_DIR / "sweeps" / "line_searches_digits.yaml", "--executor", "debug")
    rows = orch.ok("export", "--json").json()

    assert len(rows) == 12 and {row["state"] for row in rows} == {"COMPLETED"}
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["config.optimizer.name"], []).append(row)
    passes = {name: {(row["final.forward_passes"], row["final.backward_passes"]) for row in group} for name, group in by_name.items() if name != "labpal"}
    assert passes["sgd"] == {(400, 400)}
    assert passes["pal"] == {(800, 400)}
    assert all(forwards > 800 and backwards == 400 for forwards, backwards in passes["sls"] | passes["accuracy_sls"])
    for row in by_name["labpal"]:  # approximation phases: forward passes only, 1 280 samples = 20 batches of 64
        assert row["final.backward_passes"] < 400 < row["final.forward_passes"]
    for name in ("pal", "sls", "accuracy_sls"):
        assert all(row["final.val_accuracy"] > 0.9 for row in by_name[name])  # the digits are easy
