"""The model catalog, in a module of its own: the architecture modules register into it without
importing the package that imports them (no cycle)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from jobs.catalog import Catalog
from jobs.spec import ModelSpec

ModelBuilder = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
MODELS: Catalog[ModelBuilder] = Catalog("model")
