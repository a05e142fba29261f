"""A top-k gate written inline in a module's ``forward`` — ``x + kwta(conv(x))`` in a residual block, ``kwta`` a
function of ``topk``/``kthvalue``/``sort``, a threshold and a mask (kwta_robust/detect_selections.py,
attacks/inline_gates.py). It was listed as a selection and flagged, but ``bpda_layers: auto`` acted on nothing and
BPDA ran with the gate's 0/1 mask cutting the gradient (and naming the block replaced its whole backward by the
identity, skipping the convolution). Such a gate is now marked (``gate`` in the selection) and BPDA relaxes it
alone where it acts on the block (``auto`` does; for a gate inline in the model's own forward, on the model itself:
tests/test_rootgate_inline.py); a BPDA attack that acts on no module around one — an explicit ``bpda_layers`` that
leaves it out — is refused before any attack in one line."""

from __future__ import annotations

import contextlib
import io
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import bpda_wrap
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import relaxed_gate
from attacks.inline_gates import InlineGates
from kwta_robust.cli import main
from kwta_robust.config import EvalConfig
from kwta_robust.data import TensorData
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from test_gates_fuzz import seeded

K = 20  # winners of 4 · 8 · 8 = 256 units per sample
X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3))
T = 0.5


def by_topk(h: Tensor) -> Tensor:
    f = h.flatten(1)
    return (f * (f >= f.topk(K, dim=1).values[:, -1:])).view_as(h)


def by_kthvalue_where(h: Tensor) -> Tensor:
    f = h.flatten(1)
    t = f.kthvalue(f.shape[1] - K + 1, dim=1, keepdim=True).values
    return torch.where(f >= t, f, torch.zeros_like(f)).view_as(h)


def by_sort(h: Tensor) -> Tensor:
    f = h.flatten(1)
    return (f * (f >= f.sort(dim=1, descending=True).values[:, K - 1:K]).to(f.dtype)).view_as(h)


def by_scatter(h: Tensor) -> Tensor:
    f = h.flatten(1)
    return (f * torch.zeros_like(f).scatter_(1, f.topk(K, dim=1).indices, 1.0)).view_as(h)


OPS = {by_topk: "topk", by_kthvalue_where: "kthvalue", by_sort: "sort", by_scatter: "topk"}


class Residual(nn.Module):
    """``x + kwta(conv(x))``, the kWTA written inline."""

    def __init__(self, kwta: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.conv, self.kwta = nn.Conv2d(4, 4, 3, padding=1), kwta

    def forward(self, x: Tensor) -> Tensor:
        return x + self.kwta(self.conv(x))


class Net(nn.Module):
    """stem conv → residual block with an inline kWTA → ``after`` (``cat`` with the stem's output, ``pad``,
    ``upsample``) → linear head; ``inline_here``: the kWTA inline in this forward instead (no block)."""

    def __init__(self, kwta: Callable[[Tensor], Tensor] = by_topk, after: str = "", inline_here: bool = False) -> None:
        super().__init__()
        self.after, self.inline_here, self.kwta = after, inline_here, kwta
        self.stem, self.block = nn.Conv2d(1, 4, 3, padding=1), Residual(kwta)
        self.head = nn.Linear({"cat": 512, "pad": 400, "upsample": 1024}.get(after, 256), 3)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        h = s + self.kwta(self.block.conv(s)) if self.inline_here else self.block(s)
        if self.after == "cat":
            h = torch.cat([h, s], dim=1)
        elif self.after == "pad":
            h = F.pad(h, (1, 1, 1, 1))
        elif self.after == "upsample":
            h = F.interpolate(h, scale_factor=2)
        return self.head(h.flatten(1))


def residual_net() -> nn.Module:
    """The CLI's model factory."""
    return seeded(lambda: Net(inline_here=True))


@pytest.mark.parametrize("kwta", list(OPS), ids=lambda f: f.__name__)
@pytest.mark.parametrize("after", ["", "cat", "pad", "upsample"])
def test_an_inline_gate_in_a_residual_block_is_found_and_auto_acts_on_its_block(kwta, after: str) -> None:
    detection = detect_layers(seeded(lambda: Net(kwta, after)), X)
    assert detection.names("gate") == []
    assert detection.selections == [{"op": OPS[kwta], "kind": "selection", "modules": ["", "block"], "calls": 1,
                                     "gate": "dense", "k": K, "group_size": 256, "probed": False}]
    assert detection.auto_targets() == {"block": LayerTarget("inline")}


def gradients(model: Net, backward: str | None) -> tuple[Tensor, Tensor]:
    """The model's output and the input gradient of its summed output, plain (``None``) or under BPDA with
    ``backward`` on what ``auto`` selects."""
    x = X.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if backward is not None:
            targets = detect_layers(model, X).auto_targets()
            controllers = stack.enter_context(attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def by_hand(model: Net, gate: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The input gradient with the block's gate replaced by ``gate(h, kwta(h))`` (forward and backward)."""
    x = X.clone().requires_grad_(True)
    s = model.stem(x)
    h = model.block.conv(s)
    out = model.head((s + gate(h, model.block.kwta(h.detach()))).flatten(1))
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad


@pytest.mark.parametrize("kwta", [by_topk, by_kthvalue_where, by_scatter], ids=lambda f: f.__name__)
def test_bpda_relaxes_the_inline_gate_and_keeps_the_rest_of_the_block(kwta) -> None:
    model = seeded(lambda: Net(kwta))
    plain_out, plain = gradients(model, None)
    out, smooth = gradients(model, "smooth")
    assert torch.equal(out, plain_out)  # the forward is exact
    relaxed = by_hand(model, lambda h, o: relaxed_gate(h.flatten(1), o.flatten(1), "dense", T).view_as(h))
    torch.testing.assert_close(smooth, relaxed, rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3  # no longer the masked gradient
    # the plain gradient is that of the hard gate: s + h · mask, mask held fixed
    torch.testing.assert_close(plain, by_hand(model, lambda h, o: h * (o != 0)), rtol=1e-5, atol=1e-7)
    # identity: straight-through at the gate alone, the convolution kept (not the whole block replaced)
    _, identity = gradients(model, "identity")
    torch.testing.assert_close(identity, by_hand(model, lambda h, o: h + (o - h).detach()), rtol=1e-5, atol=1e-7)


def config(**changes) -> EvalConfig:
    return EvalConfig.from_dict({
        "dataset": "toy", "batch_size": 8, "seed": 0, "threats": [{"norm": "linf", "epsilons": [0.1]}],
        "attacks": [{"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}],
        "noise": [], "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}},
        **changes})


def data(model: nn.Module, x: Tensor = X) -> TensorData:
    with torch.no_grad():
        y = model(x).argmax(1)
    return TensorData(x.clone(), y, "toy", 3, torch.arange(len(y)))


@pytest.fixture
def inline_modes(monkeypatch: pytest.MonkeyPatch) -> list[InlineGates]:
    """Every :class:`InlineGates` mode BPDA enters during the test (each counts the gates it relaxed)."""
    made: list[InlineGates] = []

    class Watched(InlineGates):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(bpda_wrap, "InlineGates", Watched)
    return made


def test_an_evaluation_relaxes_the_inline_gate_and_raises_no_flag_about_it(inline_modes: list[InlineGates]) -> None:
    made = inline_modes
    model = seeded(lambda: Net(by_topk, "cat"))
    record = evaluate(model, data(model), config(), {}, progress=False)
    assert made and sum(mode.relaxed for mode in made) > 0  # the attack's backward went through the relaxed gate
    assert list(record.result("bpda", "linf", 0.1).bpda_layers) == ["block"]
    assert record.detection["selections"][0]["gate"] == "dense"
    codes = {f.code for f in run_checks(record)}
    assert not codes & {"selections-outside-layers", "bpda-no-layer", "bpda-straight-through"}


def test_bpda_that_leaves_an_inline_gate_in_place_is_refused_in_one_line() -> None:
    model = seeded(lambda: Net(by_topk))
    with pytest.raises(ConfigError) as named_elsewhere:
        evaluate(model, data(model), config(bpda_layers=["stem"]), {}, progress=False)
    assert str(named_elsewhere.value) == (
        "bpda_layers: the model builds a top-k gate inline (topk in the forward of block) that BPDA would leave in "
        "place, its 0/1 mask cutting the gradient; add 'block' (or auto) to bpda_layers, which relaxes the gate "
        "there, or use bpda surrogate: model, gradient estimation or square")
    inline_here = residual_net()  # inline in the model's own forward: auto acts on the model itself ("")
    with pytest.raises(ConfigError, match=r"^bpda_layers: the model builds a top-k gate inline \(topk in the forward "
                                          r"of the model itself\) .* add auto to bpda_layers, which relaxes the gate"):
        evaluate(inline_here, data(inline_here), config(bpda_layers=["stem"]), {}, progress=False)


def test_the_cli_refuses_bpda_that_leaves_an_inline_gate_in_place_with_exit_code_2(tmp_path) -> None:
    model = residual_net()
    torch.save({"x": X, "y": data(model).y}, tmp_path / "data.pt")
    (tmp_path / "eval.yaml").write_text(
        "dataset: mnist5k\nn_examples: 8\nbatch_size: 8\ndevice: cpu\nseed: 0\nbpda_layers: [stem]\n"
        "threats: [{norm: linf, epsilons: [0.1]}]\n"
        "attacks: [{attack: bpda, params: {surrogate: smooth, inner_params: {steps: 1}}}]\n")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", "test_detect_inline_gates:residual_net", "--config",
                       str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                       str(tmp_path / "r.json"), "--no-progress"])
    assert status == 2 and "Traceback" not in err.getvalue()
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and "builds a top-k gate inline (topk in the forward of the model itself)" in lines[0]


class LinearThenTopK(nn.Module):
    """A linear layer and its top-k in one module, 16 → 8 units (a user's ``KWTALinear``): named in
    ``bpda_layers`` it was passed straight through (skipping the linear map; flagged) or, resizing, refused."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 8)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear(x)
        return h * (h >= h.topk(3, dim=1).values[:, -1:]).to(h.dtype)


def test_a_module_mapping_its_input_before_an_inline_top_k_gets_that_gate_relaxed() -> None:
    model = seeded(lambda: nn.Sequential(nn.Flatten(), LinearThenTopK(), nn.Linear(8, 3)))
    small = X[:, :, :4, :4].contiguous()
    detection = detect_layers(model, small)
    assert detection.auto_targets() == {"1": LayerTarget("inline")} and detection.target("1") == LayerTarget("inline")
    x = small.clone().requires_grad_(True)
    with attached_backward(model, {"1": LayerTarget("inline")}) as controllers, \
            surrogate_backward(model, "smooth", T, controllers):
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    xh = small.clone().requires_grad_(True)
    h = model[1].linear(xh.flatten(1))
    relaxed = relaxed_gate(h, model[1](xh.flatten(1)).detach(), "dense", T)
    (expected,) = torch.autograd.grad(model[2](relaxed).sum(), xh)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    record = evaluate(model, data(model, small), config(bpda_layers=["1"]), {}, progress=False)
    assert list(record.result("bpda", "linf", 0.1).bpda_layers) == ["1"]
    assert record.detection["straight_through"] == {}
    assert "bpda-straight-through" not in {f.code for f in run_checks(record)}
