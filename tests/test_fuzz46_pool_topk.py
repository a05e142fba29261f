"""A leaf module whose ``forward`` builds a top-k gate and then a max-pool winner-take-all (found by the wild-model
fuzzer): the layer probe reads it as a max-pool gate (``max-pool-gate``). Made in place by the 1-D indices of
``nonzero``, BPDA cannot relax the pool gate: ``bpda_layers: auto`` leaves the module out and the flags name it (made
in place as ``g[g != F.max_pool2d(g, 3, 1, 1)] = 0`` it was so too, and is now relaxed: attacks/pool_in_place.py).
Returned, ``g · (g == F.max_pool2d(g, 3, 1, 1))``, BPDA relaxes both gates (:mod:`attacks.pool_relax`): ``auto``
acts on it. Before, ``auto`` chose the first as a module building a gate inline and the evaluation was refused under
``auto`` ("name it ... leave it out"), or, with it left out, refused again ("add it (or auto)"). Inputs
``[8, 1, 8, 8]``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.api import evaluate_model

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
CONFIG = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.1]}], "noise": [],
          "attacks": [{"attack": "pgd", "params": {"steps": 2}},
                      {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}},
                      {"attack": "bpda", "params": {"surrogate": "identity", "inner_params": {"steps": 2}}}],
          "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}


class TopKThenPool(nn.Module):
    """Each sample's 20 % largest units of ``[N, C, H, W]``, then a spatial winner-take-all of 3 × 3 windows."""

    def forward(self, h: Tensor) -> Tensor:
        f = h.flatten(1)
        g = (f * (f >= f.topk(max(1, f.shape[1] // 5), dim=1).values[:, -1:])).view_as(h)
        return g * (g == F.max_pool2d(g, 3, 1, 1))


class TopKThenPoolInPlace(nn.Module):
    """:class:`TopKThenPool` with the spatial winner-take-all made in place on the pool's input (read by BPDA)."""

    def forward(self, h: Tensor) -> Tensor:
        f = h.flatten(1)
        g = (f * (f >= f.topk(max(1, f.shape[1] // 5), dim=1).values[:, -1:])).view_as(h).clone()
        g[g != F.max_pool2d(g, 3, 1, 1)] = 0
        return g


class TopKThenPoolNonzero(nn.Module):
    """:class:`TopKThenPool` with the spatial winner-take-all made in place by ``nonzero`` indices (which BPDA does
    not read)."""

    def forward(self, h: Tensor) -> Tensor:
        f = h.flatten(1)
        g = (f * (f >= f.topk(max(1, f.shape[1] // 5), dim=1).values[:, -1:])).view_as(h).clone()
        g[(g != F.max_pool2d(g, 3, 1, 1)).nonzero(as_tuple=True)] = 0
        return g


def net(gate: type[nn.Module] = TopKThenPoolNonzero) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), gate(), nn.Flatten(), nn.Linear(256, 3)).eval()


@pytest.mark.parametrize("gate", [TopKThenPool, TopKThenPoolInPlace])
def test_auto_relaxes_a_topk_then_max_pool_gate_it_returns_or_makes_in_place(gate: type[nn.Module]) -> None:
    model = net(gate)
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, CONFIG, X, y, threads=1)
    assert [l["kinds"] for l in record.detection["layers"] if l["name"] == "1"] == [["max-pool-gate"]]
    assert [r.bpda_layers for r in record.results if r.kind == "bpda"] == [{"1": "wrapped inline"}] * 2
    assert not [f["code"] for f in record.to_dict()["diagnostics"] if f["severity"] != "info"]


def test_auto_leaves_a_topk_then_in_place_max_pool_gate_out_and_the_flags_name_it() -> None:
    model = net()
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, CONFIG, X, y, threads=1)
    assert [l["kinds"] for l in record.detection["layers"] if l["name"] == "1"] == [["max-pool-gate"]]
    assert [r.bpda_layers for r in record.results if r.kind == "bpda"] == [{}, {}]
    flags = {f["code"]: f for f in record.to_dict()["diagnostics"]}
    assert flags["selections-outside-layers"]["severity"] == "critical"
    assert {s["modules"][-1] for s in flags["selections-outside-layers"]["evidence"]["selections"]} == {"1"}
    assert "bpda-no-layer" in flags
    worst = record.worst("linf", 0.1).robust.accuracy
    assert all(worst <= r.robust.accuracy for r in record.results)
