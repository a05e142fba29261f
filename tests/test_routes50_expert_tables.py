"""Mixture-of-experts routing (Shazeer et al. 2017) whose router's top-2 indices ``[B, 2]`` pick the chosen experts'
weights from a table ``[E, ...]`` however the model holds or reads it — ``F.embedding(idx, W)``, an ``nn.Embedding``
child called with the indices, or a buffer ``W[idx]`` (``register_buffer``) — routes (``routes: "indices"``,
:mod:`kwta_robust.routed_selections`). Before, only a parameter indexed or ``index_select``-ed in the router's own
``forward`` was read as routing; these were flagged as an unread top-k with the advice to move it into a module of
its own for BPDA (whose straight-through gradient would skip the expert choice). An embedding of ids no top-k made
(token ids quantized from the input) beside a kWTA, and a buffer of one-hot rows picked by a kWTA's indices (its 0/1
mask), are no routing: their gates stay. Inputs ``[4, 16]`` and ``[4, 1, 28, 28]``, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_INDICES
from test_routes49_expert_weights import assert_flagged_as_routing


class ExpertTable(nn.Module):
    """``[B, D]`` → the router's top-2 of 6 experts → their weights ``[B, 2, H, D]`` read from a table of 6 rows
    (``embedding``: ``F.embedding(i, w)``, a parameter ``[6, H·D]``; ``module``: an ``nn.Embedding(6, H·D)`` child;
    ``buffer``: ``w[i]``, a buffer ``[6, H, D]``) → ReLU of each chosen expert, weighted by the softmax of the top-2
    logits → ``[B, H]``."""

    def __init__(self, d: int, h: int, how: str) -> None:
        super().__init__()
        self.router, self.how, self.h, self.d = nn.Linear(d, 6), how, h, d
        w = torch.randn(6, h * d) / d ** 0.5
        if how == "buffer":
            self.register_buffer("w", w.view(6, h, d).clone())
        elif how == "module":
            self.table = nn.Embedding(6, h * d, _weight=w.clone())
        else:
            self.w = nn.Parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.router(x)
        v, i = logits.topk(2, dim=-1)
        if self.how == "buffer":
            w = self.w[i]
        elif self.how == "module":
            w = self.table(i).view(*i.shape, self.h, self.d)
        else:
            w = F.embedding(i, self.w).view(*i.shape, self.h, self.d)
        return (v.softmax(-1).unsqueeze(-1) * torch.relu(torch.einsum("bd,bkhd->bkh", x, w))).sum(1)


class TokensThenKwta(nn.Module):
    """``[B, D]`` quantized to token ids ``[B, D]`` in 0..9, embedded (``nn.Embedding(10, 8)``), averaged → ``[B,
    8]`` → a top-3 kWTA ``h · (h ≥ kth)``: the ids come from no top-k, so no routing."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(10, 8)

    def forward(self, x: Tensor) -> Tensor:
        h = self.tokens((x * 9.99).long()).mean(1)
        return h * (h >= h.topk(3, dim=1).values[:, -1:])


class OneHotBuffer(nn.Module):
    """``[B, D]`` → logits ``[B, 6]`` → a top-2 kWTA whose 0/1 mask is rows of a buffer ``eye(6)`` picked by its
    indices, summed: a gate, no routing."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.router = nn.Linear(d, 6)
        self.register_buffer("eye", torch.eye(6))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.router(x)
        return logits * self.eye[logits.topk(2, dim=-1).indices].sum(1)


class Net(nn.Module):
    def __init__(self, d: int, how: str) -> None:
        super().__init__()
        self.a1, self.head = ExpertTable(d, 16, how), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a1(x.flatten(1)))


class Beside(nn.Module):
    """The three side by side on ``[B, 16]``: token ids embedded then a kWTA (``tokens``), a kWTA masked by one-hot
    rows of a buffer (``one_hot``), an expert router reading a buffer (``experts``); outputs joined → ``[B, 3]``."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.one_hot, self.experts = TokensThenKwta(), OneHotBuffer(16), ExpertTable(16, 16, "buffer")
        self.head = nn.Linear(8 + 6 + 16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.cat([self.tokens(x), self.one_hot(x), self.experts(x)], dim=1))


def _topk(model: nn.Module) -> list[dict]:
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    return [e for e in selections_outside(model, x, accounted=[]) if e["op"] == "topk"]


@pytest.mark.parametrize("how", ["embedding", "module", "buffer"])
def test_expert_weights_looked_up_or_held_in_a_buffer_by_the_top2_indices_route(how: str) -> None:
    torch.manual_seed(0)
    found = _topk(Net(16, how))
    assert [e["modules"] for e in found] == [["", "a1"]]  # the router's forward, not the nn.Embedding child's
    assert [e.get("routes") for e in found] == [ROUTES_INDICES]  # was [None]: advised to move into a module for BPDA
    assert "gate" not in found[0]


def test_beside_an_expert_table_an_embedding_of_token_ids_and_one_hot_rows_of_a_buffer_stay_gates() -> None:
    torch.manual_seed(0)
    found = {e["modules"][-1]: e for e in _topk(Beside())}
    assert found["experts"].get("routes") == ROUTES_INDICES  # was None
    for name, k in (("tokens", 3), ("one_hot", 2)):
        assert "routes" not in found[name] and (found[name]["gate"], found[name]["k"]) == ("dense", k)


def test_an_nn_embedding_expert_router_is_flagged_as_routing_not_advised_for_bpda() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Net(784, "module").eval()
    assert_flagged_as_routing(model)
