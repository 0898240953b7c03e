"""Data sets as in-memory tensors, registered by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from jobs.catalog import Catalog
from jobs.data.augment import Augmentation, augment
from jobs.spec import DataSpec


@dataclass
class InMemoryData:
    """A train/validation split held as tensors (small data sets fit in memory)."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    val_inputs: torch.Tensor
    val_targets: torch.Tensor
    num_classes: int
    train_indices: torch.Tensor  # indices into the source data set, for tying losses to samples
    val_indices: torch.Tensor
    augmentation: Optional[Augmentation] = None  # of training batches (and the line probe's training split)
    val_augment: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_inputs.shape[1:])

    def to(self, device: torch.device) -> "InMemoryData":
        return InMemoryData(
            self.train_inputs.to(device),
            self.train_targets.to(device),
            self.val_inputs.to(device),
            self.val_targets.to(device),
            self.num_classes,
            self.train_indices,
            self.val_indices,
            self.augmentation,
            self.val_augment,
        )

    def train_batch(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        """The (augmented, when configured) inputs of training samples ``indices``."""
        inputs = self.train_inputs[indices]
        return augment(inputs, self.augmentation, seed) if self.augmentation is not None and self.augmentation.active else inputs


DatasetBuilder = Callable[[DataSpec, Optional[str]], InMemoryData]
DATASETS: Catalog[DatasetBuilder] = Catalog("dataset")


def seeded_split(num_samples: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a seeded random train/validation split."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_samples, generator=generator)
    num_val = max(1, round(num_samples * val_fraction))
    return order[num_val:].sort().values, order[:num_val].sort().values


from jobs.data import digits as _digits  # noqa: E402,F401  (registers its builders)
from jobs.data import vision as _vision  # noqa: E402,F401
