"""DenseNets for CIFAR (Huang et al. 2017), PyTorch's default initialization.

- ``densenet40``: growth rate k = 12, three dense blocks of 12 BN-ReLU-conv3×3 layers, a 3×3 stem
  of 16 channels, transitions BN-ReLU-conv1×1-avgpool without compression (depth 3·12 + 4 = 40).
- ``densenet121``: the CIFAR variant of DenseNet-121 — bottleneck layers (BN-ReLU-conv1×1 to 4k,
  BN-ReLU-conv3×3 to k), k = 32, blocks of 6, 12, 24, 16, compression 0.5, a 3×3 stem of 2k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jobs.models.registry import MODELS
from jobs.spec import ModelSpec


class DenseLayer(nn.Module):
    def __init__(self, channels_in: int, growth: int, bottleneck: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = channels_in
        if bottleneck:
            layers += [
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, 4 * growth, 1, bias=False),
            ]
            channels = 4 * growth
        layers += [
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, growth, 3, padding=1, bias=False),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return torch.cat([inputs, self.layers(inputs)], dim=1)


def transition(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(channels_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_in, channels_out, 1, bias=False),
        nn.AvgPool2d(2),
    )


class DenseNet(nn.Module):
    def __init__(
        self,
        blocks: list[int],
        growth: int,
        stem: int,
        compression: float,
        bottleneck: bool,
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)]
        channels = stem
        for index, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth, bottleneck))
                channels += growth
            if index < len(blocks) - 1:
                reduced = int(channels * compression)
                layers.append(transition(channels, reduced))
                channels = reduced
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.linear(F.adaptive_avg_pool2d(self.features(inputs), 1).flatten(1))


@MODELS.register("densenet40")
def densenet40(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return DenseNet(
        [12, 12, 12],
        growth=12,
        stem=16,
        compression=1.0,
        bottleneck=False,
        in_channels=input_shape[0],
        num_classes=num_classes,
    )


@MODELS.register("densenet121")
def densenet121(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return DenseNet(
        [6, 12, 24, 16],
        growth=32,
        stem=64,
        compression=0.5,
        bottleneck=True,
        in_channels=input_shape[0],
        num_classes=num_classes,
    )
