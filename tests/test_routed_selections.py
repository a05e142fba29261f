"""Top-k forms that route rather than gate units (:mod:`kwta_robust.routed_selections`; found by the fuzzer of
tests/fuzz48_wild.py): mixture-of-experts top-k gating (Shazeer et al. 2017) — a softmax over the router's top-k
logits scattered back into ``-inf`` weighting the experts' outputs ``[B, E, H]``, or the chosen experts' outputs
gathered by the top-k indices — and top-k attention (Zhao et al. 2019), scores ``[B, T, T]`` filled with ``-inf``
below the k-th before the softmax. No BPDA surrogate here relaxes them. Before, the gate reading took an expert's
ReLU after a top-3 router for the router's gate, and BPDA acted on the block (``wrapped inline``) with the routing
mask still cutting the gradient and no flag; a top-k attention in a leaf module was flagged with the advice to name
it in ``bpda_layers``, whose BPDA would pass the gradient straight through the softmax. Now the selection entry
carries ``routes`` and no gate, ``auto`` leaves the module out, and ``selections-outside-layers`` (critical) says
the top-k routes, out of scope, and not to name it. Inputs ``[4, 1, 28, 28]`` (MoE) and ``[4, 1, 8, 8]``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.layer_text import layer_notes
from kwta_robust.routed_selections import ROUTES_INDICES, ROUTES_NEG_INF, neg_filled
from kwta_robust.selection_entries import held_by
from test_fuzz46_fixed_seeds import CONFIG

ROUTING = "a top-k that routes rather than gates units"


class MoE(nn.Module):
    """``[B, 784]`` → the router's top-k of 6 experts (``gather``: their outputs picked by its indices; else a
    softmax over the top-k logits scattered into ``-inf``, then the experts' ReLU outputs weighted by it)."""

    def __init__(self, k: int, route: str) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(784, 6), nn.ModuleList(nn.Linear(784, 16) for _ in range(6))
        self.k, self.route = k, route

    def forward(self, x: Tensor) -> Tensor:
        v, i = self.router(x).topk(self.k, dim=-1)
        if self.route == "gather":
            outs = torch.stack([torch.relu(e(x)) for e in self.experts], 1)
            return (v.softmax(-1).unsqueeze(-1) * outs.gather(1, i.unsqueeze(-1).expand(-1, -1, 16))).sum(1)
        w = torch.full_like(self.router(x), float("-inf")).scatter(-1, i, v).softmax(-1)
        return (w.unsqueeze(-1) * torch.stack([torch.relu(e(x)) for e in self.experts], 1)).sum(1)


class MoENet(nn.Module):
    def __init__(self, k: int, route: str) -> None:
        super().__init__()
        self.a1, self.head = MoE(k, route), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.a1(x.flatten(1)))


class TopkAttention(nn.Module):
    """A leaf module: ``scores`` ``[B, T, T]`` → a softmax over each row's 3 largest (the rest ``-inf``)."""

    def forward(self, scores: Tensor) -> Tensor:
        return scores.masked_fill(scores < scores.topk(3, dim=-1).values[..., -1:], float("-inf")).softmax(-1)


class AttentionNet(nn.Module):
    """Rows of ``[B, 1, 8, 8]`` as 8 tokens → query/key/value maps → top-3 attention ``attn`` → head."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.attn, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), \
            TopkAttention(), nn.Linear(64, 3)

    def forward(self, x: Tensor) -> Tensor:
        t = x.flatten(0, 1)
        scores = self.q(t) @ self.k(t).transpose(1, 2) / math.sqrt(8)
        return self.head((t + self.attn(scores) @ self.v(t)).flatten(1))


def _evaluated(model: nn.Module, shape: tuple[int, ...], seed: int = 3):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    return evaluate_model(model, CONFIG, x, y, threads=1)


def _seeded(make, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def _routing_flag(record) -> str:
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical", [f.message for f in flags]
    return flags[0].message


def test_a_top3_router_before_its_experts_relu_is_flagged_as_routing_not_relaxed_on_the_relu() -> None:
    record = _evaluated(_seeded(lambda: MoENet(3, "weights"), 3), (4, 1, 28, 28))
    entries = [s for s in record.detection["selections"] if s["op"] == "topk"]
    assert len(entries) == 1 and entries[0]["routes"] == ROUTES_NEG_INF and "gate" not in entries[0]
    assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{}, {}]
    message = _routing_flag(record)
    assert f"a1: {ROUTING}" in message and "out of scope" in message and "do not name a1 in bpda_layers" in message


def test_experts_picked_by_the_routers_indices_are_routing_in_the_flag_and_the_layer_probes_note() -> None:
    record = _evaluated(_seeded(lambda: MoENet(2, "gather"), 0), (4, 1, 28, 28))
    entries = [s for s in record.detection["selections"] if s["op"] == "topk"]
    assert [e["routes"] for e in entries] == [ROUTES_INDICES] and f"a1: {ROUTING}" in _routing_flag(record)
    assert "a1: top-k routing (its indices pick experts' outputs), out of scope for BPDA" \
        in layer_notes(record)[0]


def test_topk_attention_in_a_leaf_module_is_not_advised_for_bpda_layers() -> None:
    record = _evaluated(_seeded(AttentionNet, 0), (4, 1, 8, 8))
    message = _routing_flag(record)
    assert f"attn: {ROUTING}" in message and "do not name attn in bpda_layers" in message
    assert "bpda_layers: [auto, attn]" not in message  # the advice for a module whose top-k BPDA can relax


def test_neg_filled_reads_a_large_negative_fill_keeping_two_or_more_a_row() -> None:
    s = torch.tensor([[0.3, -0.2, 0.9, 0.1], [0.5, 0.4, -0.1, 0.2]])
    top2 = s.masked_fill(s < s.topk(2, dim=-1).values[..., -1:], -1e9)
    top1 = s.masked_fill(s < s.amax(dim=-1, keepdim=True), float("-inf"))  # a one-hot after the softmax: a gate
    assert neg_filled(top2, [s]) and not neg_filled(top1, [s]) and not neg_filled(s * (s > 0.2), [s])
    assert not neg_filled(s.masked_fill(s < 0.35, -1.0), [s])  # a fill above NEG_FILL: no -inf


def test_a_routing_selection_is_not_held_by_its_module_relaxed_inline() -> None:
    routed = {"op": "topk", "modules": ["", "a1"], "routes": ROUTES_NEG_INF}
    assert not held_by(["a1"], routed, inline=["a1"]) and held_by(["a1"], routed)
