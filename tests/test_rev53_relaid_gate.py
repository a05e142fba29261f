"""A relaxed gate's values moved or copied are no gate (:func:`attacks.inline_gates._laid_out`). A block gates ``h``
by its 2 × 2 window maxima (``g = h · (h == p)``), then applies a flattened top-k's mask (``hf = h.flatten(1)``,
``kth`` its 200th value) to ``g`` laid out flat. cut52 stopped BPDA's inline watch from reading ``g.flatten(1)``
(a call of :data:`attacks.inline_gates.LAYOUTS`) as the top-k's gate of ``hf``; the same values reached by a call
outside that list — ``g.clone().flatten(1)``, ``g.flatten(1).clone()``, a permute and back, a slice ``g[:, :]``,
``g.double().float()`` — were still read as the top-k's gate and relaxed there, so the real mask
applied next cut the gradient with no refusal (identity: summed |grad| 47.20 against 52.72 without the gates). Now
each takes the gradient of the ``g.flatten(1)`` form (the in-place twin's, tests/test_cut52_flat_view.py), the
forward bit for bit the model's own. Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.test_gates52_copies import TWO, X
from tests.test_inplace51_index_forms import bpda_gradient

FORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "flatten": lambda g: g.flatten(1),
    "clone_flatten": lambda g: g.clone().flatten(1),
    "flatten_clone": lambda g: g.flatten(1).clone(),
    "permute_back": lambda g: g.permute(0, 2, 3, 1).permute(0, 3, 1, 2).flatten(1),
    "slice": lambda g: g[:, :].flatten(1),
    "double_float": lambda g: g.double().float().flatten(1),
}


class Block(nn.Module):
    """``x + topk_flat(pool_gate(conv(x)))``, the pool-gated ``g`` laid out flat by ``FORMS[how]``; ``how=None``:
    ``x + conv(x)``, no gate."""

    def __init__(self, how: str | None) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(8, 8, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if self.how is None:
            return x + h
        hf = h.flatten(1)
        kth = hf.topk(200, dim=1).values[:, -1:]
        g = h * (h == F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest"))
        return x + (FORMS[self.how](g) * (hf >= kth)).view_as(h)


def net(how: str | None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(512, 10)).eval()


def plain_gradient(model: nn.Module) -> Tensor:
    x = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


@pytest.mark.parametrize("how", [h for h in FORMS if h != "flatten"])
def test_identity_passes_both_gates_whatever_copies_the_pool_gate(how: str) -> None:
    """Straight-through both gates: the gradient of ``x + conv(x)`` (before: the top-k mask cut it, 47.20 of
    52.72 summed |grad|)."""
    model = net(how)
    with torch.no_grad():
        plain = model(X)
    out, grad = bpda_gradient(model, "identity", TWO, X)
    assert torch.equal(out, plain)
    torch.testing.assert_close(grad, plain_gradient(net(None)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", [h for h in FORMS if h != "flatten"])
def test_smooth_gradient_is_the_flatten_forms(how: str) -> None:
    """The smooth relaxation of both gates, as for ``g.flatten(1)`` (equal to the in-place twin's since cut52)."""
    _, grad = bpda_gradient(net(how), "smooth", TWO, X)
    _, want = bpda_gradient(net("flatten"), "smooth", TWO, X)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
