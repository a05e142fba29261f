"""BPDA's smooth surrogate relaxes the max-pool winner-take-all gates (attacks/pool_relax.py): ``h · (h ==
F.max_pool2d(h, 3, 1, 1))`` and the max-unpool sparse code, as a module of their own or inline in a block. They were
left out by ``bpda_layers: auto`` and refused for the smooth surrogate (kind ``max-pool-gate``), so BPDA had only
the straight-through path and the distilled twin for them. Pinned: the relaxation sharpens to the hard gate, the
forward stays bit for bit, the backward is non-zero where the hard gate's is zero and points the right way, BPDA
smooth acts on the gate (the record says so), identity is unchanged, and the forms with no readable gate (its mask
returned, made in place by ``nonzero`` indices) are still left out and refused; made in place as ``h[h < p] = 0`` it
is read and relaxed (attacks/pool_in_place.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gates_styles as styles
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.inline_gates import InlineGates
from attacks.pool_relax import PoolCall, own_window_gate, window_softmax_gate
from kwta_robust.detect import detect_layers
from kwta_robust.diagnostics import run_checks
from kwta_robust.errors import ConfigError
from kwta_robust.evaluate import evaluate
from test_detect_inline_gates import config, data, inline_modes  # noqa: F401  (a fixture)
from test_pool_module_poolgate import MODELS, named, sequential, Gate, InPlace
from test_wild_lwta import PGD_THEN_BPDA
from wild_kwta_models import X


def pool_call(name: str, h: Tensor, *args, **kwargs) -> PoolCall:
    """The :class:`PoolCall` of ``F.<name>(h, *args, **kwargs)``."""
    values = getattr(F, name)(h, *args, **kwargs)
    return PoolCall.of(name, (h, *args), kwargs, values[0] if isinstance(values, tuple) else values)


H2, H1, H3 = (torch.randn(shape, generator=torch.Generator().manual_seed(0))
              for shape in ((2, 3, 7, 7), (2, 3, 10), (1, 2, 4, 4, 4)))
HARD = {  # relaxation, its pool call, the hard gate
    "nms 2d": (own_window_gate, lambda: pool_call("max_pool2d", H2, 3, 1, 1), H2 * (H2 == F.max_pool2d(H2, 3, 1, 1))),
    "nms 1d": (own_window_gate, lambda: pool_call("max_pool1d", H1, 5, 1, 2), H1 * (H1 == F.max_pool1d(H1, 5, 1, 2))),
    "nms 3d": (own_window_gate, lambda: pool_call("max_pool3d", H3, 3, 1, 1), H3 * (H3 == F.max_pool3d(H3, 3, 1, 1))),
    "unpool ceil_mode": (window_softmax_gate, lambda: pool_call("max_pool2d", H2, 2, ceil_mode=True,
                                                                return_indices=True),
                         F.max_unpool2d(*F.max_pool2d(H2, 2, ceil_mode=True, return_indices=True), 2,
                                        output_size=H2.shape[-2:])),
    "unpool overlapping": (window_softmax_gate, lambda: pool_call("max_pool2d", H2, 3, 1, 1, return_indices=True),
                           F.max_unpool2d(*F.max_pool2d(H2, 3, 1, 1, return_indices=True), 3, 1, 1)),
    "unpool adaptive": (window_softmax_gate, lambda: pool_call("adaptive_max_pool2d", H2[..., :6, :6], 2,
                                                               return_indices=True),
                        F.max_unpool2d(*F.adaptive_max_pool2d(H2[..., :6, :6], 2, return_indices=True), 3)),
}


@pytest.mark.parametrize("name", list(HARD))
def test_the_relaxation_sharpens_to_the_hard_gate(name: str) -> None:
    relax, call, hard = HARD[name]
    made = call()
    assert torch.allclose(relax(made.input, made, 1e-4), hard, atol=1e-5)
    assert not torch.allclose(relax(made.input, made, 1.0), hard, atol=1e-2)  # smooth at T = 1


class Row(nn.Module):
    """Non-maximum suppression along a row: ``h · (h == max_pool2d(h, (1, 3), 1, (0, 1)))``."""

    def forward(self, h: Tensor) -> Tensor:
        return h * (h == F.max_pool2d(h, (1, 3), 1, (0, 1)))


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_by_hand_the_forward_is_exact_and_the_loser_gets_a_gradient_the_right_way(backward: str) -> None:
    model = nn.Sequential(Row())
    h = torch.tensor([[[[0.2, 1.0, 0.8, -0.5]]]], requires_grad=True)  # 1.0 wins; 0.8 loses to it, -0.5 to 0.8
    with attached_backward(model, {"0": LayerTarget("inline")}) as controllers:
        controllers["0"].set_backward(backward, 0.5)
        out = model(h)
        (grad,) = torch.autograd.grad(out[0, 0, 0, 2], h)  # the loser 0.8's output
    assert torch.equal(out, model(h))  # bit for bit
    assert out.detach().tolist() == [[[[0.0, 1.0, 0.0, 0.0]]]]
    if backward == "identity":  # straight-through: d out_2 / d h = one-hot, as before
        assert grad.tolist() == [[[[0.0, 0.0, 1.0, 0.0]]]]
        return
    g = grad[0, 0, 0]
    assert g[2] > 0 and g[1] < 0  # raising the loser raises its output; raising its rival 1.0 suppresses it
    assert g[0] == 0 and g[3] == 0  # not in the loser's window... and -0.5 is not its rival (0.8 > -0.5)
    (hard,) = torch.autograd.grad(model(h)[0, 0, 0, 2], h)
    assert not hard.any()  # the hard gate passes the loser nothing


def test_the_max_unpool_relaxation_moves_mass_to_the_window_argmax() -> None:
    h = torch.tensor([[[[1.0, 0.5], [0.2, 0.1]]]], requires_grad=True)
    call = pool_call("max_pool2d", h.detach(), 2, return_indices=True)
    (grad,) = torch.autograd.grad(window_softmax_gate(h, call, 0.5)[0, 0, 0, 1], h)  # the loser 0.5's output
    assert grad[0, 0, 0, 1] > 0 and grad[0, 0, 0, 0] < 0


@pytest.mark.parametrize("name", ["pool_max", "max_unpool", "pool_max in a residual block"])
def test_auto_acts_on_the_gate_and_smooth_bpda_relaxes_it(name: str, inline_modes: list[InlineGates]) -> None:
    build, gate = MODELS[name]
    model = build()
    assert detect_layers(model, X, log=False).auto_targets() == {gate: LayerTarget("inline")}
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {gate: "wrapped inline"}
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)  # each forward relaxed its one gate
    assert [f.code for f in run_checks(record) if f.code in ("selections-outside-layers", "bpda-no-layer")] == []


def test_a_gate_written_inline_in_a_block_is_relaxed_where_it_is_built(inline_modes: list[InlineGates]) -> None:
    model = styles.net("max_unpool")
    assert detect_layers(model, X, log=False).auto_targets() == {"1": LayerTarget("inline")}
    record = evaluate(model, data(model, X), config(batch_size=16, attacks=PGD_THEN_BPDA), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
    assert inline_modes and all(mode.relaxed == 1 for mode in inline_modes)


def test_the_smooth_gradient_differs_from_straight_through_and_the_exact_one() -> None:
    model, x = MODELS["pool_max"][0](), X[:4].clone().requires_grad_(True)
    grads = {}
    for backward in ("smooth", "identity", "exact"):
        with attached_backward(model, {"1": LayerTarget("inline")}) as controllers:
            controllers["1"].set_backward(backward, 0.1)
            (grads[backward],) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    assert not torch.allclose(grads["smooth"], grads["identity"]) and not torch.allclose(grads["smooth"],
                                                                                        grads["exact"])


def test_a_gate_made_in_place_by_nonzero_indices_is_still_left_out_and_refused_for_smooth() -> None:
    assert detect_layers(sequential(InPlace()), X, log=False).auto_targets() == {"1": LayerTarget("inline")}
    model = sequential(InPlace("nonzero"))
    assert detect_layers(model, X, log=False).auto_targets() == {}
    with pytest.raises(ConfigError, match="in a form the smooth surrogate cannot relax"):
        evaluate(model, data(model, X), config(batch_size=8, attacks=named("smooth")), {}, progress=False)


def test_naming_the_module_for_smooth_relaxes_it() -> None:
    model = sequential(Gate("pool_max"))
    record = evaluate(model, data(model, X), config(batch_size=8, attacks=named("smooth")), {}, progress=False)
    assert record.result("bpda", "linf", 0.1).bpda_layers == {"1": "wrapped inline"}
