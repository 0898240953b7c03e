"""Models registered by name: one module per architecture family."""

from __future__ import annotations

from torch import nn

from jobs.manifest import source_init
from jobs.models import cnn, densenet, mlp, mobilenetv2, resnet_cifar, vgg  # noqa: F401  (each registers its builders)
from jobs.models.registry import MODELS, ModelBuilder
from jobs.spec import ModelSpec

__all__ = ["MODELS", "ModelBuilder", "build_model"]


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
