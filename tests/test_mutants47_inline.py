"""Mutation review of attacks/inline_gates.py's max-pool watch: a max-pool gate built under ``torch.no_grad`` (a
statistic) is not taken for the gate the ``forward`` returns, which BPDA still relaxes; and a max-pool gate that
zeroed nothing on a call (ReLU outputs with nothing positive) counts as relaxed (``InlineGates.zeroed_nothing``),
so the call runs with plain gradients; a result equal to its operand beside no 0/1 mask (``torch.maximum(f, f -
1)``) is no such gate and excuses no unread top-k gate. Inputs ``[4, 1, 8, 8]`` (``wild_kwta_models.X``),
seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from test_inline_gates_twogates import built, input_gradient

X = wild.X


class PoolGateWithStatistic(nn.Module):
    """``x + h · (h == max_pool(h))`` (3 × 3 windows, stride 1), the same gate first built under ``torch.no_grad``
    for a statistic kept in a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.register_buffer("kept", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(x)
        pooled = F.max_pool2d(h, 3, 1, 1)
        with torch.no_grad():
            self.kept.copy_((h * (h == pooled) != 0).float().mean())
        return x + h * (h == pooled)


class SilentPoolGate(nn.Module):
    """``x + r · (r == max_pool(r))``, ``r = relu(c1(x) - shift)``: with a large ``shift`` nothing is positive, and
    the gate zeroes nothing."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.c1, self.shift = nn.Conv2d(4, 4, 3, padding=1), shift

    def forward(self, x: Tensor) -> Tensor:
        r = (self.c1(x) - self.shift).relu()
        return x + r * (r == F.max_pool2d(r, 3, 1, 1))


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_pool_gate_under_no_grad_does_not_take_the_place_of_the_returned_one(backward: str) -> None:
    model = built(PoolGateWithStatistic)
    plain = input_gradient(model, X, {}, backward)
    relaxed = input_gradient(model, X, {"1": LayerTarget("inline")}, backward)
    assert torch.isfinite(relaxed).all() and (relaxed - plain).abs().max() > 1e-4


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_pool_gate_that_zeroed_nothing_runs_with_plain_gradients(backward: str) -> None:
    model = built(lambda: SilentPoolGate(100.0))
    plain = input_gradient(model, X, {}, backward)
    assert torch.equal(input_gradient(model, X, {"1": LayerTarget("inline")}, backward), plain)


class InPlaceGateBesideAnEqualResult(nn.Module):
    """A top-k gate written in place (``f[(f < t).nonzero(as_tuple=True)] = 0``, no result shows it; ``g[f < t] = 0``
    on a copy and ``f.mul_(f >= t)`` are read since attacks/mask_assign.py) beside ``torch.maximum(f, f - 1)``, a
    result equal to its operand ``f`` bit for bit whose other operand is no 0/1 mask: no gate that zeroed nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        t = f.topk(51, dim=1).values[:, -1:]
        f[(f < t).nonzero(as_tuple=True)] = 0
        return x + (f + torch.maximum(f, f - 1)).view_as(x)


def test_a_result_equal_to_its_operand_beside_no_mask_does_not_excuse_an_unread_gate() -> None:
    model = built(InPlaceGateBesideAnEqualResult)
    with pytest.raises(AttackConfigError, match="ran a top-k selection in its forward but built no gate BPDA could"):
        input_gradient(model, X, {"1": LayerTarget("inline")}, "smooth")
