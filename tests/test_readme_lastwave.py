"""README claims of the last wave (a top-k gate inline in the model's own ``forward``), pinned where no test held
them: the flag's advice for such a gate no BPDA attack acted on, that ``bpda_layers`` cannot name the model itself
(README: "one left out of an explicit ``bpda_layers``, which cannot name the model itself (add ``auto``)"), and that
acting on the model itself leaves a child's inline gate alone."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.inline_gates import InlineGates
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401 - a fixture
from test_rootgate_inline import X, DenseRoot, dense_gate

PGD_ONLY = [{"attack": "pgd", "params": {"steps": 1}}]


def test_a_root_gate_no_bpda_acted_on_is_flagged_with_auto_as_the_fix() -> None:
    """``auto`` acts on the model itself where its own forward builds the gate: the advice is to add BPDA, not to move
    the gate into a module of its own or to name a module around it (the model itself cannot be named)."""
    model = wild.seeded(DenseRoot)
    record = evaluate(model, data(model, X), config(attacks=PGD_ONLY), {}, progress=False)
    flag, = [f for f in run_checks(record) if f.code == "selections-outside-layers"]
    assert flag.severity == "critical"
    assert flag.message.endswith(
        "add bpda with bpda_layers: auto (surrogate smooth, the default, or identity), which relaxes the gate where it "
        "is built (topk in the forward of the model itself), the model's own forward included")
    assert "move the selection into a module of its own" not in flag.message


def test_bpda_layers_cannot_name_the_model_itself_by_its_class() -> None:
    model = wild.seeded(DenseRoot)
    with pytest.raises(ConfigError, match=r"^bpda_layers: 'DenseRoot' matches no module \(by name, glob or class "
                                          r"name\); candidates: fc1 \(Linear\), fc2 \(Linear\)$"):
        evaluate(model, data(model, X), config(bpda_layers=["DenseRoot"]), {}, progress=False)


class Block(nn.Module):
    """A child whose own forward builds a gate inline (a module with a child, so the probe reads no layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(32, 32)

    def forward(self, h: Tensor) -> Tensor:
        g = self.lin(h)
        return g * (g >= g.topk(4, dim=1).values[:, -1:])


class RootAndChild(nn.Module):
    """A gate inline in the root's forward, then a child with a gate inline in its own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.block, self.fc2 = nn.Linear(64, 32), Block(), nn.Linear(32, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.block(dense_gate(self.fc1(x.flatten(1)))))


@pytest.mark.parametrize("names, relaxed", [([""], 1), (["", "block"], 2)])
def test_acting_on_the_model_itself_leaves_a_childs_gate_to_the_child(inline_modes: list[InlineGates],
                                                                      names: list[str], relaxed: int) -> None:
    """README: BPDA relaxes the root's gate "while the root's own forward runs, its children's selections untouched"
    — acting on the model alone relaxes one gate a forward; acting on the child too, both."""
    model = wild.seeded(RootAndChild)
    x = X.clone().requires_grad_(True)
    with attached_backward(model, {name: LayerTarget("inline") for name in names}) as controllers, \
            surrogate_backward(model, "smooth", 0.5, controllers):
        torch.autograd.grad(model(x).sum(), x)
    assert sum(mode.relaxed for mode in inline_modes) == relaxed
