"""Square Attack (score-based random search), written here: Linf and L2, AutoAttack's settings.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial attack via random
search", ECCV 2020; the version in AutoAttack (Croce & Hein, ICML 2020) and torchattacks 3.5.1, whose random
stream it reproduces: one window position (and, for Linf, one sign per channel) per iteration shared by the
batch, drawn from a seeded CPU generator. It queries logits only, never gradients.

* **Linf**: start at vertical stripes ``x ± eps`` (one sign per channel and column), then per iteration move one
  ``s × s`` window of every still-robust sample to ``x ± eps`` (clipped to the bounds) and keep the candidate
  where the loss fell or the sample became misclassified.
* **L2**: start at a grid of ``h // 5``-sided squares, each filled with the two-halves pattern of concentric
  rectangles weighted ``1 / (r + 1)^2`` and a random sign per sample and channel, rescaled to norm ``eps``; per
  iteration take the mass of two windows (of odd side ``s >= 3``, at most the image side: ``p`` near 1 on an even
  side would round past it, which the reference does and fails on), put it, with a new random pattern, into the
  first window, empty the second, and rescale the perturbation to norm ``eps``.

The window side follows ``p``: ``s = round(sqrt(p · H · W))`` with ``p = p_init`` halved after iterations 10, 50,
200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000 (0-based; ``rescale_schedule=True`` maps these onto
``n_queries``). The loss is the margin ``z_y - max_{j != y} z_j`` (or minus the cross-entropy) to be minimised; a
sample stops when its margin is ``<= 0``. It is fooled when misclassified (``argmax z != y``); a tie won by the
true class (margin 0, argmax taking the first of the tied classes) stops the run but is not fooled, as in the
reference, which re-classifies its output. ``restarts`` runs again from new random starts on the samples still
robust.

**Less work than the reference, same search.** A Linf candidate that equals the current best point of a sample
(the window already holds that sign everywhere, or the bounds clip every change away) is not sent to the model:
its loss is known and cannot be an improvement, which is the reference's outcome for it. Candidates are built in
the window only, the margin is computed without the cross-entropy the reference evaluates too, and no forward is
spent re-classifying the result (the logits of each kept candidate say which samples are fooled). Samples not
fooled get the clean input back (as in the reference).

Inputs ``x`` ``[N, ...]`` in ``threat.bounds``; images are attacked as they are (square ``[N, C, S, S]``), other
shapes through :class:`attacks.thirdparty.UnitInputView` as zero-padded square images (side >= 5 for L2; the
padding never reaches the model). Returns ``[N, ...]``; reproducible for a given ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

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
    register_attack,
)
from attacks.errors import check_bool_param, check_choice_param, check_int_param, is_finite_number
from attacks.precision import loss_logits
from attacks.thirdparty import UnitInputView

#: Iterations after which p is halved again (the reference schedule, for 10,000 iterations).
P_SCHEDULE: tuple[int, ...] = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_at(iteration: int, p_init: float, n_queries: int, rescale: bool) -> float:
    """The fraction ``p`` of the image a window covers at ``iteration`` (0-based)."""
    it = int(iteration / n_queries * 10000) if rescale else iteration
    return p_init / 2 ** sum(it > boundary for boundary in P_SCHEDULE)


class _Draws:
    """The random numbers of the search, from one seeded CPU generator, in the reference's order."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def signs(self, shape: tuple[int, ...]) -> Tensor:
        return torch.sign(2 * torch.rand(shape, generator=self.generator) - 1)

    def position(self, span: int) -> int:
        """A window offset in ``[0, span)`` (0 for ``span = 0``): ``span · U`` truncated, in float32 as the
        reference computes it."""
        return int((span * torch.rand(1, generator=self.generator)).long())

    def coin(self) -> bool:
        return bool(torch.rand(1, generator=self.generator) > 0.5)


def _sqrt_sum_sq(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``sqrt(sum(t^2))`` over ``dims``, kept (the reference's L2 norm, same rounding)."""
    return (t ** 2).sum(dim=dims, keepdim=True).sqrt()


def _rings(rows: int, cols: int) -> Tensor:
    """Concentric rectangles around the centre ``(rows // 2, cols // 2)`` of a ``rows × cols`` patch: ring ``k``
    (the pixels at Chebyshev distance ``<= k``) adds ``1 / (k + 1)^2``, for ``k`` up to ``max(rows, cols) // 2``;
    normalised to unit L2 norm. ``[rows, cols]``, float32 on the CPU, summed ring by ring in the reference's
    order (bit-identical patterns)."""
    distance = torch.maximum((torch.arange(rows) - rows // 2).abs()[:, None],
                             (torch.arange(cols) - cols // 2).abs()[None, :])
    pattern = torch.zeros(rows, cols)
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        pattern += (distance <= k) * (1.0 / torch.tensor([k + 1.0]) ** 2)
    return pattern / _sqrt_sum_sq(pattern, (0, 1))


def window_pattern(side: int, transpose: bool) -> Tensor:
    """The L2 update pattern of a ``side × side`` window: ring patterns of opposite signs in the top and bottom
    halves, unit L2 norm, transposed when ``transpose``; ``[side, side]`` (CPU, float32)."""
    pattern = torch.cat([_rings(side // 2, side), -_rings(side - side // 2, side)])
    pattern = pattern / _sqrt_sum_sq(pattern, (0, 1))
    return pattern.T.contiguous() if transpose else pattern


def _unit(delta: Tensor) -> Tensor:
    """``delta`` divided per sample by its L2 norm (+1e-12)."""
    return delta / (_sqrt_sum_sq(delta.flatten(1), (1,)).view(-1, 1, 1, 1) + 1e-12)


class _Search:
    """The state of one run over the still-robust samples (compacted as samples are fooled)."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, loss: str) -> None:
        self.model, self.loss = model, loss
        self.index = torch.arange(len(x), device=x.device)
        self.x, self.y = x, y
        self.best = x
        self.margin = torch.empty(0)
        self.value = torch.empty(0)
        self.wrong = torch.empty(0, dtype=torch.bool)
        self.out = x.clone()
        self.fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def scores(self, x_new: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Margin ``z_y - max_{j != y} z_j`` ``[A]``, the loss to minimise (the margin, or ``-CE``) and whether
        ``argmax z != y`` (misclassified; at a tie, margin 0, argmax takes the first class)."""
        with torch.no_grad():
            logits = loss_logits(self.model(x_new))  # float16 logits: scores in float32 (attacks.precision)
        true = logits.gather(1, y[:, None]).squeeze(1)
        margin = true - logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        value = margin if self.loss == "margin" else -F.cross_entropy(logits, y, reduction="none")
        return margin, value, logits.argmax(dim=1) != y

    def start(self, best: Tensor) -> None:
        self.best = best
        self.margin, self.value, self.wrong = self.scores(best, self.y)
        self.retire()

    def offer(self, rows: Tensor, x_new: Tensor) -> None:
        """Score the candidates ``x_new`` of the samples ``rows`` (positions in the current state) and keep those
        that lower the loss or are misclassified."""
        margin, value, wrong = self.scores(x_new, self.y[rows])
        improved = value < self.value[rows]
        self.value[rows] = torch.where(improved, value, self.value[rows])
        improved |= margin <= 0
        self.margin[rows] = torch.where(improved, margin, self.margin[rows])
        self.wrong[rows] = torch.where(improved, wrong, self.wrong[rows])
        self.best[rows[improved]] = x_new[improved]

    def retire(self) -> None:
        """Drop the samples whose margin reached 0; write out those misclassified. A tie won by the true class
        (margin 0, ``argmax z = y``) stops the search as in the reference, but is not fooled: it keeps the clean
        input and stays robust for the next restart (the reference re-classifies its output)."""
        hit = self.margin <= 0
        if bool(hit.any()):
            won = hit & self.wrong
            self.out[self.index[won]] = self.best[won]
            self.fooled[self.index[won]] = True
            keep = ~hit
            self.index, self.x, self.y = self.index[keep], self.x[keep], self.y[keep]
            self.best, self.margin, self.value = self.best[keep], self.margin[keep], self.value[keep]
            self.wrong = self.wrong[keep]


def square_linf_run(search: _Search, eps: float, draws: _Draws, n_queries: int, p_init: float,
                    rescale: bool) -> None:
    """One Linf run (see the module docstring) on the samples of ``search`` ``[A, C, H, W]`` in ``[0, 1]``."""
    x = search.x
    _, c, h, w = x.shape
    search.start((x + eps * draws.signs((len(x), c, 1, w)).to(x)).clamp(0.0, 1.0))
    for i in range(n_queries):
        if search.index.numel() == 0:
            return
        s = max(int(round(math.sqrt(p_at(i, p_init, n_queries, rescale) * h * w))), 1)
        vh, vw = draws.position(h - s), draws.position(w - s)
        step = (2.0 * eps * draws.signs((c, 1, 1))).to(x)
        window = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        best_w, x_w = search.best[window], search.x[window]
        new_w = torch.min(torch.max(best_w + step, x_w - eps), x_w + eps).clamp(0.0, 1.0)
        rows = (new_w != best_w).flatten(1).any(dim=1).nonzero().squeeze(1)  # candidates that change something
        if rows.numel():
            x_new = search.best[rows].clone()
            x_new[window] = new_w[rows]
            search.offer(rows, x_new)
            search.retire()


def square_l2_run(search: _Search, eps: float, draws: _Draws, n_queries: int, p_init: float,
                  rescale: bool) -> None:
    """One L2 run (see the module docstring) on the samples of ``search`` ``[A, C, H, W]`` in ``[0, 1]`` (H, W >=
    5)."""
    x = search.x
    n, c, h, w = x.shape
    side = h // 5
    corner = (h - side * 5) // 2
    cache: dict[tuple[int, bool], Tensor] = {}

    def patterns(size: int, transpose: bool) -> Tensor:
        if (size, transpose) not in cache:
            cache[size, transpose] = window_pattern(size, transpose).to(x)
        return cache[size, transpose]

    delta = torch.zeros_like(x)
    for i in range(h // side):
        for j in range(w // side):
            top, left = corner + i * side, corner + j * side
            pattern = patterns(side, draws.coin())
            delta[:, :, top:top + side, left:left + side] += pattern * draws.signs((n, c, 1, 1)).to(x)
    search.start((x + eps * _unit(delta)).clamp(0.0, 1.0))
    for i in range(n_queries):
        if search.index.numel() == 0:
            return
        a = search.index.numel()
        s = max(int(round(math.sqrt(p_at(i, p_init, n_queries, rescale) * h * w))), 3)
        s += 1 - s % 2  # odd
        s = min(s, h - 1 + h % 2)  # p near 1 on an even side rounds past the image: the largest odd side inside
        vh, vw = draws.position(h - s), draws.position(w - s)
        vh2, vw2 = draws.position(h - s), draws.position(w - s)
        first = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        second = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
        delta = search.best - search.x
        both = torch.zeros_like(delta[:1])
        both[first] = 1.0
        both[second] = 1.0
        mass = _sqrt_sum_sq((delta * both).flatten(1), (1,)).view(-1, 1, 1, 1)  # what the two windows hold
        spent = _sqrt_sum_sq(delta.flatten(1), (1,)).view(-1, 1, 1, 1)
        free = torch.max(torch.full_like(spent, eps) ** 2 - spent ** 2, torch.zeros_like(spent))
        old = delta[first]
        new = patterns(s, draws.coin()) * draws.signs((a, c, 1, 1)).to(x)
        new = new + old / (1e-12 + _sqrt_sum_sq(old, (2, 3)))
        new = new / (1e-12 + _sqrt_sum_sq(new, (2, 3))) * (free / c + mass ** 2).sqrt()
        delta[second] = 0.0
        delta[first] = new
        search.offer(torch.arange(a, device=x.device), (search.x + eps * _unit(delta)).clamp(0.0, 1.0))
        search.retire()


def square_draw(params: Mapping[str, Any]) -> str:
    """What Square draws first from its seed (:mod:`attacks.seed_draws`): the initial stripes' signs (Linf) or
    squares' orientations and signs (L2), then windows, from one CPU generator in the reference's order: alike only
    another Square's."""
    return "square"


@register_attack("square", norms=NORMS, kind="black-box",
                 summary="Square attack (score-based), AutoAttack: 5000 queries", draws=square_draw)
@dataclass
class Square:
    """Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), Linf and L2 — see the module docstring.

    Score-based random search over square-shaped updates; queries logits only. Defaults are AutoAttack
    standard: ``n_queries=5000``, ``p_init=0.8``, ``restarts=1``, ``loss="margin"``, ``rescale_schedule=False``.
    Shapes: ``x [N, ...]``, ``y [N]`` → ``[N, ...]``.
    """

    n_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    rescale_schedule: bool = False
    seed: int = 0
    name: ClassVar[str] = "square"

    def __post_init__(self) -> None:
        check_int_param(self.name, "n_queries", self.n_queries)
        check_int_param(self.name, "restarts", self.restarts)
        check_choice_param(self.name, "loss", self.loss, ("margin", "ce"))
        check_bool_param(self.name, "rescale_schedule", self.rescale_schedule)
        if not (is_finite_number(self.p_init) and 0 < self.p_init <= 1):  # a string: TypeError on "<"
            raise AttackConfigError(f"attack {self.name!r}: p_init must lie in (0, 1], got {self.p_init!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        logits = begin_attack(self.name, NORMS, model, x, y, threat)
        x_adv = x.clone()
        robust = logits.argmax(dim=1) == y
        if threat.eps == 0 or not bool(robust.any()):
            return x_adv
        view = UnitInputView(model, tuple(x.shape[1:]), threat.bounds, "square", 5 if threat.norm == "l2" else 1)
        eps = view.view_eps(threat.eps)
        run = square_linf_run if threat.norm == "linf" else square_l2_run
        draws = _Draws(self.seed)
        with eval_mode(model), frozen_parameters(model):
            for _ in range(self.restarts):
                idx = robust.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                search = _Search(view, view.to_view(x[idx]), y[idx], self.loss)
                run(search, eps, draws, self.n_queries, self.p_init, self.rescale_schedule)
                fooled = idx[search.fooled]
                x_adv[fooled] = view.from_view(search.out[search.fooled]).to(x.dtype)
                robust[fooled] = False
        return threat.project(x_adv, x)


__all__ = ["P_SCHEDULE", "Square", "p_at", "square_l2_run", "square_linf_run", "window_pattern"]
