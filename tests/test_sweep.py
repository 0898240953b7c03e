"""Sweep expansion: grid × union of grids × zip × seeds, and where each run's values come from."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import pytest

from jobs.catalog import known_names
from orchestrator.errors import SpecError
from orchestrator.expansion import expansion_points, run_count
from orchestrator.home import CONFIGS_DIR
from orchestrator.sweep import (
    DEFAULT_MAX_RUNS,
    MAX_RUNS_CEILING,
    check_run_count,
    load_sweep,
    run_limit,
    sweep_axes,
)

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
    # the base's value, in every alternative
    assert {run.spec.optimizer.weight_decay for run in plan.runs} == {0.0001}
    # a key an alternative leaves out: the default
    assert {run.spec.optimizer.lr for run in by_optimizer["sls"]} == {0.1}
    assert {
        (run.spec.optimizer.measuring_step, run.spec.optimizer.step_adaptation) for run in by_optimizer["pal"]
    } == {(1.0, 1.0), (1.0, 1.25), (0.1, 1.0), (0.1, 1.25)}
    # keys an alternative leaves out are not swept
    assert "optimizer.measuring_step" not in by_optimizer["sgd"][0].swept
    assert len({run.run_id for run in plan.runs}) == len(plan.runs)


def test_an_error_names_the_alternative_of_grids_that_set_the_value(tmp_path: Path) -> None:
    text = PER_OPTIMIZER.replace("optimizer.lr: [0.1, 0.01, 0.001]", "optimizer.lr: [0.1, -1.0]")

    with pytest.raises(SpecError) as raised:
        load_sweep(write(tmp_path, text), known_names())

    assert "grids[0].optimizer.lr" in str(raised.value)
    assert "-1.0" in str(raised.value)


REPRODUCTIONS = {  # sweep → runs per optimizer (configurations × seeds)
    "dissertation_ch4_grid": {
        "adam": 30,
        "sgd": 36,
        "rmsprop": 24,
        "pal": 48,
        "sls": 48,
        "alig": 36,
        "cocob": 24,
        "sgd_hd": 36,
    },
    "dissertation_ch6_grid": {"sgd": 36, "pal": 54, "labpal": 216, "gols_i": 144, "sls": 48, "pls": 144},
    "thesis_main_cifar10": {"adamw": 4, "sgd": 8, "sls": 4, "accuracy_sls": 8},
    "line_paper_lr": {"sgd": 12},
}


@pytest.mark.parametrize("sweep", sorted(REPRODUCTIONS))
def test_reproduction_sweeps_plan_the_papers_run_counts(
    sweep: str, orch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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

    assert len(rows) == 14 and {row["state"] for row in rows} == {"COMPLETED"}
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["config.optimizer.name"], []).append(row)
    passes = {
        name: {(row["final.forward_passes"], row["final.backward_passes"]) for row in group}
        for name, group in by_name.items()
        if name != "labpal"
    }
    assert passes["sgd"] == {(400, 400)}
    assert passes["pal"] == {(800, 400)}
    assert all(
        forwards > 800 and backwards == 400 for forwards, backwards in passes["sls"] | passes["accuracy_sls"]
    )
    # approximation phases: forward passes only, 1 280 samples = 20 batches of 64
    for row in by_name["labpal"]:
        assert row["final.backward_passes"] < 400 < row["final.forward_passes"]
    for name in ("pal", "sls", "accuracy_sls"):
        assert all(row["final.val_accuracy"] > 0.9 for row in by_name[name])  # the digits are easy


# -- the run count: arithmetic, before any point exists ------------------------------------------------


def measured(action: Callable[[], Any]) -> tuple[Any, float, int]:
    """What ``action`` returns (or raises), its seconds, and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome: Any = action()
    except SpecError as error:
        outcome = error
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, seconds, peak


HUGE = {
    "name": "huge",
    "grid": {"optimizer.lr": [0.1, 0.2, 0.3]},
    "grids": [{"optimizer.name": ["sgd"], "optimizer.momentum": [0.0, 0.5]}, {"optimizer.name": ["adam"]}],
    "zip": {"training.batch_size": [16, 32], "training.steps": [10, 20]},
    "seeds": 10**9,
}


def test_a_billion_runs_are_counted_and_refused_without_building_a_point() -> None:
    axes, _, _ = measured(lambda: sweep_axes("huge.yaml", HUGE))

    count, count_seconds, count_peak = measured(lambda: run_count(axes))
    refusal, seconds, peak = measured(
        lambda: check_run_count("huge.yaml", axes, run_limit("huge.yaml", HUGE))
    )

    assert count == 3 * (2 + 1) * 2 * 10**9
    assert isinstance(refusal, SpecError)
    assert f"sweep expands to {count} runs, above the limit of {DEFAULT_MAX_RUNS}" in str(refusal)
    # above the ceiling
    assert f"max_runs raises it up to {MAX_RUNS_CEILING}); split a larger study into several sweeps" in str(
        refusal
    )
    assert count_seconds + seconds < 0.1
    assert max(count_peak, peak) < 100_000  # bytes: no list of points, no list of seeds


def test_below_the_ceiling_the_refusal_names_the_max_runs_that_would_accept_it() -> None:
    axes = sweep_axes("big.yaml", {"seeds": 300_000})

    refusal = measured(lambda: check_run_count("big.yaml", axes, DEFAULT_MAX_RUNS))[0]

    assert "raise the limit with the top-level key max_runs: 300000" in str(refusal)


def test_a_billion_seeds_and_a_huge_union_are_refused_by_load_sweep_in_bounded_time_and_memory(
    tmp_path: Path,
) -> None:
    forty = list(range(1, 41))
    union = "".join(
        f"  - {{optimizer.name: [{name}], training.batch_size: {forty}, training.steps: {forty}, "
        f"training.eval_every: {forty}}}\n"
        for name in ("sgd", "adam")
    )
    for text, count in (("seeds: 1000000000\n", 10**9), (f"grids:\n{union}seeds: 800\n", 2 * 40**3 * 800)):
        path = write(tmp_path, f"name: huge\ninclude: [problems/digits_mlp.yaml]\n{text}")

        refusal, seconds, peak = measured(lambda: load_sweep(path, known_names()))

        assert isinstance(refusal, SpecError)
        assert f"sweep expands to {count} runs, above the limit of {DEFAULT_MAX_RUNS}" in str(refusal)
        assert seconds < 5
        assert peak < 50_000_000


def test_a_sweep_of_100_000_runs_passes_the_count_and_expands_lazily() -> None:
    document = {
        "name": "big",
        "grid": {"optimizer.lr": list(range(1, 101)), "training.batch_size": list(range(1, 101))},
        "seeds": 10,
    }
    axes = sweep_axes("big.yaml", document)

    first, seconds, peak = measured(
        lambda: (
            check_run_count("big.yaml", axes, run_limit("big.yaml", document)),
            next(iter(expansion_points(axes))),
        )[1]
    )

    assert run_count(axes) == 100_000 <= DEFAULT_MAX_RUNS
    assert [(axis.label, index) for axis, index in first] == [
        ("grid.optimizer.lr", 0),
        ("grid.training.batch_size", 0),
        ("seeds", 0),
    ]
    assert seconds < 0.1 and peak < 100_000


def test_the_union_of_grids_is_indexed_in_the_order_of_its_products() -> None:
    document = {
        "name": "u",
        "grids": [
            {"optimizer.name": ["sgd"], "optimizer.lr": [0.1, 0.01, 0.001], "optimizer.momentum": [0.0, 0.9]},
            {"optimizer.name": ["pal"], "optimizer.measuring_step": [1.0, 0.1]},
        ],
    }
    (union,) = sweep_axes("u.yaml", document)
    expected = [
        ("sgd", lr, momentum, "UNSET") for lr, momentum in itertools.product([0.1, 0.01, 0.001], [0.0, 0.9])
    ]
    expected += [("pal", "UNSET", "UNSET", step) for step in [1.0, 0.1]]

    points = [
        tuple(repr(value) if repr(value) == "UNSET" else value for value in union.points[index])
        for index in range(union.size)
    ]

    assert union.keys == ("optimizer.name", "optimizer.lr", "optimizer.momentum", "optimizer.measuring_step")
    assert points == expected
    assert [union.origin(index, "optimizer.name") for index in (0, 5, 6)] == [
        "grids[0].optimizer.name"
    ] * 2 + ["grids[1].optimizer.name"]


def test_max_runs_raises_the_limit(tmp_path: Path) -> None:
    text = (
        "name: limited\ninclude: [problems/digits_mlp.yaml]\nbase: {training: {steps: 5}}\ngrid: "
        "{optimizer.lr: [0.1, 0.2, 0.3]}\nseeds: 2\n"
    )

    with pytest.raises(SpecError, match="sweep expands to 6 runs, above the limit of 5"):
        load_sweep(write(tmp_path, "max_runs: 5\n" + text), known_names())
    assert len(load_sweep(write(tmp_path, "max_runs: 6\n" + text), known_names()).runs) == 6


# -- reading YAML: bounded, and confined --------------------------------------------------------------


def test_a_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 30)
    ]
    path = write(tmp_path, "name: laughs\nbase:\n  " + "\n  ".join(levels) + "\n")

    refusal, seconds, peak = measured(lambda: load_sweep(path, known_names()))

    assert isinstance(refusal, SpecError) and "YAML aliases expand to too many nodes" in str(refusal)
    assert seconds < 1 and peak < 20_000_000


def test_includes_may_reach_configs_and_the_sweeps_own_folder_through_symlinks_that_stay_inside(
    tmp_path: Path,
) -> None:
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments" / "short.yaml").write_text("training: {steps: 7}\n")
    (tmp_path / "fragments" / "problem.yaml").symlink_to(CONFIGS_DIR / "problems" / "digits_mlp.yaml")
    path = write(tmp_path, "name: inside\ninclude: [fragments/problem.yaml, fragments/short.yaml]\n")

    (run,) = load_sweep(path, known_names()).runs

    assert run.spec.training.steps == 7 and run.spec.model.hidden == [64, 64]
    assert len(load_sweep(CONFIGS_DIR / "sweeps" / "line_searches_digits.yaml", known_names()).runs) == 14


def test_an_include_escaping_through_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("training: {steps: 7}\n")
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    (sweeps / "elsewhere").symlink_to(outside)
    path = write(sweeps, "name: escape\ninclude: [elsewhere/secret.yaml]\n")

    with pytest.raises(SpecError, match="include outside the sweep's folder and configs/"):
        load_sweep(path, known_names())


# -- sizes the planner checks against the data set ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": "cifar10", "train_size": 40000, "fraction": 0.1},
        {"name": "cifar10", "val_source": "test", "fraction": 0.3},
        {"name": "mnist", "val_fraction": 0.37, "fraction": 0.77},
        {"name": "svhn", "train_size": 1000},
    ],
)
def test_split_sizes_are_the_lengths_of_the_split_the_job_draws(data: dict[str, Any]) -> None:
    from jobs.spec import DataSpec
    from jobs.splits import OFFICIAL_COUNTS, split_sizes, subset_indices

    spec = DataSpec(**data)
    train, val = subset_indices(spec, *OFFICIAL_COUNTS[spec.name])

    assert split_sizes(spec, *OFFICIAL_COUNTS[spec.name]) == (len(train), len(val))


def test_the_batch_size_may_be_the_whole_training_split_and_no_more(tmp_path: Path) -> None:
    text = (
        "name: batch\ninclude: [problems/digits_mlp.yaml]\nbase: {{training: {{steps: 2, batch_size: {}}}}}\n"
    )

    # 1 797 digits, 20 % validation
    (run,) = load_sweep(write(tmp_path, text.format(1438)), known_names()).runs
    with pytest.raises(
        SpecError,
        match="training.batch_size: larger than the training split; found 1439; accepted: at most 1438",
    ):
        load_sweep(write(tmp_path, text.format(1439)), known_names())
    assert run.spec.training.batch_size == 1438


@pytest.mark.parametrize(
    ("time_limit", "refused"), [("00:01:00", True), ("00:01:59", True), ("00:02:00", False)]
)
def test_a_time_limit_too_short_to_train_before_its_signal_is_refused(
    tmp_path: Path, time_limit: str, refused: bool
) -> None:
    """The mini cluster signals 30 s before the limit (and Slurm up to 60 s earlier): one minute is
    spent on the signal and the start, every segment requeues without a step."""
    text = (
        "name: short\ninclude: [problems/digits_mlp.yaml]\nbase:\n  cluster: mini\n  resources: {time: "
        f"'{time_limit}'}}\n"
    )
    if not refused:
        assert load_sweep(write(tmp_path, text), known_names()).runs[0].spec.resources.time == time_limit
        return
    with pytest.raises(SpecError) as raised:
        load_sweep(write(tmp_path, text), known_names())
    message = str(raised.value)
    assert "resources.time" in message and "at least 0-00:02:00" in message and "signal_delay_s" in message


def test_a_users_own_profiles_add_to_and_override_the_shipped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.profiles import load_profile, profile_names

    own = tmp_path / "clusters"
    own.mkdir()
    (own / "tcml.yaml").write_text("max_parallel: 8\n")  # one key over the shipped profile
    (own / "mylab.yaml").write_text(
        "executor: slurm\npartitions: [{name: gpu, max_time: '2-00:00:00'}]\ndefault_time: '04:00:00'\n"
        "signal_delay_s: 60\n"
    )
    (own / "broken.yaml").write_text("max_parallel: many\n")
    monkeypatch.setenv("ORCH_CLUSTERS", str(own))

    tcml = load_profile("tcml")
    assert (
        tcml.max_parallel == 8
        and [p.name for p in tcml.partitions] == ["test", "day", "week", "month"]
        and tcml.signal_delay_s == 120
    )
    assert {"broken", "local", "mini", "mylab", "tcml"} <= set(profile_names())
    text = (
        "name: own\ninclude: [problems/digits_mlp.yaml]\nbase:\n  cluster: mylab\n  resources: {time: null}\n"
    )
    [run] = load_sweep(write(tmp_path, text), known_names()).runs
    assert (run.spec.resources.partition, run.spec.resources.time) == ("gpu", "04:00:00")
    with pytest.raises(SpecError) as raised:
        load_profile("broken")
    assert str(own / "broken.yaml") in str(raised.value) and "max_parallel" in str(raised.value)
    with pytest.raises(SpecError) as unknown:
        load_profile("../tcml")
    assert "unknown cluster profile" in str(unknown.value) and "mylab" in str(unknown.value)


def test_sbatch_options_of_a_profile_reach_the_job_script_quoted_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile's sbatch options go into the #SBATCH lines submitit writes (its own script
    builder, fed by orch's parameters); a value that could end its line or an option off the
    allow-list is refused when the profile is loaded (plan time), naming the file and key."""
    from submitit.slurm.slurm import _make_sbatch_string

    from jobs.spec import ResourcesSpec
    from orchestrator.executors.slurm import sbatch_parameters
    from orchestrator.profiles import load_profile

    own = tmp_path / "clusters"
    own.mkdir()
    monkeypatch.setenv("ORCH_CLUSTERS", str(own))
    (own / "tcml.yaml").write_text(
        "sbatch:\n  account: lab-mz\n  qos: normal\n  constraint: 1080ti\n  exclude: tcml-node[7-8]\n"
        "  mail_type: END,FAIL\n  mail_user: me@uni-tuebingen.de\n  extra: [--reservation=paper "
        "deadline, --hint=nomultithread]\n"
    )
    profile = load_profile("tcml")
    parameters = sbatch_parameters(
        ResourcesSpec(time="1:00:00", gpus=1), "orch:lr:x.0+0", 4, profile.signal_delay_s, profile.sbatch
    )
    script = _make_sbatch_string(command="python -m x", folder=str(tmp_path), **parameters)  # type: ignore[arg-type]  # submitit's untyped **kwargs
    for line in (
        "#SBATCH --account=lab-mz",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=1080ti",
        "#SBATCH --exclude='tcml-node[7-8]'",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --mail-user=me@uni-tuebingen.de",
        "#SBATCH --reservation='paper deadline'",
        "#SBATCH --hint=nomultithread",
        "#SBATCH --job-name=orch:lr:x.0+0",
    ):
        assert line in script.splitlines(), line

    for bad, key in (
        ('account: "lab\\nrm -rf ~"', "sbatch.account"),
        ("extra: [--wrap=evil]", "sbatch.extra[0]"),
        ("mail_type: SOMETIMES", "sbatch.mail_type"),
    ):
        (own / "tcml.yaml").write_text(f"sbatch:\n  {bad}\n")
        with pytest.raises(SpecError) as raised:
            load_profile("tcml")
        assert str(own / "tcml.yaml") in str(raised.value) and key in str(raised.value)


@pytest.mark.parametrize("swept", [False, True])
def test_stacked_line_points_with_a_dropout_model_are_refused_where_they_are_written(
    tmp_path: Path, swept: bool
) -> None:
    """On a GPU the stacked forward draws other dropout masks than one point at a time: refused
    at plan time, by the memoized planner (a grid) as by the exact way (no grid)."""
    text = (
        "name: stacked\ninclude: [problems/digits_mlp.yaml]\nbase:\n  model: {hidden: [16], dropout: 0.2}\n"
        "  probes: [{type: line, points_per_forward: 4}]\n"
    )
    if swept:
        text += "grid:\n  optimizer.lr: [0.1, 0.05]\n"
    with pytest.raises(SpecError) as raised:
        load_sweep(write(tmp_path, text), known_names())
    message = str(raised.value)
    assert "sweep.yaml" in message and "probes[0]" in message and "points_per_forward 1" in message
    without_dropout = text.replace(", dropout: 0.2", "")
    assert len(load_sweep(write(tmp_path, without_dropout), known_names()).runs) == (2 if swept else 1)
