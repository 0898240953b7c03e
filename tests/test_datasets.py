"""The vision data sets through torchvision's classes, from miniature files in the real formats."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jobs.data import DATASETS, indices_sha256
from jobs.data.augment import augment
from jobs.data.vision import SOURCES
from jobs.journal import JournalWriter, Metrics, read_events
from jobs.paths import RunPaths
from jobs.shards import iter_shards
from jobs.spec import DataSpec, ModelSpec, ProbeSpec, RunSpec, TrainingSpec
from jobs.splits import split_indices
from jobs.train import train
from tests.conftest import Orch, write_sweep
from tests.datasets import Miniature, write_miniatures
from tests.test_training import assert_bit_identical


@pytest.fixture
def miniature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Miniature:
    return write_miniatures(tmp_path / "data", monkeypatch)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("cifar10", (3, 32, 32), 10),
        ("cifar100", (3, 32, 32), 100),
        ("svhn", (3, 32, 32), 10),
        ("mnist", (1, 28, 28), 10),
    ],
)
def test_each_data_set_loads_with_recorded_indices(
    miniature: Miniature, name: str, shape: tuple[int, ...], classes: int
) -> None:
    total = len(miniature.train_labels[name])
    data = DATASETS.get(name)(DataSpec(name=name, train_size=total - 50), str(miniature.root))
    assert data.input_shape == shape and data.num_classes == classes
    assert len(data.train_targets) == total - 50 and len(data.val_targets) == 50
    # a partition
    assert sorted(data.train_indices.tolist() + data.val_indices.tolist()) == list(range(total))
    assert torch.equal(
        data.train_targets, torch.from_numpy(miniature.train_labels[name][data.train_indices.numpy()])
    )
    assert torch.equal(
        data.val_targets, torch.from_numpy(miniature.train_labels[name][data.val_indices.numpy()])
    )
    assert data.train_inputs.dtype == torch.float32


def test_line_paper_split_sizes_and_seed(miniature: Miniature) -> None:
    # 500 images: 400/100 → 40/10
    spec = DataSpec(name="cifar10", train_size=400, fraction=0.1, split_seed=42)
    data = DATASETS.get("cifar10")(spec, str(miniature.root))
    again = DATASETS.get("cifar10")(spec, str(miniature.root))
    other_seed = DATASETS.get("cifar10")(
        DataSpec(name="cifar10", train_size=400, fraction=0.1, split_seed=7), str(miniature.root)
    )
    assert (len(data.train_targets), len(data.val_targets)) == (40, 10)
    assert torch.equal(data.train_indices, again.train_indices) and torch.equal(
        data.train_inputs, again.train_inputs
    )
    assert not torch.equal(data.train_indices, other_seed.train_indices)
    train, val = split_indices(50_000, 40_000, 0.1, 42)  # the paper's numbers
    assert (len(train), len(val)) == (4_000, 1_000) and not set(train) & set(val)


def test_split_matches_random_split_of_the_authors_code() -> None:
    generator = torch.Generator().manual_seed(42)
    first, second = torch.utils.data.random_split(range(1000), [800, 200], generator)
    fraction_of_first, _ = torch.utils.data.random_split(
        list(first), [80, 720], torch.Generator().manual_seed(42)
    )
    train, val = split_indices(1000, 800, 0.1, 42)
    assert train == list(fraction_of_first)
    assert len(val) == 20 and set(val) <= set(second)


@pytest.mark.parametrize("count", [1, 2, 3, 10, 1797, 50_000, 73_257])
@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 2**32 + 5, 2**63 - 1])
def test_the_torch_free_permutation_is_torch_randperm(count: int, seed: int) -> None:
    """The planner computes splits without torch (jobs/splits.py): the same permutation as
    ``torch.randperm`` with a seeded CPU generator, hence the same ``random_split``."""
    from jobs.splits import random_permutation

    expected = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    assert random_permutation(count, seed) == expected


def test_official_test_set_as_validation_and_normalization(miniature: Miniature) -> None:
    data = DATASETS.get("cifar10")(DataSpec(name="cifar10", val_source="test"), str(miniature.root))
    assert len(data.train_targets) == 500 and len(data.val_targets) == 100
    assert torch.equal(data.val_targets, torch.from_numpy(miniature.test_labels["cifar10"]))
    mean, std = SOURCES["cifar10"].mean, SOURCES["cifar10"].std
    assert std == (0.2023, 0.1994, 0.2010)  # the line paper's code
    raw = data.train_inputs * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    pixels = (raw * 255).round()
    assert torch.allclose(raw * 255, pixels, atol=1e-3) and pixels.min() >= 0 and pixels.max() <= 255


def test_a_corrupted_file_is_refused_by_torchvision_unless_checksums_are_off(miniature: Miniature) -> None:
    batch = miniature.root / "cifar-10-batches-py" / "data_batch_3"
    content = bytearray(batch.read_bytes())
    content[len(content) // 2] ^= 0xFF  # one pixel of the image array
    batch.write_bytes(bytes(content))
    with pytest.raises(RuntimeError, match="corrupted"):
        DATASETS.get("cifar10")(DataSpec(name="cifar10", train_size=400), str(miniature.root))
    data = DATASETS.get("cifar10")(
        DataSpec(name="cifar10", train_size=400, verify_checksums=False), str(miniature.root)
    )
    assert len(data.train_targets) == 400


def test_missing_data_set_names_the_files_and_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"cifar-10-batches-py/data_batch_1.*orch data fetch cifar10 --root"
    ):
        DATASETS.get("cifar10")(DataSpec(name="cifar10"), str(tmp_path))


def test_plan_refuses_a_missing_data_set_and_a_resnet20_line_run_works_on_miniature_cifar(
    miniature: Miniature, tmp_path: Path
) -> None:
    orch = Orch(tmp_path / "home")
    body = (
        "include: [problems/digits_mlp.yaml]\nbase:\n  model: {{name: resnet20}}\n"
        "  data: {{name: cifar10, root: '{root}', train_size: 400, fraction: 0.1}}\n"
        "  training: {{steps: 4, batch_size: 8, checkpoint_every: 2, eval_every: 2}}\n"
        "  probes: [{{type: line, every: 2, resolution: 0.1, max_enlargements: 1}}]\n"
    )
    missing = write_sweep(tmp_path, "missing", "name: missing\n" + body.format(root=tmp_path / "nowhere"))
    refused = orch("plan", missing)
    assert refused.exit_code == 2
    assert f"{tmp_path / 'nowhere'}/cifar-10-batches-py/data_batch_1" in refused.stderr
    assert f"orch data fetch cifar10 --root {tmp_path / 'nowhere'}" in refused.stderr
    assert not orch.home.exists()

    # a separate job process: torchvision there knows the real md5 sums, not the miniatures' ones
    unverified = body.replace("fraction: 0.1", "fraction: 0.1, verify_checksums: false")
    sweep = write_sweep(tmp_path, "c10", "name: c10\n" + unverified.format(root=miniature.root))
    submitted = orch.ok("submit", sweep, "--executor", "local", "--wait", "--json").json()
    run_id = submitted["submitted"][0]
    assert submitted["final_states"] == {run_id: "COMPLETED"}
    shards = orch.ok("shards", run_id, "--json").json()["shards"]
    assert [row["step"] for row in shards] == [0, 2]
    (report,) = orch.ok("analyze", run_id, "--figure", "lines", "--json").json()
    assert report["summary"]["lines"][0]["points"] >= 12 and report["figures"][0].endswith("-lines.png")


def test_augmentation_is_a_pure_function_of_the_seed_and_pads_with_black(miniature: Miniature) -> None:
    data = DATASETS.get("cifar10")(DataSpec(name="cifar10", train_size=400), str(miniature.root))
    assert data.augmentation is not None and data.augmentation.crop_padding == 4 and data.augmentation.flip
    batch = torch.arange(64)
    first, again, other = data.train_batch(batch, 5), data.train_batch(batch, 5), data.train_batch(batch, 6)
    assert (
        torch.equal(first, again)
        and not torch.equal(first, other)
        and not torch.equal(first, data.train_inputs[batch])
    )
    black = torch.tensor(data.augmentation.pad_value).view(1, 3, 1, 1)
    shifted = augment(data.train_inputs[:1], dataclasses.replace(data.augmentation, flip=False), seed=0)
    mean, std = (
        torch.tensor(SOURCES["cifar10"].mean).view(1, 3, 1, 1),
        torch.tensor(SOURCES["cifar10"].std).view(1, 3, 1, 1),
    )
    assert torch.allclose(black * std + mean, torch.zeros(1, 3, 1, 1), atol=1e-6)
    padded_pixels = torch.isclose(shifted, black.expand_as(shifted)).all(dim=1)
    original_pixels = torch.isclose(data.train_inputs[:1], black.expand_as(shifted)).all(dim=1)
    assert padded_pixels.sum() >= original_pixels.sum()  # any shift brings in black borders
    mnist = DATASETS.get("mnist")(DataSpec(name="mnist", train_size=150), str(miniature.root))
    assert mnist.augmentation is not None and not mnist.augmentation.active


def test_augmented_training_resumes_bit_identically(miniature: Miniature, tmp_path: Path) -> None:
    spec = RunSpec(
        model=ModelSpec(name="cnn", hidden=[8, 16]),
        data=DataSpec(name="cifar10", root=str(miniature.root), train_size=400),
        training=TrainingSpec(
            steps=12, batch_size=16, checkpoint_every=4, eval_every=4, heartbeat_seconds=0.1
        ),
    )
    whole, resumed = RunPaths(tmp_path / "whole"), RunPaths(tmp_path / "resumed")
    train(spec, whole, JournalWriter(whole.attempt("1")))
    train(spec, resumed, JournalWriter(resumed.attempt("1")))
    for step in (8, 12):
        resumed.checkpoint_file(step).unlink()
        resumed.checkpoint_manifest(step).unlink()
    train(spec, resumed, JournalWriter(resumed.attempt("2")))
    assert_bit_identical(load_file(whole.checkpoint_file(12)), load_file(resumed.checkpoint_file(12)))


def test_the_direction_batch_at_zero_is_the_batch_the_step_trained_on(
    miniature: Miniature, tmp_path: Path
) -> None:
    """Same samples, same augmentation draws, same BatchNorm statistics: the step's own loss."""
    spec = RunSpec(
        model=ModelSpec(name="cnn", hidden=[8, 16]),
        data=DataSpec(name="cifar10", root=str(miniature.root), train_size=400),
        training=TrainingSpec(
            steps=6, batch_size=16, checkpoint_every=3, eval_every=3, heartbeat_seconds=0.1
        ),
        probes=[
            ProbeSpec(type="line", steps=[2, 5], record=["direction"], resolution=0.1, max_enlargements=0)
        ],
    )
    paths = RunPaths(tmp_path / "run")
    train(spec, paths, JournalWriter(paths.attempt("1")))
    train_loss = {
        row.step: row.value
        for event in read_events(paths.attempt("1"))
        if isinstance(event.payload, Metrics)
        for row in event.payload.rows
        if row.name == "train_loss"
    }
    for shard in iter_shards(paths, "line"):
        at_zero = (
            shard.arrays["direction"][0, :, list(shard.arrays["points"]).index(0.0)].astype(float).mean()
        )
        assert at_zero == pytest.approx(train_loss[shard.step + 1], rel=1e-5)


@pytest.mark.parametrize(
    "problem", ["line_resnet20_cifar10_8pct", "walk_vgg11_cifar10", "thesis_resnet34_cifar10"]
)
def test_paper_problem_presets_plan(miniature: Miniature, tmp_path: Path, problem: str) -> None:
    sweep = write_sweep(
        tmp_path,
        problem,
        f"name: p\ninclude: [problems/{problem}.yaml]\nbase: {{cluster: tcml, data: {{root: "
        f"'{miniature.root}'}}}}\nseeds: 2\n",
    )
    planned = Orch(tmp_path / "home").ok("plan", sweep, "--json").json()
    assert len(planned["runs"]) == 2


def test_the_line_paper_sweep_asks_for_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the tcml profile's data_root is ~/datasets
    refused = Orch(tmp_path / "home")("plan", Path(__file__).parents[1] / "configs/sweeps/line_paper_lr.yaml")
    assert refused.exit_code == 2
    assert f"{tmp_path}/datasets/cifar-10-batches-py/data_batch_1" in refused.stderr
    assert "orch data fetch cifar10 --root ~/datasets" in refused.stderr


def test_the_split_is_recorded_in_the_run_folder_and_can_be_pinned(
    miniature: Miniature, tmp_path: Path
) -> None:
    data_spec = DataSpec(name="cifar10", root=str(miniature.root), train_size=400, fraction=0.5)
    spec = RunSpec(
        model=ModelSpec(name="cnn", hidden=[4]),
        data=data_spec,
        training=TrainingSpec(steps=2, batch_size=16, checkpoint_every=2, eval_every=2),
    )
    paths = RunPaths(tmp_path / "run")
    train(spec, paths, JournalWriter(paths.attempt("1")))
    with np.load(paths.data_indices_file, allow_pickle=False) as recorded:
        data = DATASETS.get("cifar10")(data_spec, str(miniature.root))
        assert np.array_equal(recorded["train"], data.train_indices.numpy()) and len(recorded["val"]) == 50
    digest = indices_sha256(data)

    pinned = dataclasses.replace(spec, data=dataclasses.replace(data_spec, indices_sha256=digest))
    train(pinned, RunPaths(tmp_path / "pinned"), JournalWriter(RunPaths(tmp_path / "pinned").attempt("1")))
    wrong = dataclasses.replace(spec, data=dataclasses.replace(data_spec, indices_sha256="0" * 64))
    with pytest.raises(ValueError, match=f"indices_sha256 is {digest}"):
        train(wrong, RunPaths(tmp_path / "wrong"), JournalWriter(RunPaths(tmp_path / "wrong").attempt("1")))


def test_channels_last_computes_the_same_losses(miniature: Miniature, tmp_path: Path) -> None:
    """NHWC is a speed option: the first step's loss (same parameters, same batch) agrees to float
    precision; later steps drift apart like any change of kernel."""
    first_losses = []
    for channels_last in (None, True):
        spec = RunSpec(
            model=ModelSpec(name="resnet20", channels_last=channels_last),
            data=DataSpec(name="cifar10", root=str(miniature.root), train_size=400),
            training=TrainingSpec(steps=2, batch_size=16, checkpoint_every=2, eval_every=2),
        )
        paths = RunPaths(tmp_path / str(channels_last))
        train(spec, paths, JournalWriter(paths.attempt("1")))
        rows = [
            row
            for event in read_events(paths.attempt("1"))
            if isinstance(event.payload, Metrics)
            for row in event.payload.rows
        ]
        first_losses.append(next(row.value for row in rows if row.name == "train_loss" and row.step == 1))
        assert paths.checkpoint_file(2).exists()
    assert first_losses[1] == pytest.approx(first_losses[0], rel=1e-5)


def test_plan_writes_the_split_hash_that_the_job_checks(tmp_path: Path) -> None:
    from jobs.catalog import known_names
    from orchestrator.sweep import load_sweep

    sweep = write_sweep(
        tmp_path,
        "digits",
        "name: digits\ninclude: [problems/digits_mlp.yaml]\nbase: {training: {steps: 2, "
        "checkpoint_every: 2}}\n",
    )
    (run,) = load_sweep(sweep, known_names()).runs
    digest = run.spec.data.indices_sha256
    assert digest is not None and len(digest) == 64
    paths = RunPaths(tmp_path / "run")
    # the job's split has that hash, or it would fail
    train(run.spec, paths, JournalWriter(paths.attempt("1")))
    with np.load(paths.data_indices_file, allow_pickle=False) as recorded:
        assert indices_sha256_of(recorded["train"], recorded["val"]) == digest
    too_big = write_sweep(
        tmp_path, "big", "name: big\ninclude: [problems/digits_mlp.yaml]\nbase: {data: {train_size: 5000}}\n"
    )
    refused = Orch(tmp_path / "home")("plan", too_big)
    assert (
        refused.exit_code == 2
        and "data.train_size" in refused.stderr
        and "1797 training samples" in refused.stderr
    )


def indices_sha256_of(train_indices: np.ndarray, val_indices: np.ndarray) -> str:
    from jobs.splits import split_sha256

    return split_sha256(train_indices.tolist(), val_indices.tolist())


def test_autocast_training_is_explicit_and_close(tmp_path: Path) -> None:
    first_losses = []
    for autocast in (None, "bfloat16"):
        spec = RunSpec(
            model=ModelSpec(name="cnn", hidden=[8, 16], autocast=autocast),
            training=TrainingSpec(steps=3, batch_size=32, checkpoint_every=3, eval_every=3),
        )
        paths = RunPaths(tmp_path / str(autocast))
        train(spec, paths, JournalWriter(paths.attempt("1")))
        rows = [
            row
            for event in read_events(paths.attempt("1"))
            if isinstance(event.payload, Metrics)
            for row in event.payload.rows
        ]
        first_losses.append(next(row.value for row in rows if row.name == "train_loss" and row.step == 1))
        assert load_file(paths.checkpoint_file(3))["t0"].dtype == torch.float32  # parameters stay float32
    assert first_losses[1] != first_losses[0] and first_losses[1] == pytest.approx(first_losses[0], rel=2e-2)


def test_digits_are_scikit_learns_load_digits_read_without_importing_scikit_learn() -> None:
    from sklearn.datasets import load_digits

    from jobs.data.digits import bundled_digits

    images, labels = bundled_digits()
    expected = load_digits()
    assert images.tobytes() == expected.images.tobytes() and labels.tolist() == expected.target.tolist()
