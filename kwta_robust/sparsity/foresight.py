"""Foresight pruning at initialisation: SNIP and GraSP saliency scores.

* **SNIP** (Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
  ICLR 2019): the sensitivity of the loss to removing connection ``j`` is ``|g_j · w_j|`` with ``g = ∂L/∂w`` at
  initialisation, accumulated over a few mini-batches; the connections with the smallest sensitivity are pruned
  (globally in the paper).
* **GraSP** (Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow",
  ICLR 2020): removing ``w_j`` changes the gradient norm ``gᵀg`` by about ``S_j = -w_j · (Hg)_j`` (``H`` the
  Hessian of the loss); the paper removes the weights with the *largest* ``S`` (they reduce gradient flow least).
  The score returned here is ``w ⊙ Hg = -S`` so that, as for every score in this package, higher = keep.
  ``Hg`` is a Hessian-vector product: ``∇_w (g_detachedᵀ · ∇_w L)``. Logits are divided by a temperature
  (200 in the paper's code) so the softmax is not saturated at initialisation.

Both take ``batches``: an iterable of ``(x [N, ...] in [0,1], y [N] int64)`` on the model's device. Scores are
computed in training mode (batch statistics, as the first training step would see them); the model's mode,
buffers (BatchNorm statistics, kWTA duty cycles) and ``.grad`` fields are left exactly as they were.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kwta_robust.sparsity.masks import effective_weight, is_masked

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def _scoring_mode(model: nn.Module) -> Iterator[None]:
    """Train mode for the scoring passes; restores every module's flag and every buffer afterwards."""
    flags = {module: module.training for module in model.modules()}
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    model.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])
        for module, flag in flags.items():
            module.training = flag


def _weights(modules: Mapping[str, nn.Module]) -> list[Tensor]:
    """The tensors whose gradient we need: the trainable weight (``weight_orig`` while masked)."""
    return [m.weight_orig if is_masked(m) else m.weight for m in modules.values()]  # type: ignore[misc]


def _check_batches(batches: Batches) -> list[tuple[Tensor, Tensor]]:
    batches = list(batches)
    if not batches:
        raise ValueError("foresight pruning needs at least one mini-batch of training data")
    return batches


def snip_scores(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches: Batches,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, Tensor]:
    """SNIP connection sensitivity ``|Σ_b ∂L_b/∂w ⊙ w|`` per prunable layer (shape of each weight)."""
    batches = _check_batches(batches)
    weights = _weights(modules)
    grads = [torch.zeros_like(w) for w in weights]
    with _scoring_mode(model):
        for x, y in batches:
            loss = loss_fn(model(x), y)
            for acc, g in zip(grads, torch.autograd.grad(loss, weights)):
                acc.add_(g)
    with torch.no_grad():
        return {
            name: (g * effective_weight(module)).abs()
            for (name, module), g in zip(modules.items(), grads)
        }


def grasp_scores(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches: Batches,
    temperature: float = 200.0,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, Tensor]:
    """GraSP score ``w ⊙ Hg`` (= ``-S`` of the paper; higher = keep) per prunable layer.

    First pass: ``g = Σ_b ∇_w L_b`` (no graph). Second pass, per batch: ``Hg += ∇_w (gᵀ ∇_w L_b)``.
    """
    if temperature <= 0:
        raise ValueError(f"GraSP temperature must be > 0, got {temperature}")
    batches = _check_batches(batches)
    weights = _weights(modules)
    with _scoring_mode(model):
        grad_sum = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            loss = loss_fn(model(x) / temperature, y)
            for acc, g in zip(grad_sum, torch.autograd.grad(loss, weights)):
                acc.add_(g)
        hg = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            loss = loss_fn(model(x) / temperature, y)
            g_b = torch.autograd.grad(loss, weights, create_graph=True)
            z = sum((gf * gb).sum() for gf, gb in zip(grad_sum, g_b))
            for acc, h in zip(hg, torch.autograd.grad(z, weights, allow_unused=True)):
                if h is not None:
                    acc.add_(h)
    with torch.no_grad():
        return {name: effective_weight(module) * h for (name, module), h in zip(modules.items(), hg)}
