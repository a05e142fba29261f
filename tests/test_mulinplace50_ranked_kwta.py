"""A kWTA written in place on the very tensor its top-k ranked, inline in a block's ``forward``: ``h.mul_(h >= kth)``,
``h *= h >= kth``, ``h.masked_fill_(h < kth, 0)`` (``kth = h.topk(k, dim=1).values[:, -1:]``), or the conv output
masked through the view ``h = c.flatten(1)`` that was ranked. Before, no operand of such a call held the values it
gated, so the layer probe marked the selection ``in_place`` (no gate), ``bpda_layers: auto`` left the block out and
``selections-outside-layers`` was critical — except, for the conv output masked through the ranked view (``c.mul_((h
>= kth).view_as(c))``), where the convolutions ran channels-last (as ``evaluate_model`` may run them): there
``c.flatten(1)`` is a copy, the gate read against it, and the same model got ``gate: dense`` and BPDA inline (its
gradient was the out-of-place twin's: no masked gradient, but the probe's answer hung on the memory layout). Now
:func:`attacks.mask_assign.copy_before` keeps the ranked values from just before these calls as for ``h[h < kth] =
0``: read as the gate in either layout and relaxed as ``h * (h >= kth)`` — forward values bit for bit, the same BPDA
gradient, the same per-sample results through ``kwta-robust evaluate --model-factory``, no more host–device
synchronisations per BPDA step than ``h.clone().masked_fill_(h < kth, 0)``. Conv ``[N, 1, 8, 8]`` → block (conv, kWTA
of 128 of 256) → linear 10, seeded."""

from __future__ import annotations

import json
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, create_attack
from attacks.bpda_wrap import LayerTarget
from attacks.mask_assign import zeroing_in_place
from kwta_robust.detect import detect_layers
from kwta_robust.results import load_record
from tests.host_syncs import HostSyncs
from tests.inplace_blocks import net as block_net
from tests.simulated_device import simulated_cuda
from tests.test_inplace50_setitem_kwta import input_gradient

K = 128
FORMS = ("mul_", "imul", "masked_fill_", "conv_mul_")
X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
CONFIG = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.02]}],
          "attacks": [{"attack": "pgd", "params": {"steps": 3}},
                      {"attack": "bpda", "params": {"surrogate": "smooth", "inner_params": {"steps": 6}}}],
          "bpda_layers": "auto", "noise": [],
          "diagnostics": {"enabled": True, "gradient_batch": 8, "budget_check": {"enabled": False}}}


def net(how: str, channels_last: bool = False) -> nn.Module:
    """The seeded model around the in-place block (:func:`tests.inplace_blocks.net`), its kWTA of ``K``."""
    return block_net(how, K, channels_last)


def test_zeroing_in_place_tells_mask_products_and_zero_fills_from_shapes_and_types() -> None:
    h = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    keep = h >= h.topk(2, dim=1).values[:, -1:]
    for func, args in ((Tensor.mul_, (h, keep)), (Tensor.mul_, (h, keep.to(h.dtype))), (Tensor.__imul__, (h, keep)),
                       (Tensor.masked_fill_, (h, ~keep, 0)), (Tensor.masked_fill_, (h, ~keep, 0.0)),
                       (Tensor.__setitem__, (h, ~keep, 0))):
        assert zeroing_in_place(func, args), func
    for func, args in ((Tensor.mul_, (h, 2.0)), (Tensor.mul_, (h, keep[:, :4])), (Tensor.masked_fill_, (h, ~keep, 1)),
                       (Tensor.masked_fill_, (h, (~keep).to(h.dtype), 0)), (Tensor.add_, (h, keep)),
                       (Tensor.mul_, (h.long(), keep)), (Tensor.__setitem__, (h, torch.tensor([0, 2]), 0))):
        assert not zeroing_in_place(func, args), func


@pytest.mark.parametrize("how", FORMS)
def test_the_probe_reads_each_form_as_a_gate_in_either_layout(how: str) -> None:
    for channels_last in (False, True):  # before: in_place, no gate, as given; a gate channels-last (h a copy)
        detection = detect_layers(net(how, channels_last), X, log=False)
        gate = "volume" if how == "conv_mul_" and channels_last else "dense"  # [N, C, H, W] read as is: the same k/N
        assert [(s["op"], s.get("gate"), s.get("k"), s.get("in_place")) for s in detection.selections] == [
            ("topk", gate, K, None)], channels_last
        assert detection.auto_targets() == {"1": LayerTarget("inline")}


@pytest.mark.parametrize("how", FORMS)
@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_relaxes_each_form_as_the_out_of_place_gate(how: str, backward: str) -> None:
    for channels_last in (False, True):  # before, as given: refused (a selection, no gate read)
        model = net(how, channels_last)
        with torch.no_grad():
            plain = model(X)
        out, grad = input_gradient(model, backward, X)
        twin_out, twin_grad = input_gradient(net("out", channels_last), backward, X)
        assert torch.equal(out, plain) and torch.equal(out, twin_out)
        assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7) and grad.abs().sum() > 0


def mul_factory() -> nn.Module:
    """``--model-factory test_mulinplace50_ranked_kwta:mul_factory``."""
    return net("mul_")


def masked_fill_factory() -> nn.Module:
    """``--model-factory test_mulinplace50_ranked_kwta:masked_fill_factory``."""
    return net("masked_fill_")


def out_factory() -> nn.Module:
    """``--model-factory test_mulinplace50_ranked_kwta:out_factory``: the out-of-place twin."""
    return net("out")


def test_evaluate_with_a_model_factory_gives_the_twins_per_sample_results(tmp_path) -> None:
    from kwta_robust.cli import main

    with torch.no_grad():
        y = net("out")(X).argmax(1)
    torch.save({"x": X, "y": y}, tmp_path / "data.pt")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**CONFIG, "dataset": {"file": str(tmp_path / "data.pt")}}))
    rows = {}
    for name in ("out", "mul", "masked_fill"):
        path = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model-factory", f"test_mulinplace50_ranked_kwta:{name}_factory", "--config",
                     str(config), "--no-progress", "--threads", "1", "--out", str(path)]) == 0
        record = load_record(path)
        rows[name] = [(r.label, r.flags, r.margins, r.queries, r.bpda_layers) for r in record.results]
        assert [r.bpda_layers for r in record.results if r.attack == "bpda"] == [{"1": "wrapped inline"}], name
        assert not [f for f in record.diagnostics if f.code == "selections-outside-layers"], name
        assert sum(f >= 0 for f in record.results[-1].flags) >= 4, name  # BPDA attacked PGD's survivors
    assert rows["mul"] == rows["out"] and rows["masked_fill"] == rows["out"]  # before: BPDA refused, flag critical


def _syncs(build: Callable[[], nn.Module], steps: int) -> int:
    """Host–device synchronisations of BPDA smooth (``steps`` steps) on the inline block (simulated CUDA)."""
    model = build().requires_grad_(False)
    with torch.no_grad():
        y = model(X).argmax(1)
    with simulated_cuda() as sim:
        attack = create_attack("bpda", surrogate="smooth", inner_params={"steps": steps},
                               layers={"1": {"kind": "inline"}})
        with HostSyncs() as syncs:
            attack(model.to("cuda"), X.to("cuda"), y.to("cuda"), ThreatModel("linf", 0.01))
    assert sim.device_ops > 0 and not sim.findings
    return syncs.total


def test_bpda_syncs_per_step_are_no_more_than_masked_fill_on_a_copy() -> None:
    per_step = {how: (_syncs(lambda: net(how), 6) - _syncs(lambda: net(how), 2)) / 4
                for how in ("copy_masked_fill_", "mul_", "masked_fill_")}  # before: mul_, masked_fill_ refused
    assert per_step["mul_"] <= per_step["copy_masked_fill_"], per_step
    assert per_step["masked_fill_"] <= per_step["copy_masked_fill_"], per_step
