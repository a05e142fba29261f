"""A module whose forward builds TWO inline top-k gates, one of them in a form BPDA cannot read: ``h1 =
kwta(c1(x))`` readable, then ``h2[(h2 < t2).nonzero(as_tuple=True)] = 0`` (integer indices assigned in place in the
tensor ``topk`` ranked, which no result shows apart from that tensor: before attacks/mask_assign.py, ``h2[h2 < t2] =
0``, then ``h2.mul_(h2 >= t2)``, which it now reads too), or the second gate readable on the probe's batch and
written in place on a single sample. BPDA's mode for inline gates (attacks/inline_gates.py) relaxed the first, the
second's 0/1 mask cut the gradient unseen, and the number read as a BPDA result: only a call that relaxed NO gate
was refused. The layer probe now counts the gates one call builds, in place ones too
(kwta_robust/detect_selections.py: ``gates`` on the selection entries, ``LayerTarget.gates``), and BPDA refuses a
call that relaxed fewer (attacks/bpda_wrap.py ModuleBackward). A selection used for something else next to one
readable gate (a median by ``sort``, a clipping bound by ``quantile``, in-place arithmetic on the ranked tensor), a
gate written in place and then read through a view, and a one-gate block called twice per forward are not refused:
their gradients are those of the target the probe gave before (``LayerTarget("inline")``)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from kwta_robust.cli import main
from kwta_robust.detect import detect_layers
from test_wild_models import T

X = wild.X
K = int(wild.RATIO * 256)


def refusal(module_class: str, shape: tuple[int, ...]) -> str:
    return (f"BPDA layer '1' ({module_class}) builds 2 top-k gates in its forward (read by the layer probe: each "
            "application of a selection's 0/1 mask is one) but BPDA "
            f"could read and relax only 1 of them there (on an input of shape {shape}), so the other gates' 0/1 masks "
            "would cut the gradient unseen; build every gate in a form BPDA reads (h * (h >= t), each selection's mask "
            "applied once, not "
            "h[m.nonzero(as_tuple=True)] = 0 on the ranked tensor or a branch on the batch), or call each kWTA from a "
            "module of its own (bpda_layers: auto then replaces its backward), or use bpda surrogate: model, gradient "
            "estimation or square")


def gate(f: Tensor) -> Tensor:
    """A readable top-k gate per sample: ``f · (f ≥ k-th largest)``."""
    return f * (f >= f.topk(K, dim=1).values[:, -1:])


class TwoGates(nn.Module):
    """``x + gate2(c2(gate1(c1(x))))``: the first gate readable, the second zeroed in place by integer indices
    (``always``) or readable on a batch and in place on a single sample."""

    def __init__(self, always: bool = True) -> None:
        super().__init__()
        self.c1, self.c2, self.always = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), always

    def forward(self, x: Tensor) -> Tensor:
        h2 = self.c2(gate(self.c1(x).flatten(1)).view_as(x)).flatten(1)
        t2 = h2.topk(K, dim=1).values[:, -1:]
        if self.always:
            h2[(h2 < t2).nonzero(as_tuple=True)] = 0
            return x + h2.view_as(x)
        if h2.shape[0] == 1:
            h2[(h2 < t2).nonzero(as_tuple=True)] = 0
            return (x.flatten(1) + h2).view_as(x)
        return x + (h2 * (h2 >= t2)).view_as(x)


class OneGateBeside(nn.Module):
    """One readable gate; a median (``sort``) subtracted in place before it and a clipping bound (``quantile``)
    applied in place after it: selections that build no gate."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        f = f.clone().sub_(f.sort(dim=1).values[:, 128:129])  # in place on a copy of what sort ranked
        h = gate(f)
        return x + h.clone().clamp_(max=torch.quantile(h, 0.99, dim=1, keepdim=True)).view_as(x)


class OneGateInPlaceViewed(nn.Module):
    """One gate written in place on a copy and returned through a view, which BPDA reads (the tensor ``topk`` ranked
    is gated there)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        g = f.clone()
        g[f < f.topk(K, dim=1).values[:, -1:]] = 0
        return x + g.view_as(x)


class Twice(nn.Module):
    """One inline-gate block called twice per forward: one gate per call."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(1, 4, 3, padding=1), OneGateBeside(), nn.Linear(256, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.block(self.stem(x))).flatten(1))


class GateThenFunction(nn.Module):
    """A readable gate, then a second one inside a custom ``torch.autograd.Function`` (autograd records nothing
    there: the Function's own backward runs)."""

    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.c1, self.c2, self.fn = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn.apply(self.c2(gate(self.c1(x).flatten(1)).view_as(x)), K)


def built(block: Callable[[], nn.Module]) -> nn.Module:
    """``block`` (made under the seed too) between a stem convolution and a linear head."""
    return wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), block(), nn.Flatten(),
                                             nn.Linear(256, 3)))


def input_gradient(model: nn.Module, x: Tensor, targets: dict[str, LayerTarget], backward: str) -> Tensor:
    """The gradient of the summed logits at ``x`` with BPDA's ``backward`` on ``targets`` (none: plain autograd)."""
    x = x.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if targets:
            controllers = stack.enter_context(attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


def test_the_probe_counts_the_gate_made_in_place_and_the_one_on_the_probes_batch() -> None:
    for always in (True, False):
        detection = detect_layers(built(lambda: TwoGates(always)), X, log=False)
        assert detection.auto_targets() == {"1": LayerTarget("inline", gates=2)}
        assert [(s["op"], s["calls"], s.get("gates")) for s in detection.selections] == [("topk", 2, 2)]


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("n", [4, 1])
def test_a_second_gate_made_in_place_is_refused(backward: str, n: int) -> None:
    model = built(TwoGates)
    targets = detect_layers(model, X, log=False).auto_targets()
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:n], targets, backward)
    assert str(refused.value) == refusal("TwoGates", (n, 4, 8, 8))


def test_a_second_gate_on_another_branch_is_refused_where_it_is_taken() -> None:
    model = built(lambda: TwoGates(always=False))
    targets = detect_layers(model, X, log=False).auto_targets()
    plain = input_gradient(model, X[:4], {}, "smooth")
    assert (input_gradient(model, X[:4], targets, "smooth") - plain).abs().max() > 1e-3  # both gates relaxed
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:1], targets, "smooth")
    assert str(refused.value) == refusal("TwoGates", (1, 4, 8, 8))


@pytest.mark.parametrize("fn", [wild.MaskedKwta, wild.STEKwta], ids=lambda f: f.__name__)
def test_a_second_gate_inside_a_custom_function_is_refused_as_a_lone_one_is(fn: type) -> None:
    """Before, only a call that relaxed none of its gates and made one where autograd records nothing was refused."""
    model = built(lambda: GateThenFunction(fn))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=2)}
    with pytest.raises(AttackConfigError) as refused:
        input_gradient(model, X[:4], targets, "smooth")
    assert str(refused.value) == (
        "BPDA layer '1' (GateThenFunction) builds its top-k gate where autograd records nothing (inside a custom "
        "torch.autograd.Function, or under torch.no_grad), so BPDA cannot relax it and the gate's own backward "
        "would run; call that kWTA from a module of its own (bpda_layers: auto then replaces its backward), or use "
        "bpda surrogate: model, gradient estimation or square")


@pytest.mark.parametrize("model", [built(OneGateBeside), built(OneGateInPlaceViewed),
                                   wild.seeded(Twice)], ids=["sort-and-quantile", "in-place-viewed", "twice"])
@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_one_gate_per_call_is_relaxed_as_before(model: nn.Module, backward: str) -> None:
    """Each call relaxes its one gate (the gradient leaves plain autograd's) exactly as with the target the probe
    gave before counting gates."""
    name = "block" if isinstance(model, Twice) else "1"
    assert detect_layers(model, X, log=False).auto_targets() == {name: LayerTarget("inline")}
    for n in (4, 1):
        relaxed = input_gradient(model, X[:n], {name: LayerTarget("inline")}, backward)
        assert torch.equal(input_gradient(model, X[:n], detect_layers(model, X, log=False).auto_targets(), backward),
                           relaxed)
        assert (relaxed - input_gradient(model, X[:n], {}, backward)).abs().max() > 1e-3


def test_a_gate_count_goes_with_inline_targets_only() -> None:
    assert LayerTarget.of({"kind": "inline", "gates": 2}) == LayerTarget("inline", gates=2)
    for kind, gates in (("gate", 2), ("inline", 0), ("inline", True), ("inline", 2.0)):
        with pytest.raises(AttackConfigError, match="layers: gates must be a whole number >= 1"):
            LayerTarget(kind, "dense" if kind == "gate" else None, gates=gates)


def two_gates() -> nn.Module:
    return built(TwoGates)


def test_the_cli_refuses_before_the_first_attack_in_one_line(tmp_path: Path) -> None:
    """The BPDA pre-check runs BPDA's hooks on the probed samples: the refusal comes before the clean pass, and no
    record is written."""
    model = two_gates()
    with torch.no_grad():
        torch.save({"x": X[:4], "y": model(X[:4]).argmax(1)}, tmp_path / "data.pt")
    (tmp_path / "eval.yaml").write_text(
        "dataset: mnist5k\nn_examples: 4\nbatch_size: 4\ndevice: cpu\nseed: 0\n"
        "threats: [{norm: linf, epsilons: [0.001]}]\n"
        "attacks: [{attack: pgd, params: {steps: 1}}, "
        "{attack: bpda, params: {surrogate: smooth, inner_params: {steps: 1}}}]\n")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(["-q", "evaluate", "--model-factory", "test_inline_gates_twogates:two_gates", "--config",
                       str(tmp_path / "eval.yaml"), "--data", str(tmp_path / "data.pt"), "--out",
                       str(tmp_path / "r.json"), "--no-progress"])
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "no weights file given" not in line]
    assert status == 2 and "Traceback" not in err.getvalue()
    assert len(lines) == 1 and refusal("TwoGates", (4, 4, 8, 8)) in lines[0], lines
    assert not (tmp_path / "r.json").exists()
