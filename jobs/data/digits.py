"""scikit-learn's bundled 8×8 digits (1 797 images, 10 classes): real data, no download."""

from __future__ import annotations

from typing import Optional

import torch

from jobs.data.registry import DATASETS, InMemoryData
from jobs.spec import DataSpec
from jobs.splits import OFFICIAL_COUNTS, subset_indices


@DATASETS.register("digits")
def digits(spec: DataSpec, data_root: Optional[str]) -> InMemoryData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.as_tensor(bunch.target, dtype=torch.int64)
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
