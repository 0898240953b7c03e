"""Models registered by name: one module per architecture family."""

from __future__ import annotations

from typing import Callable

from torch import nn

from jobs.catalog import Catalog
from jobs.manifest import source_init
from jobs.spec import ModelSpec

ModelBuilder = Callable[[ModelSpec, tuple[int, ...], int], nn.Module]
MODELS: Catalog[ModelBuilder] = Catalog("model")



def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The registered builder's model, initialized as ``spec.init`` (or the source) says.

    Builders create PyTorch's default initialization; ``kaiming_normal`` then redraws the weights
    of every convolution and linear layer from N(0, 2/fan_in), biases and BatchNorm untouched.
    """
    model = MODELS.get(spec.name)(spec, input_shape, num_classes)
    if (spec.init or source_init(spec.name)) == "kaiming_normal":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
    return model

from jobs.models import cnn as _cnn  # noqa: E402,F401  (registers its builders)
from jobs.models import densenet as _densenet  # noqa: E402,F401
from jobs.models import mlp as _mlp  # noqa: E402,F401
from jobs.models import mobilenetv2 as _mobilenetv2  # noqa: E402,F401
from jobs.models import resnet_cifar as _resnet_cifar  # noqa: E402,F401
from jobs.models import vgg as _vgg  # noqa: E402,F401
