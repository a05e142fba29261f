"""Top-k attention (Zhao et al. 2019, "Explicit Sparse Transformer") written in place — ``scores.masked_fill_(scores
< kth, -inf).softmax(-1)`` or ``scores[mask] = -inf`` — routes (:mod:`kwta_robust.routed_selections`): the ranked
scores ``[B, T, T]`` are themselves overwritten, so the fill shows only against a copy from before the in-place call.
Before, such a module was flagged as an unread top-k with the advice to name it in ``bpda_layers``, whose BPDA would
pass the gradient straight through the softmax. An in-place kWTA (``h[h < kth] = 0``, no ``-inf``) does not route.
Inputs ``[4, 16]`` and ``[4, 1, 8, 8]``, seeded."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.detect_selections import selections_outside
from kwta_robust.routed_selections import ROUTES_NEG_INF
from test_fuzz46_fixed_seeds import CONFIG
from test_mutants48b_routes import BlockNet


def _top3_in_place(scores: Tensor, how: str) -> Tensor:
    kth = scores.topk(3, dim=-1).values[..., -1:]
    if how == "masked_fill_":
        return scores.masked_fill_(scores < kth, float("-inf")).softmax(-1)
    scores[scores < kth] = -1e9
    return scores.softmax(-1)


class InPlaceAttention(nn.Module):
    """A leaf module: scores ``[B, T, T]`` (a copy: the caller's stay) → a softmax over each row's 3 largest, the
    rest set to ``-inf`` (``masked_fill_``) or ``-1e9`` (``__setitem__``) in place."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, scores: Tensor) -> Tensor:
        return _top3_in_place(scores.clone(), self.how)


class AttentionNet(nn.Module):
    """Rows of ``[B, 1, 8, 8]`` as 8 tokens → query/key/value maps → in-place top-3 attention ``attn`` → head."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.q, self.k, self.v, self.attn, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), \
            InPlaceAttention(how), nn.Linear(64, 3)

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(0, 1)
        scores = self.q(t) @ self.k(t).transpose(1, 2) / math.sqrt(8)
        return self.head((t + self.attn(scores) @ self.v(t)).flatten(1))


class Block(nn.Module):
    """``[B, 16]`` → 4 tokens of 4 → scores ``[B, 4, 4]`` → in-place top-3 attention (inline in the block), or
    an in-place kWTA of ``[B, 16]`` (``h[h < kth] = 0``, top-5: no routing)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.q, self.how = nn.Linear(16, 16), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.q(x)
        if self.how == "kwta":
            h[h < h.topk(5, dim=-1).values[..., -1:]] = 0
            return h
        t = h.view(-1, 4, 4)
        return (_top3_in_place(t @ t.transpose(-1, -2), self.how) @ t).flatten(1)


def _routes(how: str) -> list:
    torch.manual_seed(0)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(1))
    return [e.get("routes") for e in selections_outside(BlockNet(Block(how)), x, accounted=[]) if e["op"] == "topk"]


@pytest.mark.parametrize("how", ["masked_fill_", "setitem"])
def test_top3_attention_filled_in_place_routes(how: str) -> None:
    assert _routes(how) == [ROUTES_NEG_INF]  # was [None]: an unread top-k, advised for bpda_layers


def test_an_in_place_kwta_zeroing_its_losers_does_not_route() -> None:
    assert _routes("kwta") == [None]


@pytest.mark.parametrize("how", ["masked_fill_", "setitem"])
def test_in_place_topk_attention_module_is_flagged_as_routing_not_advised_for_bpda_layers(how: str) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AttentionNet(how).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    record = evaluate_model(model, CONFIG, x, y, threads=1)
    assert [s.get("routes") for s in record.detection["selections"] if s["op"] == "topk"] == [ROUTES_NEG_INF]
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical"
    assert "attn: a top-k that routes rather than gates units" in flags[0].message
    assert "do not name attn in bpda_layers" in flags[0].message and "[auto, attn]" not in flags[0].message
