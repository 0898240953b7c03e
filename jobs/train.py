"""The training loop: deterministic, checkpointed, resumable bit for bit.

The batch of step ``t`` is a pure function of (seed, t): epoch ``t // steps_per_epoch`` has its
own seeded permutation, so resuming needs no sampler state beyond the step. The learning rate is
a pure function of the step too. Everything else that changes (parameters, optimizer state, RNG
streams) is in the checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Optional, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jobs.checkpoint import (
    TrainingState,
    capture_rng,
    load_checkpoint,
    newest_valid_checkpoint,
    restore_rng,
    save_checkpoint,
)
from jobs.data import DATASETS, InMemoryData, record_indices
from jobs.data.augment import DROPOUT_STREAM, SEARCH_STREAM, batch_seed
from jobs.interrupt import StopRequest
from jobs.journal import Heartbeat, JournalWriter, MetricRow, Metrics, Requeued, Started
from jobs.models import build_model
from jobs.optim import Objective, StepReport, TrainingShape, build_optimizer, learning_rate
from jobs.optim.base import Counting
from jobs.pack import THREADS_VARIABLE
from jobs.paths import RunPaths
from jobs.probes import ProbeSetup
from jobs.probes.runner import ProbeRunner, step_context
from jobs.provenance import collect_provenance
from jobs.spec import ResourcesSpec, RunSpec, TrainingSpec


class BatchOrder:
    """Indices of each step's mini-batch: a seeded permutation per epoch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool) -> None:
        self.num_samples = num_samples
        self.batch_size = min(batch_size, num_samples)
        self.seed = seed
        self.drop_last = drop_last
        full, remainder = divmod(num_samples, self.batch_size)
        self.steps_per_epoch = full + (0 if drop_last or remainder == 0 else 1)
        self._epoch: Optional[int] = None
        self._permutation = torch.empty(0, dtype=torch.int64)

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._permutation = self.permutation(epoch)
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]

    def permutation(self, epoch: int) -> torch.Tensor:
        seed_words = np.random.SeedSequence([self.seed, epoch]).generate_state(2)
        generator = torch.Generator().manual_seed(int(seed_words[0]) << 32 | int(seed_words[1]))
        return torch.randperm(self.num_samples, generator=generator)


@dataclass
class RunBatches:
    """The run's batches as objectives: each step's own, and those optimizers ask for (the
    :class:`jobs.optim.BatchProvider` of this run). Pure functions of (seed, step or draw)."""

    model: nn.Module
    data: InMemoryData
    order: BatchOrder
    seed: int
    autocast: Optional[str]

    def training_batch(self, step: int) -> Objective:
        indices = self.order.indices(step).to(self.data.train_targets.device)
        return self._objective(indices, step, batch_seed(self.seed, step))

    def search_batch(self, size: int, draw: int) -> Objective:
        generator = torch.Generator().manual_seed(batch_seed(self.seed, draw, SEARCH_STREAM))
        count = len(self.data.train_targets)
        indices = torch.randperm(count, generator=generator)[: min(size, count)].to(
            self.data.train_targets.device
        )
        return self._objective(indices, draw, batch_seed(self.seed, draw, SEARCH_STREAM + 1))

    def _objective(self, indices: torch.Tensor, step: int, augmentation_seed: int) -> Objective:
        inputs = self.data.train_batch(indices, augmentation_seed)
        return Objective(
            self.model,
            inputs,
            self.data.train_targets[indices],
            batch_seed(self.seed, step, DROPOUT_STREAM),
            self.autocast,
        )


@dataclass
class Trainee:
    """What the loop trains: built from the spec, then possibly restored from a checkpoint."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: InMemoryData
    device: torch.device
    probes: ProbeRunner
    batches: RunBatches
    step: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class DeviceUnavailable(RuntimeError):
    """The run's device is not on this node: the attempt fails before its first step."""


def resolve_device(training: TrainingSpec, resources: ResourcesSpec) -> torch.device:
    """``training.device``, where ``auto`` is CUDA if this node has it, else the CPU. A run that
    asked the scheduler for GPUs and would train on the CPU fails instead (it would hold a GPU
    allocation for hours and use none of it), as does ``cuda`` without CUDA; ``cpu`` trains on the
    CPU whatever the resources say."""
    if training.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if training.device == "cuda":
        raise DeviceUnavailable(
            f"training.device is cuda but this node has no usable CUDA device ({_cuda_facts()}); set "
            "training.device: cpu to train on the CPU"
        )
    if resources.gpus >= 1:
        asked = f"{resources.gpus} GPU" + ("s" if resources.gpus > 1 else "")
        raise DeviceUnavailable(
            f"the run asked the scheduler for {asked} (resources.gpus: {resources.gpus}) but this node "
            "has no usable CUDA device "
            f"({_cuda_facts()}); set training.device: cpu to train on the CPU anyway"
        )
    return torch.device("cpu")


def _cuda_facts() -> str:
    """What this process sees of CUDA, for a failure message."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    build = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "torch built without CUDA"
    return (
        f"CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}, torch.cuda.is_available() "
        f"False, {build}"
    )


def configure_determinism(cpus: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    # a packed run gets its share of the task's CPUs (jobs/pack.py)
    threads = os.environ.get(THREADS_VARIABLE) or os.environ.get("SLURM_CPUS_PER_TASK") or cpus
    torch.set_num_threads(int(threads))


def peak_gpu_bytes(device: torch.device) -> Optional[int]:
    """The most GPU memory this process's tensors have held (None on a CPU): ``orch plan`` offers
    how many such runs share one GPU from it."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def build_trainee(spec: RunSpec, paths: RunPaths) -> Trainee:
    seed_everything(spec.training.seed)
    # first: a node without the device fails before anything is written
    device = resolve_device(spec.training, spec.resources)
    data = DATASETS.get(spec.data.name)(spec.data, spec.data.root)
    record_indices(data, spec.data, paths.data_indices_file)
    data = data.to(device)
    model = build_model(spec.model, data.input_shape, data.num_classes).to(device)
    if spec.model.channels_last:
        model, data = model.to(memory_format=torch.channels_last), data.channels_last()
    training = spec.training
    order = BatchOrder(len(data.train_targets), training.batch_size, training.seed, training.drop_last)
    batches = RunBatches(model, data, order, training.seed, spec.model.autocast)
    shape = TrainingShape(training.steps, order.steps_per_epoch, order.batch_size, len(data.train_targets))
    optimizer = build_optimizer(model.parameters(), spec.optimizer, shape, batches)
    probes = ProbeRunner.build(spec.probes, ProbeSetup(model, data, training, device), paths)  # sees θ_0
    trainee = Trainee(model, optimizer, data, device, probes, batches)
    checkpoint_file = newest_valid_checkpoint(paths)
    if checkpoint_file is not None:
        restore(trainee, load_checkpoint(checkpoint_file, device))
    return trainee


def restore(trainee: Trainee, state: TrainingState) -> None:
    trainee.model.load_state_dict(state.model)
    trainee.optimizer.load_state_dict(state.optimizer)
    restore_rng(state.rng)
    trainee.probes.load_state_dict(state.probes)
    trainee.step = state.step


def snapshot(trainee: Trainee) -> TrainingState:
    return TrainingState(
        trainee.step,
        trainee.model.state_dict(),
        trainee.optimizer.state_dict(),
        capture_rng(),
        trainee.probes.state_dict(),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk: int
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole split, in eval mode, in chunks."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=inputs.device)
    correct = torch.zeros((), dtype=torch.int64, device=inputs.device)
    for start in range(0, len(targets), chunk):
        logits = model(inputs[start : start + chunk])
        batch_targets = targets[start : start + chunk]
        total_loss += F.cross_entropy(logits, batch_targets, reduction="sum").double()
        correct += (logits.argmax(dim=1) == batch_targets).sum()
    model.train()
    return total_loss.item() / len(targets), correct.item() / len(targets)


def train_step(trainee: Trainee, objective: Objective) -> tuple[float, float, StepReport]:
    """One optimizer step on ``objective``: the batch's loss and accuracy at θ_t, and the step's report."""
    trainee.optimizer.step(objective)  # type: ignore[arg-type]  # the registry's step(objective) contract
    assert objective.first is not None
    loss, logits = objective.first
    accuracy = (logits.argmax(dim=1) == objective.targets).float().mean()
    # every optimizer of the registry is a Counting one, its report set by the step just taken
    report = cast(StepReport, cast(Counting, trainee.optimizer).last_report)
    return loss, accuracy.item(), report


class Reporter:
    """Buffers metrics and publishes them, with heartbeats, through the journal."""

    def __init__(
        self,
        journal: JournalWriter,
        total_steps: int,
        heartbeat_seconds: float,
        device: torch.device = torch.device("cpu"),
    ) -> None:
        self.journal = journal
        self.device = device
        self.total_steps = total_steps
        self.heartbeat_seconds = heartbeat_seconds
        self.rows: list[MetricRow] = []
        self._beat_time = time.monotonic()
        self._beat_step: Optional[int] = None

    def record(self, step: int, **values: float) -> None:
        self.rows.extend(MetricRow(step, name, value) for name, value in values.items())

    def flush(self) -> None:
        if self.rows:
            self.journal.append(Metrics(self.rows))
            self.rows = []

    def tick(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if self._beat_step is None:
            self._beat_step, self._beat_time = step, now
        elapsed = now - self._beat_time
        if force or elapsed >= self.heartbeat_seconds:
            rate = (step - self._beat_step) / elapsed if elapsed > 0 else 0.0
            self.flush()
            beat = Heartbeat(time.time(), step, self.total_steps, rate, peak_gpu_bytes(self.device))
            self.journal.heartbeat(beat)
            self._beat_step, self._beat_time = step, now


@dataclass
class Loop:
    """One attempt's training loop: what it trains, in which order, where it reports."""

    spec: RunSpec
    paths: RunPaths
    trainee: Trainee
    reporter: Reporter
    last_checkpoint_time: float = field(default_factory=time.monotonic)
    published_step: int = -1  # the step of this attempt's newest checkpoint

    def checkpoint_due(self) -> bool:
        """Every ``checkpoint_every`` steps, at the end, and ``checkpoint_minutes`` after the last one."""
        training, step = self.spec.training, self.trainee.step
        minutes = training.checkpoint_minutes
        overdue = minutes is not None and time.monotonic() - self.last_checkpoint_time >= 60 * minutes
        return step % training.checkpoint_every == 0 or step == training.steps or overdue

    def publish_checkpoint(self) -> None:
        self.reporter.flush()
        self.reporter.journal.append(save_checkpoint(self.paths, snapshot(self.trainee)))
        self.last_checkpoint_time = time.monotonic()
        self.published_step = self.trainee.step


def train(
    spec: RunSpec, paths: RunPaths, journal: JournalWriter, stop: Optional[StopRequest] = None
) -> Trainee:
    """Train ``spec`` to ``training.steps``, continuing from the newest valid checkpoint.

    When ``stop`` is requested (the scheduler's warning signal), publish a checkpoint at the next
    step boundary, journal the requeue and hand the signal to submitit, which requeues the job.
    """
    configure_determinism(spec.resources.cpus)
    trainee = build_trainee(spec, paths)
    training = spec.training
    journal.append(
        Started(
            os.getpid(), os.uname().nodename, trainee.step, training.steps, collect_provenance(trainee.device)
        )
    )
    reporter = Reporter(journal, training.steps, training.heartbeat_seconds, trainee.device)
    loop = Loop(spec, paths, trainee, reporter)
    loop.reporter.tick(trainee.step, force=True)
    try:
        while trainee.step < training.steps:
            run_one_step(loop)
            loop.reporter.tick(trainee.step)
            if stop is not None and stop.requested and trainee.step < training.steps:
                stop_for_requeue(loop, stop)
    except Exception:
        loop.reporter.tick(trainee.step, force=True)  # the step it failed at, with the metrics before it
        raise
    loop.reporter.tick(trainee.step, force=True)
    return trainee


def stop_for_requeue(loop: Loop, stop: StopRequest) -> None:
    trainee, reporter = loop.trainee, loop.reporter
    if loop.published_step != trainee.step:
        loop.publish_checkpoint()
    reporter.tick(trainee.step, force=True)
    assert stop.signum is not None
    reporter.journal.append(Requeued(trainee.step, signal.Signals(stop.signum).name))
    stop.hand_over()


def run_one_step(loop: Loop) -> None:
    training, trainee, reporter = loop.spec.training, loop.trainee, loop.reporter
    optimizer, step = trainee.optimizer, trainee.step
    counting = cast(Counting, optimizer)  # every optimizer of the registry counts its passes
    if counting.scheduled:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(
                loop.spec.optimizer.lr, loop.spec.optimizer.schedule, step, training.steps
            )
    objective = trainee.batches.training_batch(step)
    params_before = trainee.probes.before_step(trainee.model, step)
    loss, accuracy, report = train_step(trainee, objective)
    if training.fail_on_nonfinite_loss and not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss} at step {step + 1} ({loop.spec.optimizer.name}, lr "
            f"{report.learning_rate}): the run diverged"
        )
    if params_before is not None:
        batch_indices = trainee.batches.order.indices(step).to(trainee.device)
        context = step_context(
            step,
            trainee.model,
            trainee.data,
            batch_indices,
            params_before,
            report.learning_rate,
            report.step_length,
        )
        trainee.probes.after_step(context, reporter.journal)
    trainee.step += 1
    reporter.record(trainee.step, train_loss=loss, train_accuracy=accuracy)
    if report.learning_rate is not None:
        reporter.record(trainee.step, lr=report.learning_rate)
    if report.step_length is not None:
        reporter.record(trainee.step, step_length=report.step_length)
    if trainee.step % training.eval_every == 0 or trainee.step == training.steps:
        data = trainee.data
        val_loss, val_accuracy = evaluate(
            trainee.model, data.val_inputs, data.val_targets, training.batch_size
        )
        reporter.record(trainee.step, val_loss=val_loss, val_accuracy=val_accuracy)
        reporter.record(
            trainee.step, forward_passes=counting.forwards_total, backward_passes=counting.backwards_total
        )
    if loop.checkpoint_due():
        loop.publish_checkpoint()
