"""Landscape probes: exact values against independent evaluations, no effect on training."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jobs.catalog import known_names
from jobs.checkpoint import load_checkpoint
from jobs.data import DATASETS, InMemoryData
from jobs.journal import JournalWriter, ShardWritten, read_events
from jobs.models import build_model
from jobs.paths import RunPaths
from jobs.probes import ProbeContext, ProbeSetup
from jobs.probes.functional import LineEvaluator, flat_parameters
from jobs.probes.hessian import HessianNormProbe
from jobs.probes.interpolation import alpha_points
from jobs.probes.line import LineProbe, base_points
from jobs.shards import iter_shards
from jobs.spec import ModelSpec, ProbeSpec, RunSpec, TrainingSpec, violations
from jobs.train import seed_everything, train

DIGITS_TRAINING = TrainingSpec(
    steps=12, batch_size=32, checkpoint_every=1, eval_every=6, heartbeat_seconds=0.1
)


def train_in(run_dir: Path, spec: RunSpec) -> RunPaths:
    paths = RunPaths(run_dir)
    train(spec, paths, JournalWriter(paths.attempt("001-a")))
    return paths


def full_batch_losses(
    model: nn.Module, position: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, chunk: int
) -> np.ndarray:
    """Independent evaluation: load the parameters into a copy, plain train-mode forwards in chunks."""
    probe_model = copy.deepcopy(model).train()
    torch.nn.utils.vector_to_parameters(position, probe_model.parameters())
    with torch.no_grad():
        losses = [
            F.cross_entropy(
                probe_model(inputs[start : start + chunk]), targets[start : start + chunk], reduction="none"
            )
            for start in range(0, len(targets), chunk)
        ]
    return torch.cat(losses).double().numpy()


def test_a_measured_line_equals_an_independent_evaluation_from_the_checkpoint(tmp_path: Path) -> None:
    """The oracle: checkpoint at step t + stored direction → L(θ + s·d) as in the shard."""
    # the convolutional net is slow on a CPU: fewer points
    coarse = {
        "resolution": 0.02,
        "max_enlargements": 1,
    }
    for model_spec, grid in (
        (ModelSpec(name="mlp", hidden=[32, 32]), {}),
        (ModelSpec(name="cnn", hidden=[8, 16]), coarse),
    ):
        probe = ProbeSpec(type="line", steps=[4, 9], store_direction=True, record=["train"], **grid)
        spec = RunSpec(model=model_spec, training=DIGITS_TRAINING, probes=[probe])
        paths = train_in(tmp_path / model_spec.name, spec)
        data = DATASETS.get("digits")(spec.data, None)
        model = build_model(model_spec, data.input_shape, data.num_classes)
        shards = list(iter_shards(paths, "line"))
        assert [shard.step for shard in shards] == [4, 9]
        for shard in shards:
            model.load_state_dict(
                load_checkpoint(paths.checkpoint_file(shard.step), torch.device("cpu")).model
            )
            origin = flat_parameters(model)
            direction = torch.from_numpy(shard.arrays["direction_vector"][0])
            points = shard.arrays["points"]
            assert 0.0 in points and shard.metadata["update_norm"][0] in points
            for index in (0, int(np.searchsorted(points, 0.0)), len(points) // 3, len(points) - 1):
                position = origin + torch.tensor(points[index], dtype=torch.float32) * direction
                expected = full_batch_losses(
                    model, position, data.train_inputs, data.train_targets, spec.training.batch_size
                ).mean()
                measured = shard.arrays["train"][0, :, index].astype(np.float64).mean()
                assert abs(measured - expected) <= 1e-6 * abs(expected), (
                    model_spec.name,
                    shard.step,
                    points[index],
                )


def test_the_direction_is_the_normalized_update(tmp_path: Path) -> None:
    spec = RunSpec(
        model=ModelSpec(hidden=[16]),
        training=DIGITS_TRAINING,
        probes=[ProbeSpec(type="line", steps=[5], store_direction=True, record=["direction"])],
    )
    paths = train_in(tmp_path / "run", spec)
    before = torch.cat(
        [t.reshape(-1) for t in load_checkpoint(paths.checkpoint_file(5), torch.device("cpu")).model.values()]
    )
    after = torch.cat(
        [t.reshape(-1) for t in load_checkpoint(paths.checkpoint_file(6), torch.device("cpu")).model.values()]
    )
    (shard,) = iter_shards(paths, "line")
    update = after - before
    assert shard.arrays["update_norm"][0] == pytest.approx(float(update.norm()), rel=1e-6)
    assert np.allclose(shard.arrays["direction_vector"][0], (update / update.norm()).numpy(), atol=1e-6)
    # plain SGD without momentum: s_upd = λ‖g‖
    assert shard.arrays["update_norm"][0] == pytest.approx(
        spec.optimizer.lr * shard.arrays["grad_norm"][0], rel=1e-5
    )
    assert shard.arrays["direction"].shape == (1, 32, len(shard.arrays["points"]))
    assert "train" not in shard.arrays and shard.metadata["learning_rate"] == spec.optimizer.lr


def test_probes_leave_the_training_trajectory_bit_identical(tmp_path: Path) -> None:
    """BatchNorm statistics, dropout draws, optimizer state and RNG streams: all as without probes."""
    model_spec = ModelSpec(name="cnn", hidden=[8, 16], dropout=0.2)
    training = TrainingSpec(steps=10, batch_size=32, checkpoint_every=5, eval_every=5, heartbeat_seconds=0.1)
    plain = RunSpec(model=model_spec, training=training)
    probed = RunSpec(
        model=model_spec,
        training=training,
        probes=[
            ProbeSpec(type="line", every=3, resolution=0.05, max_enlargements=1),
            ProbeSpec(
                type="line", name="noisy", steps=[4], directions=2, record=["direction"], resolution=0.05
            ),
            ProbeSpec(type="interpolation", every=2),
            ProbeSpec(type="hessian_norm", steps=[7], hessian_samples=64, power_iterations=3),
        ],
    )
    without, with_probes = train_in(tmp_path / "plain", plain), train_in(tmp_path / "probed", probed)
    assert (
        len(list(iter_shards(with_probes, "line"))) == 4
        and len(list(iter_shards(with_probes, "hessian_norm"))) == 1
    )
    for step in (5, 10):
        first = load_checkpoint(without.checkpoint_file(step), torch.device("cpu"))
        second = load_checkpoint(with_probes.checkpoint_file(step), torch.device("cpu"))
        assert any("running_mean" in name for name in first.model)
        for name, tensor in first.model.items():
            assert torch.equal(tensor, second.model[name]), name
        for key, state in first.optimizer["state"].items():
            assert all(
                torch.equal(value, second.optimizer["state"][key][field]) for field, value in state.items()
            )
        assert torch.equal(first.rng["torch"], second.rng["torch"])
        assert first.rng["python"] == second.rng["python"]
        assert np.array_equal(first.rng["numpy"]["keys"], second.rng["numpy"]["keys"])


def tilted_pair_problem(offset: float) -> tuple[nn.Module, InMemoryData, torch.Tensor, torch.Tensor]:
    """Logits (w0·x, w1·x) with x = 1 on samples of both classes: the loss is smallest at w0 = w1.

    Along d = (1, −1)/√2 from θ with w0 − w1 = −offset·√2 the minimum lies at s = offset.
    """
    model = nn.Sequential(nn.Linear(1, 2, bias=False))
    inputs = torch.ones(64, 1)
    targets = torch.arange(64) % 2
    data = InMemoryData(inputs, targets, inputs[:16], targets[:16], 2, torch.arange(64), torch.arange(16))
    direction = torch.tensor([1.0, -1.0]) / math.sqrt(2)
    origin = torch.tensor([-offset / math.sqrt(2), offset / math.sqrt(2)])
    return model, data, origin, direction


def line_context(
    model: nn.Module, data: InMemoryData, origin: torch.Tensor, direction: torch.Tensor, step_length: float
) -> ProbeContext:
    return ProbeContext(
        step=0,
        model=model,
        data=data,
        batch_indices=torch.arange(16),
        params_before=origin,
        params_after=origin + step_length * direction,
        gradient=-direction,
        learning_rate=step_length,
        optimizer_step=None,
    )


def test_the_interval_is_enlarged_until_the_minimum_is_inside() -> None:
    model, data, origin, direction = tilted_pair_problem(offset=1.2)
    setup = ProbeSetup(model, data, TrainingSpec(batch_size=16), torch.device("cpu"))
    context = line_context(model, data, origin, direction, step_length=0.01)

    measurement = LineProbe(ProbeSpec(type="line"), setup).measure(context)
    points = measurement.arrays["points"]
    full_batch = measurement.arrays["train"][0].mean(axis=0)
    assert measurement.metadata["enlargements"] == 2 and not measurement.is_extrapolation
    assert points.min() == pytest.approx(-1.5) and points.max() < 1.5 and np.all(np.diff(points) > 0)
    assert abs(points[np.argmin(full_batch)] - 1.2) <= 0.006
    assert len(points) == len(base_points(0.5, 0.006, [0.01])) + 4 * 84  # two shells of 2 × 84 points

    capped = LineProbe(ProbeSpec(type="line", max_enlargements=1), setup).measure(context)
    assert capped.metadata["enlargements"] == 1 and capped.is_extrapolation


def test_a_line_with_its_minimum_inside_is_not_enlarged() -> None:
    model, data, origin, direction = tilted_pair_problem(offset=0.2)
    setup = ProbeSetup(model, data, TrainingSpec(batch_size=16), torch.device("cpu"))
    measurement = LineProbe(ProbeSpec(type="line"), setup).measure(
        line_context(model, data, origin, direction, 0.03)
    )
    assert measurement.metadata["enlargements"] == 0 and not measurement.is_extrapolation
    assert len(measurement.arrays["points"]) == 167 + 2  # the grid, 0 and s_upd


def test_grouped_batch_norm_forwards_equal_one_forward_per_chunk() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="cnn", hidden=[8, 16]), (1, 8, 8), 10)
    inputs, targets = torch.randn(300, 1, 8, 8), torch.randint(0, 10, (300,))
    origin = flat_parameters(model)
    direction = torch.randn_like(origin) / origin.numel() ** 0.5
    points = [-0.3, 0.0, 0.25]
    one_chunk_per_forward = LineEvaluator(model, "batch", chunk=32, forward_batch=32).losses(
        origin, direction, points, inputs, targets, seed=1
    )
    many_chunks_per_forward = LineEvaluator(model, "batch", chunk=32, forward_batch=128).losses(
        origin, direction, points, inputs, targets, seed=1
    )
    assert one_chunk_per_forward.shape == (300, 3)
    assert torch.allclose(one_chunk_per_forward, many_chunks_per_forward, rtol=1e-5, atol=1e-6)
    for index, point in enumerate(points):  # and both equal plain train-mode chunks (300 = 9 × 32 + 12)
        expected = full_batch_losses(model, origin + point * direction, inputs, targets, chunk=32)
        assert np.allclose(one_chunk_per_forward[:, index].double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_eval_mode_uses_the_running_statistics_without_changing_them() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="cnn", hidden=[8]), (1, 8, 8), 10)
    inputs, targets = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    model(inputs)  # one train-mode forward moves the running statistics away from (0, 1)
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    losses = LineEvaluator(model, "eval", chunk=8).losses(
        flat_parameters(model), torch.zeros(flat_parameters(model).numel()), [0.0], inputs, targets, seed=0
    )
    with torch.no_grad():
        expected = F.cross_entropy(copy.deepcopy(model).eval()(inputs), targets, reduction="none")
    assert torch.allclose(losses[:, 0], expected, atol=1e-6)
    assert all(torch.equal(buffer, before[name]) for name, buffer in model.named_buffers())


def test_interpolation_records_losses_between_iterates_gradient_cosines_and_distance(tmp_path: Path) -> None:
    spec = RunSpec(
        model=ModelSpec(hidden=[16]),
        training=DIGITS_TRAINING,
        probes=[ProbeSpec(type="interpolation", every=3, alpha_endpoints="exclusive", alphas=4)],
    )
    paths = train_in(tmp_path / "run", spec)
    shards = list(iter_shards(paths, "interpolation"))
    assert [shard.step for shard in shards] == [0, 3, 6, 9]
    assert np.allclose(shards[0].arrays["alphas"], [0.2, 0.4, 0.6, 0.8])
    assert shards[0].metadata["gradient_cosine"] is None and shards[0].metadata["distance_from_init"] == 0.0
    assert all(-1.0 <= shard.metadata["gradient_cosine"] <= 1.0 for shard in shards[1:])
    data = DATASETS.get("digits")(spec.data, None)
    seed_everything(spec.training.seed)  # as the job does before building the model: θ_0 again
    model = build_model(spec.model, data.input_shape, data.num_classes)
    initial = flat_parameters(model)
    shard = shards[2]
    model.load_state_dict(load_checkpoint(paths.checkpoint_file(6), torch.device("cpu")).model)
    before = flat_parameters(model)
    model.load_state_dict(load_checkpoint(paths.checkpoint_file(7), torch.device("cpu")).model)
    after = flat_parameters(model)
    assert shard.metadata["distance_from_init"] == pytest.approx(float((before - initial).norm()), rel=1e-6)
    expected = full_batch_losses(
        model, (1 - 0.4) * before + 0.4 * after, data.train_inputs, data.train_targets, 32
    ).mean()
    assert shard.arrays["train_loss"][1] == pytest.approx(expected, rel=1e-5)
    assert alpha_points(10, "inclusive")[[0, -1]].tolist() == [0.0, 1.0]


def test_hessian_norm_matches_the_exact_hessian_of_a_small_model() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    inputs, targets = torch.randn(50, 4), torch.randint(0, 3, (50,))
    data = InMemoryData(inputs, targets, inputs[:5], targets[:5], 3, torch.arange(50), torch.arange(5))
    setup = ProbeSetup(model, data, TrainingSpec(batch_size=50), torch.device("cpu"))
    spec = ProbeSpec(type="hessian_norm", hessian_samples=50, power_iterations=500, power_tolerance=1e-7)
    origin = flat_parameters(model)
    measurement = HessianNormProbe(spec, setup).measure(
        line_context(model, data, origin, torch.zeros_like(origin), 0.0)
    )

    def loss_at(flat: torch.Tensor) -> torch.Tensor:
        replica = copy.deepcopy(model)
        params = dict(
            zip(
                [name for name, _ in model.named_parameters()],
                torch.split(flat, [p.numel() for p in model.parameters()]),
            )
        )
        shaped = {name: piece.view_as(dict(model.named_parameters())[name]) for name, piece in params.items()}
        return F.cross_entropy(torch.func.functional_call(replica, shaped, (inputs,)), targets)

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_at, origin.double().float()))
    assert measurement.metadata["converged"]
    assert measurement.metadata["spectral_norm"] == pytest.approx(float(eigenvalues.abs().max()), rel=1e-3)


@pytest.mark.parametrize(
    ("probe", "key", "accepted"),
    [
        (ProbeSpec(type="line", alphas=5), "probes[0].alphas", "not a field of a line probe"),
        (
            ProbeSpec(type="interpolation", directions=3),
            "probes[0].directions",
            "not a field of a interpolation probe",
        ),
        (
            ProbeSpec(type="line", record=["train", "test"]),
            "probes[0].record",
            "a list of train, val, direction",
        ),
        (ProbeSpec(type="line", record=[]), "probes[0].record", "at least one of"),
        (
            ProbeSpec(type="hessian_norm", bn_mode="eval"),
            "probes[0].bn_mode",
            "not a field of a hessian_norm probe",
        ),
    ],
)
def test_probe_fields_are_checked(probe: ProbeSpec, key: str, accepted: str) -> None:
    found = [(where, text) for where, _, text in violations(RunSpec(probes=[probe]), known_names())]
    assert any(where == key and accepted in text for where, text in found), found


def test_two_probes_need_distinct_names() -> None:
    spec = RunSpec(probes=[ProbeSpec(type="line"), ProbeSpec(type="line", directions=2)])
    assert [key for key, _, _ in violations(spec, known_names())] == ["probes[1].name"]
    named = RunSpec(probes=[ProbeSpec(type="line"), ProbeSpec(type="line", name="noisy", directions=2)])
    assert list(violations(named, known_names())) == []


def test_probe_step_selection() -> None:
    assert [t for t in range(20) if ProbeSpec(every=5, from_step=3, to_step=14).selects(t)] == [3, 8, 13]
    assert [t for t in range(20) if ProbeSpec(steps=[0, 7, 19], every=5).selects(t)] == [0, 7, 19]


def test_each_shard_is_journaled_once_with_its_size_and_hash(tmp_path: Path) -> None:
    spec = RunSpec(
        model=ModelSpec(hidden=[16]),
        training=DIGITS_TRAINING,
        probes=[ProbeSpec(type="line", every=4, record=["val"])],
    )
    paths = train_in(tmp_path / "run", spec)
    manifests = [
        event.payload
        for event in read_events(paths.attempt("001-a"))
        if isinstance(event.payload, ShardWritten)
    ]
    assert [manifest.step for manifest in manifests] == [0, 4, 8]
    for manifest in manifests:
        assert (paths.run_dir / manifest.path).stat().st_size == manifest.bytes
        assert manifest.n_points >= 169 and manifest.probe == "line"


def test_orch_analyze_draws_representative_lines(orch, tmp_path: Path) -> None:
    from tests.conftest import write_sweep

    sweep = write_sweep(
        tmp_path,
        "probed",
        "name: probed\ninclude: [problems/digits_mlp.yaml]\n"
        "base:\n  model: {hidden: [16]}\n  training: {steps: 30, checkpoint_every: 10, eval_every: 10}\n"
        "  probes: [{type: line, every: 5, resolution: 0.02}]\n",
    )
    run_id = orch.ok("submit", sweep, "--executor", "debug", "--json").json()["submitted"][0]
    (report,) = orch.ok("analyze", "probed", "--figure", "lines", "--steps", "5:30", "--json").json()
    assert report["target"] == run_id and report["analysis"] == "lines"
    # four, spread over the range
    assert [line["step"] for line in report["summary"]["lines"]] == [
        5,
        10,
        20,
        25,
    ]
    assert Path(report["figures"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = report["summary"]["lines"][0]
    # the step went downhill on the full batch
    assert first["full_batch_at_update"] < first["full_batch_at_zero"]
    assert len(orch.ok("shards", run_id, "--probe", "line", "--json").json()["shards"]) == 6
    with pytest.raises(SystemExit) as exited:  # argparse rejects the range before anything runs
        orch("analyze", "probed", "--figure", "lines", "--steps", "9:3")
    assert exited.value.code == 2


def test_reduced_precision_is_explicit_and_close() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[32]), (1, 8, 8), 10)
    inputs, targets = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    origin = flat_parameters(model)
    direction = torch.randn_like(origin) / origin.numel() ** 0.5
    fp32 = LineEvaluator(model, "batch", chunk=32).losses(
        origin, direction, [0.0, 0.2], inputs, targets, seed=0
    )
    bf16 = LineEvaluator(model, "batch", chunk=32, precision="bf16").losses(
        origin, direction, [0.0, 0.2], inputs, targets, seed=0
    )
    assert fp32.dtype == bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16) and torch.allclose(fp32, bf16, rtol=5e-2, atol=5e-2)
    expected = full_batch_losses(model, origin, inputs, targets, chunk=64)
    assert np.allclose(fp32[:, 0].double().numpy(), expected, rtol=1e-6, atol=1e-7)


def small_mlp_line() -> tuple[nn.Module, InMemoryData, ProbeSetup, torch.Tensor, torch.Tensor]:
    """A seeded MLP on 8×8 inputs with 64 samples, its probe setup, and a random unit-ish direction."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[32]), (1, 8, 8), 10)
    inputs, targets = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    data = InMemoryData(inputs, targets, inputs[:16], targets[:16], 10, torch.arange(64), torch.arange(16))
    setup = ProbeSetup(model, data, TrainingSpec(batch_size=16), torch.device("cpu"))
    origin = flat_parameters(model)
    return model, data, setup, origin, torch.randn_like(origin) / origin.numel() ** 0.5


def test_a_reduced_precision_line_is_checked_against_float32_every_nth_line() -> None:
    """bf16 lines at the probe's 1st and 3rd line (precision_check_every: 2) are measured again in
    float32 and the shard's metadata says how far apart they are: close, the minimum in place."""
    model, data, setup, origin, direction = small_mlp_line()
    spec = ProbeSpec(type="line", precision="bf16", precision_check_every=2, every=5, max_enlargements=0)
    probe = LineProbe(spec, setup)

    checked = {}
    for step in (0, 5, 10):
        context = dataclasses.replace(line_context(model, data, origin, direction, 0.05), step=step)
        checked[step] = probe.measure(context).metadata.get("precision_check")

    assert checked[5] is None and checked[0] is not None and checked[10] is not None
    assert sorted(checked[0]) == ["direction", "train", "val"]
    (train,) = checked[0]["train"]
    assert 0 < train["max_abs_mean_loss_difference"] < 0.05
    assert train["argmin_shift_steps"] <= 2 and train["curvature_relative_difference"] < 0.5
    fp32 = LineProbe(ProbeSpec(type="line", precision_check_every=1, max_enlargements=0), setup)
    assert "precision_check" not in fp32.measure(line_context(model, data, origin, direction, 0.05)).metadata


def test_the_deviation_of_two_lines_is_what_their_means_and_fits_say() -> None:
    from jobs.probes.precision import line_deviation

    points = np.linspace(-0.5, 0.5, 11)
    fp32 = np.stack([points**2, 3 * points**2])  # two samples: mean 2·s², minimum at the middle
    reduced = np.stack([points**2, 3 * points**2 + 0.5 * (points - 0.1) ** 2 - 0.005])  # mean s² + ...

    deviation = line_deviation(points, reduced, fp32, interval=0.5)

    mean_difference = 0.25 * (points - 0.1) ** 2 - 0.0025
    assert deviation.max_abs_mean_loss_difference == pytest.approx(np.abs(mean_difference).max())
    assert deviation.argmin_shift_steps == 0  # both minima at s = 0 on this grid
    assert deviation.curvature_relative_difference == pytest.approx(0.25 / 2.0)


def test_orch_analyze_says_whether_bf16_changed_a_lines_conclusion(orch, tmp_path: Path) -> None:
    from tests.conftest import write_sweep

    sweep = write_sweep(
        tmp_path,
        "checked",
        "name: checked\ninclude: [problems/digits_mlp.yaml]\n"
        "base:\n  model: {hidden: [16]}\n  training: {steps: 12, checkpoint_every: 6, eval_every: 6}\n"
        "  probes: [{type: line, every: 3, resolution: 0.05, max_enlargements: 0, precision: bf16,"
        " precision_check_every: 2}]\n",
    )
    orch.ok("submit", sweep, "--executor", "debug")

    (report,) = orch.ok("analyze", "checked", "--figure", "precision", "--json").json()

    summary = report["summary"]  # lines at steps 0, 3, 6, 9: the 1st and 3rd are checked
    assert summary["precision"] == "bf16" and summary["lines_checked"] == 2
    assert 0 < summary["max_abs_mean_loss_difference"] < 0.05
    table = Path(report["tables"][0]).read_text().splitlines()
    assert table[0].startswith("step,set,direction,max_abs_mean_loss_difference")
    assert {line.split(",")[0] for line in table[1:]} == {"0", "6"}
    assert Path(report["figures"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_float32_twin_of_a_checked_line_is_the_float32_probes_line_bit_for_bit() -> None:
    """The check compares against exactly what a float32 run measures (same draws, same forwards),
    and a float32 probe measures the same bits with or without the option."""
    from jobs.probes.precision import line_deviation

    model, data, setup, origin, direction = small_mlp_line()
    context = line_context(model, data, origin, direction, 0.05)

    def measured(**fields: object):
        return LineProbe(ProbeSpec(type="line", max_enlargements=0, **fields), setup).measure(context)

    fp32, fp32_checked = measured(), measured(precision_check_every=1)
    bf16 = measured(precision="bf16", precision_check_every=1)

    for name in ("train", "val", "direction"):
        assert np.array_equal(fp32.arrays[name], fp32_checked.arrays[name])
        expected = line_deviation(fp32.arrays["points"], bf16.arrays[name][0], fp32.arrays[name][0], 0.5)
        assert bf16.metadata["precision_check"][name] == [dataclasses.asdict(expected)]


@pytest.mark.parametrize("bn_mode", ["batch", "eval"])
def test_stacked_points_and_channels_last_measure_the_plain_float32_line(bn_mode: str) -> None:
    """Several points per forward (vmap over stacked parameter sets; 7 points in groups of 3, 3
    and 1) and NHWC convolutions give the plain path's losses up to float rounding."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="cnn", hidden=[8, 16]), (3, 8, 8), 10)
    inputs, targets = torch.randn(100, 3, 8, 8), torch.randint(0, 10, (100,))
    origin = flat_parameters(model)
    direction = torch.randn_like(origin) / origin.numel() ** 0.5
    points = [-0.3, -0.1, 0.0, 0.05, 0.2, 0.4, 0.5]

    def losses(points_per_forward: int, memory_format: str) -> torch.Tensor:
        evaluator = LineEvaluator(model, bn_mode, 32, 64, "fp32", points_per_forward, memory_format)
        return evaluator.losses(origin, direction, points, inputs, targets, seed=3)

    plain = losses(1, "contiguous")
    nhwc = inputs.contiguous(memory_format=torch.channels_last)  # a run with model.channels_last
    assert LineEvaluator(model, bn_mode, 32).formatted(nhwc) is nhwc  # the plain path leaves it so
    for points_per_forward, memory_format in [(3, "contiguous"), (1, "channels_last")]:
        fast = losses(points_per_forward, memory_format)
        assert fast.shape == plain.shape == (100, 7)
        assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-6), (points_per_forward, memory_format)


def test_stacked_points_see_the_same_dropout_draws_as_one_point_at_a_time() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden=[32], dropout=0.3), (1, 8, 8), 10)
    inputs, targets = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    origin = flat_parameters(model)
    direction = torch.randn_like(origin) / origin.numel() ** 0.5
    points = np.linspace(-0.5, 0.5, 9)

    one_at_a_time, stacked = (
        LineEvaluator(model, "batch", 16, 32, "fp32", points_per_forward).losses(
            origin, direction, points, inputs, targets, seed=5
        )
        for points_per_forward in (1, 4)
    )
    assert torch.equal(stacked, one_at_a_time)


def test_stacked_points_are_checked_against_the_plain_float32_line() -> None:
    """A line measured with points_per_forward > 1 is not the plain float32 path: its
    precision_check_every twin measures it that way and reports a difference of rounding only."""
    model, data, setup, origin, direction = small_mlp_line()
    spec = ProbeSpec(type="line", points_per_forward=8, precision_check_every=1, max_enlargements=0)
    report = LineProbe(spec, setup).measure(line_context(model, data, origin, direction, 0.05)).metadata

    (train,) = report["precision_check"]["train"]
    assert train["max_abs_mean_loss_difference"] < 1e-5 and train["argmin_shift_steps"] == 0


def test_a_compiled_line_probe_measures_the_plain_line_and_keeps_its_kernels_in_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compile_mode: torch.compile (inductor, C++ kernels on this CPU) one point and two points per
    forward, with the eager dropout masks; the kernels land in the run's compile-cache folder for
    its requeued jobs."""
    from jobs.probes.runner import INDUCTOR_CACHE_VARIABLE, ProbeRunner

    monkeypatch.delenv(INDUCTOR_CACHE_VARIABLE, raising=False)
    _, data, *_ = small_mlp_line()
    model = build_model(ModelSpec(hidden=[32], dropout=0.3), (1, 8, 8), 10)
    setup = ProbeSetup(model, data, TrainingSpec(batch_size=16), torch.device("cpu"))
    origin = flat_parameters(model)
    direction = torch.randn_like(origin) / origin.numel() ** 0.5
    paths = RunPaths(tmp_path / "run")
    context = line_context(model, data, origin, direction, 0.05)

    def line(**fields: Any) -> np.ndarray:
        spec = ProbeSpec(type="line", max_enlargements=0, record=["train"], **fields)
        [probe] = ProbeRunner.build([spec], setup, paths).probes
        return probe.measure(context).arrays["train"]

    plain = line()
    assert INDUCTOR_CACHE_VARIABLE not in os.environ  # eager: no compiler, no cache
    for points_per_forward in (1, 2):
        compiled = line(compile_mode="default", points_per_forward=points_per_forward)
        assert np.allclose(compiled, plain, rtol=1e-5, atol=1e-6), points_per_forward
    assert os.environ[INDUCTOR_CACHE_VARIABLE] == str(paths.compile_cache_dir)
    assert any(path.is_file() for path in paths.compile_cache_dir.rglob("*"))
