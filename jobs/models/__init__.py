"""Models registered by name: one module per architecture family."""

from __future__ import annotations

from typing import Callable

from torch import nn

from jobs.catalog import Catalog
from jobs.spec import ModelSpec

ModelBuilder = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
MODELS: Catalog[ModelBuilder] = Catalog("model")

from jobs.models import cnn as _cnn  # noqa: E402,F401  (registers its builders)
from jobs.models import densenet as _densenet  # noqa: E402,F401
from jobs.models import mlp as _mlp  # noqa: E402,F401
from jobs.models import mobilenetv2 as _mobilenetv2  # noqa: E402,F401
from jobs.models import resnet_cifar as _resnet_cifar  # noqa: E402,F401
from jobs.models import vgg as _vgg  # noqa: E402,F401
