"""End-to-end check of "evaluate their own model" on kWTA layers written the way users write them
(tests/wild_kwta_models.py): the layer probe finds each gate, BPDA's ``auto`` acts on it, the forward stays exact
and the gradient at the gate's input is no longer cut by its 0/1 mask (plain autograd: exactly zero at every loser;
BPDA: non-zero there). A custom ``autograd.Function`` is classified by its outputs, whatever its own backward, and
BPDA replaces that backward too. A threshold from ``torch.quantile`` whose winner count varies by one between samples
(float rounding at an integer quantile position) is a gate too (attacks/gates.py ``threshold_fit``; it was listed as
a selection outside every layer, flagged critical, and left masked)."""

from __future__ import annotations

import contextlib
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import relaxed_gate
from kwta_robust.detect import detect_layers

T = 0.5
X = wild.X
LEAF_GATES: dict[Callable[[], nn.Module], dict[str, tuple[str, str]]] = {  # name: (grouping, score)
    wild.xiao: {n: ("volume", "value") for n in ("1", "2.relu1", "2.relu2")},
    wild.numenta: {"a1": ("volume", "boosted"), "a2": ("volume", "boosted")},
    wild.kthvalue_channel: {"a1": ("channel", "value"), "a2": ("channel", "value")},
    wild.sort_threshold: {"a1": ("volume", "value"), "a2": ("volume", "value")},
    wild.scatter_mask: {"a1": ("volume", "value"), "a2": ("volume", "value")},
    wild.function_straight_through: {"a1": ("volume", "value"), "a2": ("volume", "value")},
    wild.function_masked: {"a1": ("volume", "value"), "a2": ("volume", "value")},
    wild.dense: {"2": ("dense", "value"), "4": ("dense", "value")},
    wild.pad_cat: {"kwta": ("volume", "value")},
    wild.quantile_threshold: {"a1": ("volume", "value"), "a2": ("volume", "value")},
}


@contextlib.contextmanager
def bpda(model: nn.Module, backward: str | None):
    """BPDA with ``backward`` on what ``auto`` selects (``None``: plain autograd)."""
    with contextlib.ExitStack() as stack:
        if backward is not None:
            targets = detect_layers(model, X, log=False).auto_targets()
            controllers = stack.enter_context(attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        yield


def at_gate(model: nn.Module, name: str, backward: str | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The model's output, the gate's input and output, and the gradient of the summed logits at the gate's input."""
    seen: dict[str, Tensor] = {}

    def leaf(_module: nn.Module, args: tuple) -> tuple:
        seen["h"] = args[0].detach().requires_grad_(True)
        return (seen["h"],)

    def keep(_module: nn.Module, _args: tuple, out: Tensor) -> None:
        seen["out"] = out.detach()

    with bpda(model, backward):
        module = model.get_submodule(name)
        handles = [module.register_forward_pre_hook(leaf, prepend=True), module.register_forward_hook(keep)]
        try:
            out = model(X)
            (grad,) = torch.autograd.grad(out.sum(), seen["h"])
        finally:
            for handle in handles:
                handle.remove()
    return out.detach(), seen["h"].detach(), seen["out"], grad


@pytest.mark.parametrize("factory", list(LEAF_GATES), ids=lambda f: f.__name__)
def test_the_probe_finds_each_gate_and_auto_selects_it(factory) -> None:
    detection = detect_layers(factory(), X, log=False)
    assert {n: (t.kind, t.grouping, t.score) for n, t in detection.auto_targets().items()} == {
        n: ("gate", grouping, score) for n, (grouping, score) in LEAF_GATES[factory].items()}
    assert detection.selections == []  # every selection call is accounted for by a found gate


@pytest.mark.parametrize("factory", list(LEAF_GATES), ids=lambda f: f.__name__)
def test_bpda_keeps_the_forward_and_unmasks_the_gradient_at_every_gate(factory) -> None:
    model = factory()
    straight_through = factory is wild.function_straight_through
    for name in LEAF_GATES[factory]:
        plain_out, h, gate_out, plain = at_gate(model, name, None)
        out, h_bpda, gate_out_bpda, smooth = at_gate(model, name, "smooth")
        assert torch.equal(out, plain_out) and torch.equal(h_bpda, h) and torch.equal(gate_out_bpda, gate_out)
        losers = (gate_out == 0) & (h != 0)
        assert losers.float().mean() > 0.5  # a gate: most units lose
        if straight_through:  # its own backward passes everything: not masked, but not the gate's either
            assert (plain[losers] != 0).float().mean() > 0.9
        else:
            assert torch.equal(plain[losers], torch.zeros_like(plain[losers]))  # mask-cut
        assert (smooth[losers] != 0).float().mean() > 0.9, name
        assert (smooth - plain).abs().max() > 1e-4


def test_the_dense_gates_gradient_is_the_smooth_relaxation_worked_by_hand() -> None:
    model = wild.dense()
    x = X.clone().requires_grad_(True)
    with bpda(model, "smooth"):
        (grad,) = torch.autograd.grad(model(x).sum(), x)

    def exact_forward_relaxed_backward(h: Tensor, gate: nn.Module) -> Tensor:
        hard = gate(h.detach())
        relaxed = relaxed_gate(h, hard, "dense", T)
        return hard + relaxed - relaxed.detach()

    xh = X.clone().requires_grad_(True)
    g1 = exact_forward_relaxed_backward(model[1](xh.flatten(1)), model[2])
    g2 = exact_forward_relaxed_backward(model[3](g1), model[4])
    (expected,) = torch.autograd.grad(model[5](g2).sum(), xh)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_an_inline_gate_in_a_residual_block_is_relaxed_there_alone() -> None:
    model = wild.inline_residual()
    detection = detect_layers(model, X, log=False)
    assert detection.names("gate") == []
    assert detection.selections == [{"op": "topk", "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "gate": "dense", "k": 51, "group_size": 256, "probed": False}]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}

    def grad(gate: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        xh = X.clone().requires_grad_(True)
        s = model[0](xh)
        h = model[1].conv(s)
        hard = model[1](s.detach()) - s.detach()
        (g,) = torch.autograd.grad(model[3]((s + gate(h, hard)).flatten(1)).sum(), xh)
        return g

    x = X.clone().requires_grad_(True)
    with bpda(model, "smooth"):
        (smooth,) = torch.autograd.grad(model(x).sum(), x)
    x = X.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    relaxed = grad(lambda h, o: relaxed_gate(h.flatten(1), o.flatten(1), "dense", T).view_as(h))
    torch.testing.assert_close(smooth, relaxed, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plain, grad(lambda h, o: h * (o != 0)), rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3


def test_a_quantile_threshold_is_a_gate_whether_or_not_its_count_is_constant() -> None:
    detection = detect_layers(wild.quantile_threshold(0.1), X, log=False)  # position 0.9 · 255: between two values
    assert {n: t.kind for n, t in detection.auto_targets().items()} == {"a1": "gate", "a2": "gate"}
    model = wild.quantile_threshold()  # position 0.8 · 255 = 204: rounding moves the threshold past a winner
    with torch.no_grad():
        counts = (wild.quantile_kwta(model.c1(X)) != 0).flatten(1).sum(1)
    assert set(counts.tolist()) == {51, 52}  # no constant count of winners
    detection = detect_layers(model, X, log=False)
    assert {n: (t.kind, t.grouping) for n, t in detection.auto_targets().items()} == {
        "a1": ("gate", "volume"), "a2": ("gate", "volume")}
    assert detection.selections == []
