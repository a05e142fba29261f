"""A kWTA written inline as an item assignment, ``h[h < kth] = 0`` (``kth = h.topk(k, dim=1).values[:, -1:]``), on a
copy of the ranked tensor (``g = h.clone()``) or on the ranked tensor's own memory, in a block with children: the
layer probe read it (``in_place``) but BPDA could not relax it — ``Tensor.__setitem__`` returns ``None``, and
:func:`attacks.gates.scattered` left a masked assignment of a scalar out — so ``bpda_layers: auto`` left it out and
``selections-outside-layers`` was critical. Now the tensor it wrote is read as the gate (:mod:`attacks.mask_assign`)
and relaxed exactly as ``h * (h >= kth)``: forward values bit for bit, the same BPDA gradient, no more host–device
synchronisations per BPDA step than ``h.clone().masked_fill_(h < kth, 0)`` besides the assignment's own. Conv
``[N, 1, 8, 8]`` → block (conv, kWTA of 19 of 256) → linear 10, seeded."""

from __future__ import annotations

import contextlib
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.gates import scattered
from kwta_robust.detect import detect_layers
from tests.host_syncs import HostSyncs
from tests.inplace_blocks import net as block_net
from tests.simulated_device import simulated_cuda

K = 19
X = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def net(how: str) -> nn.Module:
    """The seeded model around the in-place block (:func:`tests.inplace_blocks.net`), its kWTA of ``K``."""
    return block_net(how, K)


def input_gradient(model: nn.Module, backward: str, inputs: Tensor = X) -> tuple[Tensor, Tensor]:
    """The output and the gradient of the summed logits at ``inputs`` with BPDA's ``backward`` on the inline block
    (block ``"1"``; tests/test_mulinplace50_ranked_kwta.py uses it too)."""
    x = inputs.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        controllers = stack.enter_context(attached_backward(model, {"1": LayerTarget("inline")}))
        stack.enter_context(surrogate_backward(model, backward, 0.1, controllers))
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


def test_scattered_hands_on_the_tensor_a_zeroing_mask_assignment_wrote() -> None:
    h = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    mask = h < h.topk(2, dim=1).values[:, -1:]
    for zero in (0, 0.0):
        made, wrote = scattered(Tensor.__setitem__, (h, mask, zero), None)
        assert made is h and not wrote  # before: (None, False), nothing to read
    for args in ((h, mask, 1.0), (h, mask[:, :4], 0), (h, torch.tensor([0, 2]), 0), (h.long(), mask, 0)):
        assert scattered(Tensor.__setitem__, args, None) == (None, False)


@pytest.mark.parametrize("how", ["setitem", "raw"])
def test_the_probe_reads_the_item_assignment_as_a_gate_auto_acts_on(how: str) -> None:
    detection = detect_layers(net(how), X, log=False)
    assert [(s["op"], s.get("gate"), s.get("k"), s.get("in_place")) for s in detection.selections] == [
        ("topk", "dense", K, None)]  # before: in_place, no gate (raw: read in the shape topk ranked)
    assert detection.auto_targets() == {"1": LayerTarget("inline")}  # before: {}


@pytest.mark.parametrize("how", ["setitem", "raw"])
@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_relaxes_it_as_the_out_of_place_gate_with_forward_values_unchanged(how: str, backward: str) -> None:
    model = net(how)
    with torch.no_grad():
        plain = model(X)
    out, grad = input_gradient(model, backward)  # before: refused, no gate BPDA could read
    twin_out, twin_grad = input_gradient(net("out"), backward)
    assert torch.equal(out, plain) and torch.equal(out, twin_out)
    assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7)
    assert grad.abs().sum() > 0


def _syncs(build: Callable[[], nn.Module], steps: int) -> tuple[int, int]:
    """Host–device synchronisations of BPDA smooth (``steps`` steps) on the inline block, all and the model's own
    boolean-mask assignments (on the simulated CUDA device, :mod:`tests.simulated_device`)."""
    model = build().requires_grad_(False)
    with torch.no_grad():
        y = model(X).argmax(1)
    with simulated_cuda() as sim:
        attack = create_attack("bpda", surrogate="smooth", inner_params={"steps": steps},
                               layers={"1": {"kind": "inline"}})
        with HostSyncs() as syncs:
            attack(model.to("cuda"), X.to("cuda"), y.to("cuda"), ThreatModel("linf", 0.01))
    assert sim.device_ops > 0 and not sim.findings
    return syncs.total, syncs.counts["__setitem__[bool mask]"]


def test_bpda_syncs_per_step_are_those_of_masked_fill_besides_the_assignment_itself() -> None:
    per_step = {}
    for how in ("copy_masked_fill_", "setitem", "raw"):
        (few, own_few), (many, own_many) = (_syncs(lambda: net(how), steps) for steps in (8, 24))
        per_step[how] = (many - few - (own_many - own_few)) / 16
        assert (own_many - own_few) / 16 == (0 if how == "copy_masked_fill_" else 1)  # one forward per step
    assert per_step["setitem"] <= per_step["copy_masked_fill_"] and per_step["raw"] <= per_step["copy_masked_fill_"], \
        per_step
