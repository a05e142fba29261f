"""Max-pool winner-take-all gates counted per call, as top-k inline gates are. A module whose forward builds two
max-pool gates (``h · (h == F.max_pool2d(h, 3, 1, 1))``), the second gated in place on the pool's input
(``h.mul_(h == F.max_pool2d(h, 3, 1, 1))``, which no result shows) or readable on a batch and in place on a copy
(``g[h != F.max_pool2d(h, 3, 1, 1)] = 0``) on one sample:
the layer probe counted no pool gate per call (``LayerTarget("inline")``, ``gates`` 1), so BPDA relaxed the readable
gate and ran the call with the other's 0/1 mask cutting the gradient, unflagged. The probe now counts pool gates in
``gates`` (kwta_robust/detect_selections.py), and BPDA refuses a call that max-pooled and relaxed fewer
(attacks/bpda_wrap.py ModuleBackward). A forward with one top-k gate and one pool gate, both readable, counts 2 and
runs. ``is_pool_gate(…, known_gated=x)`` does not recompute the mask agreement the layer probe already computed.
The second gate made in place (on the pool's input or a copy) is now read and relaxed in place
(attacks/pool_in_place.py): the gradient of its out-of-place twin; made by the 1-D indices of ``nonzero`` (or so on a
branch taken on one sample) it is still refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attacks.pool_gates as pool_gates
import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from kwta_robust.detect import _pool_gate, detect_layers
from test_inline_gates_twogates import built, gate, input_gradient

X = wild.X


def refusal(module_class: str, gates: int, relaxed: int, shape: tuple[int, ...]) -> str:
    return (f"BPDA layer '1' ({module_class}) builds {gates} gates in its forward, max-pool winner-take-all ones among "
            f"them (read by the layer probe), but BPDA could read and relax only {relaxed} of them there (on an input "
            f"of shape {shape}), so the other gates' 0/1 masks would cut the gradient unseen; build each max-pool "
            "gate as h * (h == p) or h.mul_(h == p), p = F.max_pool2d(h, 3, 1, 1), on each input (not on a branch on "
            "the batch), or use bpda surrogate: model, gradient estimation or square")


def pool_gate(h: Tensor) -> Tensor:
    """A readable max-pool gate: ``h`` where it is the largest of its 3 × 3 window, else 0."""
    return h * (h == F.max_pool2d(h, 3, 1, 1))


class TwoPools(nn.Module):
    """``x + gate2(c2(gate1(c1(x))))`` of max-pool gates: the first readable (``first=False``: left out), the second
    in place on the pool's input (``second="in place"``), in place on a copy (``"copy"``), by ``nonzero`` indices on
    the pool's input (``"nonzero"``), readable (``"out"``), or readable on a batch and by ``nonzero`` indices for a
    single sample (``"branch"``)."""

    def __init__(self, second: str = "in place", first: bool = True) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.second, self.first = second, first

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(x)
        h2 = self.c2(pool_gate(h) if self.first else h)
        if self.second == "in place":
            h2.mul_(h2 == F.max_pool2d(h2, 3, 1, 1))
            return x + h2
        if self.second == "copy":
            g = h2.clone()
            g[h2 != F.max_pool2d(h2, 3, 1, 1)] = 0
            return x + g
        if self.second == "nonzero" or (self.second == "branch" and h2.shape[0] == 1):
            h2[(h2 != F.max_pool2d(h2, 3, 1, 1)).nonzero(as_tuple=True)] = 0
            return x + h2
        return x + pool_gate(h2)


class TopkThenPool(nn.Module):
    """``x + pool_gate(c2(topk_gate(c1(x))))``: one readable gate of each kind."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + pool_gate(self.c2(gate(self.c1(x).flatten(1)).view_as(x)))


@pytest.mark.parametrize("second", ["in place", "copy", "nonzero", "branch"])
def test_the_probe_counts_a_pool_gate_made_in_place_and_the_one_on_the_probes_batch(second: str) -> None:
    detection = detect_layers(built(lambda: TwoPools(second)), X, log=False)
    assert detection.auto_targets() == {"1": LayerTarget("inline", gates=2)}
    assert [(s["op"], s["gate"], s.get("gates")) for s in detection.selections] == [("max_pool2d", "max-pool", 2)]


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("n", [4, 1])
@pytest.mark.parametrize("second", ["in place", "copy"])
def test_a_second_pool_gate_made_in_place_is_relaxed_as_its_out_of_place_twin(second: str, backward: str,
                                                                              n: int) -> None:
    model = built(lambda: TwoPools(second))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=2)}
    relaxed, twin = (input_gradient(m, X[:n], targets, backward) for m in (model, built(lambda: TwoPools("out"))))
    assert torch.allclose(relaxed, twin, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(relaxed, input_gradient(model, X[:n], {}, backward), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("n", [4, 1])
def test_a_second_pool_gate_made_by_nonzero_indices_is_refused(backward: str, n: int) -> None:
    model = built(lambda: TwoPools("nonzero"))
    targets = detect_layers(model, X, log=False).auto_targets()
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:n], targets, backward)
    assert str(refused.value) == refusal("TwoPools", 2, 1, (n, 4, 8, 8))


def test_a_pool_gate_on_another_branch_is_refused_where_it_is_taken() -> None:
    """Two gates relaxed on a batch; on one sample the second, and for a lone gate the only one, is made in place."""
    model = built(lambda: TwoPools("branch"))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert (input_gradient(model, X[:4], targets, "smooth") - input_gradient(model, X[:4], {}, "smooth")).abs().max() \
        > 1e-3
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:1], targets, "smooth")
    assert str(refused.value) == refusal("TwoPools", 2, 1, (1, 4, 8, 8))
    lone = built(lambda: TwoPools("branch", first=False))
    targets = detect_layers(lone, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline")}
    input_gradient(lone, X[:4], targets, "smooth")
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(lone, X[:1], targets, "smooth")
    assert str(refused.value) == refusal("TwoPools", 1, 0, (1, 4, 8, 8))


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_top_k_gate_and_a_pool_gate_count_two_and_both_are_relaxed(backward: str) -> None:
    model = built(TopkThenPool)
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=2)}
    for n in (4, 1):
        relaxed = input_gradient(model, X[:n], targets, backward)
        assert torch.equal(relaxed, input_gradient(model, X[:n], {"1": LayerTarget("inline")}, backward))


def test_the_probes_pool_gate_reading_computes_the_mask_agreement_once(monkeypatch: pytest.MonkeyPatch) -> None:
    h = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    values = F.max_pool2d(h, 3, 1, 1)
    calls: list[int] = []
    agreement = pool_gates.agreeing  # mask_agreement's count, left on the device (one host read per candidate)
    monkeypatch.setattr(pool_gates, "agreeing", lambda *a: calls.append(1) or agreement(*a))
    assert _pool_gate(h, pool_gate(h), [("max_pool2d", h, values)])
    assert not _pool_gate(h, torch.relu(h), [("max_pool2d", h, values)])
    assert calls == []
    assert pool_gates.is_pool_gate(pool_gate(h), [h], [(h, values)]) and calls == [1]
