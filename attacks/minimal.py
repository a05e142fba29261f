"""Minimal-perturbation attacks: Carlini-Wagner L2 and DeepFool, written here (batched).

torchattacks' CW has no binary search over ``c`` and its ``f`` clamps the best other logit at 0 (wrong when all
other logits are negative); its DeepFool loops over samples in Python. Both attacks minimise the perturbation
without regard to ``eps``; the result is projected onto the threat model (``ThreatModel(norm, eps, bounds)``;
CW-L2: L2 only). Inputs ``x`` ``[N, ...]`` inside ``bounds``, labels ``y`` ``[N]``, logits ``[N, C]``; every call runs
in eval mode with the parameters frozen and returns ``x_adv`` with the shape, dtype and device of ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping

import torch
from torch import Tensor, nn

from attacks.base import (
    NORMS,
    ThreatModel,
    begin_attack,
    eval_mode,
    frozen_parameters,
    input_gradient,
    margin_loss,
    register_attack,
)
from attacks.errors import check_int_param, check_positive_param
from attacks.progress import check_interval
from attacks.seed_draws import draws_nothing


@register_attack("cw", norms=("l2",), summary="Carlini-Wagner L2 (2017) with binary search over c; L2 only",
                 draws=draws_nothing)
@dataclass
class CarliniWagnerL2:
    """Carlini & Wagner L2 attack ("Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017).

    Minimises ``||x' - x||_2^2 + c * max(z_y - max_{j!=y} z_j, -kappa)`` over ``x' = lo + (hi - lo) *
    (tanh(w) + 1) / 2`` with Adam (``steps`` iterations, ``lr``) for ``search_steps`` binary-search steps over
    ``c`` per sample (start ``initial_const``; x10 until the first success). It minimises the perturbation without
    regard to ``eps``: the smallest adversarial found (else the last iterate) is projected onto the eps ball. A
    sample stops being optimised once it has an adversarial inside the ball (its result can no longer change
    sides; on an accelerator it leaves the batch at the next progress read, :mod:`attacks.progress`).
    Deterministic; ``seed`` is accepted for the common interface. L2 only. Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = 100
    search_steps: int = 5
    initial_const: float = 1.0
    kappa: float = 0.0
    lr: float = 0.01
    seed: int = 0
    name: ClassVar[str] = "cw"

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_int_param(self.name, "search_steps", self.search_steps)
        check_positive_param(self.name, "initial_const", self.initial_const)
        check_positive_param(self.name, "kappa", self.kappa, allow_zero=True)
        check_positive_param(self.name, "lr", self.lr)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        begin_attack(self.name, ("l2",), model, x, y, threat)
        lo, hi = threat.bounds
        n, shape = x.shape[0], (-1,) + (1,) * (x.ndim - 1)
        every = check_interval(x.device)
        unit = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1, 1) * (1 - 1e-6)
        w0 = torch.atanh(unit)
        const = torch.full((n,), self.initial_const, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best_dist = torch.full_like(const, math.inf)
        best = x.clone()
        last = x.clone()
        # a sample with an adversarial inside the ball is done: searching further only shrinks a perturbation that
        # the projection onto the ball keeps anyway (the others' optimisation is per sample, unaffected)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        with eval_mode(model), frozen_parameters(model):
            for _ in range(self.search_steps):
                rows = (~done).nonzero().squeeze(1)
                if rows.numel() == 0:
                    break
                success = torch.zeros(n, dtype=torch.bool, device=x.device)
                w, xs, ys, c = w0[rows].clone(), x[rows], y[rows], const[rows]
                m, v = torch.zeros_like(w), torch.zeros_like(w)  # Adam moments (Kingma & Ba), per element
                for t in range(1, self.steps + 1):
                    w.requires_grad_(True)
                    with torch.enable_grad():
                        x_new = lo + (hi - lo) * (torch.tanh(w) + 1) / 2
                        logits = model(x_new)
                        dist = (x_new - xs).flatten(1).pow(2).sum(dim=1)
                        f = (-margin_loss(logits, ys)).clamp_min(-self.kappa)
                        grad = torch.autograd.grad((dist + c * f).sum(), w)[0]
                    with torch.no_grad():
                        m = 0.9 * m + 0.1 * grad
                        v = 0.999 * v + 0.001 * grad * grad
                        step = self.lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
                        w = w.detach() - step
                        is_adv = logits.argmax(dim=1) != ys
                        # no host read here (attacks.progress); a sample already inside the ball keeps its best
                        known = best_dist[rows]
                        improved = is_adv & (dist < known) & (known > threat.eps**2)
                        best_dist[rows] = torch.where(improved, dist, known)
                        best[rows] = torch.where(improved.view(shape), x_new.detach(), best[rows])
                        success[rows] = success[rows] | is_adv
                        if t < self.steps and t % every:
                            continue
                        inside = best_dist[rows] <= threat.eps**2
                        unbroken = (~inside).nonzero().squeeze(1)  # the one host read of this check
                        if unbroken.numel() < rows.numel():
                            done[rows] = done[rows] | inside
                            rows, w, m, v = rows[unbroken], w[unbroken], m[unbroken], v[unbroken]
                            xs, ys, c = xs[unbroken], ys[unbroken], c[unbroken]
                            if rows.numel() == 0:
                                break
                last[rows] = (lo + (hi - lo) * (torch.tanh(w.detach()) + 1) / 2).to(x.dtype)
                upper = torch.where(success, torch.minimum(upper, const), upper)
                lower = torch.where(success, lower, torch.maximum(lower, const))
                const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        found = torch.isfinite(best_dist).view(shape)
        return threat.project(torch.where(found, best, last), x)


@register_attack("deepfool", norms=NORMS, summary="DeepFool (Moosavi-Dezfooli et al. 2016), batched, Linf/L2",
                 draws=draws_nothing)
@dataclass
class DeepFool:
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016), batched over samples, Linf and L2.

    Each step linearises the classifier around the current point and moves to the nearest linearised decision
    boundary among the ``candidates`` highest-scoring classes (L2: ``|f'| / ||w'||_2^2 * w'``; Linf, the dual
    ``q = 1`` case: ``|f'| / ||w'||_1 * sign(w')``; ``1e-4`` added to that distance, the step's length in input
    units, as in the authors' code and foolbox), accumulating ``r``;
    ``x + (1 + overshoot) * r`` after ``steps`` steps or on success. A minimal-perturbation attack: the result is
    projected onto the eps ball.
    Deterministic; ``seed`` is accepted for the common interface. Shapes: ``[N, ...]`` → ``[N, ...]``.
    """

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    seed: int = 0
    name: ClassVar[str] = "deepfool"
    #: ``candidates`` runs as at most ``num_classes`` (records: :mod:`attacks.settings`).
    class_caps: ClassVar[Mapping[str, int]] = MappingProxyType({"candidates": 0})

    def __post_init__(self) -> None:
        check_int_param(self.name, "steps", self.steps)
        check_positive_param(self.name, "overshoot", self.overshoot, allow_zero=True)
        check_int_param(self.name, "candidates", self.candidates, minimum=2)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        lo, hi = threat.bounds
        k = min(self.candidates, logits.shape[1])
        # candidate classes per sample: the true class first, then the top other classes by clean logit
        others = logits.clone().scatter_(1, y[:, None], -math.inf).topk(k - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        active = logits.argmax(dim=1) == y
        with eval_mode(model), frozen_parameters(model):
            for _ in range(self.steps):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xa = x_adv[idx].clone().requires_grad_(True)
                with torch.enable_grad():
                    z = model(xa)
                    still = z.detach().argmax(dim=1) == y[idx]
                    zc = z.gather(1, classes[idx])
                    grads = torch.stack(
                        [input_gradient(zc[:, j].sum(), xa, retain_graph=j < k - 1) for j in range(k)], dim=1
                    )
                f_diff = (zc[:, 1:] - zc[:, :1]).detach()  # [n, k-1]
                w_diff = (grads[:, 1:] - grads[:, :1]).flatten(2)  # [n, k-1, D]
                dual = w_diff.abs().sum(dim=2) if threat.norm == "linf" else w_diff.norm(p=2, dim=2)
                dist = f_diff.abs() / dual.clamp_min(1e-12)
                best = dist.argmin(dim=1)
                w_best = w_diff[torch.arange(len(idx), device=x.device), best]
                # the step's length is the distance to the linearised boundary plus 1e-4 (input units, as in the
                # authors' code and foolbox), not 1e-4 added to |f'|: that nudge shrinks or grows with 1 / ||w'||
                step = dist.gather(1, best[:, None]).squeeze(1) + 1e-4
                if threat.norm == "linf":
                    r = step[:, None] * w_best.sign()
                else:
                    r = (step / w_best.norm(p=2, dim=1).clamp_min(1e-12))[:, None] * w_best
                r = r.view_as(xa) * still.view(shape)  # samples already fooled stay where they are
                r_total[idx] += r
                x_adv[idx] = (x[idx] + (1 + self.overshoot) * r_total[idx]).clamp(lo, hi)
                active[idx[~still]] = False
        return threat.project(x_adv, x)
