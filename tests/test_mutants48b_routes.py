"""Session 48's second mutation review of kwta_robust.routed_selections: neg_filled reads one fill value below
every ranked value (not a clamp, not a shift), two kept in any row; RoutingWatch ranks only tensors ``[batch, ...]``,
takes indices picking a 2-D tensor as routing, and keeps a forward's first routing form. Inputs ``[4, 16]``, seeded."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_INDICES, ROUTES_NEG_INF, neg_filled


def test_neg_filled_wants_one_fill_below_every_ranked_value_and_two_kept_in_some_row() -> None:
    s = torch.tensor([[0.3, -0.2, 0.9, 0.1], [0.5, 0.4, -0.1, 0.2]])
    keep = s >= s.topk(2, dim=-1).values[..., -1:]
    assert neg_filled(s.masked_fill(~keep, -1e9), [s])
    assert not neg_filled(torch.where(keep, s, s - 1e5), [s])  # losers shifted, each its own value: no one fill
    deep = torch.tensor([[0.3, -5e4, 0.9, -3e4], [0.5, 0.4, -0.1, 0.2]])
    assert not neg_filled(deep.clamp(min=-1e4), [deep])  # a clamp: its value is above ranked values it replaced
    mixed = s.masked_fill(torch.tensor([[True, True, False, True], [True, False, False, True]]), float("-inf"))
    assert neg_filled(mixed, [s])  # one winner in row 0, two in row 1: a softmax over two somewhere


class BlockNet(nn.Module):
    """A model whose one child ``block`` does the work: the module the routing watch names (its stack)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class FixedFeatures(nn.Module):
    """A learned feature choice: the 8 features of ``importance`` ``[2, 16]`` (no batch dim) picked from ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.importance = nn.Parameter(torch.randn(2, 16))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.importance.topk(8, dim=-1).indices[0]]


class PickColumns(nn.Module):
    """A router's top-2 of 6 slots picking columns of the 2-D input ``[B, 16]`` (a tensor not shaped like the
    router's logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.router = nn.Linear(16, 6)

    def forward(self, x: Tensor) -> Tensor:
        return x.gather(1, self.router(x).topk(2, dim=-1).indices)


class WeightsThenGather(nn.Module):
    """Top-2 of 6 experts: a softmax over the logits scattered into ``-inf`` (routes "-inf", first), then the
    chosen experts' outputs ``[B, 6, 4]`` gathered by the indices."""

    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(16, 6), nn.Linear(16, 24)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.router(x)
        v, i = logits.topk(2, dim=-1)
        w = torch.full_like(logits, float("-inf")).scatter(-1, i, v).softmax(-1)
        outs = self.experts(x).view(-1, 6, 4)
        return (w.gather(1, i).unsqueeze(-1) * outs.gather(1, i.unsqueeze(-1).expand(-1, -1, 4))).sum(1)


def _topk_entries(block: nn.Module) -> list[dict]:
    torch.manual_seed(0)
    net = BlockNet(block)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    return [e for e in selections_outside(net, x, accounted=[]) if e["op"] == "topk"]


def test_a_topk_of_a_tensor_without_the_batch_dim_is_no_routing() -> None:
    entries = _topk_entries(FixedFeatures())
    assert len(entries) == 1 and "routes" not in entries[0]


def test_indices_picking_a_2d_tensor_of_another_shape_route() -> None:
    assert [e.get("routes") for e in _topk_entries(PickColumns())] == [ROUTES_INDICES]


def test_a_forward_keeps_its_first_routing_form() -> None:
    assert [e.get("routes") for e in _topk_entries(WeightsThenGather())] == [ROUTES_NEG_INF]


class UnitTopk(nn.Module):
    """A kWTA written by hand: the top-4 of ``x`` ``[B, 16]`` gathered by their indices and scattered back."""

    def forward(self, x: Tensor) -> Tensor:
        i = x.topk(4, dim=-1).indices
        return torch.zeros_like(x).scatter(-1, i, x.gather(-1, i))


def test_indices_gathering_the_ranked_tensor_itself_are_a_unit_topk_not_routing() -> None:
    entries = _topk_entries(UnitTopk())
    assert len(entries) == 1 and "routes" not in entries[0] and entries[0].get("gate")


class SelectExperts(nn.Module):
    """The router's top-2 of 6 experts ``index_select``-ed from their outputs ``[B, 6, 4]``, then a sign step."""

    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(16, 6), nn.Linear(16, 24)

    def forward(self, x: Tensor) -> Tensor:
        i = self.router(x).topk(2, dim=-1).indices
        return torch.sign(self.experts(x).view(-1, 6, 4).index_select(1, i.flatten()).mean(1))


def test_experts_picked_by_index_select_route_and_only_the_selection_entry_says_so() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    entries = selections_outside(BlockNet(SelectExperts()), x, accounted=[])
    assert [e.get("routes") for e in entries if e["op"] == "topk"] == [ROUTES_INDICES]
    steps = [e for e in entries if e["kind"] == "step"]
    assert steps and not any("routes" in e for e in steps)


class HeadsFlattened(nn.Module):
    """Top-2 attention over 2 heads: the k-th score read on ``[B, 2, 4, 4]``, the ``-inf`` fill and the softmax on
    its ``[B·2, 4, 4]`` view (heads flattened into the batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 16)

    def forward(self, x: Tensor) -> Tensor:
        t = self.q(x.view(-1, 4, 4)).view(-1, 4, 2, 8).transpose(1, 2)
        scores = t @ t.transpose(-1, -2)
        kth = scores.topk(2, dim=-1).values[..., -1:]
        flat = scores.flatten(0, 1)
        attn = flat.masked_fill(flat < kth.flatten(0, 1), float("-inf")).softmax(-1)
        return (attn @ t.flatten(0, 1)).reshape(x.shape[0], -1)


def test_a_topk_attention_filled_on_a_view_with_the_heads_in_the_batch_routes() -> None:
    assert [e.get("routes") for e in _topk_entries(HeadsFlattened())] == [ROUTES_NEG_INF]  # was no routes
