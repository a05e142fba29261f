"""Tiny models and data for the attack tests (sklearn digits, 8×8, 10 classes; trained in about a second)."""

from __future__ import annotations

import functools

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

from kwta_robust.layers import KWTA, KWTA2d


def digits() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as ``[N, 1, 8, 8]`` float in [0, 1] and labels ``[N]``."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target, dtype=torch.long)


def small_cnn(activation: str = "relu") -> nn.Sequential:
    """Conv → BatchNorm → act → pool → linear → act → dropout → linear; ``activation`` is relu or kwta.

    The kWTA variant boosts (duty-cycle buffers that change in train mode), so it also checks that attacks
    never run the model in train mode.
    """

    def act2d() -> nn.Module:
        return nn.ReLU() if activation == "relu" else KWTA2d(ratio=0.5, mode="volume", boost_strength=1.0, num_units=8)

    def act1d() -> nn.Module:
        return nn.ReLU() if activation == "relu" else KWTA(ratio=0.3, boost_strength=1.0, num_units=32)

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), act2d(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(128, 32), act1d(), nn.Dropout(0.1), nn.Linear(32, 10),
    )


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int = 200, seed: int = 0) -> nn.Module:
    """Adam on random mini-batches, seeded without touching the global RNG; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _trained_state(activation: str, train_size: int) -> dict[str, Tensor]:
    x, y = digits()
    return train(small_cnn(activation), x[:train_size], y[:train_size]).state_dict()


def trained_cnn(activation: str = "relu", train_size: int = 1500) -> tuple[nn.Module, Tensor, Tensor]:
    """A fresh copy of a trained small CNN (trained once per session) and the held-out digits (297 samples)."""
    x, y = digits()
    model = small_cnn(activation)
    model.load_state_dict({k: v.clone() for k, v in _trained_state(activation, train_size).items()})
    return model.eval(), x[train_size:], y[train_size:]


def linear_binary(dim: int = 64, n: int = 48, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A fixed 2-class linear model on ``[N, 1, 8, 8]`` inputs and points in ``[0.25, 0.75]`` labelled by it.

    The decision boundary passes through the centre ``0.5 * 1``, so every point's Linf distance to it is at most
    0.25 and the exact worst case is known in closed form (:func:`boundary_distance`).
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, dim, generator=gen)
    linear = nn.Linear(dim, 2)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(-(w * 0.5).sum(dim=1))
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = 0.25 + 0.5 * torch.rand(n, 1, 8, 8, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def boundary_distance(model: nn.Sequential, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """Exact distance ``[N]`` from each point to the decision boundary of :func:`linear_binary`'s model.

    ``|z_y - z_o| / ||w_y - w_o||_q`` with the dual norm ``q`` (1 for Linf, 2 for L2).
    """
    linear = model[1]
    with torch.no_grad():
        z = model(x)
        margin = (z.gather(1, y[:, None]) - z.gather(1, 1 - y[:, None])).squeeze(1)
        dw = linear.weight[1] - linear.weight[0]
    dual = dw.abs().sum() if norm == "linf" else dw.norm(p=2)
    return margin.abs() / dual


class CountingModel(nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(int(x.shape[0]))
        return self.model(x)


def robust_flags(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """Per sample: whether ``model`` still classifies ``x_adv`` as ``y``; ``[N]`` bool."""
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y
