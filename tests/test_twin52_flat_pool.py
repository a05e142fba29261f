"""A flattened top-k beside an in-place max-pool gate on the same tensor: ``hf = h.flatten(1)`` (a view of ``h``),
``kth`` the 200th largest of ``hf``, ``p`` the upsampled ``F.max_pool2d(h, 2, 2)``; then ``h.mul_(h == p)`` and the
top-k's mask applied to ``h`` in place (``h.mul_((hf >= kth).view_as(h))`` or ``h[(hf < kth).view_as(h)] = 0``).
BPDA's inline watch (:class:`attacks.inline_gates.InlineGates`) reads the top-k's call against a copy of ``h`` made
just before it (:func:`attacks.mask_assign.copy_before`), which it viewed in the ranked ``hf``'s shape ``[N, 512]``
because ``h`` shares ``hf``'s memory; but the pool gate had already rewritten that memory, so the copy held the
pool-gated values, not the ranked ones, and its out-of-place twin ``h * (h == p) * (hf >= kth).view_as(h)`` reads the
same values in ``h``'s shape ``[N, C, H, W]``. The gate (the top-k of the values before the pool gate, applied after
it: no top-k of the pool-gated values) read as a ``block-2`` gate in both shapes, pairs of adjacent columns in one
and of channels in the other, so the smooth gradients differed (summed ``|grad|`` 47.31 against the twin's 49.68).
Now the copy takes the ranked tensor's shape only while that tensor holds the values it held when ranked (its
version counter unchanged): the twin's gradient. Top-k first then the pool gate, and channels-last tensors (where
``h.flatten(1)`` is a copy), matched before and still do. Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10,
seeded; threat model L∞ (nothing here touches the inputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.test_gates52_copies import TWO, X
from tests.test_inplace51_index_forms import bpda_gradient


def _pooled(h: Tensor) -> Tensor:
    return F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest")


class Block(nn.Module):
    """``x + gates(conv(x))``: ``form`` ``"pool_mul_"`` / ``"pool_setitem"`` (the pool gate first, then the top-k's
    mask by ``mul_`` or item assignment) or ``"topk_first"`` (the top-k's mask, then the pool gate of the result);
    ``twin``: the same gates out of place."""

    def __init__(self, form: str, twin: bool) -> None:
        super().__init__()
        self.conv, self.form, self.twin = nn.Conv2d(8, 8, 3, padding=1), form, twin

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        hf = h.flatten(1)
        kth = hf.topk(200, dim=1).values[:, -1:]
        if self.form == "topk_first":
            if self.twin:
                t = h * (hf >= kth).view_as(h)
                return x + t * (t == _pooled(t))
            h.mul_((hf >= kth).view_as(h))
            h.mul_(h == _pooled(h))
            return x + h
        p = _pooled(h)
        if self.twin:
            return x + h * (h == p) * (hf >= kth).view_as(h)
        h.mul_(h == p)
        if self.form == "pool_mul_":
            h.mul_((hf >= kth).view_as(h))
        else:
            h[(hf < kth).view_as(h)] = 0
        return x + h


def net(form: str, twin: bool, channels_last: bool) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(form, twin), nn.Flatten(), nn.Linear(512, 10))
    return model.eval().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True])
def test_in_place_pool_gate_and_flattened_topk_take_the_twins_gradient(channels_last: bool) -> None:
    inputs = X.contiguous(memory_format=torch.channels_last) if channels_last else X
    for form in ("pool_mul_", "pool_setitem", "topk_first"):
        for backward in ("smooth", "identity"):
            twin_out, twin_grad = bpda_gradient(net(form, True, channels_last), backward, TWO, inputs)
            out, grad = bpda_gradient(net(form, False, channels_last), backward, TWO, inputs)
            assert torch.equal(out, twin_out), (form, backward)
            assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), (
                form, backward, float(grad.abs().sum()), float(twin_grad.abs().sum()))


def test_the_blocks_are_what_the_test_says() -> None:
    """Contiguous: ``hf`` a view of ``h`` (the case that differed); channels-last: a copy (matched before too)."""
    for channels_last, shares in ((False, True), (True, False)):
        model = net("pool_mul_", False, channels_last)
        h = model[1].conv(model[0](X))
        assert (h.flatten(1).data_ptr() == h.data_ptr()) is shares
        assert h.is_contiguous(memory_format=torch.channels_last) is channels_last
