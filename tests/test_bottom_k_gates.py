"""A gate keeping the *smallest* values of each group (a bottom-k, or a parent applying ``1 - topk_mask``): the
layer probe records it (``smallest_ordered_fraction``, score ``smallest``) and BPDA's smooth surrogate relaxes
``-x``, where before it relaxed the largest values — a gradient pointing away from the gate's decision."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.gates import gate_fit, relaxed_gate, selection_score
from bpda_helpers import assert_bpda_matches_relaxed
from kwta_robust.detect import detect_layers


class BottomK(nn.Module):
    """``x`` kept at its ``k`` smallest features per sample (``[N, F]``), zero elsewhere."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        keep = torch.zeros_like(x).scatter(1, x.topk(self.k, dim=1, largest=False).indices, 1.0)
        return x * keep


class NotTopKMask(nn.Module):
    """The 0/1 mask of every feature but the ``k`` largest (``1 - topk_mask``), applied by the parent."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        return 1.0 - torch.zeros_like(x).scatter(1, x.topk(self.k, dim=1).indices, 1.0)


class Masked(nn.Module):
    def __init__(self, mask: nn.Module) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, h: Tensor) -> Tensor:
        return h * self.mask(h)


def net(middle: nn.Module) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), middle, nn.Linear(16, 3)).eval()


X = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))


def test_selection_score_reads_the_smallest_only_where_they_order_the_winners() -> None:
    assert selection_score(0.0, 0.1, 1.0) == "smallest"
    assert selection_score(1.0, 0.0, 1.0) == "value"  # all values equal: the largest and the smallest at once
    assert selection_score(0.2, 0.3, 0.5) == "value"  # ordered by nothing known: as before
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    fit = gate_fit(x, BottomK(3)(x), "dense")
    assert (fit.k, fit.ordered_fraction, fit.smallest_ordered_fraction, fit.score) == (3, 0.0, 1.0, "smallest")
    top = x * (x >= x.topk(3, dim=1).values[:, -1:])
    assert gate_fit(x, top, "dense").score == "value"


def test_a_bottom_k_gate_is_relaxed_on_its_negated_values() -> None:
    model = net(BottomK(4))
    detection = detect_layers(model, X)
    finding = detection.finding("1")
    assert finding is not None and finding.kinds == ["gate"] and finding.evidence["smallest_ordered_fraction"] == 1.0
    assert detection.auto_targets()["1"].describe() == "gate/dense/smallest"

    def relaxed(t: Tensor) -> Tensor:
        h = model[0](t)
        hard = model[1](h.detach())
        soft = relaxed_gate(h, hard, "dense", 0.1, score="smallest")
        return model[2](soft + (hard - soft).detach())

    assert_bpda_matches_relaxed(model, detection.auto_targets(), "1", X, relaxed)
    assert_bpda_matches_relaxed(model, {"1": LayerTarget()}, "1", X, relaxed)  # read at the call
    # the relaxation keeps the winners (the smallest) open and closes the largest: opposite to the value relaxation
    h = model[0](X).detach()
    soft = relaxed_gate(h, model[1](h), "dense", 0.1, score="smallest")
    smallest, largest = h.argmin(dim=1), h.argmax(dim=1)
    rows = torch.arange(len(h))
    assert bool((soft[rows, smallest] / h[rows, smallest] > 0.5).all())
    assert bool((soft[rows, largest] / h[rows, largest]).abs().lt(0.5).all())


def test_a_mask_of_all_but_the_top_k_is_a_smallest_gate() -> None:
    model = net(Masked(NotTopKMask(4)))
    detection = detect_layers(model, X)
    assert detection.auto_targets()["1.mask"].describe() == "gate/dense/smallest/mask"

    def relaxed(t: Tensor) -> Tensor:
        h = model[0](t)
        hard = model[1].mask(h.detach())
        soft = relaxed_gate(h, hard, "dense", 0.1, score="smallest", mask=True)
        return model[2](h * (soft + (hard - soft).detach()))

    assert_bpda_matches_relaxed(model, detection.auto_targets(), "1.mask", X, relaxed)
