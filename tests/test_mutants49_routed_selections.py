"""Session 49's mutation review of :mod:`kwta_robust.routed_selections`: tests that kill the mutants the earlier
tests let live (the ``-1e4`` bound of a loser's fill, the two-winner rule counted along the last dim, an empty or
integer result, ``take_along_dim`` and a keyword ``index``, the gate keys a routing entry drops) and the fix of a
bug one of them showed: a top-k attention whose scores carry a causal mask (Zhao et al. 2019's decoder attention:
``-inf`` or ``-1e9`` above the diagonal before the ranking) was no routing and its module was advised for
``bpda_layers``, whose BPDA passes the gradient straight through the softmax. Inputs ``[4, 16]``, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_INDICES, ROUTES_NEG_INF, neg_filled, route_entries
from test_mutants48b_routes import BlockNet

S = torch.tensor([[0.3, -0.2, 0.9, 0.1], [0.5, 0.4, -0.1, 0.2]])
KEEP2 = S >= S.topk(2, dim=-1).values[..., -1:]


def test_a_fill_of_exactly_minus_1e4_is_a_losers_minus_inf_and_minus_5e3_is_not() -> None:
    """``-1e4`` (``-10000.0``, the attention-mask value of many half-precision transformers) is at the bound: read;
    ``-5e3`` above it is no ``-inf`` (kills NEG_FILL -1e3 / -1e5 and both ``<=`` made ``<``)."""
    assert neg_filled(S.masked_fill(~KEEP2, -1e4), [S])
    assert not neg_filled(S.masked_fill(~KEEP2, -5e3), [S])


def test_two_winners_are_counted_along_the_last_dim_not_the_first() -> None:
    """One winner per row, all in column 2 (three rows): a top-1 gate's mask after the softmax, no routing."""
    s = torch.tensor([[0.3, -0.2, 0.9, 0.1], [0.5, 0.4, 0.95, 0.2], [0.0, 0.1, 0.7, 0.2]])
    assert not neg_filled(s.masked_fill(s < s.amax(dim=-1, keepdim=True), float("-inf")), [s])


def test_a_copy_of_a_ranked_tensor_holding_minus_1e9_is_no_fill_and_an_empty_result_is_none() -> None:
    masked = S.masked_fill(torch.tensor([[False, True, False, False], [False, False, True, False]]), -1e9)
    assert not neg_filled(masked.clone(), [masked])  # nothing replaced (the mutant read fill[0] of no element)
    assert not neg_filled(torch.empty(0, 4), [S])  # the minimum of no element raised


def test_an_integer_result_is_no_softmax_input() -> None:
    s = torch.tensor([[3.0, -2.0, 9.0, 1.0], [5.0, 4.0, -1.0, 2.0]])
    assert not neg_filled(s.long().masked_fill(s < s.topk(2, dim=-1).values[..., -1:], -10 ** 9), [s])


def test_a_causal_mask_before_the_ranking_still_reads_the_top_k_fill() -> None:
    """The bug: a causal mask (``-inf`` or ``-1e9`` above the diagonal) applied before the top-3 made the scores
    not finite, or put the fill at their minimum, so the fill was no routing; winners are the elements kept above
    the bound (the masked ones are none: a top-1 stays a gate)."""
    scores = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(0))
    above = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for mask in (float("-inf"), -1e9):
        causal = scores.masked_fill(above, mask)
        top3 = causal.masked_fill(causal < causal.topk(3, dim=-1).values[..., -1:], float("-inf"))
        top1 = causal.masked_fill(causal < causal.amax(dim=-1, keepdim=True), mask)
        assert neg_filled(top3, [causal]) and neg_filled(torch.where(top3 > -1e30, top3, -1e9), [causal])
        assert not neg_filled(top1, [causal])
    causal = scores.masked_fill(above, float("-inf"))
    assert not neg_filled(causal.clamp(min=-1e4), [causal])  # only the mask's -inf raised: no value replaced


class CausalTopkAttention(nn.Module):
    """Rows of ``[B, 16]`` as 4 tokens of 4 → scores ``[B, 4, 4]`` with a causal ``-inf`` mask → top-2 attention."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 8)

    def forward(self, x: Tensor) -> Tensor:
        t = self.q(x.view(-1, 4, 4))
        scores = (t @ t.transpose(-1, -2)).masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf"))
        attn = scores.masked_fill(scores < scores.topk(2, dim=-1).values[..., -1:], float("-inf")).softmax(-1)
        return (attn @ t).flatten(1)


class Experts(nn.Module):
    """The router's top-2 of 6 experts picked from their outputs ``[B, 6, 4]`` by ``take_along_dim`` or by
    ``torch.gather`` with the indices as the keyword ``index``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.router, self.experts, self.how = nn.Linear(16, 6), nn.Linear(16, 24), how

    def forward(self, x: Tensor) -> Tensor:
        i = self.router(x).topk(2, dim=-1).indices.unsqueeze(-1)
        outs = self.experts(x).view(-1, 6, 4)
        if self.how == "take_along_dim":
            return torch.take_along_dim(outs, i, dim=1).sum(1)
        return torch.gather(outs, 1, index=i.expand(-1, -1, 4)).sum(1)


def _routes(block: nn.Module) -> list:
    torch.manual_seed(0)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    return [e.get("routes") for e in selections_outside(BlockNet(block), x, accounted=[]) if e["op"] == "topk"]


def test_a_causal_topk_attention_module_routes() -> None:
    assert _routes(CausalTopkAttention()) == [ROUTES_NEG_INF]  # was [None]: advised for bpda_layers


@pytest.mark.parametrize("how", ["take_along_dim", "gather_index_keyword"])
def test_experts_picked_by_take_along_dim_or_a_keyword_index_route(how: str) -> None:
    assert _routes(Experts(how)) == [ROUTES_INDICES]


def test_a_routing_entry_drops_every_inline_gate_key() -> None:
    """The keys a gate reading writes (a gate's kind, its k, group and seen k, the gates, ties broken) all go."""
    gate = {"gate": "topk", "k": 2, "group_size": 6, "k_seen": [2], "gates": 1, "ties_broken": True}
    entry = {"op": "topk", "kind": "selection", "modules": ["", "a1"], **gate}
    route_entries([entry], {("", "a1"): ROUTES_NEG_INF})
    assert entry == {"op": "topk", "kind": "selection", "modules": ["", "a1"], "routes": ROUTES_NEG_INF}
