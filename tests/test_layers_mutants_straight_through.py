"""Mutation round on :mod:`kwta_robust.straight_through` and :mod:`kwta_robust.grad_cut`: the per-module record of
one probed forward, which modules BPDA acts on unclassified, the refusals, and where a forward cuts the graph, each
written out by hand for small models."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from kwta_robust.errors import ConfigError
from kwta_robust.grad_cut import cut_text, locate_cut, module_stack_hooks
from kwta_robust.layers import KWTA
from kwta_robust.straight_through import note_straight_through, straight_through_layers, unclassified_targets


class TopTwo(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * (x >= x.topk(2, dim=1).values[:, -1:]).to(x.dtype)


class Double(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return 2 * x


class MergeBatch(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1)


class Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    gate = TopTwo()  # called twice: one module, two calls
    return nn.Sequential(nn.Linear(4, 6), gate, Double(), gate, nn.Dropout(0.5), KWTA(k=2), nn.Linear(6, 2))


def _x() -> Tensor:
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


def test_straight_through_layers_by_hand() -> None:
    model = _model().train()
    rng = torch.get_rng_state()
    found = straight_through_layers(model, _x(), ["0", "1", "2", "4"], seed=3)
    assert found == {
        "0": {"module_class": "Linear", "calls": 1, "relaxed_calls": 0, "masks_input": False, "keeps_elements": False,
              "parameters": 30},
        # the second call's input has two nonzero entries a row: it comes out unchanged, no gate to relax
        "1": {"module_class": "TopTwo", "calls": 2, "relaxed_calls": 1, "masks_input": True, "keeps_elements": True,
              "parameters": 0},
        "2": {"module_class": "Double", "calls": 1, "relaxed_calls": 0, "masks_input": False, "keeps_elements": True,
              "parameters": 0},
        "4": {"module_class": "Dropout", "calls": 1, "relaxed_calls": 0, "masks_input": True,  # eval mode: identity
              "keeps_elements": True, "parameters": 0},
    }
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert not any(m._forward_hooks for m in model.modules())


def test_a_module_merging_the_batch_does_not_keep_its_elements() -> None:
    model = nn.Sequential(nn.Linear(4, 6), MergeBatch())
    assert straight_through_layers(model, _x(), ["1"], seed=0)["1"]["keeps_elements"] is False


@pytest.mark.parametrize("module, what", [(Pair(), "returns a tuple"), (TopTwo(), "several inputs")])
def test_refused_modules_name_the_reason(module: nn.Module, what: str) -> None:
    class Caller(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: Tensor) -> Tensor:
            out = self.inner(x) if isinstance(module, Pair) else self.inner(x, x)
            return out[0]

    if isinstance(module, TopTwo):
        module.forward = lambda x, y: x  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match=f"module 'inner' \\({type(module).__name__}\\) .*{what}"):
        straight_through_layers(Caller(), _x(), ["inner"], seed=0)


def test_unclassified_targets_in_model_order() -> None:
    model = _model()
    uses = [("smooth", {"3": LayerTarget(), "1": LayerTarget("gate", grouping="dense")}),
            ("identity", {"2": LayerTarget(), "5": LayerTarget(), "0": LayerTarget()})]
    assert unclassified_targets(model, uses) == ["0", "2"]  # "1" is classified, "5" is a kWTA layer


def test_note_straight_through_adds_only_what_is_missing_and_refuses_resizing() -> None:
    model = _model().eval()
    known = {"0": {"module_class": "Linear", "keeps_elements": False}}
    detection: dict = {"straight_through": dict(known)}
    assert note_straight_through(detection, model, _x(), [("model", {"0": LayerTarget()})], 0) is False
    assert detection["straight_through"] == known  # nothing re-probed
    assert note_straight_through(detection, model, _x(), [("model", {"2": LayerTarget()})], 0) is True
    assert detection["straight_through"]["2"]["calls"] == 1 and detection["straight_through"]["0"] == known["0"]
    with pytest.raises(ConfigError, match="module '0' \\(Linear\\) changes the number of elements.*smooth surrogate"):
        note_straight_through(detection, model, _x(), [("smooth", {"0": LayerTarget(), "2": LayerTarget()})], 0)
    assert note_straight_through({}, model, _x(), [("smooth", {"1": LayerTarget("gate", grouping="dense")})],
                                 0) is False


class Cut(nn.Module):
    """A cut (``detach``) two modules deep; after it a parameter times a tensor and a read of ``x.dtype``; it draws
    random numbers, and in train mode it has no cut at all."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), Detach())
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        x = x + 0.0 * torch.rand(x.shape)
        if self.training:
            return self.head(x)
        return self.head(self.scale * torch.relu(self.inner(x))).to(x.dtype)


class FloatCut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.full((x.shape[0], 4), float(x.sum())))


class Detach(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(-1, 1).detach()


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_locate_cut_by_hand() -> None:
    model = Cut().train()
    rng = torch.get_rng_state()
    assert locate_cut(model, _x()) == {"op": "detach", "modules": ["", "inner", "inner.1"], "no_grad": False}
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert locate_cut(FloatCut(), _x()) == {"op": "float", "modules": [""], "no_grad": False}  # Tensor.__float__


def test_module_stack_hooks_track_the_open_forwards() -> None:
    model = Cut()
    stack, handles = module_stack_hooks(model)
    seen = []
    model.head.register_forward_pre_hook(lambda m, a: seen.append(list(stack)))
    model(_x())
    assert seen == [["", "head"]] and stack == []
    for handle in handles:
        handle.remove()


def test_cut_text_by_hand() -> None:
    assert cut_text({"op": "detach", "modules": ["", "inner", "inner.1"]}) == "detach in the forward of inner.1"
    assert cut_text({"op": "gt", "modules": [""]}) == "gt in the forward of the model itself"
    assert (cut_text({"op": "linear", "modules": ["", "fc"], "no_grad": True})
            == "linear in the forward of fc, under torch.no_grad()")
