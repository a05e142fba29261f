"""A winner-take-all by equality with a global (adaptive) max-pool: ``h · (h == F.adaptive_max_pool2d(h, 1))`` keeps
each channel's largest unit (a ``channel`` gate of one winner). As a leaf module the layer probe read it as a
``channel`` top-k gate (k = 1) and BPDA relaxed it; written inline in a block's ``forward``, or with an
``nn.AdaptiveMaxPool2d(1)`` child, nothing noted it (no selection, no flag) and BPDA ran with its 0/1 mask cutting
the gradient. A global adaptive max-pool is ``h.amax(dim=(2, 3), keepdim=True)``, now a one-winner operation
(attacks/one_winner.py): read as a ``channel`` gate of k = 1 and relaxed exactly as the ``amax`` form. An adaptive
max-pool of windows (output size > 1) is a max-pool (attacks/pool_gates.py), inline or as a module of its own (it
read as a channel top-4 gate): noted as such a gate, which BPDA's smooth surrogate relaxes over its windows
(attacks/pool_relax.py), flagged where no BPDA attack did. The leaf-module reading of
a global pool's gate, and an ``nn.AdaptiveMaxPool2d`` used as a classifier head's global pooling, are unchanged."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.one_winner import one_winner_op
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data
from test_gates_inline_styles import gradients
from test_wild_lwta import PGD_THEN_BPDA
from test_wild_lwta_pools import advice
from wild_kwta_models import X, seeded


class Amax(nn.Module):
    """``x + h · (h == h.amax(dim=(2, 3), keepdim=True))``, ``h = conv(x)``: the form relaxed before."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def winners(self, h: Tensor) -> Tensor:
        return h.amax(dim=(2, 3), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + h * (h == self.winners(h))


class Inline(Amax):
    """:class:`Amax` with ``F.adaptive_max_pool2d(h, 1)``."""

    def winners(self, h: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(h, 1)


class Child(Amax):
    """:class:`Amax` with an ``nn.AdaptiveMaxPool2d((1, 1))`` child."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d((1, 1))

    def winners(self, h: Tensor) -> Tensor:
        return self.pool(h)


class Windows(Amax):
    """``x + max_unpool2d(*adaptive_max_pool2d(h, 2, return_indices=True))``: one winner per 4 × 4 window."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return x + F.max_unpool2d(*F.adaptive_max_pool2d(h, 2, return_indices=True), 4, output_size=h.shape[-2:])


class LeafWindows(nn.Module):
    """:class:`Windows`'s gate as a module of its own."""

    def forward(self, h: Tensor) -> Tensor:
        return F.max_unpool2d(*F.adaptive_max_pool2d(h, 2, return_indices=True), 4, output_size=h.shape[-2:])


class Leaf(nn.Module):
    """The gate as a module of its own (a leaf called with the tensor)."""

    def forward(self, h: Tensor) -> Tensor:
        return h * (h == F.adaptive_max_pool2d(h, 1))


GLOBAL: dict[str, Callable[[], nn.Module]] = {"inline": Inline, "child": Child}


def net(block: Callable[[], nn.Module]) -> nn.Module:
    """stem conv → ``block`` (module ``"1"``) → linear head (the same weights for every block: seeded)."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), block(), nn.Flatten(), nn.Linear(256, 3)))


def test_a_global_adaptive_max_pool_is_a_one_winner_operation_and_one_of_windows_is_not() -> None:
    h = torch.zeros(2, 3, 4, 4)
    assert [one_winner_op(F.adaptive_max_pool2d, (h, 1), {}), one_winner_op(F.adaptive_max_pool2d, (h, (1, 1)), {}),
            one_winner_op(F.adaptive_max_pool2d_with_indices, (h,), {"output_size": 1}),
            one_winner_op(F.adaptive_max_pool1d, (h[:, :, 0], 1), {})] == [
        "adaptive_max_pool2d(1)", "adaptive_max_pool2d(1)", "adaptive_max_pool2d(1)", "adaptive_max_pool1d(1)"]
    assert [one_winner_op(F.adaptive_max_pool2d, (h, 2), {}),
            one_winner_op(F.adaptive_max_pool2d, (h, (1, 2)), {})] == [None, None]


@pytest.mark.parametrize("name", list(GLOBAL))
def test_an_inline_global_pool_gate_is_read_as_a_channel_gate_of_its_block(name: str) -> None:
    detection = detect_layers(net(GLOBAL[name]), X, log=False)
    amax = detect_layers(net(Amax), X, log=False)
    assert detection.selections == [{**amax.selections[0], "op": "adaptive_max_pool2d(1)"}]
    assert detection.selections[0]["gate"] == "channel" and detection.selections[0]["modules"] == ["", "1"]
    assert detection.auto_targets() == amax.auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("name", list(GLOBAL))
def test_bpda_relaxes_it_exactly_as_the_amax_form(name: str, backward: str) -> None:
    out, grad = gradients(net(GLOBAL[name]), backward)
    amax_out, amax_grad = gradients(net(Amax), backward)
    _, masked = gradients(net(Amax), None)
    assert torch.equal(out, amax_out)
    assert not torch.allclose(amax_grad, masked)  # the relaxation changes the gradient: the test can tell
    assert torch.equal(grad, amax_grad)


def test_a_pool_of_windows_is_a_max_pool_selection_flagged_without_bpda() -> None:
    model = net(Windows)
    detection = detect_layers(model, X, log=False)
    assert detection.selections == [{"op": "adaptive_max_pool2d", "kind": "selection", "modules": ["", "1"],
                                     "calls": 1, "gate": "max-pool", "probed": False}]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA[:1]), {}, progress=False)
    (flag,) = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical"
    assert "the model calls adaptive_max_pool2d in the forward of 1 (1 call(s) a forward)" in flag.message
    assert "bpda_layers: auto" in flag.message and advice("1") not in flag.message


def test_a_smooth_bpda_named_on_a_pool_of_windows_relaxes_it() -> None:
    model = net(Windows)
    smooth = [PGD_THEN_BPDA[0], {"attack": "bpda", "bpda_layers": ["1"],
                                 "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}]
    record = evaluate(model, data(model, X), config(batch_size=8, attacks=smooth), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}


def test_a_leaf_global_pool_gate_is_still_a_channel_top_k_gate() -> None:
    # pinned: detect_layers(...).to_dict() of this model was the same before the change (checked on a HEAD copy)
    detection = detect_layers(net(Leaf), X, log=False)
    (finding,) = detection.layers
    assert (finding.name, finding.kinds, finding.grouping, finding.evidence["k"]) == ("1", ["gate"], "channel", 1)
    assert detection.selections == []
    assert detection.auto_targets() == {"1": LayerTarget("gate", "channel", "value")}


def test_a_leaf_pool_of_windows_is_a_max_pool_gate_not_a_channel_top_k() -> None:
    # it read as a channel top-4 gate (4 windows of 4 × 4), and auto relaxed it on that rule
    detection = detect_layers(net(LeafWindows), X, log=False)
    assert [(f.name, f.kinds) for f in detection.layers] == [("1", ["max-pool-gate"])]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}  # relaxed over its windows, not as a top-4


def test_an_adaptive_max_pool_head_is_no_selection() -> None:
    head = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                                        nn.Flatten(), nn.Linear(4, 3)))
    assert detect_layers(head, X, log=False).selections == []
