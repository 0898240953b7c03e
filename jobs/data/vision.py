"""CIFAR-10, CIFAR-100, SVHN and MNIST through torchvision's own classes, never downloading.

A job reads the files torchvision would have downloaded (``<data.root>/cifar-10-batches-py``,
``cifar-100-python``, ``train_32x32.mat``/``test_32x32.mat``, ``MNIST/raw``), checked by
torchvision against their published md5 sums. ``orch data fetch NAME --root DIR`` stages them on a
machine with internet access.

Splits as the line paper's code makes them: ``random_split`` of the official training set into
``train_size`` and the rest with a ``Generator`` seeded ``split_seed`` (42), then, with
``fraction``, ``random_split`` of each part into ``int(size · fraction)`` and the rest, again seeded
42: CIFAR-10 40 000 / 10 000 → 4 000 / 1 000. ``val_source: test`` uses the official test set
as validation instead (the thesis). Normalization constants are each source's (e.g. CIFAR-10 std
(0.2023, 0.1994, 0.2010) from the line paper's code); ``mean``/``std`` override them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from jobs.data.augment import Augmentation
from jobs.data.registry import DATASETS, InMemoryData
from jobs.manifest import DATA_FILES, missing_files
from jobs.spec import DataSpec
from jobs.splits import subset_indices

Reader = Callable[[str, bool, bool, bool], tuple[np.ndarray, np.ndarray]]  # (root, train, download, verify)


@dataclass(frozen=True)
class VisionSource:
    """One torchvision data set: how to read a split as uint8 NCHW images and labels."""

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # the source's training augmentation
    flip: bool
    read: Reader


def without_checksums(dataset_class: type) -> type:
    """``dataset_class`` with its md5 sums dropped: torchvision then checks that files exist only."""
    overrides: dict[str, object] = {}
    for name in ("train_list", "test_list"):
        if hasattr(dataset_class, name):
            overrides[name] = [[file_name, None] for file_name, _ in getattr(dataset_class, name)]
    if hasattr(dataset_class, "meta"):
        overrides["meta"] = {**dataset_class.meta, "md5": None}
    if hasattr(dataset_class, "split_list"):
        overrides["split_list"] = {
            split: [url, file_name, None] for split, (url, file_name, _) in dataset_class.split_list.items()
        }
    return type(dataset_class.__name__, (dataset_class,), overrides)


def _dataset_class(name: str, verify: bool) -> type:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, name)
    return dataset_class if verify else without_checksums(dataset_class)


def _read_cifar(class_name: str) -> Reader:
    def read(root: str, train: bool, download: bool, verify: bool) -> tuple[np.ndarray, np.ndarray]:
        dataset = _dataset_class(class_name, verify)(root, train=train, download=download)
        return dataset.data.transpose(0, 3, 1, 2), np.asarray(dataset.targets, dtype=np.int64)

    return read


def _read_svhn(root: str, train: bool, download: bool, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    dataset = _dataset_class("SVHN", verify)(root, split="train" if train else "test", download=download)
    return dataset.data, dataset.labels.astype(np.int64)


def _read_mnist(root: str, train: bool, download: bool, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    # MNIST has no md5 check of its raw files
    dataset = _dataset_class("MNIST", verify)(root, train=train, download=download)
    return dataset.data.numpy()[:, None], dataset.targets.numpy().astype(np.int64)


SOURCES = {
    source.name: source
    for source in (
        VisionSource(
            "cifar10",
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2023, 0.1994, 0.2010),
            4,
            True,
            _read_cifar("CIFAR10"),
        ),
        VisionSource(
            "cifar100",
            100,
            (0.5071, 0.4867, 0.4408),
            (0.2675, 0.2565, 0.2761),
            8,
            True,
            _read_cifar("CIFAR100"),
        ),
        VisionSource("svhn", 10, (0.4380, 0.4440, 0.4730), (0.1751, 0.1771, 0.1744), 4, True, _read_svhn),
        VisionSource("mnist", 10, (0.1307,), (0.3081,), 0, False, _read_mnist),
    )
}


def fetch(name: str, root: str) -> list[Path]:
    """Download ``name`` into ``root`` with torchvision (needs internet; never called by jobs)."""
    source = SOURCES[name]
    for train in (True, False):
        source.read(root, train, True, True)
    return [Path(root) / relative for relative in DATA_FILES[name]]


def normalized(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    shape = (1, -1, 1, 1)
    return (tensor - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def load_vision(spec: DataSpec, data_root: Optional[str]) -> InMemoryData:
    source = SOURCES[spec.name]
    missing = missing_files(spec.name, data_root)
    if missing:
        raise FileNotFoundError(
            f"data set {spec.name} not found: {', '.join(map(str, missing))}; stage it with: orch data "
            f"fetch {spec.name} --root {data_root or 'DIR'}"
        )
    root = str(Path(data_root or "").expanduser())
    verify = spec.verify_checksums is not False
    images, labels = source.read(root, True, False, verify)
    mean, std = tuple(spec.mean or source.mean), tuple(spec.std or source.std)
    val_images, val_labels = (
        source.read(root, False, False, verify) if spec.val_source == "test" else (images, labels)
    )
    train_indices, val_indices = subset_indices(
        spec, len(labels), len(val_labels) if spec.val_source == "test" else 0
    )
    return InMemoryData(
        train_inputs=normalized(images[train_indices], mean, std),
        train_targets=torch.from_numpy(labels[train_indices]),
        val_inputs=normalized(val_images[val_indices], mean, std),
        val_targets=torch.from_numpy(val_labels[val_indices]),
        num_classes=source.num_classes,
        train_indices=torch.tensor(train_indices, dtype=torch.int64),
        val_indices=torch.tensor(val_indices, dtype=torch.int64),
        augmentation=Augmentation(
            source.crop_padding if spec.crop_padding is None else spec.crop_padding,
            source.flip if spec.flip is None else spec.flip,
            tuple(-m / s for m, s in zip(mean, std)),
        ),
        val_augment=bool(spec.val_augment),
    )


# one literal name per line: the login node's manifest reads them from this source (jobs/manifest.py)
DATASETS.register("cifar10")(load_vision)
DATASETS.register("cifar100")(load_vision)
DATASETS.register("svhn")(load_vision)
DATASETS.register("mnist")(load_vision)
