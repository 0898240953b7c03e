"""scikit-learn's bundled 8×8 digits (1 797 images, 10 classes): real data, no download.

The file is read where scikit-learn installed it, the way ``sklearn.datasets.load_digits`` reads
it, without importing scikit-learn (0.7 s of every job process's start, for one 60 kB file).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from jobs.data.registry import DATASETS, InMemoryData
from jobs.spec import DataSpec
from jobs.splits import OFFICIAL_COUNTS, subset_indices


@DATASETS.register("digits")
def digits(spec: DataSpec, data_root: Optional[str]) -> InMemoryData:
    pixels, labels = bundled_digits()
    images = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.as_tensor(labels, dtype=torch.int64)
    train_count, test_count = OFFICIAL_COUNTS["digits"]
    assert len(targets) == train_count, (
        f"scikit-learn's digits has {len(targets)} images, expected {train_count}"
    )
    train_list, val_list = subset_indices(spec, train_count, test_count)
    train_indices, val_indices = torch.tensor(train_list), torch.tensor(val_list)
    mean = images[train_indices].mean()
    std = images[train_indices].std()
    images = (images - mean) / std
    return InMemoryData(
        train_inputs=images[train_indices],
        train_targets=targets[train_indices],
        val_inputs=images[val_indices],
        val_targets=targets[val_indices],
        num_classes=10,
        train_indices=train_indices,
        val_indices=val_indices,
    )


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside the sklearn package


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images 1797×8×8, labels 1797) of scikit-learn's ``digits.csv.gz``: 64 pixel columns (0..16)
    and the label, one image a row, as ``load_digits`` returns them."""
    path = digits_file()
    with gzip.open(path, "rt", encoding="utf-8") as text:
        rows = np.loadtxt(text, delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)


def digits_file() -> Path:
    package = importlib.util.find_spec("sklearn")
    folders = [] if package is None else list(package.submodule_search_locations or [])
    for folder in folders:
        path = Path(folder).joinpath(*DIGITS_FILE)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"scikit-learn's bundled digits ({'/'.join(DIGITS_FILE)}) not found in {folders or 'any install'}: "
        "the digits data set is read from scikit-learn, a dependency of the project: pip install scikit-learn"
    )
