"""FAB and FAB-T: the Fast Adaptive Boundary attack, written here with a per-sample early stop at a fixed eps.

Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack", ICML 2020; FAB-T is
its targeted form in AutoAttack (Croce & Hein, ICML 2020, ``version="standard"``). Threat models Linf and L2;
inputs ``x`` ``[N, ...]`` inside ``threat.bounds`` (any shape: the norms are taken per sample over all non-batch
dims), labels ``y`` ``[N]``, logits ``[N, C]``; returns ``[N, ...]``.

**The algorithm** (the reference one, as in AutoAttack's ``fab_base`` and torchattacks 3.5.1's ``FAB``): at the
iterate ``x1`` the decision boundary between the true class ``y`` and each other class ``j`` (FAB-T: the one
target class) is linearised, ``f_j - f_y ≈ df_j + dg_j · (z - x1)``; the class whose hyperplane is nearest in the
threat model's norm (distance ``|df_j| / ||dg_j||_dual``) is chosen, and both ``x1`` and the clean input ``x0`` are
projected onto that hyperplane inside the input box (:func:`box_hyperplane_step`). The next iterate is the biased
combination ``(1 - a)(x1 + eta d1) + a (x0 + eta d2)`` with ``a = min(||d1|| / (||d1|| + ||d2||), alpha_max)``,
clipped to the bounds; when it is misclassified, it is pulled back towards ``x0``: ``x1 = x0 + beta (x1 - x0)``.
Restart 0 starts at ``x0``, later restarts at a random point at half the eps radius (Linf: uniform direction
scaled to ``eps / 2`` in the max norm; L2: Gaussian direction of L2 norm ``eps / 2``).

**Early stop.** FAB minimises the perturbation: the reference keeps refining every sample for all iterations and
then counts a sample as broken when its smallest adversarial lies within ``eps``. For a robust-accuracy evaluation
at a fixed ``eps`` only that flag matters, so a sample stops being computed at its first misclassified iterate
within ``eps``, which is returned. The smallest distance found only decreases, so a sample the reference counts
as broken is broken here at the same iterate at the latest, and the trajectories of the other samples are their
own (each sample's step depends only on its own iterate): the same samples are broken, for less work. Samples
not broken within ``eps`` get the clean input back (as in the reference).

**Less work per iteration.** The untargeted linearisation needs the gradients of ``f_j - f_y`` for the ``C - 1``
other classes: they are taken directly (``C - 1`` backward passes; the reference takes all ``C`` class gradients
and subtracts). The projection finds its step size by Newton's method (:func:`box_hyperplane_step`, a few passes
over the rows) instead of sorting every row and bisecting.

Reproducible for a given ``seed`` (random starts from an explicit generator; with one restart no random number is
drawn). Defaults are AutoAttack's: 100 iterations, 1 restart, 9 target classes, ``alpha_max=0.1``, ``eta=1.05``,
``beta=0.9`` (torchattacks' own default is 10 iterations).

Example::

    x_adv = create_attack("fab")(model, x, y, ThreatModel("linf", 0.1))
    x_adv = create_attack("fab-t", n_target_classes=9)(model, x, y, ThreatModel("l2", 1.5))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from attacks.apgd import AUTOATTACK_STEPS, AUTOATTACK_TARGETS
from attacks.base import (
    NORMS,
    AttackConfigError,
    ThreatModel,
    begin_attack,
    eval_mode,
    frozen_parameters,
    input_gradient,
    register_attack,
    seeded_generator,
)
from attacks.errors import check_int_param, check_positive_param
from attacks.seed_draws import later_restarts

logger = logging.getLogger(__name__)

#: Class counts above which untargeted FAB logs its cost (a backward pass per other class at every step).
MANY_CLASSES = 100


def box_hyperplane_step(points: Tensor, w: Tensor, b: Tensor, norm: str, bounds: tuple[float, float]) -> Tensor:
    """The smallest step ``d`` (in ``norm``) from each point onto its hyperplane inside the box: ``[R, D]`` rows.

    Solves ``min ||d|| s.t. w · (p + d) = b, lo <= p + d <= hi`` per row (``points`` ``p`` ``[R, D]``, ``w`` ``[R,
    D]``, ``b`` ``[R]``). With ``c = |w · p - b|`` and ``s = sign(w · p - b)``, every coordinate moves against
    ``s · sign(w_i)`` by ``min(lambda · k_i, room_i)`` (Linf: ``k_i = 1``; L2: ``k_i = |w_i|``, the KKT conditions),
    ``room_i`` the distance to the box face it moves to. The total change of ``w · p`` is then ``G(lambda) = sum_i
    u_i min(lambda, q_i)`` (Linf: ``u = |w|``, ``q = room``; L2: ``u = w^2``, ``q = room / |w|``): piecewise linear,
    non-decreasing and concave, and ``lambda`` solves ``G(lambda) = c`` by Newton's method from ``lambda = 0``.
    On a concave function the iterates rise monotonically; each step either saturates at least one more coordinate
    or lands on the root of the current linear piece, so it ends after at most ``D + 1`` steps (typically 4-5; the
    reference sorts the breakpoints and bisects). Where the box cannot reach the hyperplane every coordinate moves
    to its face (``lambda = inf``: the corner nearest to the hyperplane). Coordinates with ``w_i = 0`` (L2: ``|w_i|
    < 1e-8``) do not move.
    """
    lo, hi = bounds
    gap = (w * points).sum(dim=1) - b
    w = w * torch.where(gap >= 0, 1.0, -1.0).to(w.dtype)[:, None]  # now w · p >= b: every move lowers w · p
    c = gap.abs()
    room = torch.where(w > 0, points - lo, hi - points)
    if norm == "linf":
        moves = w != 0
        u, q = w.abs(), room
    else:
        moves = w.abs() >= 1e-8
        u = torch.where(moves, w * w, torch.zeros_like(w))
        q = torch.where(moves, room / w.abs().clamp_min(1e-8), torch.zeros_like(w))
    lam = torch.zeros_like(c)
    unsaturated = None
    while True:
        now = q > lam[:, None]  # the coordinates that still move with lambda
        slope = (u * now).sum(dim=1)
        value = (u * torch.minimum(q, lam[:, None])).sum(dim=1)
        step = torch.where(slope > 0, (c - value) / slope.clamp_min(torch.finfo(c.dtype).tiny), float("inf"))
        lam = torch.maximum(lam + step, lam)  # rounding must not undo a saturation: monotone
        if unsaturated is not None and torch.equal(now, unsaturated):
            break  # same linear piece twice: lam is its root
        unsaturated = now
    size = torch.minimum(lam[:, None], q)
    step = -torch.sign(w) * size if norm == "linf" else -w * size
    return torch.where(moves, step, torch.zeros_like(step))


def _norm(flat: Tensor, norm: str) -> Tensor:
    """Per-row norm of ``[R, D]``: ``[R]``."""
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _dual_norm(flat: Tensor, norm: str) -> Tensor:
    """Per-row dual norm over the last dim (L1 for Linf, L2 for L2)."""
    return flat.abs().sum(dim=-1) if norm == "linf" else flat.norm(dim=-1)


def boundary_linearisation(model: nn.Module, x1: Tensor, y: Tensor, others: Tensor) -> tuple[Tensor, Tensor]:
    """Differences ``f_j - f_y`` ``[A, K]`` and their input gradients ``[A, K, D]`` at ``x1`` ``[A, ...]`` for the
    ``K`` classes ``others`` ``[A, K]`` of each sample: one forward and ``K`` backward passes."""
    x1 = x1.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x1)
        k = others.shape[1]
        grads = []
        for col in range(k):
            direction = torch.zeros_like(logits)
            direction.scatter_(1, others[:, col:col + 1], 1.0)
            direction.scatter_(1, y[:, None], -1.0)
            grads.append(input_gradient(logits, x1, direction, retain_graph=col < k - 1).flatten(1))
    logits = logits.detach()  # differences in the inputs' dtype: a float64 model's must not promote the iterate
    return (logits.gather(1, others) - logits.gather(1, y[:, None])).to(x1.dtype), torch.stack(grads, dim=1)


def random_half_start(x: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
    """The reference's restart point: ``x + eps/2 · t / ||t||`` (Linf: ``t`` uniform in [-1, 1], max norm; L2:
    ``t`` Gaussian, L2 norm), clipped to the bounds; ``[A, ...]``."""
    if threat.norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = _norm(t.flatten(1), threat.norm).view(-1, *([1] * (x.ndim - 1)))
    return (x + 0.5 * threat.eps * t / scale).clamp(*threat.bounds)


def fab_single_run(
    model: nn.Module, x0: Tensor, y: Tensor, others: Tensor, start: Tensor, threat: ThreatModel, *, steps: int,
    alpha_max: float, eta: float, beta: float,
) -> tuple[Tensor, Tensor]:
    """One FAB run from ``start`` on the samples ``x0`` ``[A, ...]`` (all classified correctly), linearising the
    boundaries to the classes ``others`` ``[A, K]``; returns (``x_adv`` ``[A, ...]``, ``fooled`` ``[A]``): per
    sample its first misclassified iterate within eps (then it is no longer computed), else ``x0``."""
    shape, norm, lo_hi = x0.shape, threat.norm, threat.bounds
    out = x0.clone()
    fooled = torch.zeros(shape[0], dtype=torch.bool, device=x0.device)
    rows = torch.arange(shape[0], device=x0.device)
    origin, x1 = x0.flatten(1), start.flatten(1)
    for _ in range(steps):
        df, dg = boundary_linearisation(model, x1.view(-1, *shape[1:]), y, others)
        nearest = (df.abs() / (1e-12 + _dual_norm(dg, norm))).argmin(dim=1)
        w = dg[torch.arange(len(nearest), device=x0.device), nearest]
        b = (w * x1).sum(dim=1) - df.gather(1, nearest[:, None]).squeeze(1)
        d = box_hyperplane_step(torch.cat([x1, origin]), torch.cat([w, w]), torch.cat([b, b]), norm, lo_hi)
        size = _norm(d, norm).clamp_min(1e-8)
        a1, a2 = size.chunk(2)
        alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
        d1, d2 = d.chunk(2)
        x1 = ((x1 + eta * d1) * (1 - alpha) + (origin + eta * d2) * alpha).clamp(*lo_hi)
        with torch.no_grad():
            adversarial = model(x1.view(-1, *shape[1:])).argmax(dim=1) != y
        done = adversarial & (_norm(x1 - origin, norm) <= threat.eps)
        if bool(done.any()):
            out[rows[done]] = x1[done].view(-1, *shape[1:])
            fooled[rows[done]] = True
            keep = ~done
            rows, origin, x1, y, others, adversarial = (
                rows[keep], origin[keep], x1[keep], y[keep], others[keep], adversarial[keep])
            if rows.numel() == 0:
                break
        back = adversarial[:, None]
        x1 = torch.where(back, origin + beta * (x1 - origin), x1)
    return out, fooled


@dataclass
class FAB:
    """Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), Linf / L2 — see the module docstring.

    ``targeted=False``: the boundaries to every other class (``C - 1`` backward passes per iteration). ``targeted=
    True`` is FAB-T: one run per target class — the 2nd, 3rd, ... highest clean logits — on the samples still
    robust (one backward pass per iteration), ``n_target_classes`` capped at ``num_classes - 1``. ``restarts``
    runs per target (restart 0 from the clean input, later ones from random points at ``eps / 2``), each on the
    samples still robust. Defaults are AutoAttack standard: ``steps=100``, ``restarts=1``, ``n_target_classes=9``,
    ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``. Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    targeted: bool = False
    steps: int = AUTOATTACK_STEPS
    restarts: int = 1
    n_target_classes: int = AUTOATTACK_TARGETS
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    seed: int = 0
    _cost_logged: bool = field(default=False, init=False, repr=False, compare=False)
    #: ``n_target_classes`` runs as at most ``num_classes - 1`` (records: :mod:`attacks.settings`).
    class_caps: ClassVar[Mapping[str, int]] = MappingProxyType({"n_target_classes": 1})

    def attack_settings(self) -> dict[str, Any]:
        """Effective hyperparameters for records (:mod:`attacks.settings`): the fields, without
        ``n_target_classes`` for untargeted FAB (it attacks every other class; the count is FAB-T's)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "seed" and
                (self.targeted or f.name != "n_target_classes")}

    def __post_init__(self) -> None:
        self.name = "fab-t" if self.targeted else "fab"
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "restarts", self.restarts)
        check_int_param(self.name, "n_target_classes", self.n_target_classes)
        for field_name in ("alpha_max", "eta", "beta"):
            check_positive_param(self.name, field_name, getattr(self, field_name))
        for field_name in ("alpha_max", "beta"):  # a weight of the clean input's step, a pull-back factor
            if getattr(self, field_name) > 1:
                raise AttackConfigError(f"attack {self.name!r}: {field_name} must lie in (0, 1], "
                                        f"got {getattr(self, field_name)!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        x_adv = x.clone()
        robust = logits.argmax(dim=1) == y
        if threat.eps == 0 or not bool(robust.any()):
            return x_adv  # only the clean input lies within eps 0, and it is classified correctly
        num_classes = logits.shape[1]
        if self.targeted:
            ranked = logits.sort(dim=1).indices  # ascending: target k is the k-th highest clean logit, column -k
            class_sets = [ranked[:, -k, None] for k in range(2, min(self.n_target_classes, num_classes - 1) + 2)]
        else:
            every = torch.arange(num_classes, device=x.device).expand(len(y), num_classes)
            class_sets = [every[every != y[:, None]].view(len(y), num_classes - 1)]
            self._log_cost(num_classes, x[0].numel())
        generator = seeded_generator(self.seed, x.device)
        with eval_mode(model), frozen_parameters(model):
            for others in class_sets:
                for restart in range(self.restarts):
                    idx = robust.nonzero().squeeze(1)
                    if idx.numel() == 0:
                        return x_adv
                    x0 = x[idx]
                    start = x0 if restart == 0 else random_half_start(x0, threat, generator)
                    adv, fooled = fab_single_run(model, x0, y[idx], others[idx], start, threat, steps=self.steps,
                                                 alpha_max=self.alpha_max, eta=self.eta, beta=self.beta)
                    x_adv[idx[fooled]] = adv[fooled]
                    robust[idx[fooled]] = False
        return x_adv

    def _log_cost(self, num_classes: int, features: int) -> None:
        """Say once what untargeted FAB costs on many classes (ImageNet: 999 backward passes per step)."""
        if num_classes <= MANY_CLASSES or self._cost_logged:
            return
        self._cost_logged = True
        mib = (num_classes - 1) * features * 4 / 2**20
        logger.warning("fab (untargeted) on %d classes: every step takes the gradients of all %d other classes (%d "
                       "backward passes and a Jacobian of about %.3g MiB per input in float32); fab-t, AutoAttack's "
                       "choice, takes %d (one per target class)", num_classes, num_classes - 1, num_classes - 1, mib,
                       AUTOATTACK_TARGETS)


@register_attack("fab", norms=NORMS, summary="FAB (Croce & Hein 2020), untargeted, 100 steps", draws=later_restarts)
def fab(
    steps: int = AUTOATTACK_STEPS, restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
    seed: int = 0,
) -> FAB:
    """Untargeted FAB; 100 iterations, 1 restart."""
    return FAB(False, steps, restarts, AUTOATTACK_TARGETS, alpha_max, eta, beta, seed)


@register_attack("fab-t", norms=NORMS, summary="FAB-T (AutoAttack targeted FAB): 9 targets, 100 steps",
                 draws=later_restarts)
def fab_t(
    steps: int = AUTOATTACK_STEPS, restarts: int = 1, n_target_classes: int = AUTOATTACK_TARGETS,
    alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int = 0,
) -> FAB:
    """Targeted FAB (FAB-T) as in AutoAttack standard: 9 target classes, 100 iterations, 1 restart."""
    return FAB(True, steps, restarts, n_target_classes, alpha_max, eta, beta, seed)


__all__ = ["FAB", "box_hyperplane_step", "boundary_linearisation", "fab_single_run", "random_half_start"]
