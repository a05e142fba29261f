"""A max-pool winner-take-all gate (LWTA-like: ``h · (h == F.max_pool2d(h, 3, 1, 1))``, or one winner per 2 × 2
window, ``h == F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2)``) written in place on the pool's own input —
``h.mul_(h == p)``, ``h *= h == p``, ``h.mul_((h == p).float())``, ``h[h != p] = 0``, ``h.masked_fill_(h != p, 0)``
(keywords too) — or as ``g[h != p] = 0`` on a copy. Before, the layer probe noted its max-pool with no ``gate``
(``auto`` left the block out) and BPDA refused the block in one line ("builds 1 gates … relax only 0"): a user with
such a model could not run BPDA at all. Now the probe reads each as the pool gate (``gate: max-pool``) and ``auto``
acts on the block (kwta_robust/detect_selections.py); :mod:`attacks.pool_in_place` copies the pool's input before the
call writes it, so BPDA reads and relaxes the gate there. By the 1-D indices of ``nonzero`` it is still no gate BPDA
reads. Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import detect_layers

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
#: The in-place forms BPDA reads now (``copy_setitem``: on a copy of the pool's input; the others on that input).
IN_PLACE = ("mul_", "imul", "mul_float", "setitem", "masked_fill_", "keywords", "copy_setitem")
#: The pool the gate compares with: its own 3 × 3 window (stride 1), or one winner per 2 × 2 window.
POOLS = ("own", "window")


def pooled(h: Tensor, pool: str) -> Tensor:
    """``[B, C, H, W]``: each unit's window max (``own``) or its 2 × 2 window's max, upsampled (``window``)."""
    if pool == "own":
        return F.max_pool2d(h, 3, 1, 1)
    return F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest")


class Block(nn.Module):
    """``x + gate(conv(x))``, the max-pool gate written ``how`` (``out``: its out-of-place twin ``h * (h == p)``)."""

    def __init__(self, how: str, pool: str = "own") -> None:
        super().__init__()
        self.conv, self.how, self.pool = nn.Conv2d(8, 8, 3, padding=1), how, pool

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        p = pooled(h, self.pool)
        if self.how == "out":
            h = h * (h == p)
        elif self.how == "mul_":
            h.mul_(h == p)
        elif self.how == "imul":
            h *= h == p
        elif self.how == "mul_float":
            h.mul_((h == p).float())
        elif self.how == "setitem":
            h[h != p] = 0
        elif self.how == "masked_fill_":
            h.masked_fill_(h != p, 0.0)
        elif self.how == "keywords":
            h.masked_fill_(mask=h != p, value=0.0)
        elif self.how == "copy_setitem":
            g = h.clone()
            g[h != p] = 0
            h = g
        else:  # "nonzero"
            h[(h != p).nonzero(as_tuple=True)] = 0
        return x + h


def net(how: str, pool: str = "own") -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how, pool), nn.Flatten(),
                             nn.Linear(512, 10)).eval()


def read(how: str, pool: str = "own") -> tuple[list[tuple], dict]:
    detection = detect_layers(net(how, pool), X, log=False)
    return [(s["op"], s.get("gate"), s.get("in_place")) for s in detection.selections], detection.auto_targets()


@pytest.mark.parametrize("pool", POOLS)
def test_the_probe_reads_each_in_place_form_as_the_pool_gate_auto_acts_on(pool: str) -> None:
    assert read("out", pool) == ([("max_pool2d", "max-pool", None)], {"1": LayerTarget("inline")})
    for how in IN_PLACE:  # before: ("max_pool2d", None, None) and auto_targets {}
        assert read(how, pool) == ([("max_pool2d", "max-pool", None)], {"1": LayerTarget("inline")}), how
    # by nonzero's 1-D indices: still no gate BPDA reads, auto leaves the block out
    assert read("nonzero", pool) == ([("max_pool2d", None, None)], {})
