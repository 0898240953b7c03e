"""Multi-layer perceptrons over flattened inputs."""

from __future__ import annotations

import math

from torch import nn

from jobs.models.registry import MODELS
from jobs.spec import ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@MODELS.register("mlp")
def mlp(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    widths = [math.prod(input_shape), *spec.hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[spec.activation]()]
        if spec.dropout:
            layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)
