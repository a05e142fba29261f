"""A top-k gate whose count of winners is ``k`` or ``k + 1`` (attacks/gates.py ``threshold_fit``): a threshold from
``torch.quantile(h, 1 - k/S)`` rounds a hair either side of the ``(k+1)``-th value, so no grouping had a constant
count and the gate was no gate (a critical ``selections-outside-layers`` flag, BPDA acting on nothing there). It is
now read as a gate where the winners are exactly the elements above a threshold that moves with the group; an
element-wise threshold (a ReLU, ``h · (h > 0.5)``) with the same counts is not, nor is any other non-gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import wild_kwta_models as wild
from attacks.gates import infer_grouping, read_gate, threshold_fit
from kwta_robust.detect import detect_layers
from wild_kwta_models import seeded


def gen() -> torch.Generator:
    """A fresh generator per draw: each test's data do not depend on which tests ran before it."""
    return torch.Generator().manual_seed(5)


def crafted() -> torch.Tensor:
    """[16, 256]: sample ``i`` has exactly ``51 + i % 2`` values in (0.6, 1) at random places, the rest in (-1, -0.01):
    a ReLU or ``x · (x > 0.5)`` of it keeps 51 or 52 winners per sample, each the largest of its sample."""
    g = gen()
    x = -torch.rand(16, 256, generator=g) * 0.99 - 0.01
    for i in range(16):
        where = torch.randperm(256, generator=g)[:51 + i % 2]
        x[i, where] = 0.6 + 0.4 * torch.rand(len(where), generator=g)
    return x


def test_a_quantile_threshold_reads_as_a_dense_gate_of_51_or_52() -> None:
    x = torch.randn(16, 256, generator=gen())
    out = x * (x >= torch.quantile(x, 0.8, dim=1, keepdim=True))
    counts = (out != 0).sum(1)
    assert set(counts.tolist()) == {51, 52}
    fit = infer_grouping(x, out)
    assert fit is not None
    assert (fit.grouping, fit.k, fit.k_min, fit.k_max, fit.k_spread, fit.score, fit.constant_k) == (
        "dense", 51, 51, 52, 1, "value", True)
    assert fit.k_constant_fraction == int((counts == 51).sum()) / 16
    assert fit.to_dict()["k_spread"] == 1
    read = read_gate(x, out)
    assert read is not None and read[0] == fit and read[1] is False


def test_a_constant_count_gate_reads_as_before() -> None:
    """The strict reading comes first: a top-k with a constant count has ``k_spread`` 0, left out of its record."""
    x = torch.randn(16, 256, generator=gen())
    out = x * (x >= x.topk(51, dim=1).values[:, -1:])
    fit = infer_grouping(x, out)
    assert fit is not None and (fit.grouping, fit.k, fit.k_spread) == ("dense", 51, 0)
    assert "k_spread" not in fit.to_dict()


def test_an_element_wise_threshold_with_the_same_counts_is_no_gate() -> None:
    x = crafted()
    for out in (torch.relu(x), x * (x > 0.5)):
        assert set((out != 0).sum(1).tolist()) == {51, 52}  # the counts a quantile gate shows
        assert infer_grouping(x, out) is None and read_gate(x, out) is None
        # what rejects it is the one threshold (0 or 0.5) that serves every sample: without that test it would read
        assert threshold_fit(x, out, known_gate=True) is not None


def test_winners_not_above_a_threshold_or_a_count_that_varies_by_more_than_one_is_no_gate() -> None:
    x = torch.randn(16, 256, generator=gen())
    q = torch.quantile(x, 0.8, dim=1, keepdim=True)
    unordered = x * (x >= q)
    i = int(((unordered != 0).sum(1) == 51).nonzero()[0, 0])  # a sample of 51 winners
    j = int(x[i].argmin())
    unordered[i, j] = x[i, j]  # its smallest value kept too: 52 winners, not the 52 largest
    assert set((unordered != 0).sum(1).tolist()) == {51, 52}  # the counts alone would pass
    assert threshold_fit(x, unordered) is None and infer_grouping(x, unordered) is None
    wider = x * (x >= torch.where(torch.arange(16)[:, None] == 0, x.topk(54, dim=1).values[:, -1:], q))
    assert set((wider != 0).sum(1).tolist()) - {51, 52} == {54}
    assert threshold_fit(x, wider) is None and infer_grouping(x, wider) is None


class Sign(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * 0.5


class Above(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x > 0.5)


def test_no_non_gate_of_a_model_reads_as_a_gate() -> None:
    x = crafted()
    for out in (F.hardtanh(4 * x), torch.sign(x), F.dropout(x, 0.5, training=False)):
        assert read_gate(x, out) is None
    assert read_gate(x, F.max_pool1d(x[:, None], 2)[:, 0]) is None  # another shape
    model = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                         nn.Hardtanh(), nn.Dropout(0.5), Above(), nn.MaxPool2d(2), Sign(),
                                         nn.Flatten(), nn.Linear(64, 3)))
    detection = detect_layers(model, wild.X, log=False)
    assert detection.names("gate") == [] and detection.selections == []
    assert {name: target.kind for name, target in detection.auto_targets().items()} == {"7": "piecewise-constant"}
