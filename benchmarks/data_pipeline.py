"""Training steps per second: device tensors + seeded tensor augmentation vs. a torchvision
``DataLoader`` pipeline (PIL images, RandomCrop/RandomHorizontalFlip/ToTensor/Normalize), for
ResNet-20 on CIFAR-shaped data, measured side by side in one run.

    python benchmarks/data_pipeline.py [--steps 30] [--workers 0 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from jobs.data.augment import Augmentation, augment, batch_seed
from jobs.data.vision import SOURCES, normalized
from jobs.models import build_model
from jobs.spec import ModelSpec
from jobs.train import BatchOrder


class PilImages(Dataset):
    """CIFAR10-style: uint8 HWC arrays turned into PIL images and transformed per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def steps_per_second(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int, device: torch.device
) -> float:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet20"), (3, 32, 32), 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(
            model(inputs.to(device, non_blocking=True)), targets.to(device, non_blocking=True)
        ).backward()
        optimizer.step()

    step(*next(batches))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for inputs, targets in itertools.islice(batches, steps):
        step(inputs, targets)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    options = arguments()
    device = torch.device(options.device)
    source = SOURCES["cifar10"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (options.samples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, options.samples)

    inputs = normalized(images.transpose(0, 3, 1, 2), source.mean, source.std).to(device)
    targets = torch.from_numpy(labels).to(device)
    augmentation = Augmentation(4, True, tuple(-m / s for m, s in zip(source.mean, source.std)))
    order = BatchOrder(options.samples, options.batch_size, seed=0, drop_last=True)

    def tensor_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in itertools.count():
            batch = order.indices(step).to(device)
            yield augment(inputs[batch], augmentation, batch_seed(0, step)), targets[batch]

    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(source.mean, source.std),
        ]
    )

    def loader_batches(workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            PilImages(images, labels, transform),
            batch_size=options.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
        while True:
            yield from loader

    tensor_rate = steps_per_second(tensor_batches(), options.steps, device)
    print(
        f"device: {device} ({torch.get_num_threads()} threads), ResNet-20, batch {options.batch_size}, "
        f"{options.steps} steps"
    )
    print(f"{'tensors on device + seeded augmentation':>42}: {tensor_rate:7.2f} steps/s")
    for workers in options.workers:
        loader_rate = steps_per_second(loader_batches(workers), options.steps, device)
        print(
            f"{f'DataLoader, PIL transforms, {workers} workers':>42}: {loader_rate:7.2f} steps/s   "
            f"tensors/DataLoader = {tensor_rate / loader_rate:.2f}"
        )


if __name__ == "__main__":
    main()
