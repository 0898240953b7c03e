"""A small convolutional network with BatchNorm, for 8×8 digits and other small images.

``hidden`` lists the channels of 3×3 convolution blocks (convolution, BatchNorm, activation);
every block after the first halves the resolution. Global average pooling, optional dropout and a
linear classifier follow.
"""

from __future__ import annotations

from torch import nn

from jobs.models.mlp import ACTIVATIONS
from jobs.models.registry import MODELS
from jobs.spec import ModelSpec


@MODELS.register("cnn")
def cnn(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels = [input_shape[0], *spec.hidden]
    layers: list[nn.Module] = []
    for index, (channels_in, channels_out) in enumerate(zip(channels, channels[1:])):
        stride = 1 if index == 0 else 2
        layers += [
            nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            ACTIVATIONS[spec.activation](),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if spec.dropout:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(channels[-1], num_classes))
    return nn.Sequential(*layers)
