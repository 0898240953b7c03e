"""Line-probe throughput against the model's inference ceiling and the authors' loop.

Measures, in one run on one model and device:

  (a) the line probe's evaluator: per-sample losses of N samples at K points of one line;
  (b) the ceiling: the model's no-grad inference throughput at its best batch size;
  (c) a reference-style loop as the authors' sampler does it: per point, move the parameters in
      place, batches of 128, a host copy after every batch, a Python loop over points.

All three report sample-forwards per second; the ratios a/b and a/c are printed at the end
(targets: a/b >= 0.9 on CPU; on a GPU a/b >= 0.8 and a/c >= 5).

``--precision fp32 tf32 bf16`` measures (a) and (b) once per precision, each under the same
precision (the probe's ``precision`` option: TF32 matmuls and convolutions, or bf16 autocast),
and prints a/b per precision with the achieved TFLOP/s: the model's FLOPs per sample (counted by
torch's FlopCounterMode on one forward) times the probe's samples per second, next to the
device's dense peak for that precision where it is known. ``--points-per-forward 1 4 16``,
``--memory-format contiguous channels_last`` and ``--compile-mode off reduce-overhead`` add the
probe's other speed options: one row per combination, with its ceiling (b) measured in the same
memory format, the seconds its first line took beyond a later one's (the compilation) and the
largest difference of its losses from the plain float32 line's.

    python benchmarks/probe_throughput.py --model cnn --hidden 16 32 64 --input-shape 3 32 32
    python benchmarks/probe_throughput.py --model resnet20 --precision fp32 tf32 bf16
    python benchmarks/probe_throughput.py --model resnet20 --precision bf16 --points-per-forward 1 8 \
        --memory-format contiguous channels_last
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jobs.models import build_model
from jobs.probe_fields import COMPILE_MODES, MEMORY_FORMATS, PRECISIONS
from jobs.probes.functional import LineEvaluator, flat_parameters, reduced_precision
from jobs.probes.line import base_points
from jobs.spec import ModelSpec


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--input-shape", type=int, nargs="+", default=[3, 32, 32])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--samples", type=int, default=1024, help="samples per line (the paper: 4000 train + 1000 val + 128)"
    )
    parser.add_argument("--chunk", type=int, default=128, help="eval_chunk: samples per BatchNorm batch")
    parser.add_argument("--bn-mode", default="batch", choices=("batch", "eval"))
    parser.add_argument("--forward-batch", type=int, default=None, help="samples per forward (default 1024)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (a, b, c); the best of each counts")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=PRECISIONS,
        help="one or more of fp32, tf32, bf16: a/b and TFLOP/s for each (default fp32)",
    )
    parser.add_argument("--points-per-forward", type=int, nargs="+", default=[1], help="points per forward")
    parser.add_argument("--memory-format", nargs="+", default=["contiguous"], choices=MEMORY_FORMATS)
    parser.add_argument(
        "--compile-mode",
        nargs="+",
        default=["off"],
        choices=COMPILE_MODES,
        help="torch.compile modes (reduce-overhead: CUDA graphs); the first line's extra seconds are printed",
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


# Dense peaks in TFLOP/s (no structured sparsity) by a part of the device's name: the vendors'
# data sheets (H100/H200 SXM: 67 FP32, 495 TF32 and 989 BF16 on tensor cores; the GTX 1080 Ti has
# no tensor cores: TF32 runs as FP32, bf16 has no fast path).
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "1080 Ti": {"fp32": 11.3, "tf32": 11.3},
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's dense peak for ``precision``; None where not known (a CPU, another GPU)."""
    for part, peaks in PEAK_TFLOPS.items():
        if part in device_name:
            return peaks.get(precision)
    return None


def flops_per_sample(model: nn.Module, inputs: torch.Tensor, train_mode: bool) -> float:
    """Floating-point operations of one forward per sample (matmuls and convolutions, as torch's
    FlopCounterMode counts them: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train(train_mode)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(inputs)
    model.train()
    return counter.get_total_flops() / len(inputs)


BATCH_SIZES = [32, 64, 128, 256, 512, 1024, 2048]


def seconds(action: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    action()
    synchronize(device)
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(rates: dict[int, float]) -> tuple[float, int]:
    """(samples/s, batch size) of the fastest batch size."""
    batch_size = max(rates, key=rates.__getitem__)
    return rates[batch_size], batch_size


def inference_rate(
    model: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int, train_mode: bool
) -> float:
    """Samples/s of no-grad forwards over ``inputs`` in batches of ``batch_size``.

    ``train_mode``: BatchNorm on batch statistics, the work the probe must do in ``bn_mode: batch``.
    """
    model.train(train_mode)

    @torch.no_grad()
    def forward_all() -> None:
        for start in range(0, len(inputs) - batch_size + 1, batch_size):
            model(inputs[start : start + batch_size])

    covered = (len(inputs) // batch_size) * batch_size
    forward_all()  # warm-up
    rate = covered / seconds(forward_all, device)
    model.train()
    return rate


def reference_loop(
    model: nn.Module,
    origin: torch.Tensor,
    direction: torch.Tensor,
    points: np.ndarray,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> np.ndarray:
    """The authors' way: step the parameters in place to each point, batches of 128, host copy per batch."""
    losses = np.zeros((len(targets), len(points)), dtype=np.float32)
    parameters = list(model.parameters())
    with torch.no_grad():
        for index, point in enumerate(points):
            torch.nn.utils.vector_to_parameters(origin + float(point) * direction, parameters)
            for start in range(0, len(targets), 128):
                logits = model(inputs[start : start + 128])
                batch_losses = F.cross_entropy(logits, targets[start : start + 128], reduction="none")
                losses[start : start + 128, index] = batch_losses.cpu().numpy()
        torch.nn.utils.vector_to_parameters(origin, parameters)
    return losses


def main() -> None:
    options = arguments()
    device = torch.device(options.device)
    torch.manual_seed(0)
    spec = ModelSpec(name=options.model, hidden=options.hidden)
    model = build_model(spec, tuple(options.input_shape), options.classes).to(device)
    inputs = torch.randn(options.samples, *options.input_shape, device=device)
    targets = torch.randint(0, options.classes, (options.samples,), device=device)
    origin = flat_parameters(model)
    direction = torch.randn_like(origin)
    direction /= direction.norm()
    points = base_points(0.5, 0.006, [0.05])
    sample_forwards = len(points) * options.samples

    evaluator = LineEvaluator(model, options.bn_mode, options.chunk, options.forward_batch)
    train_mode = options.bn_mode == "batch"
    batch_sizes = [size for size in BATCH_SIZES if size <= options.samples]
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    sample_flops = flops_per_sample(model, inputs[: min(128, options.samples)], train_mode)

    def measure_line():
        return evaluator.losses(origin, direction, points, inputs, targets, seed=0)

    def reference_line():
        return reference_loop(model, origin, direction, points, inputs, targets)

    measure_line(), reference_line()  # warm-up
    probe_seconds = reference_seconds = float("inf")
    probe_mode_rates = {size: 0.0 for size in batch_sizes}
    eval_mode_rates = {size: 0.0 for size in batch_sizes}
    # rounds of a, b (every batch size), c side by side; the best of each counts
    for _ in range(options.repeats):
        probe_seconds = min(probe_seconds, seconds(measure_line, device))
        for size in batch_sizes:
            probe_mode_rates[size] = max(
                probe_mode_rates[size], inference_rate(model, inputs, device, size, train_mode)
            )
            eval_mode_rates[size] = max(
                eval_mode_rates[size], inference_rate(model, inputs, device, size, False)
            )
        reference_seconds = min(reference_seconds, seconds(reference_line, device))
    ceiling_rate, ceiling_batch = ceiling(probe_mode_rates)
    eval_rate, eval_batch = ceiling(eval_mode_rates)

    probe_rate = sample_forwards / probe_seconds
    reference_rate = sample_forwards / reference_seconds
    result = {
        "device": device_name,
        "model": f"{options.model} {options.hidden} on {options.input_shape}",
        "parameters": origin.numel(),
        "samples": options.samples,
        "points": len(points),
        "eval_chunk": options.chunk,
        "forward_batch": evaluator.forward_batch,
        "probe_samples_per_s": round(probe_rate),
        "ceiling_samples_per_s": round(ceiling_rate),
        "ceiling_batch_size": ceiling_batch,
        "ceiling_bn": "batch statistics (train mode)"
        if options.bn_mode == "batch"
        else "running statistics (eval mode)",
        "eval_mode_samples_per_s": round(eval_rate),
        "eval_mode_batch_size": eval_batch,
        "reference_samples_per_s": round(reference_rate),
        "a/b": round(probe_rate / ceiling_rate, 3),
        "a/c": round(probe_rate / reference_rate, 2),
        "gflop_per_sample": round(sample_flops / 1e9, 4),
    }
    shared = PrecisionInputs(
        model, origin, direction, points, inputs, targets, device, batch_sizes, train_mode
    )
    plain = measure_line()
    result["precisions"] = {
        f"{precision} x{per_forward} {memory_format} {compile_mode}": precision_row(
            precision,
            LineEvaluator(
                model,
                options.bn_mode,
                options.chunk,
                options.forward_batch,
                precision,
                per_forward,
                memory_format,
                compile_mode,
            ),
            shared,
            options.repeats,
            sample_flops,
            device_name,
            plain,
        )
        for precision in options.precision
        for per_forward in options.points_per_forward
        for memory_format in options.memory_format
        for compile_mode in options.compile_mode
    }
    if options.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        if key != "precisions":
            print(f"{key:>24}: {value}")
    print(
        f"{'precision, points/forward, format, compile':>44} {'probe/s':>10} {'ceiling/s':>10} {'a/b':>6} "
        f"{'TFLOP/s':>8} {'peak':>7} {'of peak':>8} {'max |dloss|':>11} {'first +s':>8}"
    )
    for label, row in result["precisions"].items():
        peak = row["peak_tflops"]
        print(
            f"{label:>44} {row['probe_samples_per_s']:>10} {row['ceiling_samples_per_s']:>10} "
            f"{row['a/b']:>6} {row['achieved_tflops']:>8} {peak if peak else 'n/a':>7} "
            f"{row['of_peak'] if row['of_peak'] is not None else 'n/a':>8} "
            f"{row['max_abs_loss_difference']:>11.2e} {row['first_line_extra_s']:>8}"
        )


@dataclass(frozen=True)
class PrecisionInputs:
    """What every precision's measurement shares: the model, one line and its samples."""

    model: nn.Module
    origin: torch.Tensor
    direction: torch.Tensor
    points: np.ndarray
    inputs: torch.Tensor
    targets: torch.Tensor
    device: torch.device
    batch_sizes: list[int]
    train_mode: bool


def precision_row(
    precision: str,
    evaluator: LineEvaluator,
    shared: PrecisionInputs,
    repeats: int,
    sample_flops: float,
    device_name: str,
    plain: torch.Tensor,
) -> dict[str, object]:
    """(a) and (b) under ``precision`` and the evaluator's memory format, side by side in rounds
    (the best of each counts); ``plain``: the plain float32 line's losses."""
    sample_forwards = len(shared.points) * len(shared.targets)
    model = copy.deepcopy(shared.model).to(memory_format=evaluator.memory_format)
    inputs = shared.inputs.contiguous(memory_format=evaluator.memory_format)

    def measure_line() -> torch.Tensor:
        return evaluator.losses(
            shared.origin, shared.direction, shared.points, shared.inputs, shared.targets, 0
        )

    first_seconds = seconds(measure_line, shared.device)  # the warm-up: compiles where it does
    difference = float((measure_line() - plain).abs().max())
    probe_seconds, rates = float("inf"), {size: 0.0 for size in shared.batch_sizes}
    for _ in range(repeats):
        probe_seconds = min(probe_seconds, seconds(measure_line, shared.device))
        with reduced_precision(precision, shared.device):
            for size in shared.batch_sizes:
                rate = inference_rate(model, inputs, shared.device, size, shared.train_mode)
                rates[size] = max(rates[size], rate)
    ceiling_rate, ceiling_batch = ceiling(rates)
    probe_rate = sample_forwards / probe_seconds
    achieved = probe_rate * sample_flops / 1e12
    peak = peak_tflops(device_name, precision)
    return {
        "probe_samples_per_s": round(probe_rate),
        "ceiling_samples_per_s": round(ceiling_rate),
        "ceiling_batch_size": ceiling_batch,
        "a/b": round(probe_rate / ceiling_rate, 3),
        "achieved_tflops": round(achieved, 3),
        "peak_tflops": peak,
        "of_peak": round(achieved / peak, 4) if peak else None,
        "max_abs_loss_difference": difference,
        "first_line_extra_s": round(first_seconds - probe_seconds, 2),
    }


if __name__ == "__main__":
    main()
