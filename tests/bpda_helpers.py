"""Shared check of the BPDA tests: the smooth surrogate's input gradient through a model equals autograd's through
the same model with the gate relaxed by hand."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from attacks.bpda_wrap import LayerTarget, attached_backward


def assert_bpda_matches_relaxed(model: nn.Module, targets: Mapping[str, LayerTarget], layer: str, x: Tensor,
                                relaxed_forward: Callable[[Tensor], Tensor], temperature: float = 0.1) -> None:
    """``d/dx sum(model(x) · w)`` with BPDA's smooth surrogate (``temperature``) on ``layer`` equals
    ``d/dx sum(relaxed_forward(x) · w)`` for a fixed random ``w`` ``[N, classes]``, and is not zero."""
    xg = x.clone().requires_grad_(True)
    with attached_backward(model, targets) as controllers:
        controllers[layer].set_backward("smooth", temperature)
        logits = model(xg)
        weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(4))
        (logits * weights).sum().backward()
    xr = x.clone().requires_grad_(True)
    (relaxed_forward(xr) * weights).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-6) and bool((xg.grad != 0).any())
