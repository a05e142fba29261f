"""Per-unit ranking factors of a boosted top-k gate, fitted from the outside.

Numenta's ``KWinners`` / ``KWinners2d`` (Ahmad & Scheinkman 2019, "How Can We Be So Dense?") choose their winners
on *boosted* scores ``b_u · x`` with one positive factor ``b_u = exp(β (target − duty_cycle_u))`` per unit ``u`` (a
feature of ``[N, F]``, a channel of ``[N, C, H, W]``), and output the unboosted ``x``. Their winners are then not the
largest inputs of their group (the probe's ``ordered_fraction`` is low), and a smooth relaxation on the raw value
(:func:`attacks.gates.relaxed_gate` with ``score="value"``) thresholds the wrong units: BPDA's gradient points at
units far from the gate's decision. Relaxed on the boosted scores instead, BPDA on a Numenta-style CNN (the zoo's
``nupic-sparse-cnn``, β = 1.5, mnist5k, Linf 0.05, 100 images) left 18% robust where the raw-value relaxation left
26% (on the module's true factors: 19%), with 27% fewer queries.

:func:`fit_unit_factors` recovers the factors (up to a common scale: only the ranking matters) from one call's input
``x`` and output ``out`` of the gate, knowing its grouping (:mod:`attacks.gates`). Per group ``g`` a threshold
``θ_g`` separates winners (``b_u x ≥ θ_g``) from losers; for an element with ``x`` and ``θ_g`` of the same sign the
ratio ``θ_g / x`` bounds ``b_u`` from below (a positive winner, a negative loser) or from above (a positive loser, a
negative winner). The fit alternates: thresholds midway between each group's smallest winner score and largest
loser score under the current factors; then every unit's factor moves to the geometric middle of its bounds when it
has both, and otherwise only as far as its one bound demands (a unit seen only losing keeps its factor unless a
loss proves it smaller) — starting from no boosting (all 1), so weakly constrained units stay near it. Factors are
normalised to geometric mean 1. Deterministic (no random numbers); cost about ``iterations`` passes over ``x``.
:func:`boosted_factors` keeps the factors only where they earn it: fitted on half of the groups, they must predict
the other half's winners better than the raw values (with the same weights evaluated at β = 0.5 instead of 1.5, the
dense gate's fit no longer did, and both relaxations left the same robust accuracy). This module never imports
``kwta_robust``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attacks.gates import GateFit, group_rows, midpoint_thresholds, ordered_fraction, per_unit, true_fraction

#: A gate whose winners are the largest by value in fewer than this fraction of its groups, and the largest by fitted
#: boosted scores in at least this fraction, ranks boosted scores (:func:`boosted_factors`).
BOOSTED_ORDERED_FRACTION = 0.9
#: Alternations of the fit (each one pass over the input); the fit stops earlier once the factors stop moving.
FIT_ITERATIONS = 30
#: The fit has converged when no factor moves by more than this fraction.
FIT_RTOL = 1e-6
#: The fit reads at most this many elements (every ``ceil(G·S / this)``-th of ``G`` groups of ``S``): a volume gate
#: on ``[64, 64, 32, 32]`` took 7.6 s on one CPU thread whole, about 2 s on a quarter of its samples.
MAX_FIT_ELEMENTS = 2 ** 20


def unit_rows(x: Tensor, grouping: str) -> Tensor:
    """The unit (index along dim 1: feature or channel) of every element of ``x``, in :func:`group_rows` layout."""
    return group_rows(per_unit(torch.arange(x.shape[1], device=x.device), x).contiguous(), grouping)


def _bounds(rows: Tensor, win: Tensor, units: Tensor, theta: Tensor, n_units: int) -> tuple[Tensor, Tensor]:
    """Per unit, the largest lower bound and the smallest upper bound on its factor (0 / inf where none)."""
    same_sign = (torch.sign(rows) * torch.sign(theta)) > 0  # (a product of two tiny values could underflow to 0)
    ratio = theta / torch.where(same_sign, rows, torch.ones_like(rows))
    lower_el = same_sign & ((win & (rows > 0)) | (~win & (rows < 0)))
    upper_el = same_sign & ((win & (rows < 0)) | (~win & (rows > 0)))
    lower = torch.zeros(n_units, dtype=rows.dtype, device=rows.device).scatter_reduce(
        0, units[lower_el], ratio[lower_el], "amax")
    upper = torch.full((n_units,), float("inf"), dtype=rows.dtype, device=rows.device).scatter_reduce(
        0, units[upper_el], ratio[upper_el], "amin")
    return lower, upper


def _prepared(x: Tensor, out: Tensor, grouping: str) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` in :func:`group_rows` layout (at least float32: half precision would overflow the bounds' ratios), the
    winners, and each element's unit — every few groups of a large input (:data:`MAX_FIT_ELEMENTS`)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    rows, win = group_rows(x.detach().to(dtype), grouping), group_rows(out.detach(), grouping) != 0
    step = -(-rows.numel() // MAX_FIT_ELEMENTS)
    return rows[::step], win[::step], unit_rows(x, grouping)[::step]


def _fit(rows: Tensor, win: Tensor, units: Tensor, n_units: int, iterations: int) -> tuple[Tensor, float]:
    factors = torch.ones(n_units, dtype=rows.dtype, device=rows.device)
    best = (ordered_fraction(rows, win), factors)
    for _ in range(iterations):
        lower, upper = _bounds(rows, win, units, midpoint_thresholds(rows * factors[units], win), n_units)
        has_lower, has_upper = lower > 0, torch.isfinite(upper)
        within = torch.minimum(torch.maximum(factors, lower), upper)
        moved = torch.where(has_lower & has_upper, (lower * upper).sqrt(), within)
        moved = moved / moved.log().mean().exp()
        if not bool(torch.isfinite(moved).all()):  # bounds beyond the dtype's range: keep the best so far
            break
        converged = bool(((moved - factors).abs() <= FIT_RTOL * factors).all())
        factors = moved
        fraction = ordered_fraction(rows * factors[units], win)
        if fraction > best[0]:
            best = (fraction, factors)
        if converged:
            break
    return best[1], best[0]


def fit_unit_factors(x: Tensor, out: Tensor, grouping: str,
                     iterations: int = FIT_ITERATIONS) -> tuple[Tensor, float]:
    """Per-unit factors ``[U]`` (``U = x.shape[1]``, geometric mean 1, at least float32) under which the gate's
    winners on ``x`` ``[N, U, ...]`` (the non-zero elements of ``out``, same shape) are the largest scores
    ``b_u · x`` of their ``grouping``'s groups, and the fraction of groups they order (see the module docstring).
    Of the iterates the one ordering the most groups is returned (the first on ties: no boosting when nothing
    orders better). A large input is read on every few groups (:data:`MAX_FIT_ELEMENTS`)."""
    return _fit(*_prepared(x, out, grouping), int(x.shape[1]), iterations)


def ranking_agreement(rows: Tensor, win: Tensor, units: Tensor, factors: Tensor) -> float:
    """Fraction of elements whose fate the scores ``factors[unit] · x`` predict: per group (row), the ``c`` largest
    scores win, ``c`` being the group's count of winners."""
    ranks = (rows * factors[units]).argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True)
    return true_fraction((ranks < win.sum(dim=1, keepdim=True)) == win)


#: The keys :meth:`BoostedFit.evidence` adds to a layer's probe evidence.
BOOSTED_EVIDENCE_KEYS: tuple[str, ...] = ("score_factors", "boosted_ordered_fraction", "boosted_heldout_agreement",
                                          "value_heldout_agreement")


@dataclass(frozen=True)
class BoostedFit:
    """Factors fitted to a gate (:func:`boosted_factors`) with the evidence for them: the fraction of groups they
    order, and how well factors fitted on the even groups predict the winners of the odd ones, next to the raw
    values' prediction there."""

    factors: Tensor
    ordered_fraction: float
    heldout_agreement: float
    value_heldout_agreement: float

    def evidence(self) -> dict:
        values = (self.factors.tolist(), self.ordered_fraction, self.heldout_agreement, self.value_heldout_agreement)
        return dict(zip(BOOSTED_EVIDENCE_KEYS, values))


def boosted_factors(x: Tensor, out: Tensor, fit: GateFit) -> BoostedFit | None:
    """For a gate found with ``fit`` on ``x`` / ``out`` whose winners are not its largest values nor magnitudes:
    the fitted factors, when they order at least :data:`BOOSTED_ORDERED_FRACTION` of its groups and factors fitted
    on half of the groups predict the winners of the other half better than the raw values do (with few groups per
    unit — a dense gate of 700 units on 64 inputs — and weak boosting, the fit's noise can outweigh the boosting it
    corrects); else ``None``. A per-channel gate (``"channel"``) ranks within one unit, where a unit's factor
    changes nothing."""
    if fit.score != "value" or fit.ordered_fraction >= BOOSTED_ORDERED_FRACTION or fit.grouping == "channel":
        return None
    rows, win, units = _prepared(x, out, fit.grouping)
    n_units = int(x.shape[1])
    if rows.shape[0] < 2:
        return None
    half, _ = _fit(rows[0::2], win[0::2], units[0::2], n_units, FIT_ITERATIONS)
    held = (rows[1::2], win[1::2], units[1::2])
    heldout, value = ranking_agreement(*held, half), ranking_agreement(*held, torch.ones_like(half))
    if heldout <= value:
        return None
    factors, fraction = _fit(rows, win, units, n_units, FIT_ITERATIONS)
    return BoostedFit(factors, fraction, heldout, value) if fraction >= BOOSTED_ORDERED_FRACTION else None
