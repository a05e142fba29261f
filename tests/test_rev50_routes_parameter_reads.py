"""A kWTA that reads a per-unit parameter at its winners is a gate, not routing (:mod:`kwta_robust.routed_selections`).

Session 49 let a parameter picked by a top-k's indices mark the selection as routing (``routes: "indices"``, for
mixture-of-experts code that picks the chosen experts' weights ``W[idx]``, ``[E, H, D]``). A plain kWTA with a learned
per-unit gain ``[1, H]`` read at the winners (``g[0, idx]``), or a scale ``[H, 1]`` (``s[idx]``: one element per
index), was then marked as routing too: its gate entry dropped, so ``bpda_layers: auto`` left the kWTA out and BPDA
ran with exact (zero) gate gradients. Only whole first-dim rows of several elements (an expert's weights) route.
Inputs ``[8, 1, 4, 4]``, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside


class GainKWTA(nn.Module):
    """``[B, 16]`` → linear ``[B, 32]`` → top-4 per row, the winners scaled by a learned gain read at their
    indices (``gain`` ``[1, 32]`` as ``gain[0, idx]``, or ``[32, 1]`` as ``gain[idx]``) and scattered back → linear
    → ``[B, 3]``: a dense kWTA (4 of 32) times a constant per unit."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc, self.out, self.how = nn.Linear(16, 32), nn.Linear(32, 3), how
        self.gain = nn.Parameter(torch.ones(1, 32) if how == "row" else torch.ones(32, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x.flatten(1))
        vals, idx = h.topk(4, dim=1)
        g = self.gain[0, idx] if self.how == "row" else self.gain[idx].squeeze(-1)
        return self.out(torch.zeros_like(h).scatter(1, idx, vals * g))


@pytest.mark.parametrize("how", ["row", "column"])
def test_a_kwta_reading_a_per_unit_gain_at_its_winners_is_a_gate_not_routing(how: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    (entry,) = selections_outside(GainKWTA(how).eval(), x, accounted=[])
    assert entry["op"] == "topk" and "routes" not in entry  # was routes: "indices"
    assert (entry["gate"], entry["k"], entry["group_size"]) == ("dense", 4, 32)
