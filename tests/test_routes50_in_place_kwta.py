"""A kWTA made in place — ``h = h.clone(); h[h < kth] = 0``, ``h.masked_fill_(h < kth, 0)``, ``h[h < kth] = 0`` on
its own input, or ``g[h < kth] = 0`` on a gate tensor then ``h · g`` — against its out-of-place twin ``h · (h ≥
kth)`` (``kth = h.topk(k).values[:, -1:]``) on the same weights. As a leaf module of its own every form is the
out-of-place gate (``dense``, k = 8 of 32), BPDA acts on it alike and the per-sample results are equal; so are the
forms written inline in a block's ``forward``: ``masked_fill_`` returns the gate, ``h · g`` is one, and an item
assignment ``h[h < kth] = 0`` (on a copy or on the ranked tensor itself) is read in the tensor it wrote
(``attacks/mask_assign.py``). Before, that item assignment returned nothing BPDA's inline relaxation
(``attacks/inline_gates.py``) could replace: its selection entry said so (``in_place``, no gate) and
``selections-outside-layers`` named it as a kWTA made in place with the fix; an assignment by integer indices into
the ranked tensor (``h[(h < kth).nonzero(as_tuple=True)] = 0``) still is (``h.mul_(h >= kth)`` was too, before
tests/test_mulinplace50_ranked_kwta.py). MLP ``[16, 1, 8, 8]`` → 32 → kWTA → 10, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.detect_selections import selections_outside

CONFIG = {"seed": 0, "batch_size": 16, "mode": "cascade", "threats": [{"norm": "linf", "epsilons": [0.05]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 5}},
                      {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 10}}}],
          "bpda_layers": "auto", "noise": [],
          "diagnostics": {"enabled": True, "gradient_batch": 16, "budget_check": {"enabled": False}}}


def kwta(h: Tensor, how: str, k: int = 8) -> Tensor:
    """The top-``k`` of ``h`` ``[B, F]`` per sample, written ``how``."""
    kth = h.topk(k, dim=1).values[:, -1:]
    if how == "out":
        return h * (h >= kth)
    if how == "setitem":
        h = h.clone()
        h[h < kth] = 0
        return h
    if how == "masked_fill_":
        return h.clone().masked_fill_(h < kth, 0)
    if how == "raw":  # on its own input
        h[h < kth] = 0
        return h
    if how == "index":  # integer indices into its own input: still no gate BPDA reads inline
        h[(h < kth).nonzero(as_tuple=True)] = 0
        return h
    g = torch.ones_like(h)  # "gate"
    g[h < kth] = 0
    return h * g


class Kwta(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, h: Tensor) -> Tensor:
        return kwta(h, self.how)


class Block(nn.Module):
    """A linear layer, then the kWTA inline in the block's own ``forward``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc, self.how = nn.Linear(64, 32), how

    def forward(self, x: Tensor) -> Tensor:
        return kwta(self.fc(x), self.how)


def net(how: str, inline: bool) -> nn.Module:
    torch.manual_seed(0)
    first = Block(how) if inline else nn.Sequential(nn.Linear(64, 32), Kwta(how))
    return nn.Sequential(nn.Flatten(), first, nn.Linear(32, 10)).eval()


def _data() -> tuple[Tensor, Tensor]:
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, net("out", False)(x).argmax(1)


def _per_sample(record) -> list[tuple]:
    return [(r.label, r.flags, r.margins, r.queries, r.bpda_layers) for r in record.results]


@pytest.mark.parametrize("how", ["setitem", "raw"])
def test_an_item_assignment_kwta_inline_is_read_as_a_gate(how: str) -> None:
    x, _ = _data()
    found = selections_outside(net(how, True), x, accounted=[])
    assert [(e["op"], e.get("in_place"), e.get("gate")) for e in found] == [("topk", None, "dense")]  # was in_place
    assert [e.get("in_place") for e in selections_outside(net("index", True), x, accounted=[])] == [True]


def test_in_place_kwta_modules_match_the_out_of_place_twin_and_inline_index_names_the_fix() -> None:
    x, y = _data()
    twin = evaluate_model(net("out", False), CONFIG, x, y, threads=1)
    assert [r.bpda_layers for r in twin.results if r.attack == "bpda"] == [{"1.1": "wrapped gate/dense"}]
    for how in ("setitem", "masked_fill_", "raw", "gate"):
        leaf = evaluate_model(net(how, False), CONFIG, x, y, threads=1)
        assert _per_sample(leaf) == _per_sample(twin), how
    inline = evaluate_model(net("out", True), CONFIG, x, y, threads=1)
    assert [r.bpda_layers for r in inline.results if r.attack == "bpda"] == [{"1": "wrapped inline"}]
    assert [s[:4] for s in _per_sample(inline)] == [s[:4] for s in _per_sample(twin)]  # BPDA broke 2 PGD left
    for how in ("masked_fill_", "gate", "setitem", "raw"):  # setitem, raw: before, no gate BPDA relaxed
        assert _per_sample(evaluate_model(net(how, True), CONFIG, x, y, threads=1)) == _per_sample(inline), how
    record = evaluate_model(net("index", True), CONFIG, x, y, threads=1)
    assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{}]
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical" and "\n" not in flags[0].message
    assert "1: a kWTA made in place (h[(h < t).nonzero(as_tuple=True)] = 0 on the tensor it ranked" in flags[0].message
    assert "move the kWTA made in place in 1 into a module of its own" in flags[0].message
    assert "move the selection into a module of its own" not in flags[0].message  # the generic advice, before
