"""Miniature data sets in the genuine on-disk formats torchvision reads (no download anywhere)."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class Miniature:
    root: Path
    train_labels: dict[str, np.ndarray]  # per data set, in file order
    test_labels: dict[str, np.ndarray]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _images(rng: np.random.Generator, count: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def write_cifar10(
    root: Path, rng: np.random.Generator, per_batch: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as handle:  # the format CIFAR-10 is distributed in
            pickle.dump({"data": _images(rng, per_batch, (3072,)), "labels": batch_labels}, handle)
        labels.append(batch_labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return np.concatenate(labels[:5]), np.array(labels[5])


def write_cifar100(
    root: Path, rng: np.random.Generator, train: int, test: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR100

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    labels = {}
    for name, count in (("train", train), ("test", test)):
        labels[name] = rng.integers(0, 100, count)
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {
                    "data": _images(rng, count, (3072,)),
                    "fine_labels": labels[name].tolist(),
                    "coarse_labels": [0] * count,
                },
                handle,
            )
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, handle)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})
    return labels["train"], labels["test"]


def write_svhn(
    root: Path, rng: np.random.Generator, train: int, test: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import savemat
    from torchvision.datasets import SVHN

    split_list = dict(SVHN.split_list)
    labels = {}
    for split, count in (("train", train), ("test", test)):
        labels[split] = rng.integers(0, 10, count)
        mat_labels = np.where(labels[split] == 0, 10, labels[split])  # SVHN stores the digit 0 as 10
        path = root / f"{split}_32x32.mat"
        savemat(
            path,
            {
                "X": np.moveaxis(_images(rng, count, (32, 32, 3)), 0, -1),
                "y": mat_labels.reshape(-1, 1).astype(np.uint8),
            },
        )
        split_list[split] = [split_list[split][0], path.name, _md5(path)]
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return labels["train"], labels["test"]


def write_mnist(root: Path, rng: np.random.Generator, train: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    labels = {}
    for prefix, count in (("train", train), ("t10k", test)):
        labels[prefix] = rng.integers(0, 10, count).astype(np.uint8)
        images = _images(rng, count, (28, 28))
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, count, 28, 28], dtype=">i4").tobytes() + images.tobytes()
        )
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([2049, count], dtype=">i4").tobytes() + labels[prefix].tobytes()
        )
    return labels["train"].astype(np.int64), labels["t10k"].astype(np.int64)


def write_miniatures(root: Path, monkeypatch: pytest.MonkeyPatch) -> Miniature:
    rng = np.random.default_rng(0)
    train, test = {}, {}
    train["cifar10"], test["cifar10"] = write_cifar10(root, rng, per_batch=100, monkeypatch=monkeypatch)
    train["cifar100"], test["cifar100"] = write_cifar100(root, rng, 300, 60, monkeypatch)
    train["svhn"], test["svhn"] = write_svhn(root, rng, 250, 50, monkeypatch)
    train["mnist"], test["mnist"] = write_mnist(root, rng, 200, 40)
    return Miniature(root, train, test)
