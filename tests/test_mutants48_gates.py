"""Mutation review of session 47's top-k-then-ReLU path (attacks.gates.SCATTERS, kwta_robust.detect's ``relu``
score, attacks.inline_gates' count of gates built without autograd): each test kills a mutant the existing tests let
live. ``[N, 16]`` features, ``k = 4``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.errors import AttackConfigError
from attacks.gates import relaxed_gate
from kwta_robust.detect import detect_layers

K = 4


class PutSaeTopK(nn.Module):
    """A TopK SAE's activation written with ``put_`` (flat indices into zeros) rather than ``scatter``."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx = h.topk(K, dim=-1)
        rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1) * h.shape[1]
        return torch.zeros_like(h).put_(idx + rows, torch.relu(vals))


class BottomKRelu(nn.Module):
    """The ``K`` smallest of the last dim, then a ReLU, scattered into zeros: a bottom-k gate that zeroes negative
    winners."""

    def forward(self, h: Tensor) -> Tensor:
        idx = (-h).topk(K, dim=-1).indices
        return torch.zeros_like(h).scatter(-1, idx, torch.relu(h.gather(-1, idx)))


def test_a_top_k_then_relu_put_into_zeros_is_relaxed_through_the_relu() -> None:
    """``put_`` is one of the scatters: BPDA reads it inline as the top-k gate of ``relu(h)`` (without it, the
    forward's selection had no gate BPDA could read, and the evaluation stopped)."""
    h = torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) - 0.6  # some negative winners
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
    gate, x = PutSaeTopK(), h.clone().requires_grad_(True)
    with attached_backward(gate, {"": LayerTarget("inline")}) as controllers:
        controllers[""].set_backward("smooth", 1.0)
        out = gate(x)
        (grad,) = torch.autograd.grad(out, x, v)
    assert torch.equal(out.detach(), PutSaeTopK()(h))
    xr = h.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(relaxed_gate(torch.relu(xr), out.detach(), "dense", 1.0), xr, v)
    assert torch.allclose(grad, expected) and bool((grad[h < 0] == 0).all())


def test_a_bottom_k_then_relu_keeps_its_smallest_score() -> None:
    """Its winners all positive on the probe batch, it also zeroes negative winners (``relu`` in its evidence), but
    it ranks by smallest value: BPDA relaxes the bottom-k gate, not the top-k gate of ``relu(x)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), BottomKRelu(), nn.Linear(16, 3)).eval()
        with torch.no_grad():
            model[1].bias += 3.0  # every unit positive on the probe batch
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    report = detect_layers(model, x, log=False)
    assert next(f for f in report.layers if f.name == "2").evidence.get("relu") is True
    assert report.target("2").describe() == "gate/dense/smallest"


class NoGradSaeTopK(nn.Module):
    """A TopK SAE's activation built under ``torch.no_grad`` and passed straight through: nothing BPDA can relax."""

    def forward(self, h: Tensor) -> Tensor:
        with torch.no_grad():
            vals, idx = h.topk(K, dim=-1)
            out = torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))
        return h + (out - h).detach()


def test_a_top_k_then_relu_built_without_autograd_is_refused_as_one() -> None:
    """Its negative winners make the count vary, so only the ReLU reading sees a gate there: the refusal names a
    gate built where autograd records nothing, not a selection with no gate."""
    h = torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) - 0.6
    gate = NoGradSaeTopK()
    with pytest.raises(AttackConfigError, match="builds its top-k gate where autograd records nothing"):
        with attached_backward(gate, {"": LayerTarget("inline")}) as controllers:
            controllers[""].set_backward("smooth", 1.0)
            gate(h.clone().requires_grad_(True))
