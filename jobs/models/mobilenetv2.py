"""MobileNetV2 (Sandler et al. 2018) with CIFAR strides: a stride-1 3×3 stem of 32 channels and
stride 1 instead of 2 in the second bottleneck stage, so 32×32 inputs end at 4×4; PyTorch's
default initialization."""

from __future__ import annotations

from torch import Tensor, nn

from jobs.models.registry import MODELS
from jobs.spec import ModelSpec

# (expansion, output channels, blocks, stride of the first block)
CIFAR_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn(
    channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(
            channels_in, channels_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(channels_out),
    ]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = channels_in * expansion
        layers = [conv_bn(channels_in, hidden, 1)] if expansion != 1 else []
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, channels_out, 1, relu=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, inputs: Tensor) -> Tensor:
        out = self.block(inputs)
        return inputs + out if self.residual else out


@MODELS.register("mobilenetv2")
def mobilenetv2(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: list[nn.Module] = [conv_bn(input_shape[0], 32, 3)]
    channels = 32
    for expansion, channels_out, blocks, stride in CIFAR_STAGES:
        for index in range(blocks):
            layers.append(InvertedResidual(channels, channels_out, expansion, stride if index == 0 else 1))
            channels = channels_out
    layers += [
        conv_bn(channels, 1280, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1280, num_classes),
    ]
    return nn.Sequential(*layers)
