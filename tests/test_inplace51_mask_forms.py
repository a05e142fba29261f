"""In-place kWTA forms by a mask, inline in a block's ``forward``, that the layer probe did not read as a gate: calls
with keyword arguments (``h.masked_fill_(mask=h < kth, value=0.0)``, ``h.mul_(other=h >= kth)``) read ``in_place``,
and a channel-wise top-k (a channel statistic ``s = h.mean((2, 3))`` ``[B, C]`` ranked, Xiao et al.'s
``Sparsify2D_all`` style, the mask ``(s >= kth)[:, :, None, None]`` ``[B, C, 1, 1]`` broadcast over ``h`` ``[B, C, H,
W]``) applied in place — ``h.mul_(m)``, ``h *= m``, ``h.masked_fill_(~m, 0)``, ``h[~m.expand_as(h)] = 0`` — read as a
selection with no gate (``h`` is no tensor a selection ranked): ``bpda_layers: auto`` left the block out and BPDA
refused it. Now each is read against a copy of ``h`` made before the call (:mod:`attacks.mask_assign`): the gate
(``dense``; ``whole-channel``, k = 3 of 8) and BPDA's relaxation of it are the out-of-place twin's, forward values bit
for bit, and the relaxed gradient differs from the exact one. ``torch.mul(h, m, out=h)`` and ``torch.where(…,
out=g)`` are no form BPDA can relax (autograd records no call with ``out=``): the evaluation refuses the model in one
line naming the cause (as before). Conv ``[N, 1, 8, 8]`` → 8 channels → block (conv, kWTA) → linear 10, seeded."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from attacks.mask_assign import positional, zeroing_in_place
from kwta_robust.api import evaluate_model
from kwta_robust.detect import detect_layers
from kwta_robust.errors import ConfigError
from tests.test_inplace50_setitem_kwta import input_gradient
from tests.test_inplace51_index_forms import exact_gradient, robust_correct

K, KC = 128, 3
X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
KEYWORD_FORMS = ("masked_fill_kw", "mul_kw")
CHANNEL_FORMS = ("ch_mul_", "ch_imul", "ch_masked_fill_", "ch_masked_fill_kw", "ch_setitem")


class Block(nn.Module):
    """``x + kwta(conv(x))`` over ``[B, 8, 8, 8]``: a kWTA of ``K`` of each sample's 512 units (``h.flatten(1)``) or a
    top-``KC`` of its 8 channels by their mean (``ch_…``), written ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(8, 8, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv(x)
        if not self.how.startswith("ch_"):
            h = c.flatten(1)
            kth = h.topk(K, dim=1).values[:, -1:]
            if self.how == "out":
                h = h * (h >= kth)
            elif self.how == "masked_fill_kw":
                h.masked_fill_(mask=h < kth, value=0.0)
            elif self.how == "mul_kw":
                h.mul_(other=h >= kth)
            elif self.how == "mul_out":
                torch.mul(h, h >= kth, out=h)
            else:  # "where_out"
                h = torch.where(h >= kth, h, torch.zeros_like(h), out=torch.empty_like(h))
            return x + h.view_as(x)
        s = c.mean((2, 3))
        m = (s >= s.topk(KC, dim=1).values[:, -1:])[:, :, None, None]  # [B, C, 1, 1]
        if self.how == "ch_out":
            c = c * m
        elif self.how == "ch_mul_":
            c.mul_(m)
        elif self.how == "ch_imul":
            c *= m
        elif self.how == "ch_masked_fill_":
            c.masked_fill_(~m, 0)
        elif self.how == "ch_masked_fill_kw":
            c.masked_fill_(mask=~m, value=0.0)
        else:  # "ch_setitem"
            c[~m.expand_as(c)] = 0
        return x + c


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(512, 10)).eval()


def test_zeroing_in_place_reads_keywords_and_per_sample_broadcast_masks() -> None:
    h = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    m = (h.mean((2, 3)) > 0)[:, :, None, None]
    for func, args, kwargs in ((Tensor.mul_, (h, m), None), (Tensor.__imul__, (h, m.to(h.dtype)), None),
                               (Tensor.masked_fill_, (h, ~m, 0), None), (Tensor.masked_fill_, (h,), {"mask": ~m,
                                                                                                    "value": 0.0}),
                               (Tensor.masked_fill_, (h, ~m), {"value": 0}), (Tensor.mul_, (h,), {"other": m})):
        assert zeroing_in_place(func, args, kwargs), (func, kwargs)  # before: False (keywords, a [B, C, 1, 1] mask)
    assert positional(Tensor.masked_fill_, (h,), {"value": 0.0, "mask": m}) == (h, m, 0.0)
    for func, args, kwargs in ((Tensor.mul_, (h, m[:1]), None), (Tensor.mul_, (h, m[0]), None),
                               (Tensor.masked_fill_, (h,), {"mask": ~m, "fill": 0.0}),
                               (Tensor.masked_fill_, (h,), {"value": 0.0}), (Tensor.masked_fill_, (h, ~m, 1.0), None),
                               (Tensor.mul_, (h, m[:, :2]), None), (Tensor.__setitem__, (h, ~m, 0), None)):
        assert not zeroing_in_place(func, args, kwargs), (func, args[1:], kwargs)


def test_the_probe_reads_each_form_as_the_twins_gate() -> None:
    for forms, gate, k in ((KEYWORD_FORMS, "dense", K), (CHANNEL_FORMS, "whole-channel", KC)):
        for how in forms:  # before: keywords in_place; channel masks a selection with no gate; auto_targets {}
            detection = detect_layers(net(how), X, log=False)
            assert [(s["op"], s.get("gate"), s.get("k"), s.get("in_place")) for s in detection.selections] == [
                ("topk", gate, k, None)], how
            assert detection.auto_targets() == {"1": LayerTarget("inline")}, how


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_relaxes_each_form_as_the_out_of_place_gate(backward: str) -> None:
    for forms, twin in ((KEYWORD_FORMS, "out"), (CHANNEL_FORMS, "ch_out")):
        twin_out, twin_grad = input_gradient(net(twin), backward, X)
        assert not torch.allclose(twin_grad, exact_gradient(net(twin), X), rtol=1e-3, atol=1e-5)
        for how in forms:  # before: refused (a selection with no gate read)
            model = net(how)
            with torch.no_grad():
                plain = model(X)
            out, grad = input_gradient(model, backward, X)
            assert torch.equal(out, plain) and torch.equal(out, twin_out), how
            assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), how


def test_bpda_smooth_on_a_channel_mask_in_place_does_at_least_as_well_as_pgd() -> None:
    with torch.no_grad():
        y = net("ch_out")(X).argmax(1)
    model = net("ch_mul_")
    layers = detect_layers(model, X, log=False).auto_targets()
    assert layers == {"1": LayerTarget("inline")}  # before: {} (BPDA ran as plain PGD)
    pgd, bpda = robust_correct(model, X, y, 0.03, layers=layers)
    assert bpda <= pgd and bpda < len(y), (pgd, bpda)


@pytest.mark.parametrize("how", ["mul_out", "where_out"])
def test_a_gate_written_with_out_is_refused_in_one_line_naming_the_cause(how: str) -> None:
    """No attack differentiates through ``out=`` (nothing to relax); pins the refusal, unchanged by inplace51."""
    model = net(how)
    with torch.no_grad():
        y = model(X).argmax(1)
    config = {"seed": 0, "batch_size": 8, "threats": [{"norm": "linf", "epsilons": [0.03]}], "noise": [],
              "attacks": [{"attack": "pgd", "params": {"steps": 1}}], "bpda_layers": "auto"}
    with pytest.raises(ConfigError) as caught:
        evaluate_model(model, config, X, y, threads=1)
    message = str(caught.value)
    assert "\n" not in message and "runs without gradients but not when its input requires one" in message
    assert "functions with out=... arguments don't support automatic differentiation" in message
