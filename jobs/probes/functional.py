"""Evaluating a model at parameter vectors other than its own, without touching it.

Probes work on flat parameter vectors (θ, θ + s·d, …). :class:`ParameterLayout` moves between a
flat vector and the dict of named tensors that ``torch.func.functional_call`` takes, and
:func:`probe_replica` makes the module the probes call: a copy of the training model whose
BatchNorm layers either normalize with the statistics of each group of ``eval_chunk`` samples and
track nothing (``bn_mode: batch``, the authors' train-mode measurement) or use the live model's
running statistics read-only (``bn_mode: eval``). The training model, its buffers and its
gradients are never written.

Speed: BatchNorm statistics are taken per ``eval_chunk`` samples (128 in the paper), but a forward
may hold many such groups (:class:`GroupBatchNorm`), so the model runs at an efficient batch size
(``forward_batch``) while computing exactly the per-chunk statistics. The data stays on the device
and the losses of a whole line leave it in one transfer. Three more options trade bit-identity
with the default float32 path for speed on a GPU: ``points_per_forward`` evaluates several points
of the line in one forward (their parameter sets stacked, the replica vmapped over them),
``memory_format: channels_last`` runs the convolutions on NHWC tensors (tensor cores' layout), and
``compile_mode`` runs the forward through ``torch.compile`` (with CUDA graphs: ``reduce-overhead``).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from jobs.probe_fields import LossEvaluationFields

LARGE_FORWARD_BATCH = 1024  # samples per forward on a GPU, or for a model without convolutions
Spans = list[tuple[int, int]]  # (start, stop) of the samples of each forward


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of a model's parameters, in ``named_parameters`` order."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "ParameterLayout":
        named = list(model.named_parameters())
        return cls(tuple(name for name, _ in named), tuple(parameter.shape for _, parameter in named))

    @property
    def numels(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.numels)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (shape ``[size]``) as the named parameters."""
        pieces = torch.split(flat, self.numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """A copy of the model's parameters as one vector."""
    return torch.cat([parameter.detach().reshape(-1) for parameter in model.parameters()])


def flat_gradients(model: nn.Module) -> torch.Tensor:
    """A copy of the gradients left by the last backward (zeros where a parameter has none)."""
    return torch.cat(
        [
            (parameter.grad.detach() if parameter.grad is not None else torch.zeros_like(parameter)).reshape(
                -1
            )
            for parameter in model.parameters()
        ]
    )


class GroupBatchNorm(nn.Module):
    """BatchNorm on batch statistics computed separately for each group of ``group_size`` samples.

    A forward of ``m × group_size`` samples normalizes exactly as ``m`` forwards of
    ``group_size`` samples would (train-mode BatchNorm, biased variance), and tracks nothing.
    """

    def __init__(self, batch_norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = batch_norm.eps
        self.weight = batch_norm.weight
        self.bias = batch_norm.bias
        self.group_size = 0  # set by the evaluator before each forward; 0: the whole batch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        samples = inputs.shape[0]
        if not 0 < self.group_size < samples:
            return F.batch_norm(inputs, None, None, self.weight, self.bias, training=True, eps=self.eps)
        grouped = inputs.reshape(samples // self.group_size, self.group_size, *inputs.shape[1:])
        variance, mean = torch.var_mean(
            grouped, dim=[1, *range(3, grouped.dim())], unbiased=False, keepdim=True
        )
        scale = torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.reshape(1, 1, -1, *[1] * (inputs.dim() - 2))
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.reshape(1, 1, -1, *[1] * (inputs.dim() - 2))
        return torch.addcmul(shift, grouped, scale).reshape(inputs.shape)


def probe_replica(model: nn.Module, bn_mode: str) -> nn.Module:
    """A copy of ``model`` for functional calls; see the module docstring for ``bn_mode``."""
    replica = copy.deepcopy(model)
    if bn_mode == "batch":
        _replace_batch_norms(replica)
    for parameter in replica.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    return replica.train(bn_mode == "batch")


def _replace_batch_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, GroupBatchNorm(child))
        else:
            _replace_batch_norms(child)


def forward_batches(samples: int, chunk: int, forward_batch: int) -> list[tuple[int, int]]:
    """(start, stop) of each forward: whole multiples of ``chunk`` samples, then the remainder."""
    size = max(chunk, forward_batch // chunk * chunk)
    whole = samples // chunk * chunk
    spans = [(start, min(start + size, whole)) for start in range(0, whole, size)]
    return spans + ([(whole, samples)] if whole < samples else [])


def default_forward_batch(model: nn.Module, chunk: int) -> int:
    """Samples per forward when the spec leaves it open (a multiple of ``chunk``).

    A GPU needs large forwards to leave launch overhead behind. On a CPU, convolutions run fastest
    on small batches whose activations stay in cache, fully connected layers on large ones.
    """
    large = max(chunk, LARGE_FORWARD_BATCH // chunk * chunk)
    on_gpu = next(model.parameters()).device.type == "cuda"
    has_convolutions = any(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules())
    return chunk if not on_gpu and has_convolutions else large


class LineEvaluator:
    """Per-sample cross-entropy losses of a model at points ``origin + s·direction``."""

    def __init__(
        self,
        model: nn.Module,
        bn_mode: str,
        chunk: int,
        forward_batch: Optional[int] = None,
        precision: str = "fp32",
        points_per_forward: int = 1,
        memory_format: str = "contiguous",
        compile_mode: str = "off",
    ) -> None:
        self.model = model
        self.bn_mode = bn_mode
        self.precision = precision
        self.chunk = chunk
        self.forward_batch = forward_batch or default_forward_batch(model, chunk)
        self.points_per_forward = points_per_forward
        self.memory_format = TORCH_MEMORY_FORMATS[memory_format]
        self.layout = ParameterLayout.of(model)
        self.replica = probe_replica(model, bn_mode).to(memory_format=self.memory_format)
        self.group_norms = [module for module in self.replica.modules() if isinstance(module, GroupBatchNorm)]
        refuse_stacked_dropout_on_a_gpu(self.replica, points_per_forward)
        self.forward = compiled(self.replica, compile_mode)
        self.stacked_forward = compiled(
            torch.func.vmap(self.forward_at, in_dims=(0, None), randomness="same"), compile_mode
        )

    @torch.no_grad()
    def losses(
        self,
        origin: torch.Tensor,
        direction: torch.Tensor,
        points: Sequence[float] | np.ndarray,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        seed: int,
        chunk: Optional[int] = None,
    ) -> torch.Tensor:
        """Float32 losses ``[len(targets), len(points)]`` on the host; one transfer per call.

        Every point sees the same random draws (dropout): the random state is re-seeded from
        ``seed`` for each forward.
        """
        chunk = chunk or self.chunk
        for module in self.group_norms:
            module.group_size = chunk
        if self.bn_mode == "eval":  # the running statistics as training has left them so far
            for replica_buffer, live_buffer in zip(self.replica.buffers(), self.model.buffers()):
                replica_buffer.copy_(live_buffer)
        line = Line(origin, direction, self.formatted(inputs), targets, seed)
        spans = forward_batches(len(targets), chunk, self.forward_batch)
        result = torch.empty(len(points), len(targets), dtype=torch.float32, device=origin.device)
        with reduced_precision(self.precision, origin.device):
            if self.points_per_forward == 1:
                self.point_by_point(line, points, spans, result)
            else:
                self.stacked_points(line, points, spans, result)
        return result.T.contiguous().cpu()

    def point_by_point(
        self, line: Line, points: Sequence[float] | np.ndarray, spans: Spans, result: torch.Tensor
    ) -> None:
        """One point at a time: its parameters copied into the replica, then a forward per span."""
        parameters = list(self.replica.parameters())
        for index, point in enumerate(points):
            position = self.layout.unflatten(line.origin + float(point) * line.direction)
            for parameter, value in zip(parameters, position.values()):
                parameter.copy_(value)  # keeps the replica's memory format
            for span_index, (start, stop) in enumerate(spans):
                reseed(line.origin.device, line.seed + span_index)
                logits = self.forward(line.inputs[start:stop])
                result[index, start:stop] = F.cross_entropy(
                    logits.float(), line.targets[start:stop], reduction="none"
                )

    def stacked_points(
        self, line: Line, points: Sequence[float] | np.ndarray, spans: Spans, result: torch.Tensor
    ) -> None:
        """``points_per_forward`` points per forward: their parameter sets stacked along a new first
        dimension and the replica vmapped over it. Every point sees the same random draws, as one at
        a time (``randomness="same"``, re-seeded per span)."""
        steps = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=line.origin.dtype)
        steps = steps.to(line.origin.device)
        for first in range(0, len(points), self.points_per_forward):
            group = steps[first : first + self.points_per_forward]
            positions = line.origin + group[:, None] * line.direction  # [P, parameters]
            pieces = torch.split(positions, self.layout.numels, dim=1)
            stacked = {
                name: piece.reshape(len(group), *shape)
                for name, piece, shape in zip(self.layout.names, pieces, self.layout.shapes)
            }
            for span_index, (start, stop) in enumerate(spans):
                reseed(line.origin.device, line.seed + span_index)
                logits = self.stacked_forward(stacked, line.inputs[start:stop])  # [P, samples, classes]
                targets = line.targets[start:stop].repeat(len(group))
                losses = F.cross_entropy(logits.float().flatten(0, 1), targets, reduction="none")
                result[first : first + len(group), start:stop] = losses.view(len(group), stop - start)

    def formatted(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images as NHWC with ``channels_last``; otherwise the inputs as training holds them."""
        if self.memory_format is torch.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def forward_at(self, parameters: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.replica, parameters, (inputs,))


TORCH_MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
COMPILED_SHAPES = 64  # forward shapes compiled per function: full spans, remainders, sets, point groups
Forward = TypeVar("Forward", bound=Callable)


def compiled(forward: Forward, compile_mode: str) -> Forward:
    """``forward`` through ``torch.compile`` in ``compile_mode``, or itself when ``off``.

    Shapes are static: each distinct forward (a full span, a remainder, the validation and
    direction sets, a last smaller group of points) compiles once, up to :data:`COMPILED_SHAPES`
    (torch's default of 8 would run the rest eagerly). Random draws (dropout) come from the eager
    generators (``fallback_random``), so a compiled line sees the masks an eager one does.
    """
    if compile_mode == "off":
        return forward
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILED_SHAPES)
    return cast(Forward, torch.compile(forward, mode=compile_mode, dynamic=False))


def refuse_stacked_dropout_on_a_gpu(replica: nn.Module, points_per_forward: int) -> None:
    """On a GPU, dropout under vmap draws its masks with another kernel than one point at a time
    (the same seed, other masks): stacked points would measure another line."""
    on_gpu = next(replica.parameters()).device.type == "cuda"
    dropping = any(
        isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 and module.training
        for module in replica.modules()
    )
    if points_per_forward > 1 and on_gpu and dropping:
        raise ValueError(
            f"points_per_forward {points_per_forward} with dropout on a GPU: the stacked forward draws "
            "other dropout masks than one point at a time; accepted: points_per_forward 1 for this model"
        )


def evaluator_of(spec: LossEvaluationFields, model: nn.Module, chunk: int) -> LineEvaluator:
    """The evaluator a probe's fields describe."""
    return LineEvaluator(
        model,
        spec.bn_mode,
        chunk,
        spec.forward_batch,
        spec.precision,
        spec.points_per_forward,
        spec.memory_format,
        spec.compile_mode,
    )


@dataclass(frozen=True)
class Line:
    """One measurement's line and samples: ``origin + s·direction`` over ``inputs``."""

    origin: torch.Tensor
    direction: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    seed: int


@contextlib.contextmanager
def reduced_precision(precision: str, device: torch.device) -> Iterator[None]:
    """fp32 (default): nothing changes. tf32: TensorFloat-32 matmuls and convolutions on a GPU.
    bf16: autocast to bfloat16. The previous settings come back afterwards."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def reseed(device: torch.device, seed: int) -> None:
    """Seed the generators a forward on ``device`` draws from (cheaper than ``torch.manual_seed``)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


def gradient_at(
    replica: nn.Module,
    layout: ParameterLayout,
    position: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """The flat gradient of the mean loss of one batch at ``position`` (replica in train mode)."""
    flat = position.detach().clone().requires_grad_(True)
    reseed(position.device, seed)
    logits = functional_call(replica, layout.unflatten(flat), (inputs,))
    (gradient,) = torch.autograd.grad(F.cross_entropy(logits, targets), flat)
    return gradient
