"""A top-k then a ReLU (a TopK sparse autoencoder, Gao et al. 2024) written without ``scatter``: assigned at the
top-k's indices (``out = torch.zeros_like(h); out[rows, idx] = torch.relu(vals)``, ``Tensor.__setitem__``, which
returns ``None`` and changes ``out`` in place), or through ``scatter_reduce`` (``scatter_reduce_``). Before, only the
results of ``scatter``, ``scatter_add``, ``index_put``, ``index_copy`` and ``masked_scatter`` were read as the
top-k gate of ``relu(h)`` (tests/test_topk_relu_gates.py): where a negative winner on the probe batch made the
count vary, these forms were a selection with no gate (``{}`` in ``bpda_layers``) and BPDA, told to act inline,
refused the call. Now the tensor they wrote is read as the scatter's result is (:func:`attacks.gates.scattered`).
``[6, 16]`` features, ``k = 4``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import relaxed_gate
from kwta_robust.api import evaluate_model

K = 4


def _ranked(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    vals, idx = h.topk(K, dim=-1)
    rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1).expand_as(idx)
    return torch.relu(vals), idx, rows


class SetItem(nn.Module):
    """``out[rows, idx] = relu(vals)`` into zeros."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx, rows = _ranked(h)
        out = torch.zeros_like(h)
        out[rows, idx] = vals
        return out


class ScatterReduce(nn.Module):
    """``zeros.scatter_reduce(-1, idx, relu(vals), "sum")``."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx, _ = _ranked(h)
        return torch.zeros_like(h).scatter_reduce(-1, idx, vals, "sum")


class ScatterReduceInPlace(nn.Module):
    """``out.scatter_reduce_(-1, idx, relu(vals), "amax")`` into zeros (in place, method form)."""

    def forward(self, h: Tensor) -> Tensor:
        vals, idx, _ = _ranked(h)
        out = torch.zeros_like(h)
        out.scatter_reduce_(-1, idx, vals, "amax")
        return out


FORMS = [SetItem, ScatterReduce, ScatterReduceInPlace]


def features(shift: float) -> Tensor:
    """``[6, 16]`` seeded features moved by ``shift``."""
    return torch.randn(6, 16, generator=torch.Generator().manual_seed(3)) + shift


@pytest.mark.parametrize("form", FORMS)
def test_bpda_smooth_relaxes_it_through_the_relu_with_the_forward_exact(form: type[nn.Module]) -> None:
    h, gate = features(-0.6), form()
    vals, idx = h.topk(K, dim=-1)
    expected_out = torch.zeros_like(h).scatter(-1, idx, torch.relu(vals))
    counts = (expected_out != 0).sum(dim=1)
    assert counts.max() == K and counts.min() < K  # a negative winner in some rows: the count varies
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
    x = h.clone().requires_grad_(True)
    with attached_backward(gate, {"": LayerTarget("inline")}) as controllers:
        controllers[""].set_backward("smooth", 1.0)
        out = gate(x)
        (grad,) = torch.autograd.grad(out, x, v)
    assert torch.equal(out.detach(), expected_out)  # forward bit for bit
    xr = h.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(relaxed_gate(torch.relu(xr), expected_out, "dense", 1.0), xr, v)
    assert torch.allclose(grad, expected)
    assert bool((grad[h < 0] == 0).all())  # the ReLU's exact part
    losers = (h > 0) & (expected_out == 0)
    assert bool(losers.any()) and bool((grad[losers] != 0).all())


@pytest.mark.parametrize("form", FORMS)
def test_an_evaluation_with_bpda_reads_and_relaxes_it_inline(form: type[nn.Module]) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), form(), nn.Linear(16, 3)).eval()
        with torch.no_grad():
            model[1].bias -= 0.15  # some winners negative on the probe batch
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
              "attacks": [{"attack": "pgd", "params": {"steps": 2}},
                          {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}},
                          {"attack": "bpda", "params": {"surrogate": "identity", "inner_params": {"steps": 2}}}],
              "diagnostics": {"enabled": False}}
    record = evaluate_model(model, config, x, y, threads=1)
    assert [r.bpda_layers for r in record.results] == [None, {"2": "wrapped inline"}, {"2": "wrapped inline"}]
