"""Mixture-of-experts top-k routing (Shazeer et al. 2017) that picks the chosen experts' *weights*, a parameter
``[E, H, D]``, by the router's top-k indices ``[B, k]`` — ``W[idx]`` or ``torch.index_select(W, 0, idx.flatten())``,
as efficient MoE code does instead of running every expert — routes (``routes: "indices"``,
:mod:`kwta_robust.routed_selections`). Before, an index source had to be ``[batch, ...]``, so such a router was
flagged as an unread top-k with the advice to move it into a module of its own for BPDA (whose straight-through
gradient would skip the expert choice). Indices picking rows of a constant (``torch.eye(N)[idx]``: a kWTA's 0/1 mask
built from one-hot rows) are no routing. Inputs ``[4, 16]`` and ``[4, 1, 28, 28]``, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_INDICES
from test_fuzz46_fixed_seeds import CONFIG


class ExpertWeights(nn.Module):
    """``[B, D]`` → the router's top-2 of 6 experts → their weights ``[B, 2, H, D]`` picked from the parameter
    ``w`` ``[6, H, D]`` (``index``: ``w[i]``; ``index_select``) → ReLU of each chosen expert, weighted by the
    softmax of the top-2 logits → ``[B, H]``; ``one_hot``: a kWTA of ``[B, 6]`` whose mask is ``eye(6)[i].sum(1)``."""

    def __init__(self, d: int, h: int, how: str) -> None:
        super().__init__()
        self.router, self.how = nn.Linear(d, 6), how
        self.w = nn.Parameter(torch.randn(6, h, d) / d ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.router(x)
        v, i = logits.topk(2, dim=-1)
        if self.how == "one_hot":
            return logits * torch.eye(6)[i].sum(1)
        if self.how == "index":
            w = self.w[i]
        else:
            w = torch.index_select(self.w, 0, i.flatten()).view(*i.shape, *self.w.shape[1:])
        return (v.softmax(-1).unsqueeze(-1) * torch.relu(torch.einsum("bd,bkhd->bkh", x, w))).sum(1)


class Net(nn.Module):
    def __init__(self, d: int, how: str) -> None:
        super().__init__()
        self.a1, self.head = ExpertWeights(d, 16, how), nn.Linear(16 if how != "one_hot" else 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a1(x.flatten(1)))


def _routes(how: str) -> list:
    torch.manual_seed(0)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    return [e.get("routes") for e in selections_outside(Net(16, how), x, accounted=[]) if e["op"] == "topk"]


@pytest.mark.parametrize("how", ["index", "index_select"])
def test_expert_weights_picked_from_a_parameter_by_the_top2_indices_route(how: str) -> None:
    assert _routes(how) == [ROUTES_INDICES]  # was [None]: an unread top-k, advised to move into a module for BPDA


def test_one_hot_rows_of_a_constant_picked_by_a_kwtas_indices_do_not_route() -> None:
    assert _routes("one_hot") == [None]


def test_an_expert_weight_router_is_flagged_as_routing_not_advised_for_bpda() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Net(784, "index").eval()
    assert_flagged_as_routing(model)


def assert_flagged_as_routing(model: nn.Module) -> None:
    """``model`` (its router's forward named ``a1``) evaluated end to end: its top-k marked ``routes: indices``, BPDA
    acting on nothing, one critical ``selections-outside-layers`` flag saying it routes (tests/test_routes50_*)."""
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    record = evaluate_model(model, CONFIG, x, y, threads=1)
    assert [s.get("routes") for s in record.detection["selections"] if s["op"] == "topk"] == [ROUTES_INDICES]
    assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{}, {}]
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical"
    assert "a1: a top-k that routes rather than gates units" in flags[0].message
    assert "do not name a1 in bpda_layers" in flags[0].message and "move the selection" not in flags[0].message
