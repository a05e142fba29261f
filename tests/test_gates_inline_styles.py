"""Inline kWTA styles that got a critical ``selections-outside-layers`` flag and a masked BPDA (issue 7; the models:
tests/gates_styles.py): a ``torch.quantile`` threshold whose count of winners varies by one between samples (no
constant count: attacks/gates.py ``threshold_fit`` now reads it), and the winners' values scattered into zeros, in
place or not (no operand of the scatter is the gated tensor: the tensor the selection ranked is now tried too,
kwta_robust/detect_selections.py and attacks/inline_gates.py). Each is now read as an inline gate of its block,
``auto`` acts on the block, and BPDA relaxes that gate alone: its input gradient is the one computed by hand with the
gate's backward replaced, where plain autograd's is cut by the mask."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

import gates_styles as styles
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import infer_grouping, relaxed_gate
from attacks.inline_gates import InlineGates
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401 - a fixture
from wild_kwta_models import X, seeded

T = 0.5
OPS = {"quantile": "quantile", "scatter_gather": "topk", "scatter_gather_": "topk", "scatter_values_": "topk",
       "one_hot": "argmax", "one_hot_min": "argmin"}
GROUPING = {style: "local" if style.startswith("one_hot") else "dense" for style in OPS}
#: (k, group size) each style's entry records: one winner of the 4 channels at a location, or K of the 256 units
K_OF = {style: (1, 4) if style.startswith("one_hot") else (styles.K, 256) for style in OPS}
SCORE = {style: "smallest" if style == "one_hot_min" else "value" for style in OPS}
QUIET = {"selections-outside-layers", "bpda-no-layer", "bpda-straight-through"}


def test_the_quantile_style_keeps_51_or_52_winners_and_reads_as_a_gate_of_varying_count() -> None:
    model = styles.net("quantile")
    with torch.no_grad():
        h = model[1].conv(model[0](X))
        out = styles.quantile(h)
    counts = (out != 0).flatten(1).sum(1)
    assert set(counts.tolist()) == {51, 52}  # no constant count: the strict reading cannot take it
    fit = infer_grouping(h.flatten(1), out.flatten(1))  # the gate ranks the flattened sample
    assert fit is not None
    assert (fit.grouping, fit.k, fit.k_min, fit.k_max, fit.k_spread) == ("dense", 51, 51, 52, 1)
    assert fit.k_constant_fraction == int((counts == 51).sum()) / len(counts)


@pytest.mark.parametrize("style", list(OPS))
def test_the_inline_gate_is_read_and_auto_acts_on_its_block(style: str) -> None:
    detection = detect_layers(styles.net(style), X, log=False)
    assert detection.selections == [{"op": OPS[style], "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "gate": GROUPING[style], "k": K_OF[style][0], "group_size": K_OF[style][1],
                                     "probed": False}]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


def gradients(model: nn.Module, backward: str | None) -> tuple[Tensor, Tensor]:
    """The output and the input gradient of the summed output, plain (``None``) or under BPDA with ``backward`` on
    what ``auto`` selects."""
    x = X.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if backward is not None:
            targets = detect_layers(model, X, log=False).auto_targets()
            controllers = stack.enter_context(attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def by_hand(model: nn.Module, backward: str, grouping: str, score: str = "value", mask: bool = False) -> Tensor:
    """The input gradient with the block's gate given the backward ``backward`` by hand — ``relaxed`` (the smooth
    relaxation at ``T``; with ``mask``, of the 0/1 mask the block then multiplies ``h`` by), ``straight`` (identity)
    or ``masked`` (the hard gate) — its forward the hard gate's."""
    x = X.clone().requires_grad_(True)
    s = model[0](x)
    h = model[1].conv(s)
    hard = model[1].gate(h.detach())
    if mask:
        m = relaxed_gate(h, hard, grouping, T, score, mask=True)
        g = h * (m - m.detach() + (hard != 0).to(h.dtype))
        return torch.autograd.grad(model[3](model[2](s + g)).sum(), x)[0]
    g = {"relaxed": lambda: relaxed_gate(h, hard, grouping, T, score), "straight": lambda: h,
         "masked": lambda: h * (hard != 0)}[backward]()
    (grad,) = torch.autograd.grad(model[3](model[2](s + g - g.detach() + hard)).sum(), x)
    return grad


@pytest.mark.parametrize("style", list(OPS))
def test_bpda_relaxes_the_gate_alone_and_the_forward_is_exact(style: str) -> None:
    model = styles.net(style)
    plain_out, plain = gradients(model, None)
    out, smooth = gradients(model, "smooth")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(plain, by_hand(model, "masked", GROUPING[style], SCORE[style]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(smooth, by_hand(model, "relaxed", GROUPING[style], SCORE[style]), rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3  # the mask no longer cuts the gradient
    out, identity = gradients(model, "identity")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(identity, by_hand(model, "straight", GROUPING[style], SCORE[style]), rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("style", ["quantile", "scatter_values_", "one_hot"])
def test_an_evaluation_relaxes_the_gate_with_no_flag_about_it(style: str, inline_modes: list[InlineGates]) -> None:
    model = styles.net(style)
    record = evaluate(model, data(model, X), config(batch_size=16), {}, progress=False)
    assert inline_modes and [mode.relaxed for mode in inline_modes] == [1] * len(inline_modes)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert record.detection["selections"][0]["gate"] == GROUPING[style]
    assert not {f.code for f in run_checks(record)} & QUIET


def test_an_argmax_followed_by_no_one_winner_gate_is_no_selection() -> None:
    """An ``argmax`` is recorded only where a later result is a gate of one winner per group: here none is (nor is
    the top-k of an ``argmax`` loop, left to the constant-count watch: tests/test_hidden_gates_next_to_found.py)."""
    model = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), styles.Block(styles.argmax_then_relu),
                                         nn.Flatten(), nn.Linear(256, 3)))
    detection = detect_layers(model, X, log=False)
    assert detection.selections == [] and detection.auto_targets() == {}
