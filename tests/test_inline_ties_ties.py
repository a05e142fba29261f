"""A top-k gate written inline whose ties at its threshold hide it on the probe batch (kwta_robust/detect_selections.py,
attacks/tied_gates.py, attacks/inline_gates.py).

``h · (|h| ≥ |h|.topk(k).values[:, -1:])`` on MNIST keeps every unit tied with the k-th: after a bias-free
convolution the black background is 0 and the strokes repeat values, so the winner count varies per sample (156 to
158 of 784 here) and neither the constant-count rule nor ``threshold_fit`` read a gate. It was listed as a selection
with no gate: ``selections-outside-layers`` (critical) flagged the evaluation and BPDA relaxed nothing (naming the
block, BPDA refused the call: a selection and no readable gate). The selection watch now repeats the forward on the
probe batch moved by a hundredth of its std (as the layer probe re-reads a module gate) and reads the gate there
(``ties_broken`` in the entry); on an attack step's tied inputs BPDA reads the gate by the ties that explain its
count (``attacks.tied_gates.tied_operand``), its forward exact and its relaxation one of the actual selection.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import read_gate, relaxed_gate
from attacks.inline_gates import InlineGates
from attacks.tied_gates import tied_fit
from kwta_robust.data import TensorData, load_dataset
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect import tied
from test_detect_inline_gates import config, inline_modes  # noqa: F401 - a fixture
from wild_kwta_models import seeded

K = 156  # 20 % of 784
T = 0.5
QUIET = {"selections-outside-layers", "bpda-no-layer", "bpda-straight-through", "unranked-gates"}


@functools.lru_cache(maxsize=1)
def mnist() -> Tensor:
    """The first 16 test images of mnist5k ``[16, 1, 28, 28]``, black background (0)."""
    return load_dataset("mnist5k", "test").x[:16].clone()


def magnitude(h: Tensor) -> Tensor:
    """tests/gates_styles.py's ``magnitude`` with ``k`` of 784."""
    f = h.flatten(1)
    return (f * (f.abs() >= f.abs().topk(K, 1).values[:, -1:])).view_as(h)


class Block(nn.Module):
    """``x + magnitude(conv(x))``, the gate inline; the convolution bias-free (the background stays 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + magnitude(self.conv(x))


class InlineChannel(nn.Module):
    """test_detect.py's ``ThresholdGate(10, "magnitude")`` (Xiao et al.'s ``Sparsify2D_abs``: per channel, ``>=``)
    inline in a forward with a child, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(144, 3)

    def forward(self, x: Tensor) -> Tensor:
        s = x.abs().flatten(2)
        return self.head((x * (s >= s.topk(10, dim=-1).values[..., -1:]).reshape(x.shape)).flatten(1))


def net() -> nn.Module:
    return seeded(lambda: nn.Sequential(Block(), nn.Flatten(), nn.Linear(784, 10)))


def test_the_ties_vary_the_count_and_no_strict_reading_reads_the_gate() -> None:
    """The premise: on MNIST the gate keeps 156 winners in most samples and more where values tie at the k-th."""
    model = net()
    with torch.no_grad():
        h = model[0].conv(mnist()).flatten(1)
    hard = magnitude(h)
    counts = (hard != 0).sum(1)
    assert int(counts.min()) == K and int(counts.max()) > K
    assert read_gate(h, hard, known_gate=True) is None


def test_the_probe_reads_the_inline_magnitude_gate_through_its_ties() -> None:
    detection = detect_layers(net(), mnist(), log=False)
    assert detection.selections == [{"op": "topk", "kind": "selection", "modules": ["", "0"], "calls": 1,
                                     "gate": "dense", "k": K, "group_size": 784, "ties_broken": 1e-2,
                                     "probed": False}]
    assert detection.auto_targets() == {"0": LayerTarget("inline")}


def gradients(model: nn.Module, x: Tensor, target: str, backward: str | None) -> tuple[Tensor, Tensor]:
    """The output and the input gradient of the summed output, plain (``None``) or under BPDA with ``backward``
    acting inline on ``target``."""
    x = x.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if backward is not None:
            controllers = stack.enter_context(attached_backward(model, {target: LayerTarget("inline")}))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def mnist_by_hand(model: nn.Module, backward: str) -> Tensor:
    """The input gradient with the gate's backward given by hand — ``relaxed`` (on magnitudes, per sample, at
    ``T``) or ``straight`` (identity) — its forward the hard gate's."""
    x = mnist().clone().requires_grad_(True)
    h = model[0].conv(x).flatten(1)
    hard = magnitude(h.detach())
    g = relaxed_gate(h, hard, "dense", T, "magnitude") if backward == "relaxed" else h
    (grad,) = torch.autograd.grad(model[2](model[1](x + (g - g.detach() + hard).view_as(x))).sum(), x)
    return grad


def test_bpda_relaxes_the_tied_gate_on_the_real_inputs_and_the_forward_is_exact() -> None:
    """On the clean (tied) images, where the count varies: BPDA reads the gate (before: refused, no gate read)."""
    model = net()
    plain_out, plain = gradients(model, mnist(), "0", None)
    out, smooth = gradients(model, mnist(), "0", "smooth")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(smooth, mnist_by_hand(model, "relaxed"), rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3  # the mask no longer cuts the gradient
    out, identity = gradients(model, mnist(), "0", "identity")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(identity, mnist_by_hand(model, "straight"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ["mnist", "channel"])
def test_the_tied_reading_relaxes_the_actual_selection_ties_included(case: str) -> None:
    """Its relaxed mask, at a temperature near 0, is the gate's own mask: every tied winner in, every loser out."""
    if case == "mnist":
        with torch.no_grad():
            x = net()[0].conv(mnist()).flatten(1)
        out = magnitude(x)
    else:
        x = tied()
        s = x.abs().flatten(2)
        out = x * (s >= s.topk(10, dim=-1).values[..., -1:]).reshape(x.shape)
    fit = tied_fit(x, out)
    assert fit is not None and (fit.grouping, fit.score) == ({"mnist": "dense", "channel": "channel"}[case],
                                                             "magnitude")
    assert fit.k_max > fit.k_min  # the ties vary the count
    hard_limit = relaxed_gate(x, out, fit.grouping, 1e-6, fit.score, mask=True)
    assert torch.equal(hard_limit > 0.5, out != 0)


def test_no_element_wise_threshold_reads_as_a_tied_gate() -> None:
    """A ReLU or a fixed threshold varies its count with no tie to explain it: no reading."""
    with torch.no_grad():
        h = net()[0].conv(mnist()).flatten(1)
    assert tied_fit(h, torch.relu(h)) is None
    assert tied_fit(h, h * (h > 0.3)) is None
    assert tied_fit(h, h * (h.abs() > 0.3)) is None


def test_a_per_channel_gate_inline_on_a_tied_batch_reads_per_channel_and_bpda_relaxes_it() -> None:
    """test_detect.py's tied batch (a constant background in every channel), the gate inline in the model's forward:
    read per channel (not a ``row`` top-3), and relaxed per channel on magnitudes on that batch."""
    model, x = seeded(InlineChannel), tied()
    detection = detect_layers(model, x, log=False)
    assert detection.selections == [{"op": "topk", "kind": "selection", "modules": [""], "calls": 1,
                                     "gate": "channel", "k": 10, "group_size": 36, "ties_broken": 1e-2,
                                     "probed": False}]
    assert detection.auto_targets() == {"": LayerTarget("inline")}
    plain_out, plain = gradients(model, x, "", None)
    out, smooth = gradients(model, x, "", "smooth")
    assert torch.equal(out, plain_out)
    xg = x.clone().requires_grad_(True)
    s = x.abs().flatten(2)
    gate = x * (s >= s.topk(10, dim=-1).values[..., -1:]).reshape(x.shape)
    g = relaxed_gate(xg, gate, "channel", T, "magnitude")
    (by_hand,) = torch.autograd.grad(model.head((g - g.detach() + gate).flatten(1)).sum(), xg)
    torch.testing.assert_close(smooth, by_hand, rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3


def no_gate(h: Tensor) -> Tensor:
    """No gate: a ``topk`` whose largest value is only added (a position-free summary), then a ReLU."""
    return torch.relu(h) + 0.1 * h.flatten(1).topk(1, dim=1).values.view(-1, 1, 1, 1)


class Around(nn.Module):
    """``x + fn(conv(x))`` with ``fn`` inline; the convolution bias-free."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.conv, self.fn = nn.Conv2d(1, 1, 3, padding=1, bias=False), fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(self.conv(x))


@pytest.mark.parametrize("fn", [torch.relu, no_gate])
def test_no_gate_is_read_on_models_without_one(fn) -> None:
    """A ReLU-only block lists nothing; a ``topk`` that builds no gate stays a selection with no gate, the moved
    batch read no more into it."""
    model = seeded(lambda: nn.Sequential(Around(fn), nn.Flatten(), nn.Linear(784, 10)))
    detection = detect_layers(model, mnist(), log=False)
    expected = [] if fn is torch.relu else [{"op": "topk", "kind": "selection", "modules": ["", "0"], "calls": 1,
                                             "probed": False}]
    assert detection.selections == expected and detection.auto_targets() == {}


def run(model: nn.Module, attack: dict) -> tuple:
    x = mnist()
    with torch.no_grad():
        y = model(x).argmax(1)
    cfg = config(batch_size=16, attacks=[attack], threats=[{"norm": "linf", "epsilons": [0.01]}])
    record = evaluate(model, TensorData(x.clone(), y, "toy", 10, torch.arange(16)), cfg, {}, progress=False)
    return record, record.result(attack["attack"], "linf", 0.01)


def test_an_evaluation_relaxes_the_tied_gate_with_no_flag_and_bpda_is_no_weaker_than_pgd(
        inline_modes: list[InlineGates]) -> None:
    model = net()
    record, bpda = run(model, {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 5}}})
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)
    assert bpda.bpda_layers == {"0": "wrapped inline"}
    assert [s["gate"] for s in record.detection["selections"]] == ["dense"]
    assert not {f.code for f in run_checks(record)} & QUIET
    _, pgd = run(model, {"attack": "pgd", "params": {"steps": 5}})
    assert bpda.robust.correct <= pgd.robust.correct
