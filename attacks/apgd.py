"""Auto-PGD: APGD-CE, APGD-DLR and targeted APGD (APGD-T), written here with a per-sample early stop.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
ICML 2020 (AutoAttack). The algorithm is the reference one (as in AutoAttack's ``autopgd_base`` and torchattacks
3.5.1's ``APGD`` / ``APGDT``, whose random start, step-size rule, momentum and checkpoints it reproduces): a
random start in the ball, step size ``2 eps`` halved per sample at checkpoints where the loss stopped rising
(at most a fraction ``rho`` of the steps since the last checkpoint increased it, the reference's ``<=``, or no
improvement since a checkpoint that kept the step),
momentum ``0.75``, checkpoint interval shrinking from ``0.22 n`` by ``0.03 n`` down to ``0.06 n`` iterations.
``initial_step`` sets the first step size as a multiple of ``eps`` (default 2, the reference's). On the small kWTA
CNNs, BPDA's long runs break the hard samples only after the step has been halved a few times (in the second half
of a 150-1,200-step run); starting at ``0.5 eps`` breaks them earlier, for fewer queries (``benchmarks/STRENGTH.md``,
sixteenth round). ``odi_steps`` (default 0: off) moves each run's random start by that many steps of Output
Diversified Initialization (Tashiro, Song & Ermon, NeurIPS 2020; :mod:`attacks.odi`), each of ``odi_step · eps``
(default 1, the paper's).

**Early stop.** Both reference implementations keep iterating on samples they already misclassified (they
return the last misclassified iterate). This one stops computing a sample at its first misclassified iterate,
which it returns; every other sample's trajectory is the same (each sample's state — iterate, momentum, step
size, best loss — is its own, and the checkpoint schedule does not depend on the samples). The robust accuracy
is therefore the reference's, for less work on samples that break early (up to the whole budget on a broken
model). Samples that survive get their highest-loss iterate back.

Threat models: Linf and L2, inputs ``x`` ``[N, ...]`` in ``threat.bounds`` (any shape; the L2 norm is taken
per sample over all non-batch dims), labels ``y`` ``[N]``, logits ``[N, C]``. Reproducible for a given ``seed``
(an explicit generator; the global RNG is untouched). Defaults are the AutoAttack standard budgets: 100
iterations, 1 restart, 9 target classes (torchattacks' own default is 10 iterations).

Example::

    x_adv = create_attack("apgd-ce")(model, x, y, ThreatModel("linf", 0.3))
    x_adv = create_attack("apgd-t", n_target_classes=9)(model, x, y, ThreatModel("l2", 0.5))
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    ThreatModel,
    begin_attack,
    check_classes,
    eval_mode,
    frozen_parameters,
    input_gradient,
    register_attack,
    seeded_generator,
)
from attacks.errors import check_choice_param, check_int_param, check_positive_param
from attacks.odi import odi_start
from attacks.precision import loss_logits
from attacks.progress import check_interval, record_first
from attacks.seed_draws import random_start

#: AutoAttack reference budgets (Croce & Hein, ICML 2020, ``version="standard"``).
AUTOATTACK_STEPS = 100
AUTOATTACK_TARGETS = 9

Loss = Callable[[Tensor, Tensor], Tensor]


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio ``-(z_y - max_{j!=y} z_j) / (z_(1) - z_(3))`` per sample (to maximise), in float32
    at least (:func:`attacks.precision.loss_logits`: the ``1e-12`` is 0 in float16)."""
    logits = loss_logits(logits)
    ordered = logits.sort(dim=1).values
    top_is_y = (logits.argmax(dim=1) == y).to(logits.dtype)
    other = ordered[:, -2] * top_is_y + ordered[:, -1] * (1.0 - top_is_y)
    return -(logits.gather(1, y[:, None]).squeeze(1) - other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)`` per sample (to maximise), in float32 at least."""
    logits = loss_logits(logits)
    ordered = logits.sort(dim=1).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (ordered[:, -1] - 0.5 * ordered[:, -3] - 0.5 * ordered[:, -4] + 1e-12)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``[N]`` → ``[N, 1, ...]`` broadcastable against ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _l2(t: Tensor) -> Tensor:
    return _per_sample(t.flatten(1).pow(2).sum(dim=1).sqrt(), t)


def _clip_to_ball(x_new: Tensor, x: Tensor, threat: ThreatModel, l2_slack: float = 0.0) -> Tensor:
    """The reference's projection: Linf ``clamp(min(max(x', x - eps), x + eps))`` and L2 rescaling of
    ``x' - x`` to norm ``min(eps, ||x' - x|| + slack)``, then the bounds."""
    lo, hi = threat.bounds
    if threat.norm == "linf":
        return torch.min(torch.max(x_new, x - threat.eps), x + threat.eps).clamp(lo, hi)
    delta = x_new - x
    norm = _l2(delta)
    return (x + delta / (norm + 1e-12) * torch.clamp(norm + l2_slack, max=threat.eps)).clamp(lo, hi)


def reference_start(x: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
    """The reference's start (on the sphere, unlike :meth:`ThreatModel.random_start`): Linf ``x + eps · t /
    ||t||_inf`` with ``t`` uniform in [-1, 1]; L2 ``x + eps · t / ||t||_2`` with ``t`` Gaussian; clipped to the
    bounds."""
    if threat.norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        scale = _per_sample(t.flatten(1).abs().amax(dim=1), t)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = _l2(t) + 1e-12
    return (x + threat.eps * t / scale).clamp(*threat.bounds)


class _Trajectories:
    """The per-sample state of the samples still being attacked (all tensors share the first dim)."""

    def __init__(self, **tensors: Tensor) -> None:
        self.names = list(tensors)
        self.__dict__.update(tensors)

    def keep(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` (int64 positions, ascending) of every tensor: a gather each, without the host read
        a boolean mask costs per tensor on an accelerator (:mod:`attacks.progress`)."""
        for name in self.names:
            setattr(self, name, getattr(self, name)[rows])


def _loss_and_grad(model: nn.Module, x_adv: Tensor,
                   loss_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample loss ``[A]``, its input gradient ``[A, ...]`` and the logits ``[A, C]`` (detached)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = loss_fn(loss_logits(logits, rescale=True))  # float16 logits: float32 loss (attacks.precision)
        grad = input_gradient(loss.sum(), x_adv)
    return loss.detach(), grad.detach(), logits.detach()


def apgd_single_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    steps: int,
    rho: float,
    generator: torch.Generator,
    initial_step: float = 2.0,
    odi_steps: int = 0,
    odi_step: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One APGD run from a random start (moved by ``odi_steps`` ODI steps of ``odi_step · eps``) on ``x``
    ``[A, ...]``; returns (``x_adv``, ``fooled`` ``[A]``).

    ``loss(logits, y, index)`` is the per-sample loss to maximise; ``index`` ``[a]`` says which of the ``A``
    samples the rows are (targeted losses look up each sample's target). ``x_adv`` holds, per sample, its first
    misclassified iterate (then the sample is no longer computed: on an accelerator from the next progress read,
    :mod:`attacks.progress`), else its highest-loss iterate. The first step size is ``initial_step · eps``.
    """
    n, every = x.shape[0], check_interval(x.device)
    checkpoint = max(int(0.22 * steps), 1)  # iterations between step-size checks: 22 % of the budget at first,
    min_checkpoint, decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)  # then 3 % less, down to 6 %
    out = odi_start(model, x, reference_start(x, threat, generator), threat, odi_steps, odi_step, generator)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    index = torch.arange(n, device=x.device)
    x_adv = out.clone()
    value, grad, logits = _loss_and_grad(model, x_adv, lambda z: loss(z, y, index))
    s = _Trajectories(
        index=index, x=x, y=y, x_adv=x_adv, x_old=x_adv.clone(), grad=grad, x_best=x_adv.clone(),
        grad_best=grad.clone(), loss_best=value.clone(), loss_last_check=value.clone(),
        step=torch.full((n,), initial_step * threat.eps, device=x.device, dtype=x.dtype),
        reduced_last_check=torch.ones(n, dtype=torch.bool, device=x.device),
        # the reference compares the first iterate's loss with 0 (its loss history starts as zeros), not the start's
        increases=torch.zeros(n, dtype=torch.long, device=x.device), last_loss=torch.zeros_like(value),
    )
    record_first(out, fooled, index, logits.argmax(dim=1) != y, x_adv)
    since_check = 0
    for i in range(steps + 1):
        if i == steps:
            break
        if i % every == 0:  # the host reads the progress (attacks.progress): stop computing the samples fooled
            unbroken = (~fooled[s.index]).nonzero().squeeze(1)  # the one host read of this check
            if unbroken.numel() < s.index.numel():
                s.keep(unbroken)
                if unbroken.numel() == 0:
                    break
        momentum = 0.75 if i > 0 else 1.0
        with torch.no_grad():
            step = _per_sample(s.step, s.x)
            if threat.norm == "linf":
                z = _clip_to_ball(s.x_adv + step * torch.sign(s.grad), s.x, threat)
                x_new = _clip_to_ball(s.x_adv + (z - s.x_adv) * momentum + (s.x_adv - s.x_old) * (1 - momentum),
                                      s.x, threat)
            else:
                z = _clip_to_ball(s.x_adv + step * s.grad / (_l2(s.grad) + 1e-12), s.x, threat)
                x_new = _clip_to_ball(s.x_adv + (z - s.x_adv) * momentum + (s.x_adv - s.x_old) * (1 - momentum),
                                      s.x, threat, l2_slack=1e-12)
            s.x_old = s.x_adv
            s.x_adv = x_new
        value, s.grad, logits = _loss_and_grad(model, s.x_adv, lambda z: loss(z, s.y, s.index))
        # keep each first misclassified iterate now: a checkpoint below may send x_adv back to x_best
        record_first(out, fooled, s.index, logits.argmax(dim=1) != s.y, s.x_adv)
        with torch.no_grad():
            s.increases += (value > s.last_loss).long()
            s.last_loss = value
            better = value > s.loss_best
            s.x_best = torch.where(_per_sample(better, s.x_adv), s.x_adv, s.x_best)
            s.grad_best = torch.where(_per_sample(better, s.grad), s.grad, s.grad_best)
            s.loss_best = torch.where(better, value, s.loss_best)
            since_check += 1
            if since_check == checkpoint:
                # halve where fewer than rho of the last `checkpoint` steps raised the loss, or where the step was
                # not halved at the last checkpoint and the best loss has not improved since
                halve = (s.increases <= checkpoint * rho) | (~s.reduced_last_check & (s.loss_last_check >= s.loss_best))
                s.reduced_last_check = halve
                s.loss_last_check = s.loss_best.clone()
                s.step = torch.where(halve, s.step / 2.0, s.step)
                s.x_adv = torch.where(_per_sample(halve, s.x_adv), s.x_best, s.x_adv)
                s.grad = torch.where(_per_sample(halve, s.grad), s.grad_best, s.grad)
                s.increases.zero_()
                since_check = 0
                checkpoint = max(checkpoint - decrease, min_checkpoint)
    out[s.index] = torch.where(_per_sample(fooled[s.index], s.x_best), out[s.index], s.x_best)
    return out, fooled


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    loss: Callable[[Tensor, Tensor, Tensor], Tensor],
    steps: int,
    restarts: int,
    rho: float,
    generator: torch.Generator,
    robust: Tensor,
    initial_step: float = 2.0,
    odi_steps: int = 0,
    odi_step: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """``restarts`` APGD runs, each on the samples of ``robust`` ``[N]`` still not fooled; returns (``x_adv``,
    updated ``robust``). ``loss`` receives indices into ``x``."""
    x_adv = x.clone()
    robust = robust.clone()
    for _ in range(restarts):
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        adv, fooled = apgd_single_run(model, x[idx], y[idx], threat, lambda z, yy, rows: loss(z, yy, idx[rows]),
                                      steps, rho, generator, initial_step, odi_steps, odi_step)
        x_adv[idx] = adv
        robust[idx[fooled]] = False
    return x_adv, robust


@dataclass
class APGD:
    """Untargeted APGD (Croce & Hein, ICML 2020) — see the module docstring. ``loss="ce"`` (APGD-CE) or ``"dlr"``
    (APGD-DLR: difference of logits ratio; needs >= 3 classes). Defaults are the AutoAttack reference:
    ``steps=100``, ``restarts=1``, ``rho=0.75``, ``initial_step=2`` (first step ``2 eps``). Shapes: ``[N, ...]`` →
    ``[N, ...]``."""

    loss: str = "ce"
    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    rho: float = 0.75
    seed: int = 0
    initial_step: float = 2.0
    odi_steps: int = 0
    odi_step: float = 1.0

    def __post_init__(self) -> None:
        check_choice_param("apgd", "loss", self.loss, ("ce", "dlr"))
        self.name = f"apgd-{self.loss}"
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_positive_param(self.name, "rho", self.rho)
        check_positive_param(self.name, "initial_step", self.initial_step)
        check_int_param(self.name, "odi_steps", self.odi_steps, minimum=0)
        check_positive_param(self.name, "odi_step", self.odi_step)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        if self.loss == "dlr":
            check_classes(self.name, logits.shape[1])
        loss_fn: Loss = dlr_loss if self.loss == "dlr" else (lambda z, t: F.cross_entropy(z, t, reduction="none"))
        with eval_mode(model), frozen_parameters(model):
            x_adv, _ = apgd(model, x, y, threat, lambda z, yy, rows: loss_fn(z, yy), self.steps, self.restarts,
                            self.rho, seeded_generator(self.seed, x.device), logits.argmax(dim=1) == y,
                            self.initial_step, self.odi_steps, self.odi_step)
        return x_adv


@register_attack("apgd-ce", norms=NORMS, summary="APGD-CE (Croce & Hein 2020), AutoAttack budget: 100 steps",
                 draws=random_start)
def apgd_ce(steps: int = AUTOATTACK_STEPS, restarts: int = 1, rho: float = 0.75, seed: int = 0,
            initial_step: float = 2.0, odi_steps: int = 0, odi_step: float = 1.0) -> APGD:
    """APGD with cross-entropy loss; AutoAttack standard budget (100 iterations, 1 restart, first step 2 eps, no
    ODI start)."""
    return APGD("ce", steps, restarts, rho, seed, initial_step, odi_steps, odi_step)


@register_attack("apgd-dlr", norms=NORMS, summary="APGD-DLR (Croce & Hein 2020), 100 steps; needs >= 3 classes",
                 min_classes=3, class_reason="the DLR loss divides by z_1 - z_3", draws=random_start)
def apgd_dlr(steps: int = AUTOATTACK_STEPS, restarts: int = 1, rho: float = 0.75, seed: int = 0,
             initial_step: float = 2.0, odi_steps: int = 0, odi_step: float = 1.0) -> APGD:
    """APGD with the DLR loss (needs >= 3 classes); 100 iterations, 1 restart, first step 2 eps, no ODI start."""
    return APGD("dlr", steps, restarts, rho, seed, initial_step, odi_steps, odi_step)


@register_attack("apgd-t", norms=NORMS, summary="targeted APGD-DLR (AutoAttack APGD-T): 9 targets, 100 steps",
                 min_classes=4, class_reason="the targeted DLR loss divides by z_1 - (z_3 + z_4) / 2",
                 draws=random_start)
@dataclass
class APGDTargeted:
    """Targeted APGD with the targeted DLR loss (Croce & Hein, ICML 2020; AutoAttack's APGD-T).

    One targeted run per target class — the 2nd, 3rd, ... highest clean logits — on the samples still robust;
    ``n_target_classes`` is capped at ``num_classes - 1`` at call time. Needs >= 4 classes (the targeted DLR uses
    the 4th-largest logit). Defaults are AutoAttack standard: ``steps=100``, ``restarts=1``,
    ``n_target_classes=9``, ``rho=0.75``, ``initial_step=2`` (first step ``2 eps``), ``odi_steps=0`` (no ODI
    start). Shapes: ``[N, ...]`` →
    ``[N, ...]``.
    """

    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    n_target_classes: int = AUTOATTACK_TARGETS
    rho: float = 0.75
    seed: int = 0
    initial_step: float = 2.0
    odi_steps: int = 0
    odi_step: float = 1.0
    name: ClassVar[str] = "apgd-t"
    #: ``n_target_classes`` runs as at most ``num_classes - 1`` (records: :mod:`attacks.settings`).
    class_caps: ClassVar[Mapping[str, int]] = MappingProxyType({"n_target_classes": 1})

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_int_param(self.name, "n_target_classes", self.n_target_classes)
        check_positive_param(self.name, "rho", self.rho)
        check_positive_param(self.name, "initial_step", self.initial_step)
        check_int_param(self.name, "odi_steps", self.odi_steps, minimum=0)
        check_positive_param(self.name, "odi_step", self.odi_step)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        num_classes = logits.shape[1]
        check_classes(self.name, num_classes)
        ranked = logits.sort(dim=1).indices  # ascending: target k is the k-th highest clean logit, column -k
        robust = logits.argmax(dim=1) == y
        x_adv = x.clone()
        generator = seeded_generator(self.seed, x.device)
        with eval_mode(model), frozen_parameters(model):
            for k in range(2, min(self.n_target_classes, num_classes - 1) + 2):
                target = ranked[:, -k]
                before = robust
                adv, robust = apgd(model, x, y, threat, lambda z, yy, rows: targeted_dlr_loss(z, yy, target[rows]),
                                   self.steps, self.restarts, self.rho, generator, robust, self.initial_step,
                                   self.odi_steps, self.odi_step)
                # fooled samples keep this target's adversarial; the still-robust ones its best-loss iterate
                x_adv[before] = adv[before]
        return x_adv


__all__ = ["APGD", "APGDTargeted", "AUTOATTACK_STEPS", "AUTOATTACK_TARGETS", "apgd", "dlr_loss", "targeted_dlr_loss",
           "reference_start"]
