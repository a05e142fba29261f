"""A view of an already-gated tensor is no gate (:data:`attacks.inline_gates.LAYOUTS`). A block gates ``h`` by its
2 × 2 window maxima first (``g = h · (h == p)``, ``p`` the upsampled ``F.max_pool2d(h, 2, 2)``), then applies the
mask of a flattened top-k (``hf = h.flatten(1)``, ``kth`` its 200th value) to ``g`` flattened:
``g.flatten(1) · (hf ≥ kth)``. BPDA's inline watch read ``g.flatten(1)`` itself — the pool gate's values laid out
anew — as the top-k's gate of ``hf`` and relaxed it there, so the real top-k mask applied next cut the gradient with
no refusal (identity: summed |grad| 47.20 against 52.72 for the in-place twin ``h.mul_(h == p); hf.mul_(hf ≥
kth)``). Now no gate is read on a layout call, the mask's product is read as the top-k gate of ``g.flatten(1)``, and
the gradient equals the in-place twin's (smooth and identity), the forward bit for bit the model's own. (The layer
probe counted 3 gates in this block, so ``bpda_layers: auto`` refused it; since probe53 it reads the view as BPDA
does, 2 gates: tests/test_probe53_two_gate_blocks.py.)
Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget
from tests.test_gates52_copies import TWO, X
from tests.test_inplace51_index_forms import bpda_gradient


def _pool(h: Tensor) -> Tensor:
    return F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest")


class Block(nn.Module):
    """``x + topk_flat(pool_gate(conv(x)))``: ``"flatten"``/``"reshape"``/``"view"`` out of place on a view of the
    pool-gated ``g``; ``"mul_"``: the in-place twin, both gates written into ``h`` (the second through ``hf``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(8, 8, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        hf = h.flatten(1)
        kth = hf.topk(200, dim=1).values[:, -1:]
        p = _pool(h)
        if self.how == "mul_":
            h.mul_(h == p)
            hf.mul_(hf >= kth)
            return x + h
        g = h * (h == p)
        flat = {"flatten": lambda: g.flatten(1), "reshape": lambda: g.reshape(g.shape[0], -1),
                "view": lambda: g.view(g.shape[0], -1)}[self.how]()
        return x + (flat * (hf >= kth)).view_as(h)


def net(how: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(512, 10)).eval()


@pytest.mark.parametrize("backward", ["smooth", "identity"])
@pytest.mark.parametrize("how, target", [("flatten", TWO), ("reshape", TWO), ("view", TWO),
                                         ("flatten", LayerTarget("inline"))])
def test_flattened_view_of_pool_gate_relaxed_as_its_in_place_twin(how: str, target: LayerTarget,
                                                                  backward: str) -> None:
    """Explicit targets (``bpda_layers``): 2 gates, or the default count of 1, which the old reading also met."""
    model = net(how)
    with torch.no_grad():
        plain = model(X)
    out, grad = bpda_gradient(model, backward, target, X)
    twin_out, twin_grad = bpda_gradient(net("mul_"), backward, TWO, X)
    assert torch.equal(out, plain)  # the forward bit for bit
    assert torch.equal(out, twin_out)
    # before: the view read as the top-k gate, the real mask then cut (identity 47.20 against 52.72)
    torch.testing.assert_close(grad, twin_grad, rtol=1e-5, atol=1e-7)


def test_identity_gradient_passes_both_gates() -> None:
    """Straight-through both gates: the gradient of the block without them (``x + h``), not masked."""
    _, grad = bpda_gradient(net("flatten"), "identity", TWO, X)
    ungated = net("flatten")
    ungated[1].forward = lambda x: x + ungated[1].conv(x)  # type: ignore[method-assign]
    x = X.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(ungated(x).sum(), x)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)
