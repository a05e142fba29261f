"""BPDA's stages: how a total step budget splits over them, and which survivors a later stage attacks.

Part of :mod:`attacks.bpda` (Athalye et al., ICML 2018; the staged smooth-surrogate BPDA of
``benchmarks/STRENGTH.md``): ``stage_keep`` spends a later stage's steps on the samples closest to
misclassification (successive halving over samples). Shapes: indices ``[M]`` (int64, ascending), margins ``[M]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["closest_to_breaking", "split_steps"]


def split_steps(total: int, stages: int) -> list[int]:
    """Split ``total`` steps over ``stages`` (earlier stages get the remainder; at least one step each)."""
    base, rest = divmod(int(total), stages)
    return [max(1, base + (1 if i < rest else 0)) for i in range(stages)]


def closest_to_breaking(todo: Tensor, margin: Tensor, keep: float) -> Tensor:
    """The ``ceil(keep · len(todo))`` entries of ``todo`` (indices ``[M]``, ascending) whose ``margin`` (``[M]``,
    the best ``max_{j≠y} z_j - z_y`` found so far, all ``<= 0``) is largest — the samples closest to
    misclassification — in ascending order; ties go to the lower index. ``keep = 1``: ``todo`` itself."""
    if keep >= 1.0 or todo.numel() == 0:
        return todo
    n_keep = max(1, math.ceil(keep * todo.numel() - 1e-9))
    chosen = torch.sort(margin, descending=True, stable=True).indices[:n_keep]
    return todo[chosen.sort().values]

