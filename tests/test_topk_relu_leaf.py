"""A top-k then a ReLU in one leaf module — a TopK sparse autoencoder (Gao et al. 2024), ``vals, idx = h.topk(k)``,
``zeros_like(h).scatter(-1, idx, relu(vals))`` — whose winners were all positive on the probe batch: the layer
probe read it as an ordinary top-k gate of its input (``gate/dense``), so on an attack step where a winner was
negative (it comes out 0) BPDA's smooth surrogate read that winner as a loser and its relaxation ``x · sigmoid(…)``
passed gradient to it and to every other negative unit, which the module's ReLU holds at 0. Now the probe notes
such a gate (``relu`` in its evidence: it returns only zeros on its input moved below 0, where a top-k gate keeps
its ``k`` negative winners; :mod:`kwta_robust.relu_winners`) and BPDA relaxes it as the top-k gate of ``relu(x)``
(score ``"relu"``, :func:`attacks.gates.relaxed_gate`): through the ReLU's exact gradient, as the inline reading
of the same gate does (tests/test_topk_relu_gates.py). ``[N, 16]`` features, ``k = 4``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.bpda_wrap import attached_backward
from attacks.gates import relaxed_gate
from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers
from kwta_robust.layers import KWTA

K = 4


class SaeTopK(nn.Module):
    """A TopK SAE's activation: the ``K`` largest of the last dim, then a ReLU, scattered into zeros."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx = h.topk(K, dim=-1)
        return torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))


class TopK(nn.Module):
    """An ordinary top-k gate: the ``K`` largest of the last dim, whatever their sign."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx = h.topk(K, dim=-1)
        return torch.zeros_like(h).scatter(-1, idx, vals)


def net(gate: nn.Module) -> nn.Sequential:
    """``[N, 1, 8, 8] → [N, 3]``: linear, the gate, linear, untrained; biases moved up so that every winner is
    positive on the probe batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), gate, nn.Linear(16, 3)).eval()
        with torch.no_grad():
            model[1].bias += 0.3
    return model


X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_the_probe_reads_the_leaf_as_the_top_k_gate_of_its_relu() -> None:
    model = net(SaeTopK())
    with torch.no_grad():
        h = model[1](model[0](X))
    assert bool((h.topk(K, dim=-1).values > 0).all())  # every winner positive: an ordinary top-k gate on this batch
    target = detect_layers(model, X, log=False).target("2")
    assert (target.kind, target.grouping, target.score) == ("gate", "dense", "relu")
    assert target.describe() == "gate/dense/relu"
    # an ordinary top-k gate and our own kWTA read as before
    assert detect_layers(net(TopK()), X, log=False).target("2").score == "value"
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), KWTA(k=K), nn.Linear(16, 3)).eval()
    finding = next(f for f in detect_layers(model, X, log=False).layers if f.name == "2")
    assert "relu" not in finding.evidence


def test_bpda_smooth_relaxes_a_negative_winner_through_the_relu() -> None:
    model = net(SaeTopK())
    target = detect_layers(model, X, log=False).target("2")
    h = torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) - 0.6  # negative winners mid-attack
    out = SaeTopK()(h)
    assert bool(((h.topk(K, dim=-1).values < 0).any()))
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
    x = h.clone().requires_grad_(True)
    with attached_backward(model, {"2": target}) as controllers:
        controllers["2"].set_backward("smooth", 1.0)
        got = model[2](x)
        (grad,) = torch.autograd.grad(got, x, v)
    assert torch.equal(got.detach(), out)  # forward exact
    xr = h.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(relaxed_gate(torch.relu(xr), out, "dense", 1.0), xr, v)
    assert torch.allclose(grad, expected)
    assert bool((grad[h < 0] == 0).all())  # no gradient to a unit the ReLU holds at 0


def test_an_evaluation_wraps_it_with_the_relu_reading() -> None:
    model = net(SaeTopK())
    with torch.no_grad():
        y = model(X).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
              "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
              "diagnostics": {"enabled": False}}
    record = evaluate_model(model, config, X, y, threads=1)
    assert [r.bpda_layers for r in record.results] == [{"2": "wrapped gate/dense/relu"}]


class FlatSaeTopK(nn.Module):
    """:class:`SaeTopK` over all of a sample's units, ``[N, 1, 4, 4] → [N, 16]``: it returns its input flattened."""

    def forward(self, h: Tensor) -> Tensor:
        flat = h.flatten(1)
        vals, idx = flat.topk(K, dim=-1)
        return torch.zeros_like(flat).scatter(-1, idx, torch.relu(vals))


def test_a_top_k_then_relu_returning_its_input_flattened_is_read_with_its_relu() -> None:
    """The probe compared the output on the input moved below 0, ``[N, 16]``, with the output in the input's shape,
    ``[N, 1, 4, 4]`` (as the gate is read), and took the shapes' difference for a call that changes shape: no
    ``relu``, so BPDA relaxed the gate of ``x`` and passed gradient to the negative units the ReLU holds at 0."""
    gate = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), FlatSaeTopK())
    model = net(gate)
    finding = next(f for f in detect_layers(model, X, log=False).layers if f.name == "2.1")
    assert finding.evidence["output_shape"] == [8, 16] and finding.evidence.get("relu") is True
    assert detect_layers(model, X, log=False).target("2.1").describe() == "gate/channel/relu"
    h = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(3)) - 0.6  # negative winners mid-attack
    x = h.clone().requires_grad_(True)
    with attached_backward(model, {"2.1": detect_layers(model, X, log=False).target("2.1")}) as controllers:
        controllers["2.1"].set_backward("smooth", 1.0)
        got = model[2][1](x)
        (grad,) = torch.autograd.grad(got, x, torch.ones_like(got))
    assert torch.equal(got.detach(), FlatSaeTopK()(h))
    assert bool((grad[h < 0] == 0).all()) and bool((grad[h > 0] != 0).any())
