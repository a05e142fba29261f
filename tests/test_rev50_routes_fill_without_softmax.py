"""A kWTA written as "losers to a large negative, then ReLU" gates units; only a softmax of such a fill routes
(:mod:`kwta_robust.routed_selections`: top-k attention, mixture-of-experts gating).

Session 49 compared a ranked tensor written in place against its copy from before, so ``h.masked_fill_(h < kth,
-1e9)`` followed by a ReLU (``x · mask`` on the positive winners: a dense kWTA, read as its gate before session 49)
was marked ``routes: "-inf"``: its gate dropped, so ``bpda_layers: auto`` left it out and BPDA kept its exact (zero)
gate gradients. The same fill out of place had been marked so already. A fill now routes where a softmax reads it,
or reads what still holds it (``filled / temperature``). Inputs ``[8, 1, 4, 4]``, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_NEG_INF


class FillThen(nn.Module):
    """``[B, 16]`` → linear ``[B, 32]`` → the 28 losers of each row set to ``-1e9`` (``in_place``: ``masked_fill_``)
    → ReLU (a dense kWTA, 4 of 32) or, ``then="softmax"``, a softmax over the 4 winners after a temperature
    (routing) → linear → ``[B, 3]``."""

    def __init__(self, in_place: bool, then: str) -> None:
        super().__init__()
        self.fc, self.out, self.in_place, self.then = nn.Linear(16, 32), nn.Linear(32, 3), in_place, then

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x.flatten(1))
        kth = h.topk(4, dim=1).values[:, -1:]
        h = h.masked_fill_(h < kth, -1e9) if self.in_place else h.masked_fill(h < kth, -1e9)
        return self.out(torch.relu(h) if self.then == "relu" else (h / 0.5).softmax(-1))


def _entry(in_place: bool, then: str) -> dict:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    (entry,) = selections_outside(FillThen(in_place, then).eval(), x, accounted=[])
    return entry


@pytest.mark.parametrize("in_place", [True, False])
def test_a_large_negative_fill_then_relu_is_a_kwta_gate_not_routing(in_place: bool) -> None:
    entry = _entry(in_place, "relu")
    assert "routes" not in entry  # was routes: "-inf"
    assert (entry["gate"], entry["k"], entry["group_size"]) == ("dense", 4, 32)


@pytest.mark.parametrize("in_place", [True, False])
def test_a_fill_a_softmax_reads_after_a_temperature_routes(in_place: bool) -> None:
    entry = _entry(in_place, "softmax")
    assert entry["routes"] == ROUTES_NEG_INF and "gate" not in entry
