"""CIFAR-style ResNet-18 (He et al., CVPR 2016) for 32×32 inputs, with an injected activation.

Stem: 3×3 conv (stride 1, no max pooling) → BN → activation; four stages of two :class:`BasicBlock` each with
widths ``width · (1, 2, 4, 8)`` (default 64…512) and strides 1, 2, 2, 2; global average pooling; linear head.
Every ReLU of the original is ``activation.spatial(channels)`` — Xiao et al. (ICLR 2020) evaluate exactly this
kWTA ResNet-18 on CIFAR-10. ``[N, C, S, S] in [0, 1] → logits [N, num_classes]``.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models.registry import Normalize, register_model


class BasicBlock(nn.Module):
    """``act(bn(conv(act(bn(conv(x))))) + shortcut(x))`` with a 1×1 conv shortcut when the shape changes."""

    def __init__(self, activation: ActivationSpec, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation.spatial(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.act2 = activation.spatial(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with :class:`BasicBlock` stages (``blocks`` per stage) for small images."""

    def __init__(
        self,
        activation: ActivationSpec,
        num_classes: int,
        in_channels: int,
        blocks: Sequence[int],
        width: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ConfigError(f"arch 'resnet18': width must be >= 1, got {width}")
        self.normalize = Normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = activation.spatial(width)
        stages: list[nn.Module] = []
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stage = []
            for j in range(n):
                stage.append(BasicBlock(activation, in_planes, planes, stride=(1 if i == 0 or j > 0 else 2)))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(self.normalize(x))))
        out = self.pool(self.layers(out)).flatten(1)
        return self.fc(out)


@register_model("resnet18")
def resnet18(
    activation: ActivationSpec,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    width: int = 64,
) -> ResNet:
    """CIFAR ResNet-18 (2-2-2-2 basic blocks, base width ``width``, default 64 → 11.2M parameters)."""
    if input_size < 8:
        raise ConfigError(f"arch 'resnet18': input_size must be >= 8 (three stride-2 stages), got {input_size}")
    return ResNet(activation, num_classes, in_channels, (2, 2, 2, 2), int(width), mean, std)
