"""A kWTA model behind an input-normalization wrapper, ``Normalized(net)`` → ``net((x - mean) / std)``, whose
``net`` builds a readable top-k gate inline in its own ``forward`` and whose child ``block`` makes a second one in
place by the losers' indices, ``out[(h < t).nonzero(as_tuple=True)] = 0``, which BPDA does not read (found by the
wild-model fuzzer, tests/fuzz47_wild.py seed 1099, as ``out[h < t] = 0``, which BPDA reads since
attacks/mask_assign.py).
``bpda_layers: auto`` acts on ``model`` (the wrapper's child) for the gate in its ``forward``; BPDA there relaxes
that gate alone, so ``model.block``'s mask still cuts the gradient. The diagnostics counted ``model.block``'s
selection as held by ``model`` (a module around the call), so no flag named it; the model itself (``""``) was
already counted only for its own gates. Now a module BPDA acted on inline holds only the calls of its own
``forward`` (:func:`kwta_robust.selection_entries.held_by`), and ``selections-outside-layers`` names
``model.block``. Inputs ``[6, 1, 8, 8]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kwta_robust.api import evaluate_model
from kwta_robust.selection_entries import held_by
from test_fuzz46_fixed_seeds import CONFIG

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class InPlaceBlock(nn.Module):
    """conv, then each sample's 128 largest of ``[N, 4, 8, 8]`` kept in a copy, the rest zeroed in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        out = h.clone()
        out[(h < h.flatten(1).topk(128, dim=1).values[:, -1:].view(-1, 1, 1, 1)).nonzero(as_tuple=True)] = 0.0
        return out


class Net(nn.Module):
    """stem → block → a top-k of 32 of 256 per sample, inline in this ``forward`` → head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(1, 4, 3, padding=1), InPlaceBlock(), nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        f = self.block(self.stem(x)).flatten(1)
        return self.head(f * (f >= f.topk(32, dim=1).values[:, -1:]))


class Normalized(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - 0.5) / 0.25)


def test_a_child_selection_of_a_module_bpda_relaxed_inline_is_flagged() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Normalized(Net()).eval()
    with torch.no_grad():
        y = model(X).argmax(1)
    record = evaluate_model(model, CONFIG, X, y, threads=1)
    assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{"model": "wrapped inline"}] * 2
    flags = [f for f in record.diagnostics if f.code == "selections-outside-layers"]
    assert len(flags) == 1 and flags[0].severity == "critical"
    assert [s["modules"][-1] for s in flags[0].evidence["selections"]] == ["model.block"]
    assert "in the forward of model.block" in flags[0].message


def test_held_by_reads_a_module_acted_on_inline_as_holding_its_own_calls_only() -> None:
    child = {"op": "topk", "modules": ["", "model", "model.block"]}
    own = {"op": "topk", "modules": ["", "model"], "gate": "volume"}
    assert not held_by(["model"], child, inline=["model"]) and held_by(["model"], own, inline=["model"])
    assert held_by(["model"], child) and held_by(["model.block"], child, inline=["model.block"])
