"""A top-k then a ReLU in one module — a TopK sparse autoencoder (Gao et al. 2024), ``vals, idx = h.topk(k)``,
``zeros_like(h).scatter(-1, idx, relu(vals))`` — keeps *at most* ``k`` units per group: the winners whose value is
positive, so its count follows their signs (found by tests/fuzz47_wild.py, seed 277). Before, no reading matched
it: where the layer probe read its forward's gate on tie-broken inputs, BPDA stopped the evaluation at the first
call whose count varied ("ran a top-k selection in its forward but built no gate BPDA could read ... call that kWTA
from a module of its own", which it already was). Now it reads as the top-k gate of ``relu(h)``
(:func:`attacks.gates.gated_operand`), whose smooth relaxation BPDA takes through the ReLU's exact gradient
(forward exact), and a call on which no group had more than ``k`` positive units — the ReLU's mask, nothing more —
runs with its exact gradient. ``[N, 16]`` features, ``k = 4``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import gated_operand, relaxed_gate
from kwta_robust.api import evaluate_model

K = 4


class SaeTopK(nn.Module):
    """A TopK SAE's activation: the ``K`` largest of the last dim, then a ReLU, scattered into zeros."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx = h.topk(K, dim=-1)
        return torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))


def features(shift: float) -> Tensor:
    """``[6, 16]`` seeded features moved by ``shift``."""
    return torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) + shift


def smooth_gradient(h: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The SAE gate's output and the input gradient of ``<out, v>`` (``v`` seeded) with BPDA's smooth surrogate
    acting on its module inline, as ``bpda_layers: auto`` reads it; and ``v``."""
    gate = SaeTopK()
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(seed))
    x = h.clone().requires_grad_(True)
    with attached_backward(gate, {"": LayerTarget("inline")}) as controllers:
        controllers[""].set_backward("smooth", 1.0)
        out = gate(x)
        (grad,) = torch.autograd.grad(out, x, v)
    return out.detach(), grad, v


def test_the_relu_top_k_reads_as_the_top_k_gate_of_its_relu() -> None:
    h = features(-0.6)
    vals, idx = h.topk(K, dim=-1)
    out = torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))
    counts = (out != 0).sum(dim=1)
    assert counts.max() == K and counts.min() < K  # a negative winner in some rows: the count varies
    found = gated_operand(out, (torch.zeros_like(h), -1, idx, torch.relu(vals)), [h], relu=True)  # a scatter's result
    assert found is not None
    x, gated, (fit, mask) = found
    assert torch.equal(x, h.clamp_min(0)) and torch.equal(gated, out) and not mask
    assert (fit.grouping, fit.k, fit.score) == ("dense", K, "value")


def test_bpda_smooth_relaxes_it_through_the_relu_with_the_forward_exact() -> None:
    h = features(-0.6)
    out, grad, v = smooth_gradient(h)
    assert torch.equal(out, SaeTopK()(h))  # forward bit for bit
    xr = h.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(relaxed_gate(torch.relu(xr), out, "dense", 1.0), xr, v)
    assert torch.allclose(grad, expected)
    assert bool((grad[h < 0] == 0).all())  # the ReLU's exact part
    losers = (h > 0) & (out == 0)  # positive units the top-k dropped: the relaxation reaches them
    assert bool(losers.any()) and bool((grad[losers] != 0).all())


def test_a_call_that_kept_every_positive_unit_runs_with_the_relu_gradient() -> None:
    h = features(-1.6)
    assert int((h > 0).sum(dim=1).max()) <= K  # no row has more than K positive units: the top-k cut nothing
    out, grad, v = smooth_gradient(h)
    assert torch.equal(out, torch.relu(h))
    assert torch.equal(grad, v * (h > 0))


def net() -> nn.Sequential:
    """``[N, 1, 8, 8] → [N, 3]``: linear, the SAE gate, linear, untrained; biases moved so some winners are
    negative."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), SaeTopK(), nn.Linear(16, 3)).eval()
        with torch.no_grad():
            model[1].bias -= 0.15
    return model


def test_an_evaluation_with_bpda_runs_to_the_end_relaxing_it() -> None:
    model, x = net(), torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
              "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                          {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 3}}},
                          {"attack": "bpda", "params": {"surrogate": "identity", "inner_params": {"steps": 3}}}],
              "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}
    record = evaluate_model(model, config, x, y, threads=1)
    assert [r.bpda_layers for r in record.results] == [None, {"2": "wrapped inline"}, {"2": "wrapped inline"}]
