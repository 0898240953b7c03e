"""In-memory data sets (what a builder returns, its recorded indices) and the data set catalog, in
a module of their own: the data set modules register into it without importing the package that
imports them (no cycle)."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from jobs.atomic import publish_bytes
from jobs.catalog import Catalog
from jobs.data.augment import Augmentation, augment
from jobs.spec import DataSpec
from jobs.splits import split_sha256


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

    def channels_last(self) -> "InMemoryData":
        """The same samples with image tensors in NHWC memory order (values unchanged)."""

        def nhwc(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor

        return dataclasses.replace(
            self, train_inputs=nhwc(self.train_inputs), val_inputs=nhwc(self.val_inputs)
        )

    def train_batch(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        """The (augmented, when configured) inputs of training samples ``indices``."""
        inputs = self.train_inputs[indices]
        return (
            augment(inputs, self.augmentation, seed)
            if self.augmentation is not None and self.augmentation.active
            else inputs
        )


def indices_sha256(data: InMemoryData) -> str:
    return split_sha256(data.train_indices.tolist(), data.val_indices.tolist())


def record_indices(data: InMemoryData, spec: DataSpec, out_file: Path) -> str:
    """Publish the split's indices (``train``, ``val``) once and check a pinned ``indices_sha256``."""
    digest = indices_sha256(data)
    if spec.indices_sha256 is not None and spec.indices_sha256 != digest:
        raise ValueError(
            f"data set {spec.name}: the split's indices_sha256 is {digest}, the spec pins "
            f"{spec.indices_sha256}; "
            "the data files or the split code changed (remove data.indices_sha256 to accept the new split)"
        )
    if not out_file.exists():
        buffer = io.BytesIO()
        np.savez(buffer, train=data.train_indices.numpy(), val=data.val_indices.numpy())
        publish_bytes(out_file, buffer.getvalue())
    return digest


DatasetBuilder = Callable[[DataSpec, Optional[str]], InMemoryData]
DATASETS: Catalog[DatasetBuilder] = Catalog("dataset")
