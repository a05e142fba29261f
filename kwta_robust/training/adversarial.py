"""The adversarial training steps: PGD adversarial training (Madry et al., ICLR 2018) and TRADES (Zhang et al.,
ICML 2019), and the plain step, as a table keyed by the ``method`` of a training config (:data:`METHODS`).

Each step maps a batch to ``(loss, logits)``; the adversarial ones perturb the batch first with
:func:`pgd_perturb` — the attacks' own PGD loop, step and projection — in eval mode (BatchNorm statistics and kWTA
duty cycles untouched by the attack, and kWTA's ``k_inference_factor`` applied), then update the weights in train
mode, as TRADES' reference implementation does (``model.eval()`` to craft, ``model.train()`` to update). PGD starts
from the threat model's uniform random start (Madry et al.); TRADES from ``x + 0.001·N(0, I)`` (Zhang et al.,
Algorithm 1: the KL term is at its minimum, with zero gradient, at ``x' = x`` itself), clipped into the threat model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import ThreatModel, eval_mode, frozen_parameters
from attacks.gradient import pgd_ascent
from kwta_robust.training.config import TrainConfig


#: Standard deviation of TRADES' Gaussian start around ``x`` (Zhang et al. 2019, Algorithm 1).
TRADES_START_STD = 0.001


def trades_start(x: Tensor, threat: ThreatModel, generator: torch.Generator | None) -> Tensor:
    """TRADES' starting point ``x + 0.001·N(0, I)`` (Zhang et al. 2019, Algorithm 1), projected into the threat
    model (the eps ball and [0, 1]): ``[N, ...] → [N, ...]``. ``generator`` lives on ``x``'s device."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return threat.project(x + TRADES_START_STD * noise, x)


def pgd_perturb(
    model: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None,
    start: Tensor | None = None,
) -> Tensor:
    """Maximize ``loss_fn(model(x_adv), rows).sum()`` with the attacks' PGD (:func:`attacks.gradient.pgd_ascent`,
    every sample all ``steps``, so ``rows`` is every row; Madry et al. 2018) in eval mode, from ``start`` if given,
    else from the threat model's uniform random start (``random_start``) or ``x`` itself.

    ``x``: ``[N, ...]`` in the threat's bounds; returns ``x_adv`` (detached, same shape) inside the threat model.
    Model parameters get no gradient; each module's train/eval flag and ``requires_grad`` are restored.
    """
    x = x.detach()
    if start is None:
        start = threat.random_start(x, generator) if random_start else x.clone()
    with eval_mode(model), frozen_parameters(model):
        x_adv, _ = pgd_ascent(model, x, start, threat, steps=steps, step_size=step_size, loss_fn=loss_fn)
    return x_adv.detach()


def _standard_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig,
                   gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _pgd_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig,
              gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    adv = cfg.adversarial
    x_adv = pgd_perturb(model, x, lambda z, rows: F.cross_entropy(z, y[rows], reduction="none"), adv.threat(),
                        adv.steps, adv.alpha(), adv.random_start, gen)
    logits = model(x_adv)
    return F.cross_entropy(logits, y), logits


def _trades_step(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig,
                 gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    adv = cfg.adversarial
    with torch.no_grad(), eval_mode(model):
        clean_prob = F.softmax(model(x), dim=1)

    def kl(z: Tensor, rows: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(z, dim=1), clean_prob[rows], reduction="none").sum(dim=1)

    threat = adv.threat()
    x_adv = pgd_perturb(model, x, kl, threat, adv.steps, adv.alpha(), False, gen, start=trades_start(x, threat, gen))
    logits = model(x)
    robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + adv.trades_beta * robust, logits


#: ``method`` → ``(model, x, y, cfg, generator) -> (loss, logits)`` for one training batch.
METHODS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "standard": _standard_step,
    "pgd": _pgd_step,
    "trades": _trades_step,
}
