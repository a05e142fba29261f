"""The *foreign twin* of the package's small kWTA CNN: the same network written as a user would write it, outside
the package, with its k-Winners-Take-All gates as a plain top-k module that knows nothing of ``kwta_robust``.

It computes the same function as ``create_model("cnn", activation=kwta(ratio))`` (volume mode in the convolutional
blocks, dense in the hidden layer; Xiao et al., ICLR 2020): keep, per sample, every entry that is ``>=`` the k-th
largest of the sample's activations, ``k = max(1, floor(ratio · size))``, zero the rest. Its module names match the
package model, so the package checkpoint's ``state_dict`` loads into it, and the logits are bit-identical
(:func:`check_bit_identical`). The strength benchmark loads it like a user's own model
(``load_byo_model("benchmarks._foreign:foreign_kwta_cnn", weights=..., factory_kwargs={"ratio": r})``): BPDA only
acts on gates it can find, so this model shows what the suites do to kWTA the package did not build.

Shapes: inputs ``[N, 1, 28, 28]`` in [0, 1] → logits ``[N, 10]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MNIST5K_MEAN, MNIST5K_STD = 0.1307, 0.3081


class TopK(nn.Module):
    """Keep, per sample, the entries ``>=`` the k-th largest over all non-batch dims (``[N, ...] → [N, ...]``)."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        k = max(1, int(math.floor(self.ratio * flat.shape[1] + 1e-9)))
        kth = flat.topk(k, dim=1).values[:, -1:]
        return (flat * (flat >= kth).to(x.dtype)).view_as(x)


class Standardize(nn.Module):
    """``(x - mean) / std`` with the statistics in buffers named like the package's ``Normalize``."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 1, 1, 1), mean))
        self.register_buffer("std", torch.full((1, 1, 1, 1), std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ForeignCNN(nn.Module):
    """conv5×5-16 → max-pool → top-k → conv5×5-32 → max-pool → top-k → fc-256 → top-k → fc-10."""

    def __init__(self, ratio: float, mean: float = MNIST5K_MEAN, std: float = MNIST5K_STD) -> None:
        super().__init__()
        self.normalize = Standardize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.MaxPool2d(2), TopK(ratio),
            nn.Conv2d(16, 32, 5, padding=2), nn.MaxPool2d(2), TopK(ratio),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 256), TopK(ratio), nn.Linear(256, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))


def foreign_kwta_cnn(ratio: float = 0.1) -> ForeignCNN:
    """The model factory (``benchmarks._foreign:foreign_kwta_cnn``); load the package checkpoint's weights into it."""
    return ForeignCNN(ratio).eval()


def check_bit_identical(package_model: nn.Module, foreign: nn.Module, x: Tensor, batch_size: int = 500) -> None:
    """Raise ``RuntimeError`` unless both models give bit-identical logits on ``x`` ``[N, 1, 28, 28]``."""
    with torch.no_grad():
        for chunk in x.split(batch_size):
            a, b = package_model(chunk), foreign(chunk)
            if not torch.equal(a, b):
                diff = float((a - b).abs().max())
                raise RuntimeError(f"foreign twin: logits differ from the package model's (max |diff| {diff:.3g})")
