"""Data sets as in-memory tensors, registered by name."""

from __future__ import annotations

from jobs.data import digits, vision  # noqa: F401  (each registers its builders)
from jobs.data.registry import DATASETS, DatasetBuilder, InMemoryData, indices_sha256, record_indices

__all__ = ["DATASETS", "DatasetBuilder", "InMemoryData", "indices_sha256", "record_indices"]
