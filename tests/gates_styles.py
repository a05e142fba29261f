"""Inline kWTA styles the harness did not read (issue 7, "any model"), each ``x + gate(conv(x))`` in a residual
block's own ``forward`` on ``wild_kwta_models.X`` (16 × 1 × 8 × 8), 51 winners of 256 units per sample:

* ``quantile``: ``h · (h ≥ torch.quantile(h, 0.8, dim=1, keepdim=True))`` — float rounding at the quantile's integer
  position keeps 51 winners in some samples and 52 in others (no constant count);
* ``scatter_gather``: ``zeros_like(h).scatter(1, idx, h.gather(1, idx))``, ``idx = h.topk(k).indices``;
* ``scatter_gather_``: the same with the in-place ``scatter_``;
* ``scatter_values_``: ``zeros_like(h).scatter_(1, idx, vals)`` with ``vals, idx = h.topk(k)``;
  (each scattered gate is reshaped by ``.view(h.shape)``, not ``.view_as(h)``, whose operand ``h`` would let the
  gate be read from ``h`` and never from the tensor the selection ranked);
* ``one_hot`` / ``one_hot_min``: ``F.one_hot(h.argmax(1), C).permute(0, 3, 1, 2) · h`` (``argmin``): one winner of
  the 4 channels at each location (``"local"``), from an operation no selection watch noted;
* local winner-take-all (LWTA; Srivastava et al. 2013, Panousis et al. 2021) over blocks of 2 of the 4 channels,
  ``v = h.view(B, 2, 2, H, W)`` (``"block-2"``, k = 1), its mask by ``v == v.amax(2, keepdim=True)``
  (``lwta_amax``), by ``torch.max(v, 2)``'s values (``lwta_max``) or scattered at its indices (``lwta_indices``: a
  0/1 mask of ``h``), or applied to the blocks' view before ``.view_as(h)`` (``lwta_view``);
* ``magnitude``: top-k on magnitudes keeping the sign, ``h · (|h| ≥ |h|.topk(k).values[:, -1:])``;
* spatial winner-take-all from a max-pool, which no grouping reads (noted, flagged, not relaxed): by equality with a
  max-pool of stride 1, ``h · (h == F.max_pool2d(h, 3, 1, 1))`` (``pool_max``), or the max-unpool sparse code,
  ``F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2)`` (``max_unpool``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wild_kwta_models import Conv, Lambda, seeded

K = 51  # int(0.2 · 256)


def quantile(h: Tensor) -> Tensor:
    f = h.flatten(1)
    return (f * (f >= torch.quantile(f, 1 - 0.2, dim=1, keepdim=True))).view_as(h)


def scatter_gather(h: Tensor) -> Tensor:
    f = h.flatten(1)
    idx = f.topk(K, dim=1).indices
    return torch.zeros_like(f).scatter(1, idx, f.gather(1, idx)).view(h.shape)


def scatter_gather_(h: Tensor) -> Tensor:
    f = h.flatten(1)
    idx = f.topk(K, dim=1).indices
    return torch.zeros_like(f).scatter_(1, idx, f.gather(1, idx)).view(h.shape)


def scatter_values_(h: Tensor) -> Tensor:
    f = h.flatten(1)
    vals, idx = f.topk(K, dim=1)
    out = torch.zeros_like(f)
    out.scatter_(1, idx, vals)  # the tensor, not the value scatter_ returns, goes on
    return out.view(h.shape)


def one_hot(h: Tensor) -> Tensor:
    return F.one_hot(h.argmax(1), h.shape[1]).permute(0, 3, 1, 2) * h


def one_hot_min(h: Tensor) -> Tensor:
    return F.one_hot(h.argmin(1), h.shape[1]).permute(0, 3, 1, 2) * h


def blocks(h: Tensor) -> Tensor:
    """``[B, C, H, W]`` → ``[B, C / 2, 2, H, W]``: LWTA's blocks of 2 channels."""
    return h.view(h.shape[0], h.shape[1] // 2, 2, *h.shape[2:])


def lwta_amax(h: Tensor) -> Tensor:
    v = blocks(h)
    return h * (v == v.amax(2, keepdim=True)).view_as(h)


def lwta_max(h: Tensor) -> Tensor:
    v = blocks(h)
    values, _ = torch.max(v, 2, keepdim=True)
    return h * (v == values).view_as(h)


def lwta_indices(h: Tensor) -> Tensor:
    v = blocks(h)
    _, idx = torch.max(v, 2, keepdim=True)
    return h * torch.zeros_like(v).scatter_(2, idx, 1.0).view_as(h)


def lwta_view(h: Tensor) -> Tensor:
    v = blocks(h)
    return (v * (v == v.max(2, keepdim=True)[0])).view_as(h)


def magnitude(h: Tensor) -> Tensor:
    f = h.flatten(1)
    return (f * (f.abs() >= f.abs().topk(K, 1).values[:, -1:])).view_as(h)


def pool_max(h: Tensor) -> Tensor:
    return h * (h == F.max_pool2d(h, 3, 1, 1))


def max_unpool(h: Tensor) -> Tensor:
    return F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2, output_size=h.shape[-2:])


STYLES: dict[str, Callable[[Tensor], Tensor]] = {
    "quantile": quantile, "scatter_gather": scatter_gather, "scatter_gather_": scatter_gather_,
    "scatter_values_": scatter_values_, "one_hot": one_hot, "one_hot_min": one_hot_min, "lwta_amax": lwta_amax,
    "lwta_max": lwta_max, "lwta_indices": lwta_indices, "lwta_view": lwta_view, "magnitude": magnitude,
    "pool_max": pool_max, "max_unpool": max_unpool}


class Block(nn.Module):
    """``x + gate(conv(x))``, the gate written inline (a function call in this ``forward``)."""

    def __init__(self, gate: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.conv, self.gate = nn.Conv2d(4, 4, 3, padding=1), gate

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gate(self.conv(x))


def net(style: str) -> nn.Module:
    """stem conv → :class:`Block` with the gate ``style`` → linear head (module ``"1"`` is the block)."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(STYLES[style]), nn.Flatten(),
                                        nn.Linear(256, 3)))


def module_net(style: str) -> nn.Module:
    """The gate ``style`` as a module of its own, twice: conv → gate → conv → gate → linear head (``a1``, ``a2``)."""
    return seeded(lambda: Conv(Lambda(STYLES[style]), Lambda(STYLES[style])))


def quantile_net() -> nn.Module:
    return net("quantile")


def scatter_values_net() -> nn.Module:
    return net("scatter_values_")


def argmax_then_relu(h: Tensor) -> Tensor:
    """No gate: an ``argmax`` whose index is only added (a position code), then a ReLU."""
    return torch.relu(h) + 0.1 * h.argmax(1, keepdim=True).to(h.dtype)
