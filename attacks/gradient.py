"""White-box gradient attacks: FGSM and PGD; APGD (CE / DLR / targeted) is in :mod:`attacks.apgd`, FAB and FAB-T in
:mod:`attacks.fab`, the minimal-perturbation attacks CW-L2 and DeepFool in :mod:`attacks.minimal`.

Threat model: ``ThreatModel(norm, eps, bounds)``, Linf or L2, inputs ``x`` ``[N, ...]`` inside
``bounds``, labels ``y`` ``[N]``, model returning logits ``[N, C]``. Every attack returns ``x_adv`` with the shape,
dtype and device of ``x``, inside the eps ball and the bounds; it never moves, mutates or leaves the model in
train mode (each call runs under :func:`attacks.base.eval_mode` with the parameters frozen) and is reproducible
for a given ``seed`` without touching the caller's global RNG state.

``fgsm`` / ``pgd`` are batched, for both norms, with CE or CW-margin loss and random restarts that run only on the
samples still robust (torchattacks' PGD has neither the margin loss nor restarts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    AttackConfigError,
    ThreatModel,
    begin_attack,
    eval_mode,
    frozen_parameters,
    input_gradient,
    margin_loss,
    register_attack,
    seeded_generator,
)
from attacks.errors import check_bool_param, check_choice_param, check_int_param, check_positive_param
from attacks.precision import loss_logits
from attacks.progress import check_interval, record_first
from attacks.seed_draws import draws_nothing, random_start_if_set

logger = logging.getLogger(__name__)

LOSSES: tuple[str, ...] = ("ce", "margin")


# --- shared pieces -------------------------------------------------------------------------------------------


def per_sample_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Loss to *maximise*, per sample ``[N]``: cross-entropy or the CW margin ``max_{j!=y} z_j - z_y``."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return margin_loss(logits, y)


def pgd_ascent(
    model: nn.Module,
    x: Tensor,
    start: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Projected gradient ascent on ``loss_fn(logits, rows) -> [A]`` from ``start`` (Madry et al., ICLR 2018), the
    PGD loop of FGSM, PGD and adversarial training (EOT's averaged-gradient loop is its own, :mod:`attacks.adaptive`);
    call it in eval mode with the parameters frozen.

    ``loss_fn`` gets the logits ``[A, C]`` of the samples still attacked and their positions ``rows`` ``[A]`` in
    ``x`` (to pick their labels or clean outputs). With labels ``y`` each sample stops at its first misclassified
    iterate, which is returned (else the last iterate) with ``fooled [N]``, and is no longer computed (each
    sample's trajectory is its own, so the others are unaffected; on an accelerator it leaves the batch at the next
    progress read, :mod:`attacks.progress`); without, every sample takes all ``steps`` and the last iterate is
    returned (``fooled`` all false). Steps and projection are the threat model's
    (:meth:`ThreatModel.step`, :meth:`ThreatModel.project`). Shapes: ``x``, ``start`` ``[N, ...]`` →
    ``([N, ...], [N])``.
    """
    every = check_interval(x.device)
    out = start.detach().clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    current, x_rows = start.detach(), x
    for step in range(steps + 1):
        if y is None and step == steps:
            break
        current.requires_grad_(True)
        with torch.enable_grad():
            logits = model(current)
            unbroken = None
            if y is not None:
                record_first(out, fooled, rows, logits.detach().argmax(dim=1) != y[rows], current.detach())
                if step < steps and (step + 1) % every == 0:  # the host reads the progress (module docstring),
                    unbroken = (~fooled[rows]).nonzero().squeeze(1)  # once, before the backward is queued
            last = step == steps or (unbroken is not None and unbroken.numel() == 0)
            if not last:
                # float16/bfloat16 logits: the loss in float32, the gradient rescaled per sample (attacks.precision)
                grad = input_gradient(loss_fn(loss_logits(logits, rescale=True), rows).sum(), current)
        current = current.detach()
        if last:
            break
        if unbroken is not None and unbroken.numel() < rows.numel():  # gathers: no further host read
            rows, current, x_rows, grad = rows[unbroken], current[unbroken], x_rows[unbroken], grad[unbroken]
        current = threat.project(threat.step(current, grad, step_size), x_rows)
    left = ~fooled[rows]
    out[rows] = torch.where(left.view(-1, *([1] * (x.ndim - 1))), current, out[rows])
    return out, fooled


def projected_gradient_descent(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    restarts: int = 1,
    loss: str = "ce",
    random_init: bool = True,
    generator: torch.Generator | None = None,
    robust: Tensor | None = None,
) -> Tensor:
    """Batched PGD (Madry et al., ICLR 2018) with random restarts; call in eval mode.

    ``robust`` ``[N]`` (default: clean prediction correct) selects the samples to attack; each restart runs only
    on the samples still robust and keeps, per sample, the first successful restart. The random start of every
    restart is drawn for the whole batch, so restart ``r`` of sample ``i`` is the same whatever the restart
    count: more restarts never leave more samples robust.
    """
    x_adv = x.clone()
    if robust is None:
        with torch.no_grad():
            robust = model(x).argmax(dim=1) == y
    robust = robust.clone()
    for _ in range(restarts):
        start = threat.random_start(x, generator) if random_init else x
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        yi = y[idx]
        adv, fooled = pgd_ascent(model, x[idx], start[idx], threat, steps=steps, step_size=step_size,
                                 loss_fn=lambda logits, rows: per_sample_loss(logits, yi[rows], loss), y=yi)
        x_adv[idx] = adv
        robust[idx[fooled]] = False
    return x_adv


# --- FGSM and PGD ----------------------------------------------------------------------------------------------


@register_attack("fgsm", norms=NORMS, single_step=True, summary="FGSM / fast gradient method (one step of size eps)",
                 draws=draws_nothing)
@dataclass
class FGSM:
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015); for L2 the fast gradient method.

    ``x_adv = proj(x + eps * sign(grad))`` (Linf) or ``x + eps * grad / ||grad||_2`` (L2), gradient of ``loss``
    (``"ce"`` or the CW ``"margin"``). Deterministic; ``seed`` is accepted for the common interface.
    Shapes: ``x [N, ...]``, ``y [N]`` → ``[N, ...]``.
    """

    loss: str = "ce"
    seed: int = 0
    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        check_choice_param(self.name, "loss", self.loss, LOSSES)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        with eval_mode(model), frozen_parameters(model):
            return projected_gradient_descent(
                model, x, y, threat, steps=1, step_size=threat.eps, loss=self.loss, random_init=False,
                robust=logits.argmax(dim=1) == y,
            )


@register_attack("pgd", norms=NORMS, summary="PGD (Madry et al. 2018), Linf/L2, CE or margin loss, restarts",
                 draws=random_start_if_set)
@dataclass
class PGD:
    """Projected Gradient Descent (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018), Linf and L2.

    Parameters: ``steps`` (default 40), ``step_size`` (default ``2.5 * eps / steps``, a common rule of thumb; Madry
    et al.'s 2018 runs used fixed sizes, e.g. 0.01 over 40 steps at eps 0.3 on MNIST),
    ``restarts`` (random restarts; each runs only on samples still robust, the first successful restart is kept
    per sample), ``loss`` (``"ce"`` or ``"margin"``: CW margin ``max_{j!=y} z_j - z_y``, Carlini & Wagner 2017),
    ``random_start`` (uniform start in the eps ball; required for ``restarts > 1``), ``seed``.
    Per sample the first misclassified iterate is returned (else the last). Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = 40
    step_size: float | None = None
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True
    seed: int = 0
    name: ClassVar[str] = "pgd"
    #: What ``step_size=None`` runs (records: :mod:`attacks.settings`).
    setting_rules: ClassVar[Mapping[str, str]] = MappingProxyType({"step_size": "2.5*eps/steps"})

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_choice_param(self.name, "loss", self.loss, LOSSES)
        check_bool_param(self.name, "random_start", self.random_start)
        if self.step_size is not None:
            check_positive_param(self.name, "step_size", self.step_size)
        if self.restarts > 1 and not self.random_start:
            raise AttackConfigError(
                f"attack {self.name!r}: restarts={self.restarts} needs random_start=True (restarts from x repeat)"
            )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        step_size = self.step_size if self.step_size is not None else 2.5 * threat.eps / self.steps
        with eval_mode(model), frozen_parameters(model):
            return projected_gradient_descent(
                model, x, y, threat, steps=self.steps, step_size=step_size, restarts=self.restarts,
                loss=self.loss, random_init=self.random_start, generator=seeded_generator(self.seed, x.device),
                robust=logits.argmax(dim=1) == y,
            )

