"""A block whose ``forward`` gates by a max-pool mask (LWTA-like: ``w = h == upsampled F.max_pool2d(h, 2, 2)``, one
winner per 2 × 2 window) and then by a top-k of the result (``f · (f ≥ kth)``, 100 of 512): what the layer probe says
and whether BPDA relaxes what it claims to. Out of place, ``h * w``: two gates, both read (``max-pool`` and ``dense``,
``gates`` 2) and relaxed. Made in place on a copy, ``g = h.clone(); g.mul_(w)``: the probe reads the pool gate as made
in place (no ``gate``) but counts 2; BPDA read ``g`` as the pool gate of ``h`` and counted it relaxed, yet returned
the relaxed value from ``mul_``, which the forward drops — the mask's own backward ran, cutting the gradient while
the call passed BPDA's count (identity surrogate: a gradient of 46.9 against the straight-through 52.7, unflagged).
Now the relaxation is written into ``g`` in place (:meth:`attacks.inline_gates.InlineGates._relaxed_pool`), as for a
top-k gate made in place: the twin's gradients. Made in place on the pool's input itself (``h.mul_(w)``, ``h[~w] =
0``: its values gone) BPDA refused in one line; it now reads the gate against a copy made before the call
(attacks/pool_in_place.py) and relaxes it as the twin, and the probe reads all three forms as the pool gate
(``max-pool``). By the 1-D indices of ``nonzero`` it still refuses.
Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import detect_layers
from tests.test_inplace51_index_forms import bpda_gradient, exact_gradient, robust_correct

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class Block(nn.Module):
    """``x + topk(pool_gate(conv(x)))``, the max-pool gate written ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(8, 8, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        w = h == F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest")
        if self.how == "out":
            h = h * w
        elif self.how == "copy_mul_":
            g = h.clone()
            g.mul_(w)
            h = g
        elif self.how == "mul_":
            h.mul_(w)
        elif self.how == "setitem":
            h[~w] = 0
        else:  # "nonzero"
            h[(~w).nonzero(as_tuple=True)] = 0
        f = h.flatten(1)
        return x + (f * (f >= f.topk(100, dim=1).values[:, -1:])).view_as(h)


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(512, 10)).eval()


def read(how: str) -> tuple[list[tuple], dict]:
    detection = detect_layers(net(how), X, log=False)
    return [(s["op"], s.get("gate"), s.get("gates")) for s in detection.selections], detection.auto_targets()


def test_bpda_relaxes_both_gates_it_counts_and_refuses_where_it_cannot_and_attacks_as_well_as_pgd() -> None:
    target = {"1": LayerTarget("inline", gates=2)}
    assert read("out") == ([("max_pool2d", "max-pool", 2), ("topk", "dense", 2)], target)
    for how in ("copy_mul_", "mul_", "setitem"):
        assert read(how) == ([("max_pool2d", "max-pool", 2), ("topk", "dense", 2)], target), how
    assert read("nonzero") == ([("max_pool2d", None, None), ("topk", "dense", 2)], target)
    exact = exact_gradient(net("out"), X)
    for backward in ("identity", "smooth"):
        twin_out, twin_grad = bpda_gradient(net("out"), backward, target["1"])
        assert not torch.allclose(twin_grad, exact, rtol=1e-3, atol=1e-5)
        for how in ("copy_mul_", "mul_", "setitem"):  # before: the pool mask's own backward; refused
            out, grad = bpda_gradient(net(how), backward, target["1"])
            assert torch.equal(out, twin_out)
            assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), (how, backward)
        with pytest.raises(AttackConfigError) as caught:
            bpda_gradient(net("nonzero"), backward, target["1"])
        assert "\n" not in str(caught.value) and str(caught.value).startswith(
            "BPDA layer '1' (Block) builds 2 gates in its forward, max-pool winner-take-all ones among them (read "
            "by the layer probe), but BPDA could read and relax only 1 of them there")

    model = net("copy_mul_")  # and BPDA smooth through both relaxed gates does at least as well as PGD
    with torch.no_grad():
        y = model(X).argmax(1)
    pgd, bpda = robust_correct(model, X, y, 0.03, layers=target)
    assert bpda <= pgd and bpda < len(y), (pgd, bpda)
