"""The in-place kWTA block of the in-place BPDA tests (tests/test_inplace50_setitem_kwta.py,
tests/test_mulinplace50_ranked_kwta.py): ``x + kwta(conv(x))`` with the kWTA over each sample's 256 units written
inline in the block's ``forward``, one form per name, and the seeded model around it (conv ``[N, 1, 8, 8]`` → block
→ linear 10)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: The forms of the kWTA :class:`Block` writes: out of place, in place on a copy, in place on the ranked tensor.
FORMS = ("out", "copy_masked_fill_", "setitem", "raw", "mul_", "imul", "masked_fill_", "conv_mul_")


class Block(nn.Module):
    """``x + kwta(conv(x))``, the kWTA keeping the ``k`` largest of each sample's 256 units written ``how``:
    ``"out"`` ``h * (h >= kth)``; on a copy, ``"copy_masked_fill_"`` ``h.clone().masked_fill_(h < kth, 0)`` and
    ``"setitem"`` ``g[h < kth] = 0``; on the ranked tensor ``h = c.flatten(1)`` (the conv output itself where it is
    contiguous, a copy where channels-last), ``"mul_"``, ``"imul"`` and ``"masked_fill_"``; on the conv output ranked
    through its view, ``"raw"`` ``c[(h < kth).view_as(c)] = 0.0`` and ``"conv_mul_"`` ``c.mul_((h >= kth).view_as(c))``.
    """

    def __init__(self, how: str, k: int) -> None:
        super().__init__()
        if how not in FORMS:
            raise ValueError(f"how: unknown form {how!r}; use one of {', '.join(FORMS)}")
        self.conv, self.how, self.k = nn.Conv2d(4, 4, 3, padding=1), how, k

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv(x)
        h = c.flatten(1)
        kth = h.topk(self.k, dim=1).values[:, -1:]
        if self.how == "out":
            h = h * (h >= kth)
        elif self.how == "copy_masked_fill_":
            h = h.clone().masked_fill_(h < kth, 0)
        elif self.how == "setitem":  # on a copy
            g = h.clone()
            g[h < kth] = 0
            h = g
        elif self.how == "raw":
            c[(h < kth).view_as(c)] = 0.0
        elif self.how == "mul_":
            h.mul_(h >= kth)
        elif self.how == "imul":
            h *= h >= kth
        elif self.how == "masked_fill_":
            h.masked_fill_(h < kth, 0)
        else:  # "conv_mul_"
            c.mul_((h >= kth).view_as(c))
            h = c.flatten(1)
        return (x.flatten(1) + h).view_as(x)  # no view of the gate (a view of a gate made in place read as one before)


def net(how: str, k: int, channels_last: bool = False) -> nn.Module:
    """Conv ``[N, 1, 8, 8]`` → :class:`Block` (``how``, ``k``) → linear 10, seeded (the global RNG untouched);
    ``channels_last``: the model's weights in that memory format (as ``evaluate_model`` may run them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how, k), nn.Flatten(), nn.Linear(256, 10)).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model
