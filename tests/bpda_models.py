"""Tiny seeded MLPs of the BPDA tests (``[N, 16] → [N, 3]``) and a batch each labels itself."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.bpda_protocol import surrogate_layers
from kwta_robust.layers import KWTA

D, H, C = 16, 32, 3


def kwta_mlp(seed: int = 0, ratio: float = 0.25, extra: nn.Module | None = None) -> nn.Sequential:
    """``[N, 16] → [N, 3]``: Linear → KWTA → Linear → KWTA → (extra) → Linear; seeded, global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Linear(D, H), KWTA(ratio=ratio), nn.Linear(H, H), KWTA(ratio=ratio)]
        layers += [extra] if extra is not None else []
        layers += [nn.Linear(H, C)]
        return nn.Sequential(*layers).eval()


def relu_mlp(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C)).eval()


def batch(model: nn.Module, n: int = 24, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Random inputs in [0, 1] labelled by the model itself (all clean-correct)."""
    x = torch.rand(n, D, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


def layer_settings(model: nn.Module) -> dict[str, tuple[object, float]]:
    """Each BPDA-capable layer's backward and temperature, by name."""
    return {name: (m.backward, m.temperature) for name, m in surrogate_layers(model).items()}


class DenseTopK(nn.Module):
    """A foreign kWTA written outside the package: keeps each sample's ``k`` largest units of ``[N, F]``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, h: Tensor) -> Tensor:
        return h * torch.zeros_like(h).scatter_(1, h.topk(self.k, dim=1).indices, 1.0)
