"""The training job on its own: data order, checkpoints, resume, provenance (no orchestrator)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jobs.atomic import publish_text
from jobs.checkpoint import newest_valid_checkpoint
from jobs.entry import AttemptRequest, run_attempt
from jobs.journal import CheckpointWritten, Failed, JournalWriter, Started, find_failure_line, read_events
from jobs.paths import RunPaths
from jobs.spec import ModelSpec, ResourcesSpec, RunSpec, TrainingSpec, spec_to_yaml
from jobs.train import BatchOrder, DeviceUnavailable, resolve_device, train

SMALL = RunSpec(
    model=ModelSpec(hidden=[16]),
    training=TrainingSpec(steps=45, batch_size=32, checkpoint_every=15, eval_every=15, heartbeat_seconds=0.1),
)


def train_in(run_dir: Path, spec: RunSpec = SMALL, attempt: str = "001-a") -> RunPaths:
    paths = RunPaths(run_dir)
    train(spec, paths, JournalWriter(paths.attempt(attempt)))
    return paths


def final_tensors(paths: RunPaths, spec: RunSpec = SMALL) -> dict[str, torch.Tensor]:
    return load_file(paths.checkpoint_file(spec.training.steps))


def assert_bit_identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype and first[name].shape == second[name].shape, name
        assert first[name].numpy().tobytes() == second[name].numpy().tobytes(), name


def test_batch_order_is_a_pure_function_of_seed_and_step() -> None:
    order = BatchOrder(num_samples=100, batch_size=32, seed=3, drop_last=True)
    sequential = [order.indices(step) for step in range(10)]
    fresh = BatchOrder(num_samples=100, batch_size=32, seed=3, drop_last=True)

    assert order.steps_per_epoch == 3
    assert torch.equal(fresh.indices(7), sequential[7])  # jumping in mid-way gives the same batch
    epoch = torch.cat(sequential[:3])
    assert len(set(epoch.tolist())) == 96  # without replacement inside an epoch
    assert not torch.equal(sequential[0], sequential[3])  # a new permutation each epoch
    assert not torch.equal(BatchOrder(100, 32, seed=4, drop_last=True).indices(0), sequential[0])


def test_training_is_deterministic(tmp_path: Path) -> None:
    assert_bit_identical(final_tensors(train_in(tmp_path / "a")), final_tensors(train_in(tmp_path / "b")))


def test_resume_from_a_middle_checkpoint_is_bit_identical(tmp_path: Path) -> None:
    uninterrupted = train_in(tmp_path / "whole")
    interrupted = train_in(tmp_path / "resumed")
    for step in (30, 45):  # as if the first attempt had died after its checkpoint at step 15
        interrupted.checkpoint_file(step).unlink()
        interrupted.checkpoint_manifest(step).unlink()

    train_in(interrupted.run_dir, attempt="002-b")

    started = [
        event.payload
        for event in read_events(interrupted.attempt("002-b"))
        if isinstance(event.payload, Started)
    ]
    assert started[0].start_step == 15
    assert_bit_identical(final_tensors(uninterrupted), final_tensors(interrupted))


def test_a_corrupt_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    paths = train_in(tmp_path / "run")
    newest = paths.checkpoint_file(45)
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    paths.checkpoint_manifest(30).write_text("{not json")

    assert newest_valid_checkpoint(paths) == paths.checkpoint_file(15)


def test_journal_records_checkpoints_and_provenance(tmp_path: Path) -> None:
    paths = train_in(tmp_path / "run")
    payloads = [event.payload for event in read_events(paths.attempt("001-a"))]

    assert [p.step for p in payloads if isinstance(p, CheckpointWritten)] == [15, 30, 45]
    provenance = payloads[0].provenance
    assert provenance.torch == torch.__version__
    assert len(provenance.git_commit or "") == 40  # tests run from a git checkout
    assert provenance.device.startswith("cpu")
    assert dataclasses.asdict(provenance).keys() >= {
        "python",
        "torchvision",
        "submitit",
        "hostname",
        "git_diff_sha256",
    }


def test_stop_request_checkpoints_between_steps_and_resumes_bit_identical(tmp_path: Path) -> None:
    import signal

    from jobs.interrupt import StopRequest
    from jobs.journal import Requeued

    handed_over = []

    def submitit_handler(signum: int, frame: object) -> None:  # stands where submitit's requeue handler is
        handed_over.append(signum)
        raise SystemExit(-1)

    stop = StopRequest()
    stop.signum, stop.requested, stop._previous = int(signal.SIGUSR2), True, submitit_handler
    interrupted = RunPaths(tmp_path / "interrupted")
    try:
        train(SMALL, interrupted, JournalWriter(interrupted.attempt("001-a")), stop)
    except SystemExit:
        pass
    else:
        raise AssertionError("the stop request did not stop training")

    payloads = [event.payload for event in read_events(interrupted.attempt("001-a"))]
    assert handed_over == [signal.SIGUSR2]
    assert isinstance(payloads[-1], Requeued) and payloads[-1].step == 1
    assert [p.step for p in payloads if isinstance(p, CheckpointWritten)] == [1]  # off the checkpoint cadence
    train_in(interrupted.run_dir, attempt="001-a")  # the requeued job continues the same attempt
    assert_bit_identical(final_tensors(train_in(tmp_path / "whole")), final_tensors(interrupted))


def test_checkpoints_are_also_written_every_few_minutes(tmp_path: Path) -> None:
    """``checkpoint_minutes`` bounds the work lost on a crash even when steps are slow."""
    by_steps_only = dataclasses.replace(SMALL.training, checkpoint_every=1000, checkpoint_minutes=None)
    by_time = dataclasses.replace(SMALL.training, checkpoint_every=1000, checkpoint_minutes=1e-9)
    few = train_in(tmp_path / "few", dataclasses.replace(SMALL, training=by_steps_only))
    many = train_in(tmp_path / "many", dataclasses.replace(SMALL, training=by_time))

    assert [path.name for path in few.checkpoints_dir.glob("*.safetensors")] == ["step_000000045.safetensors"]
    assert len(list(many.checkpoints_dir.glob("*.safetensors"))) == 45  # one after every step
    assert_bit_identical(final_tensors(few), final_tensors(many))


# -- the device: a run that asked for GPUs never trains on the CPU by accident ------------------------


def on_device(spec: RunSpec, device: str, gpus: int) -> RunSpec:
    return dataclasses.replace(
        spec, training=dataclasses.replace(spec.training, device=device), resources=ResourcesSpec(gpus=gpus)
    )


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [
        (
            "auto",
            1,
            (
                "the run asked the scheduler for 1 GPU (resources.gpus: 1) but this node has no usable "
                "CUDA device",
                "set training.device: cpu to train on the CPU anyway",
            ),
        ),
        ("auto", 4, ("asked the scheduler for 4 GPUs (resources.gpus: 4)", "set training.device: cpu")),
        (
            "cuda",
            0,
            ("training.device is cuda but this node has no usable CUDA device", "set training.device: cpu"),
        ),
    ],
)
def test_a_run_whose_device_this_node_lacks_fails_at_start_with_a_journaled_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    device: str,
    gpus: int,
    expected: tuple[str, str],
) -> None:
    """A node without CUDA (as Slurm gives one when the GPUs are broken or hidden): the attempt
    fails before anything is written, as a normal failed attempt whose journal says why."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    paths = RunPaths(tmp_path / "run")
    publish_text(paths.spec_file, spec_to_yaml(on_device(SMALL, device, gpus)))

    with pytest.raises(DeviceUnavailable):
        run_attempt(AttemptRequest("run", str(paths.run_dir), "001-a"))

    payloads = [event.payload for event in read_events(paths.attempt("001-a"))]
    assert [type(payload) for payload in payloads] == [Failed]  # not started: no step was trained
    [failed] = payloads
    assert (failed.state, failed.error_type, failed.step) == ("FAILED", "DeviceUnavailable", None)
    assert all(text in failed.message for text in expected), failed.message
    assert "CUDA_VISIBLE_DEVICES='', torch.cuda.is_available() False" in failed.message
    # what sync reads without the journal
    assert find_failure_line(capsys.readouterr().err) == dataclasses.replace(failed, traceback="")
    assert not paths.checkpoints_dir.exists() and not paths.data_indices_file.exists()


def test_a_gpu_run_set_to_the_cpu_trains_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = on_device(SMALL, "cpu", 2)

    paths = train_in(tmp_path / "run", spec)

    started = [
        event.payload for event in read_events(paths.attempt("001-a")) if isinstance(event.payload, Started)
    ]
    assert started[0].provenance.device.startswith("cpu")
    # the same run as without GPUs
    assert_bit_identical(final_tensors(paths, spec), final_tensors(train_in(tmp_path / "plain")))


@pytest.mark.parametrize(
    ("device", "gpus", "cuda", "chosen"),
    [
        ("auto", 1, True, "cuda"),
        ("auto", 0, True, "cuda"),
        ("auto", 0, False, "cpu"),
        ("cpu", 1, True, "cpu"),
        ("cuda", 1, True, "cuda"),
    ],
)
def test_the_device_a_run_trains_on(
    monkeypatch: pytest.MonkeyPatch, device: str, gpus: int, cuda: bool, chosen: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    spec = on_device(SMALL, device, gpus)
    assert resolve_device(spec.training, spec.resources) == torch.device(chosen)
