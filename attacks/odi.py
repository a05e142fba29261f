"""Output Diversified Initialization (ODI): a start point for a gradient attack chosen in output space.

Tashiro, Song & Ermon, "Diversity can be Transported: Output Diversification for White- and Black-box Attacks",
NeurIPS 2020. From a start point ``x0`` in the threat ball, a few steps maximise ``w · f(x)`` for a random direction
``w`` in logit space (uniform in ``[-1, 1]^C``, one per sample), each step of size ``step · eps`` along the
normalised gradient (Linf: its sign; L2: the gradient over its L2 norm), projected back onto the ball and the
bounds. The attack then starts from there: restarts and seeds explore the model's outputs rather than only its
inputs. The paper uses 2 steps of ``eps`` (Linf) before PGD; 0 steps (the default where an attack offers it)
leaves the start ``x0`` unchanged and draws nothing from the generator.

Threat models: Linf and L2, white-box. Shapes: ``x`` and ``x0`` ``[N, ...]``, logits ``[N, C]``; returns
``[N, ...]``. Each step is one forward and one backward pass through ``model`` (the runner counts them as queries).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.base import ThreatModel, input_gradient

__all__ = ["odi_start"]


def odi_start(model: nn.Module, x: Tensor, x0: Tensor, threat: ThreatModel, steps: int, step: float,
              generator: torch.Generator) -> Tensor:
    """``steps`` ODI steps from ``x0`` ``[N, ...]`` (in the ``threat`` ball around ``x``), each of ``step · eps``,
    maximising ``w · f(x)`` for ``w`` ``[N, C]`` drawn uniformly in ``[-1, 1]`` from ``generator`` (once, before
    the first step); ``steps = 0`` returns ``x0`` and draws nothing."""
    x_odi = x0.detach()
    if steps == 0 or x.shape[0] == 0:
        return x_odi
    w = None
    for _ in range(steps):
        x_odi = x_odi.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_odi)
            if w is None:
                w = 2 * torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype) - 1
            grad = input_gradient((logits * w).sum(), x_odi).detach()
        with torch.no_grad():
            if threat.norm == "linf":
                moved = x_odi + step * threat.eps * grad.sign()
            else:
                norm = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
                moved = x_odi + step * threat.eps * grad / (norm + 1e-12)
            x_odi = threat.project(moved, x)
    return x_odi.detach()
