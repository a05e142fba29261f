"""White-box gradient attacks: FGSM, PGD, APGD (CE / DLR / targeted), FAB (and FAB-T); the minimal-perturbation
attacks CW-L2 and DeepFool are in :mod:`attacks.minimal`.

Threat model: ``ThreatModel(norm, eps, bounds)``, Linf or L2, inputs ``x`` ``[N, ...]`` inside
``bounds``, labels ``y`` ``[N]``, model returning logits ``[N, C]``. Every attack returns ``x_adv`` with the shape,
dtype and device of ``x``, inside the eps ball and the bounds; it never moves, mutates or leaves the model in
train mode (each call runs under :func:`attacks.base.eval_mode` with the parameters frozen) and is reproducible
for a given ``seed`` without touching the caller's global RNG state.

Implementations:

* ``fgsm`` / ``pgd``: written here (batched, both norms, CE or CW-margin loss, random restarts that run only on
  the samples still robust); torchattacks' PGD has neither the margin loss nor restarts.
* ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab``, ``fab-t``: adapters over torchattacks 3.5.1
  (``APGD``, ``APGDT``, ``FAB``). Their defaults are the AutoAttack reference budgets (Croce & Hein 2020,
  ``version="standard"``): 100 iterations, 1 restart, 9 target classes -- *not* torchattacks' 10 steps.

Third-party attacks see the model through :class:`UnitInputView`: inputs rescaled to ``[0, 1]`` (both libraries
hard-code those bounds) and reshaped to the 4-D layout they index (``[N, C, H, W]``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, ClassVar, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    AttackConfigError,
    ThreatModel,
    begin_attack,
    check_choice_param,
    check_int_param,
    check_positive_param,
    eval_mode,
    frozen_parameters,
    margin_loss,
    register_attack,
    require_classes,
    rng_scope,
    seeded_generator,
)

logger = logging.getLogger(__name__)

LOSSES: tuple[str, ...] = ("ce", "margin")

#: AutoAttack reference budgets (Croce & Hein, ICML 2020, ``version="standard"``).
AUTOATTACK_STEPS = 100
AUTOATTACK_TARGETS = 9

#: Fewest classes an attack's loss is defined for (DLR uses the 3rd, targeted DLR the 4th largest logit).
MIN_CLASSES: Mapping[str, int] = MappingProxyType({"apgd-dlr": 3, "apgd-t": 4})


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
    loss_fn: Callable[[Tensor], Tensor],
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Projected gradient ascent on ``loss_fn(logits) -> [N]`` from ``start`` (Madry et al., ICLR 2018), the one PGD
    loop of the package (attacks and adversarial training); call it in eval mode with the parameters frozen.

    With labels ``y`` each sample stops at its first misclassified iterate, which is returned (else the last
    iterate) with ``fooled [N]``; without, every sample takes all ``steps`` and the last iterate is returned
    (``fooled`` all false). Steps and projection are the threat model's (:meth:`ThreatModel.step`,
    :meth:`ThreatModel.project`). Shapes: ``x``, ``start`` ``[N, ...]`` → ``([N, ...], [N])``.
    """
    current = start.detach()
    best = current.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for step in range(steps + 1):
        if y is None and step == steps:
            break
        current.requires_grad_(True)
        with torch.enable_grad():
            logits = model(current)
            if y is not None:
                is_adv = logits.detach().argmax(dim=1) != y
                newly = is_adv & ~fooled
                best[newly] = current.detach()[newly]
                fooled |= is_adv
                if step == steps or bool(fooled.all()):
                    break
            grad = torch.autograd.grad(loss_fn(logits).sum(), current)[0]
        current = threat.project(threat.step(current.detach(), grad, step_size), x).detach()
    best[~fooled] = current.detach()[~fooled]
    return best, fooled


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
                                 loss_fn=lambda logits: per_sample_loss(logits, yi, loss), y=yi)
        x_adv[idx] = adv
        robust[idx[fooled]] = False
    return x_adv


# --- FGSM and PGD ----------------------------------------------------------------------------------------------


@register_attack("fgsm", norms=NORMS, single_step=True, summary="FGSM / fast gradient method (one step of size eps)")
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


@register_attack("pgd", norms=NORMS, summary="PGD (Madry et al. 2018), Linf/L2, CE or margin loss, restarts")
@dataclass
class PGD:
    """Projected Gradient Descent (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018), Linf and L2.

    Parameters: ``steps`` (default 40), ``step_size`` (default ``2.5 * eps / steps`` as in Madry et al.),
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

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_choice_param(self.name, "loss", self.loss, LOSSES)
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


# --- torchattacks adapters -------------------------------------------------------------------------------------


class UnitInputView(nn.Module):
    """Shows ``model`` to third-party attack code as a classifier of ``[0, 1]``-valued 4-D inputs.

    ``layout="4d"``: NCHW inputs unchanged, other shapes viewed as ``[N, 1, 1, D]``.
    ``layout="square"``: ``[N, C, S, S]`` with ``S = max(H, W, min_side)`` (images zero-padded at the bottom/right,
    non-image inputs flattened and zero-padded to ``S*S``); the padding never reaches the model (Square attack
    samples square windows, so it needs square images of side >= 5 for L2). Under L2 the padding shares the
    budget, so the attack can only be weaker there, never leave the ball.
    Bounds ``(lo, hi)`` map affinely to ``[0, 1]``; ``eps`` scales by ``1 / (hi - lo)`` (:meth:`view_eps`).
    ``dtype`` (if given) is the dtype the model receives; logits come back in the dtype of the view's inputs
    (torchattacks' FAB casts its inputs to float32 and expects float32 logits).
    """

    def __init__(
        self, model: nn.Module, sample_shape: tuple[int, ...], bounds: tuple[float, float],
        layout: Literal["4d", "square"] = "4d", min_side: int = 1, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.sample_shape = tuple(sample_shape)
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.layout = layout
        image = len(self.sample_shape) == 3
        dim = math.prod(self.sample_shape)
        if layout == "4d":
            self.view_shape = self.sample_shape if image else (1, 1, dim)
        elif image:
            c, h, w = self.sample_shape
            self.view_shape = (c, max(h, w, min_side), max(h, w, min_side))
        else:
            side = max(math.isqrt(dim - 1) + 1 if dim > 1 else 1, min_side)
            self.view_shape = (1, side, side)
        self.training = False  # the wrapper itself never switches the wrapped model to train mode

    def view_eps(self, eps: float) -> float:
        return eps / (self.hi - self.lo)

    def to_view(self, x: Tensor) -> Tensor:
        unit = (x - self.lo) / (self.hi - self.lo)
        n = x.shape[0]
        if self.layout == "4d" or tuple(self.view_shape) == self.sample_shape:
            return unit.reshape(n, *self.view_shape)
        if len(self.sample_shape) == 3:
            _, h, w = self.sample_shape
            side = self.view_shape[1]
            return F.pad(unit, (0, side - w, 0, side - h))
        flat = unit.reshape(n, -1)
        return F.pad(flat, (0, math.prod(self.view_shape) - flat.shape[1])).reshape(n, *self.view_shape)

    def from_view(self, v: Tensor) -> Tensor:
        n = v.shape[0]
        if self.layout == "4d" or tuple(self.view_shape) == self.sample_shape:
            unit = v.reshape(n, *self.sample_shape)
        elif len(self.sample_shape) == 3:
            _, h, w = self.sample_shape
            unit = v[:, :, :h, :w]
        else:
            unit = v.reshape(n, -1)[:, : math.prod(self.sample_shape)].reshape(n, *self.sample_shape)
        return self.lo + unit * (self.hi - self.lo)

    def forward(self, v: Tensor) -> Tensor:
        x = self.from_view(v)
        return self.model(x if self.dtype is None else x.to(self.dtype)).to(v.dtype)


def run_torchattacks(
    build: Callable[[nn.Module, float], object],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    seed: int,
    layout: Literal["4d", "square"] = "4d",
    min_side: int = 1,
    work_dtype: torch.dtype | None = None,
) -> Tensor:
    """Run a torchattacks attack built by ``build(view_model, view_eps)`` on ``(x, y)``; return ``x_adv``.

    ``work_dtype``: the dtype the attack works in (default ``x.dtype``; FAB only works in float32), while the
    model always receives ``x.dtype``.

    Eval mode with frozen parameters (FAB calls ``backward`` on the logits, which would otherwise accumulate
    parameter gradients), the global RNG seeded with ``seed`` inside :func:`attacks.base.rng_scope` (torchattacks
    re-seeds the global generator itself), device forced to ``x.device``, output projected onto the threat
    model and cast to ``x.dtype``.
    """
    view = UnitInputView(model, tuple(x.shape[1:]), threat.bounds, layout, min_side, dtype=x.dtype)
    with eval_mode(model), frozen_parameters(model), rng_scope(seed):
        quiet = contextlib.redirect_stdout(io.StringIO()) if next(model.parameters(), None) is None else (
            contextlib.nullcontext()
        )
        with quiet:  # torchattacks prints when the model has no parameters to take the device from
            attack = build(view, view.view_eps(threat.eps))
        attack.set_device(x.device)
        adv_view = attack(view.to_view(x).to(work_dtype or x.dtype), y)
    x_adv = view.from_view(adv_view.detach().to(x.device)).to(x.dtype)
    return threat.project(x_adv, x)


def _ta_norm(threat: ThreatModel) -> str:
    return threat.title


@dataclass
class APGD:
    """Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), untargeted, Linf / L2, through ``torchattacks.APGD``.

    ``loss="ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR: difference of logits ratio; needs >= 3 classes, it uses the
    third-largest logit). Defaults are the AutoAttack reference: ``steps=100``, ``restarts=1``, ``rho=0.75``
    (torchattacks' own default is 10 steps). Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    loss: str = "ce"
    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    rho: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice_param("apgd", "loss", self.loss, ("ce", "dlr"))
        self.name = f"apgd-{self.loss}"
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_positive_param(self.name, "rho", self.rho)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        import torchattacks

        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        if self.loss == "dlr":
            require_classes(self.name, logits.shape[1], MIN_CLASSES["apgd-dlr"], "the DLR loss divides by z_1 - z_3")
        if x.shape[0] == 0:
            return x.clone()
        return run_torchattacks(
            lambda m, eps: torchattacks.APGD(
                m, norm=_ta_norm(threat), eps=eps, steps=self.steps, n_restarts=self.restarts, seed=self.seed,
                loss=self.loss, rho=self.rho, verbose=False,
            ),
            model, x, y, threat, self.seed,
        )


@register_attack("apgd-ce", norms=NORMS, summary="APGD-CE (Croce & Hein 2020), AutoAttack budget: 100 steps")
def apgd_ce(steps: int = AUTOATTACK_STEPS, restarts: int = 1, rho: float = 0.75, seed: int = 0) -> APGD:
    """APGD with cross-entropy loss; AutoAttack standard budget (100 iterations, 1 restart)."""
    return APGD("ce", steps, restarts, rho, seed)


@register_attack("apgd-dlr", norms=NORMS, summary="APGD-DLR (Croce & Hein 2020), 100 steps; needs >= 3 classes")
def apgd_dlr(steps: int = AUTOATTACK_STEPS, restarts: int = 1, rho: float = 0.75, seed: int = 0) -> APGD:
    """APGD with the DLR loss (needs >= 3 classes); 100 iterations, 1 restart."""
    return APGD("dlr", steps, restarts, rho, seed)


@register_attack("apgd-t", norms=NORMS, summary="targeted APGD-DLR (AutoAttack APGD-T): 9 targets, 100 steps")
@dataclass
class APGDTargeted:
    """Targeted APGD with the targeted DLR loss (Croce & Hein, ICML 2020), through ``torchattacks.APGDT``.

    Runs one targeted attack per target class -- the 2nd, 3rd, ... highest clean logits -- on the samples
    still robust; ``n_target_classes`` is capped at ``num_classes - 1`` at call time. Needs >= 4 classes (the
    targeted DLR uses the 4th-largest logit). Defaults are AutoAttack standard: ``steps=100``, ``restarts=1``,
    ``n_target_classes=9``, ``rho=0.75``. Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    n_target_classes: int = AUTOATTACK_TARGETS
    rho: float = 0.75
    seed: int = 0
    name: ClassVar[str] = "apgd-t"

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_int_param(self.name, "n_target_classes", self.n_target_classes)
        check_positive_param(self.name, "rho", self.rho)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        import torchattacks

        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        num_classes = logits.shape[1]
        require_classes(
            self.name, num_classes, MIN_CLASSES["apgd-t"], "the targeted DLR loss divides by z_1 - (z_3 + z_4) / 2"
        )
        if x.shape[0] == 0:
            return x.clone()
        targets = min(self.n_target_classes, num_classes - 1)
        return run_torchattacks(
            lambda m, eps: torchattacks.APGDT(
                m, norm=_ta_norm(threat), eps=eps, steps=self.steps, n_restarts=self.restarts, seed=self.seed,
                rho=self.rho, verbose=False, n_classes=targets + 1,
            ),
            model, x, y, threat, self.seed,
        )


@dataclass
class FAB:
    """Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted Adversarial Examples with a Fast
    Adaptive Boundary Attack", ICML 2020), Linf / L2, through ``torchattacks.FAB``.

    A minimal-perturbation attack: a found adversarial counts only if it lies within ``eps`` (otherwise the
    clean input is returned for that sample). ``targeted=True`` is FAB-T: one run per target class (the 2nd,
    3rd, ... highest clean logits), ``n_target_classes`` capped at ``num_classes - 1``. Defaults are AutoAttack
    standard: ``steps=100``, ``restarts=1``, ``n_target_classes=9``, ``alpha_max=0.1``, ``eta=1.05``,
    ``beta=0.9``. The untargeted version computes the full Jacobian (one backward pass per class per step).
    """

    targeted: bool = False
    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    n_target_classes: int = AUTOATTACK_TARGETS
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        self.name = "fab-t" if self.targeted else "fab"
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_int_param(self.name, "n_target_classes", self.n_target_classes)
        for field_name in ("alpha_max", "eta", "beta"):
            check_positive_param(self.name, field_name, getattr(self, field_name))

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        import torchattacks

        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        if x.shape[0] == 0:
            return x.clone()
        targets = min(self.n_target_classes, logits.shape[1] - 1)
        return run_torchattacks(
            lambda m, eps: torchattacks.FAB(
                m, norm=_ta_norm(threat), eps=eps, steps=self.steps, n_restarts=self.restarts,
                alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, verbose=False, seed=self.seed,
                multi_targeted=self.targeted, n_classes=targets + 1,
            ),
            model, x, y, threat, self.seed, work_dtype=torch.float32,
        )


@register_attack("fab", norms=NORMS, summary="FAB (Croce & Hein 2020), untargeted, 100 steps")
def fab(
    steps: int = AUTOATTACK_STEPS, restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
    seed: int = 0,
) -> FAB:
    """Untargeted FAB; 100 iterations, 1 restart."""
    return FAB(False, steps, restarts, AUTOATTACK_TARGETS, alpha_max, eta, beta, seed)


@register_attack("fab-t", norms=NORMS, summary="FAB-T (AutoAttack targeted FAB): 9 targets, 100 steps")
def fab_t(
    steps: int = AUTOATTACK_STEPS, restarts: int = 1, n_target_classes: int = AUTOATTACK_TARGETS,
    alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int = 0,
) -> FAB:
    """Targeted FAB (FAB-T) as in AutoAttack standard: 9 target classes, 100 iterations, 1 restart."""
    return FAB(True, steps, restarts, n_target_classes, alpha_max, eta, beta, seed)
