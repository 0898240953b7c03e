"""Data sets as in-memory tensors, registered by name."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import random_split

from jobs.atomic import publish_bytes
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

    def channels_last(self) -> "InMemoryData":
        """The same samples with image tensors in NHWC memory order (values unchanged)."""
        def nhwc(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor

        return dataclasses.replace(self, train_inputs=nhwc(self.train_inputs), val_inputs=nhwc(self.val_inputs))

    def train_batch(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        """The (augmented, when configured) inputs of training samples ``indices``."""
        inputs = self.train_inputs[indices]
        return augment(inputs, self.augmentation, seed) if self.augmentation is not None and self.augmentation.active else inputs


def indices_sha256(data: InMemoryData) -> str:
    return split_sha256(data.train_indices.tolist(), data.val_indices.tolist())


def record_indices(data: InMemoryData, spec: DataSpec, out_file: Path) -> str:
    """Publish the split's indices (``train``, ``val``) once and check a pinned ``indices_sha256``."""
    digest = indices_sha256(data)
    if spec.indices_sha256 is not None and spec.indices_sha256 != digest:
        raise ValueError(
            f"data set {spec.name}: the split's indices_sha256 is {digest}, the spec pins {spec.indices_sha256}; "
            "the data files or the split code changed (remove data.indices_sha256 to accept the new split)"
        )
    if not out_file.exists():
        buffer = io.BytesIO()
        np.savez(buffer, train=data.train_indices.numpy(), val=data.val_indices.numpy())
        publish_bytes(out_file, buffer.getvalue())
    return digest


DatasetBuilder = Callable[[DataSpec, Optional[str]], InMemoryData]
DATASETS: Catalog[DatasetBuilder] = Catalog("dataset")


# (training, test) set sizes of the official data sets: the planner computes a run's split from
# them and writes its hash into the spec, which the job checks against the files it reads
OFFICIAL_COUNTS = {"digits": (1797, 0), "cifar10": (50000, 10000), "cifar100": (50000, 10000), "svhn": (73257, 26032), "mnist": (60000, 10000)}


def subset_indices(spec: DataSpec, train_count: int, test_count: int) -> tuple[list[int], list[int]]:
    """(training, validation) sample indices for a source with ``train_count`` training and
    ``test_count`` test samples: into the training set, or with ``val_source: test`` validation
    indices into the test set. Raises ValueError when the spec does not fit those sizes."""
    if spec.val_source == "test":
        if test_count == 0:
            raise ValueError(f"data set {spec.name} has no official test set to validate on")
        train = list(range(train_count))
        return (_keep_fraction(train, spec.fraction, spec.split_seed) if spec.fraction else train), list(range(test_count))
    return split_indices(train_count, _train_size(spec, train_count), spec.fraction, spec.split_seed)


def split_sizes(spec: DataSpec, train_count: int, test_count: int) -> tuple[int, int]:
    """The lengths of :func:`subset_indices`, without drawing them (no torch needed)."""
    if spec.val_source == "test":
        if test_count == 0:
            raise ValueError(f"data set {spec.name} has no official test set to validate on")
        return (int(train_count * spec.fraction) if spec.fraction else train_count), test_count
    train_size = _train_size(spec, train_count)
    if spec.fraction is not None and spec.fraction != 1.0:
        return int(train_size * spec.fraction), int((train_count - train_size) * spec.fraction)
    return train_size, train_count - train_size


def _train_size(spec: DataSpec, train_count: int) -> int:
    train_size = spec.train_size if spec.train_size is not None else train_count - max(1, round(train_count * spec.val_fraction))
    if not 0 < train_size < train_count:
        raise ValueError(f"train_size {train_size} leaves no validation samples of the {train_count} training samples of {spec.name}")
    return train_size


def split_indices(num_samples: int, train_size: int, fraction: Optional[float], seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and validation subsets, exactly as the line paper's code draws them:
    ``random_split`` into ``train_size`` and the rest, then of each part into ``int(size · fraction)``
    and the rest, each with a ``Generator`` seeded ``seed``."""
    train_part, val_part = random_split(range(num_samples), [train_size, num_samples - train_size], torch.Generator().manual_seed(seed))
    train, val = list(train_part), list(val_part)
    if fraction is not None and fraction != 1.0:
        train, val = _keep_fraction(train, fraction, seed), _keep_fraction(val, fraction, seed)
    return train, val


def _keep_fraction(indices: list[int], fraction: float, seed: int) -> list[int]:
    kept = int(len(indices) * fraction)
    chosen, _ = random_split(indices, [kept, len(indices) - kept], torch.Generator().manual_seed(seed))
    return list(chosen)


def split_sha256(train_indices: Sequence[int], val_indices: Sequence[int]) -> str:
    """sha256 of the training then the validation indices as little-endian int64."""
    digest = hashlib.sha256(np.asarray(train_indices, dtype="<i8").tobytes())
    digest.update(np.asarray(val_indices, dtype="<i8").tobytes())
    return digest.hexdigest()


def planned_split_sizes(spec: DataSpec) -> Optional[tuple[int, int]]:
    """(training, validation) sample counts of the run's split of the official files (None where
    :func:`planned_indices_sha256` is None: an unknown data set or unverified files)."""
    if spec.name not in OFFICIAL_COUNTS or spec.verify_checksums is False:
        return None
    return split_sizes(spec, *OFFICIAL_COUNTS[spec.name])


def planned_indices_sha256(spec: DataSpec) -> Optional[str]:
    """The split's hash for the official files (None for an unknown data set or unverified files)."""
    if spec.name not in OFFICIAL_COUNTS or spec.verify_checksums is False:
        return None
    return split_sha256(*subset_indices(spec, *OFFICIAL_COUNTS[spec.name]))


from jobs.data import digits as _digits  # noqa: E402,F401  (registers its builders)
from jobs.data import vision as _vision  # noqa: E402,F401
