"""Multi-layer perceptron: ``[N, C, H, W] → flatten → (Linear → activation) × len(hidden) → Linear → logits``.

The activation of every hidden layer is ``activation.dense(width)`` — a ReLU or a dense kWTA over the layer's
features (Xiao et al., ICLR 2020; Ahmad & Scheinkman 2019 use kWTA in fully connected layers).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.layers import ActivationSpec
from kwta_robust.models.registry import Normalize, register_model


class MLP(nn.Module):
    """Fully connected classifier on flattened ``[N, in_channels, input_size, input_size]`` inputs."""

    def __init__(
        self,
        activation: ActivationSpec,
        num_classes: int,
        in_channels: int,
        input_size: int,
        hidden: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ConfigError(f"arch 'mlp': hidden must be a non-empty list of widths >= 1, got {list(hidden)!r}")
        self.normalize = Normalize(in_channels, mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * input_size * input_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), activation.dense(int(h))]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.normalize(x))


@register_model("mlp")
def mlp(
    activation: ActivationSpec,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    hidden: Sequence[int] = (256, 256),
) -> MLP:
    """MLP with hidden widths ``hidden`` (default 256-256)."""
    return MLP(activation, num_classes, in_channels, input_size, list(hidden), mean, std)
