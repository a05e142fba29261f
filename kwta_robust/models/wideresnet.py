"""Wide Residual Network WRN-depth-widen (Zagoruyko & Komodakis, BMVC 2016) for 32×32 inputs.

Pre-activation blocks ``BN → activation → conv3×3 → BN → activation → (dropout) → conv3×3`` plus shortcut;
three groups of ``(depth - 4) / 6`` blocks with widths ``16·widen · (1, 2, 4)`` and strides 1, 2, 2; a final
``BN → activation → global average pool → linear``. WRN-28-10 / WRN-34-10 are the standard adversarial-training
backbones (Madry et al. 2018; Zhang et al. 2019). Activations are ``activation.spatial(channels)``.
``[N, C, S, S] in [0, 1] → logits [N, num_classes]``.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models.registry import Normalize, register_model


class WideBlock(nn.Module):
    """Pre-activation wide basic block."""

    def __init__(self, activation: ActivationSpec, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.act1 = activation.spatial(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation.spatial(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` with an injected activation."""

    def __init__(
        self,
        activation: ActivationSpec,
        num_classes: int,
        in_channels: int,
        depth: int,
        widen: int,
        dropout: float,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"arch 'wrn': depth must be 6n+4 with n >= 1 (10, 16, 28, 34, ...), got {depth}")
        if widen < 1:
            raise ConfigError(f"arch 'wrn': widen must be >= 1, got {widen}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"arch 'wrn': dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.normalize = Normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups: list[nn.Module] = []
        in_planes = widths[0]
        for i, planes in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                stride = 1 if i == 0 or j > 0 else 2
                blocks.append(WideBlock(activation, in_planes, planes, stride, dropout))
                in_planes = planes
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = activation.spatial(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.groups(self.conv1(self.normalize(x)))
        out = self.pool(self.act(self.bn(out))).flatten(1)
        return self.fc(out)


@register_model("wrn")
def wrn(
    activation: ActivationSpec,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WideResNet (default WRN-28-10, 36.5M parameters; use e.g. ``depth=16, widen=4`` for quick runs)."""
    if input_size < 4:
        raise ConfigError(f"arch 'wrn': input_size must be >= 4 (two stride-2 groups), got {input_size}")
    return WideResNet(activation, num_classes, in_channels, int(depth), int(widen), float(dropout), mean, std)
