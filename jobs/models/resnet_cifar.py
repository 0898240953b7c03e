"""CIFAR ResNets.

- ``resnet20/32/44/56/110``: He et al. 2016, §4.2 — 3×3 stem of 16 channels, three stages of n
  basic blocks (16, 32, 64 channels), option-A shortcuts (stride-2 subsampling and zero-padded
  channels, no parameters), global average pooling, one linear layer; depth 6n + 2. Kaiming-normal
  initialization of convolutions and the linear layer, as the line paper's code (after
  Y. Idelbayev's reference implementation) does.
- ``resnet18/34``: the CIFAR variant of the ImageNet ResNets used by the dissertation and the
  thesis — 3×3 stem of 64 channels without max-pooling, four stages (64 … 512 channels) of basic
  blocks with 1×1-convolution (option-B) shortcuts; PyTorch's default initialization.

Initialization is applied by :func:`jobs.models.build_model` from ``model.init``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from jobs.models.registry import MODELS
from jobs.spec import ModelSpec


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, inputs: Tensor) -> Tensor:
        subsampled = inputs[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(subsampled, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(channels_out - channels_in, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(channels_out),
                )

    def forward(self, inputs: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(inputs))


class CifarResNet(nn.Module):
    def __init__(
        self,
        blocks_per_stage: list[int],
        widths: list[int],
        shortcut: str,
        in_channels: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for index, (blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            strides = [1 if index == 0 else 2] + [1] * (blocks - 1)
            stage = []
            for stride in strides:
                stage.append(BasicBlock(channels, width, stride, shortcut))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(inputs))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def he_resnet(depth: int):
    blocks = (depth - 2) // 6

    def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return CifarResNet([blocks] * 3, [16, 32, 64], "A", input_shape[0], num_classes)

    return build


# one literal name per line: the login node's manifest reads them from this source (jobs/manifest.py)
MODELS.register("resnet20")(he_resnet(20))
MODELS.register("resnet32")(he_resnet(32))
MODELS.register("resnet44")(he_resnet(44))
MODELS.register("resnet56")(he_resnet(56))
MODELS.register("resnet110")(he_resnet(110))


def imagenet_style_resnet(blocks: list[int]):
    def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return CifarResNet(blocks, [64, 128, 256, 512], "B", input_shape[0], num_classes)

    return build


MODELS.register("resnet18")(imagenet_style_resnet([2, 2, 2, 2]))
MODELS.register("resnet34")(imagenet_style_resnet([3, 4, 6, 3]))
