"""Local winner-take-all (LWTA; Srivastava et al., NeurIPS 2013; Panousis et al., NeurIPS 2021) and top-k on
magnitudes, the way users write them (tests/gates_styles.py), each inline in a residual block's ``forward`` and as a
module of its own, on ``wild_kwta_models.X``.

An LWTA keeps each block's largest unit: ``h · (v == v.amax(2, keepdim=True)).view_as(h)`` with ``v`` the blocks'
view ``[B, C / 2, 2, H, W]`` (or ``torch.max(v, 2)``'s values or indices). Inline, it called no operation the layer
probe watched (``amax``/``max`` were no selection), so it left no trace: no selection, no flag, ``auto`` acted on
nothing and BPDA ran with the gate's 0/1 mask cutting the gradient, its numbers those of plain PGD. A ``max``/``amax``
along a dimension now counts as an ``argmax`` does (attacks/one_winner.py): noted where a gate of one winner per
group follows in the same ``forward``, and relaxed there (``"block-2"``). As a module, the first layer (four
channels computed from one input channel) read as a local top-2 of the 4 channels, whose winners it explains in 92 %
of the locations: a block grouping that explains them in every location now takes precedence (attacks/gates.py
``infer_grouping``). A magnitude top-k was already read and relaxed on ``|h|``, inline and as a module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gates_styles as styles
from attacks.bpda_wrap import LayerTarget
from attacks.inline_gates import InlineGates
from attacks.one_winner import one_winner_op
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401 - a fixture
from test_gates_inline_styles import by_hand, gradients
from wild_kwta_models import X, seeded

T = 0.5
LWTA = {"lwta_amax": "amax", "lwta_max": "max", "lwta_indices": "max", "lwta_view": "max"}
QUIET = {"selections-outside-layers", "bpda-no-layer", "bpda-straight-through", "unranked-gates"}
PGD_THEN_BPDA = [{"attack": "pgd", "params": {"steps": 2}},
                 {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 2}}}]


def test_max_and_amax_pick_winners_only_along_a_named_dimension() -> None:
    v, other = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    assert [one_winner_op(torch.max, (v, 2), {}), one_winner_op(torch.Tensor.max, (v,), {"dim": 1}),
            one_winner_op(torch.amax, (v, (1, 2)), {}), one_winner_op(torch.argmax, (v,), {})] == [
        "max", "max", "amax", "argmax"]
    assert [one_winner_op(torch.max, (v, other), {}), one_winner_op(torch.Tensor.max, (v,), {}),
            one_winner_op(torch.amax, (v,), {}), one_winner_op(torch.amax, (v, ()), {}),
            one_winner_op(torch.topk, (v, 1), {})] == [None] * 5


@pytest.mark.parametrize("style", list(LWTA))
def test_an_inline_lwta_is_read_as_blocks_of_two_and_auto_acts_on_its_block(style: str) -> None:
    detection = detect_layers(styles.net(style), X, log=False)
    assert detection.selections == [{"op": LWTA[style], "kind": "selection", "modules": ["", "1"], "calls": 1,
                                     "gate": "block-2", "k": 1, "group_size": 2, "probed": False}]
    assert detection.auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("style", list(LWTA))
def test_bpda_relaxes_the_inline_lwta_alone_and_the_forward_is_exact(style: str) -> None:
    model = styles.net(style)
    plain_out, plain = gradients(model, None)
    torch.testing.assert_close(plain, by_hand(model, "masked", "block-2"), rtol=1e-5, atol=1e-7)
    out, smooth = gradients(model, "smooth")
    assert torch.equal(out, plain_out)
    mask = style == "lwta_indices"  # its 0/1 mask, scattered at the indices, is read (and relaxed) before h · mask
    torch.testing.assert_close(smooth, by_hand(model, "relaxed", "block-2", mask=mask), rtol=1e-5, atol=1e-7)
    assert (smooth - plain).abs().max() > 1e-3  # the mask no longer cuts the gradient
    out, identity = gradients(model, "identity")
    assert torch.equal(out, plain_out)
    if not mask:
        torch.testing.assert_close(identity, by_hand(model, "straight", "block-2"), rtol=1e-5, atol=1e-7)
    assert (identity - plain).abs().max() > 1e-3


@pytest.mark.parametrize("style", ["lwta_amax", "lwta_indices"])
def test_an_evaluation_relaxes_the_inline_lwta_with_no_flag_about_it(style: str,
                                                                    inline_modes: list[InlineGates]) -> None:
    model = styles.net(style)
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert [s["gate"] for s in record.detection["selections"]] == ["block-2"]
    assert not {f.code for f in run_checks(record)} & QUIET


@pytest.mark.parametrize("style", list(LWTA))
def test_an_lwta_module_reads_as_blocks_of_two_at_every_layer(style: str) -> None:
    targets = detect_layers(styles.module_net(style), X, log=False).auto_targets()
    assert {n: (t.kind, t.grouping, t.score) for n, t in targets.items()} == {
        n: ("gate", "block-2", "value") for n in ("a1", "a2")}  # a1 read as a local top-2 of the 4 channels


def test_a_magnitude_top_k_is_relaxed_on_magnitudes_inline_and_as_a_module() -> None:
    targets = detect_layers(styles.module_net("magnitude"), X, log=False).auto_targets()
    assert {n: (t.grouping, t.score) for n, t in targets.items()} == {n: ("volume", "magnitude") for n in ("a1", "a2")}
    model = styles.net("magnitude")
    assert detect_layers(model, X, log=False).selections[0]["gate"] == "dense"
    plain_out, plain = gradients(model, None)
    out, smooth = gradients(model, "smooth")
    assert torch.equal(out, plain_out)
    torch.testing.assert_close(smooth, by_hand(model, "relaxed", "volume", "magnitude"), rtol=1e-5, atol=1e-7)
    assert (smooth - by_hand(model, "relaxed", "volume", "value")).abs().max() > 1e-3  # not on the raw values


def test_a_max_followed_by_no_one_winner_gate_is_no_selection() -> None:
    """A ``max`` along a dimension that picks no winners (an attention weight from the channels' maximum) is not
    listed, and BPDA has nothing to act on."""
    model = seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), styles.Block(
        lambda h: torch.relu(h) * torch.sigmoid(h.amax(1, keepdim=True))), nn.Flatten(), nn.Linear(256, 3)))
    detection = detect_layers(model, X, log=False)
    assert detection.selections == [] and detection.auto_targets() == {}
