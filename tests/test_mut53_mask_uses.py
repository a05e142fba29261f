"""Mutation review of kwta_robust/mask_uses.py: how many gates the layer probe reads in a block whose selection's
0/1 mask is applied in each form the module follows — the mask as the first operand, ``torch.where`` and
``Tensor.where`` with 0, a masked fill or an indexed write of 0, a threshold broadcast with ``expand_as``, a mask
read as its gate (``.float()``) then applied twice, a mask applied to ``h - t`` — against the forms that apply no
gate (a ``where`` between two tensors, a fill or write of 1, a product with a parameter or with another 0/1 mask):
``gates: 2`` (BPDA must relax both, or refuses) against one gate (no ``gates``). Each miscount is a BPDA run whose
second mask cuts the gradient unseen, or a refusal of a block BPDA relaxes whole."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.detect import detect_layers

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
K = 128


class Block(nn.Module):
    """``x + gates(conv(x))`` written ``how``; ``f``: the conv's output ``[8, 256]``, ``m``: its top-k mask."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.c1, self.c2, self.how = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), how
        self.bias, self.scale = nn.Parameter(torch.linspace(0.1, 1.0, 256)), nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        f, f2, how = self.c1(x).flatten(1), self.c2(x).flatten(1), self.how
        t = f.topk(K, dim=1).values[:, -1:]
        if how == "expand_as":
            t = t.expand_as(f)
        elif how == "scaled":  # a threshold scaled by a parameter: still made from the selection alone
            t = t * self.scale
        m = f >= t
        if how == "float_twice":  # the float mask read as the gate, applied twice: the second application counts
            mf = m.float()
            return x + ((f * mf) * mf).view_as(x)
        if how == "mask_first":
            return x + (m * (m * f)).view_as(x)
        g = f * m
        if how == "mask_first_once":
            out = m * f
        elif how in ("where", "expand_as", "scaled"):
            out = torch.where(m, g, 0.0)
        elif how == "where_method":
            out = g.where(m, 0.0)
        elif how == "fill":
            out = g.masked_fill(~m, 0.0)
        elif how in ("write", "write_one"):
            out = f2.clone()
            out[~m] = 0.0 if how == "write" else 1.0
            out = g + out
        elif how == "float_once":
            out = f * m.float()
        elif how == "shifted":
            out = g + (f - t) * m
        elif how == "where_other":
            out = g + torch.where(m, f2, 0.5 * f2)
        elif how == "fill_one":
            out = g + f2.masked_fill(~m, 1.0)
        elif how == "parameter":
            out = g + self.bias * m
        elif how == "other_mask":
            out = g * (1 + (f2 > 0).float() * m)
        else:  # "once"
            out = g
        return x + out.view_as(x)


#: How many gates the probe reads (``None``: one, no ``gates`` on the entry).
GATES = {"mask_first": 2, "where": 2, "where_method": 2, "fill": 2, "write": 2, "float_twice": 2, "shifted": 2,
         "expand_as": 2, "scaled": 2, "where_other": None, "fill_one": None, "write_one": None, "parameter": None,
         "other_mask": None, "once": None, "float_once": 2, "mask_first_once": 2}


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(256, 10)).eval()


@pytest.mark.parametrize("how", list(GATES))
def test_the_gates_of_each_form(how: str) -> None:
    selections = detect_layers(net(how), X, log=False).selections
    assert [(s["op"], s.get("gate"), s.get("gates")) for s in selections] == [("topk", "dense", GATES[how])], how
