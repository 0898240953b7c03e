"""VGG-11 with BatchNorm for 32×32 inputs ("A Walk with SGD"): eight 3×3 conv-BN-ReLU layers with
five max-pools down to 1×1×512, then one linear layer; PyTorch's default initialization."""

from __future__ import annotations

from torch import nn

from jobs.models.registry import MODELS
from jobs.spec import ModelSpec

VGG11 = (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool", 512, 512, "pool")


@MODELS.register("vgg11")
def vgg11(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for item in VGG11:
        if item == "pool":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [
                nn.Conv2d(channels, int(item), 3, padding=1),
                nn.BatchNorm2d(int(item)),
                nn.ReLU(inplace=True),
            ]
            channels = int(item)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)
