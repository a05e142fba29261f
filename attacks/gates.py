"""Top-k gates seen from the outside: how a module's 0/1 selection is grouped, and a smooth relaxation of it.

A *top-k gate* maps ``h`` to ``h ⊙ m`` with a 0/1 mask ``m`` that keeps a constant number ``k`` of winners per
*group*: k-Winners-Take-All (Xiao, Zhong & Zheng, ICLR 2020: ``Sparsify1D``, ``Sparsify2D`` (per channel),
``Sparsify2D_vol`` (per sample over C·H·W), ``Sparsify2D_kactive``; Numenta's ``KWinners`` / ``KWinners2d``, Ahmad
& Scheinkman 2019, whose winners are chosen on boosted scores). This module reads such a gate from one call —
its input ``x`` and output ``out`` (same shape ``[N, ...]``) — without knowing its code:

* :func:`mask_agreement`: the fraction of elements with ``out == x`` or ``out == 0`` (1 for a gate);
* :func:`mask_as_gate`: a module returning the 0/1 mask itself, which its parent applies (``g(h) · m(h)``),
  read as the gate ``h · m`` (its smooth surrogate then relaxes the mask: ``relaxed_gate(mask=True)``);
* :func:`gate_fit`: per group of a *grouping* (below), the number of winners (non-zero outputs) and whether the
  winners are the largest inputs of their group;
* :func:`infer_grouping`: the grouping under which the number of winners is constant (finest first, one whose
  winners are the largest of their groups before one whose are not);
* :func:`relaxed_gate`: the BPDA *smooth* surrogate of a foreign gate, ``x · sigmoid((x - t) / (T · std(x)))`` per
  group, with ``t`` midway between the smallest winner and the largest loser of the layer's own output — with
  ``k`` winners chosen by value this is the midpoint between the k-th and (k+1)-th largest input, the threshold of
  ``kwta_robust.layers.smooth_kwta``, so ``k`` is inferred per sample (per channel) from the layer's own output
  (for a gate ranking ``|x|`` or boosted scores ``b_u · x``, the same on those: :mod:`attacks.gate_factors`).

Groupings of an ``[N, C, *spatial]`` tensor (``[N, F]``: only ``"dense"`` and ``"block-<U>"``):

* ``"dense"`` / ``"volume"``: per sample over all non-batch elements (F, or C·H·W);
* ``"row"`` (``[N, C, H, W, ...]``, 4 dims or more): per sample, channel and row along the last dim only — a top-k
  written as ``x.topk(k)`` on a feature map (torch's default ``dim=-1``) keeps ``k`` winners per image row;
* ``"channel"``: per sample and channel over the spatial elements (Xiao et al.'s ``Sparsify2D``);
* ``"local"``: per sample and location across the C channels (Numenta's local kWTA);
* ``"whole-channel"``: per sample across the C channels, each kept or zeroed whole, ranked by a channel statistic
  (:func:`channel_statistic`; Xiao et al.'s ``Sparsify2D_all`` keeps the k channels with the largest maxima).
* ``"block-<U>"``: per sample and location, blocks of ``U`` consecutive units along dim 1 (adjacent features of
  ``[N, F]``, adjacent channels of ``[N, C, ...]``) — local winner-takes-all (Srivastava et al. 2013, LWTA: only
  each block's largest unit passes). Tried only where no grouping above both has a constant count and explains
  its winners (:func:`infer_grouping`): an LWTA layer also keeps a constant F/U per sample, which ``"dense"``
  read as one top-F/U whose winners are not its largest values, and relaxed on a threshold no block uses.

Ties (Xiao et al.'s ``>=`` on the k-th value keeps every tied unit) and winners whose input is exactly 0 (their
output is 0 too) make the counted ``k`` differ from the gate's; :func:`gate_fit` gives each group the interval of
``k`` its ties and zeros allow, and a grouping has a constant ``k`` when one value lies in 90 % of the intervals.
Where no grouping has one, a count of ``k`` or ``k + 1`` at a threshold that moves with each group still reads as a
gate (:func:`threshold_fit`: a ``torch.quantile`` threshold, whose float rounding adds a winner in some samples).
This module never imports ``kwta_robust``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence, overload

import torch
from torch import Tensor

from attacks.channel_stats import CHANNEL_STATISTICS, channel_statistic, ranking_statistic
from attacks.gate_groupings import (block_groupings, block_size, candidate_groupings, group_rows, per_unit,
                                    ungroup_rows)
from attacks.mask_assign import zeroing_assignment

#: Fraction of groups whose winner count must lie within tolerance of the median for the count to be "constant".
CONSTANT_K_FRACTION = 0.9
#: A gate whose winners are the largest by magnitude (``|x|``) in at least this fraction of its groups, and in more
#: groups than by value, selects by magnitude (Xiao et al.'s ``Sparsify*_abs``); its smooth surrogate relaxes ``|x|``.
MAGNITUDE_ORDERED_FRACTION = 0.9
#: Minimum :func:`mask_agreement` of a gate (1.0 for an exact ``x · mask``; a little slack for NaNs).
MIN_MASK_AGREEMENT = 0.999
#: ``read(x, out, known_gate, may_be_mask)`` in place of :func:`read_gate` in :func:`gated_operand`.
GateRead = Callable[[Tensor, Tensor, bool, bool], "tuple[GateFit, bool] | None"]
#: ``fit_of(x, out, grouping)`` in place of :func:`gate_fit` with ``only_constant`` in :func:`fit_groupings`.
GroupingFit = Callable[[Tensor, Tensor, str], "GateFit | None"]
#: The operations that write values into a tensor at indices (function and method forms, in place or not): the
#: results :func:`gated_operand` also reads as a top-k then a ReLU (``relu=True``), whose ReLU'd winners they hold;
#: with ``out[rows, idx] = relu(vals)`` (``Tensor.__setitem__`` of a tensor of values: :func:`scattered`).
SCATTERS = frozenset(fn for name in ("scatter", "scatter_add", "scatter_reduce", "index_put", "index_copy",
                                     "index_add", "index_reduce", "masked_scatter", "put")
                     for owner in (torch, torch.Tensor) for fn in (getattr(owner, name, None),
                                                               getattr(owner, name + "_", None)) if fn is not None)


def scattered(func: Callable[..., Any], args: tuple, result: Any) -> tuple[Any, bool]:
    """What a call made, to read as a gate, and whether it wrote values at indices (:func:`gated_operand`'s ``relu``):
    ``(result, True)`` for one of :data:`SCATTERS`; in place (``Tensor.__setitem__`` returns ``None``) ``(args[0],
    True)`` for ``out[rows, idx] = relu(vals)``, ``(args[0], False)`` for ``h[h < kth] = 0`` (:mod:`.mask_assign`)."""
    tensor_set = func is Tensor.__setitem__ and len(args) == 3 and isinstance(args[2], Tensor) and args[2].ndim > 0
    wrote = (args[0], tensor_set) if tensor_set or zeroing_assignment(func, args) else (result, False)
    return (result, True) if func in SCATTERS else wrote


def mask_as_gate(x: Tensor, out: Tensor) -> Tensor | None:
    """``x · out`` when ``out`` (shaped like ``x``) is a 0/1 *mask* — only zeros and ones, both present, and not
    itself ``x · mask`` (a gate on 0/1 inputs returns 0/1 values too: its ones are where its input is 1) — so the
    gate a parent builds from it (``out = g(h) · topk_mask(h)``) can be read by :func:`infer_grouping`; ``None``
    otherwise. (Whether it is ``x · mask`` is read at the ones only: over all elements a sparse mask, one winner in
    1,000 or fewer, agrees with its input everywhere else and would pass :data:`MIN_MASK_AGREEMENT`.)"""
    if out.shape != x.shape or not out.is_floating_point() or out.numel() == 0:
        return None
    ones = out == 1
    if not bool((ones | (out == 0)).all()) or not bool(ones.any()) or bool(ones.all()):
        return None
    if bool((x[ones] == 1).all()):
        return None
    return torch.where(ones, x, torch.zeros_like(x))


def true_fraction(mask: Tensor) -> float:
    """The fraction of ``True`` elements of a boolean ``mask``, exactly ``count / total`` (0.0 when empty): in float32
    (``mask.float().mean()``) 9 of 10 is 0.89999998, under a bar of 0.9 (:data:`CONSTANT_K_FRACTION`)."""
    return int(mask.sum()) / mask.numel() if mask.numel() else 0.0


def mask_agreement(x: Tensor, out: Tensor) -> float:
    """Fraction of elements where ``out`` equals ``x`` or 0 (``out = x · m`` with ``m ∈ {0, 1}`` gives 1.0)."""
    if out.shape != x.shape or out.numel() == 0:
        return 0.0
    return true_fraction((out == x) | (out == 0))


def zeroes_some(x: Tensor, out: Tensor) -> bool:
    """Whether ``out`` (shaped like ``x``) is ``x · mask`` (:func:`mask_agreement` at least
    :data:`MIN_MASK_AGREEMENT`) zeroing some non-zero element of ``x`` and keeping some element non-zero: the three
    counts in one host read (one GPU synchronisation), for a test tried on many results that are no gate."""
    if out.shape != x.shape or out.numel() == 0:
        return False
    agree, zeroed, kept = torch.stack([((out == x) | (out == 0)).sum(), ((out == 0) & (x != 0)).sum(),
                                       (out != 0).sum()]).tolist()
    return agree / out.numel() >= MIN_MASK_AGREEMENT and zeroed > 0 and kept > 0


@dataclass(frozen=True)
class GateFit:
    """How well one grouping explains a gate's selection (numbers over the groups of one call).

    ``k``: the winner count consistent with most groups; ``k_constant_fraction``: the fraction of groups consistent
    with it; ``k_min``/``k_max``: the counted winners (non-zero outputs) per group; ``ordered_fraction``: groups whose
    smallest winner input is >= their largest loser input (1 when winners are chosen by value; lower when chosen on
    other scores, e.g. Numenta's boosting); ``k_spread``: 1 for a gate whose count is ``k`` or ``k + 1`` in every
    group, at a threshold that moves with the group (:func:`threshold_fit`: a ``torch.quantile`` threshold), else 0.
    ``statistic_ties``: the other channel statistics ordering the kept channels in as many samples as ``statistic``
    (:func:`attacks.channel_stats.ranking_statistic`: few samples may not tell an L2 norm from an abs-mean).
    """

    grouping: str
    group_size: int
    groups: int
    k: int
    k_min: int
    k_max: int
    k_constant_fraction: float
    ordered_fraction: float
    magnitude_ordered_fraction: float = 0.0
    statistic: str | None = None
    smallest_ordered_fraction: float = 0.0
    k_spread: int = 0
    statistic_ties: tuple[str, ...] = ()

    @property
    def constant_k(self) -> bool:
        return self.k_spread == 1 or _constant_k(self.k_constant_fraction, self.k, self.group_size)

    @property
    def score(self) -> str:
        """What the gate ranks: ``"magnitude"`` or ``"smallest"`` (:func:`selection_score`) or ``"value"``; for a
        ``"whole-channel"`` gate, the channel statistic (:data:`CHANNEL_STATISTICS`)."""
        return self.statistic or selection_score(self.ordered_fraction, self.magnitude_ordered_fraction,
                                                 self.smallest_ordered_fraction)

    def to_dict(self) -> dict:
        """The fields; ``k_spread`` only where it is not 0 (a threshold gate, :func:`threshold_fit`) and
        ``statistic_ties`` (a list) only where some is, so the evidence of every other gate reads as before."""
        fields = asdict(self)
        if not self.k_spread:
            del fields["k_spread"]
        if self.statistic_ties:
            fields["statistic_ties"] = list(self.statistic_ties)
        else:
            del fields["statistic_ties"]
        return fields


def winner_loser_extremes(rows: Tensor, win: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: the smallest winner and the largest loser (``inf`` / ``-inf`` where there is none). The infinities
    are Python numbers: a tensor made of one on an accelerator is a copy from the host, which waits for the device."""
    inf = float("inf")
    return torch.where(win, rows, inf).amin(dim=1), torch.where(win, -inf, rows).amax(dim=1)


def ordered_fraction(rows: Tensor, win: Tensor) -> float:
    """Fraction of groups (rows of ``[G, S]``) whose smallest winner is ``>=`` their largest loser."""
    smallest_winner, largest_loser = winner_loser_extremes(rows, win)
    return true_fraction(smallest_winner >= largest_loser)


def midpoint_thresholds(scores: Tensor, win: Tensor) -> Tensor:
    """``[G, 1]``: per row of ``scores``, midway between its smallest winner and its largest loser (a row without
    losers at its smallest winner, one without winners at its largest loser)."""
    smallest_winner, largest_loser = winner_loser_extremes(scores, win)
    smallest_winner, largest_loser = (torch.where(torch.isfinite(smallest_winner), smallest_winner, largest_loser),
                                      torch.where(torch.isfinite(largest_loser), largest_loser, smallest_winner))
    return ((smallest_winner + largest_loser) / 2)[:, None]


def _whole_channels(x: Tensor, out: Tensor) -> tuple[Tensor, Tensor, Tensor, str | None, tuple[str, ...]]:
    """Per channel of ``x`` ``[N, C, ...]``: the statistic that best orders the kept channels (``[N, C]``), whether
    ``out`` kept it, whether its input is all zero (a kept one is invisible), and that statistic's name — ``None``
    when ``out`` zeroes some non-zero element of a channel it keeps (not whole channels), a channel has a single
    element (then whole channels are ``"local"``), or no statistic orders the kept channels above the others in
    :data:`CONSTANT_K_FRACTION` of the samples (a fixed channel mask, a boosted local gate that keeps the same
    channels everywhere: not a ranking of channels); last, the statistics tied with it
    (:func:`attacks.channel_stats.ranking_statistic`)."""
    flat_x, flat_out = x.flatten(2), out.flatten(2)
    kept, blank = (flat_out != 0).any(dim=2), (flat_x == 0).all(dim=2)
    if flat_x.shape[2] < 2 or bool(((flat_out == 0) & (flat_x != 0) & kept[..., None]).any()):
        return kept.to(x.dtype), kept, blank, None, ()

    ordered = {name: ordered_fraction(channel_statistic(x, name), kept) for name in CHANNEL_STATISTICS}
    statistic, ties = ranking_statistic(ordered)  # the first on ties
    if ordered[statistic] < CONSTANT_K_FRACTION:
        return kept.to(x.dtype), kept, blank, None, ()
    return channel_statistic(x, statistic), kept, blank, statistic, ties


def _constant_k(fraction: float, k: int, group_size: int) -> bool:
    """:attr:`GateFit.constant_k` of a fit with these fields (``only_constant`` reads it before building the fit)."""
    return fraction >= CONSTANT_K_FRACTION and 1 <= k < group_size


@overload
def gate_fit(x: Tensor, out: Tensor, grouping: str) -> GateFit: ...


@overload
def gate_fit(x: Tensor, out: Tensor, grouping: str, *, only_constant: bool) -> GateFit | None: ...


def gate_fit(x: Tensor, out: Tensor, grouping: str, *, only_constant: bool = False) -> GateFit | None:
    """Winner counts and ordering of ``out`` (the gate's output for input ``x``) under ``grouping``.

    Each group admits an interval of ``k``: with ``c`` counted winners, ties at the smallest winner (kept by a
    ``>=`` comparison) allow ``k`` down to ``c - (ties - 1)``, and when the largest loser is 0, winners whose input
    was exactly 0 (invisible in the output) allow ``k`` up to ``c`` plus those zeros. ``k`` is the value inside most
    groups' intervals (a maximum of coverage lies at some interval's lower end). Under ``"whole-channel"`` the
    winners are the kept channels of each sample, ranked by a :func:`channel_statistic`; an ``out`` that does not
    keep whole channels fits with ``k_constant_fraction`` 0. With ``only_constant``, a fit whose count is not
    constant (:attr:`GateFit.constant_k`) is ``None``, without the three orderings it would measure: most modules a
    layer probe reads (every ReLU of a ResNet, under five groupings and one per block size: 13 at 512
    channels) are no top-k gate.
    """
    statistic, ties = None, ()
    if grouping == "whole-channel":
        rows, win, blank, statistic, ties = _whole_channels(x, out)
        if statistic is None:
            return None if only_constant else GateFit(grouping, int(rows.shape[1]), int(rows.shape[0]), 0, 0, 0, 0.0,
                                                      0.0)
    else:
        rows, win = group_rows(x, grouping), group_rows(out, grouping) != 0
        blank = rows == 0
    counts = win.sum(dim=1)
    if counts.numel() == 0:
        return None if only_constant else GateFit(grouping, int(rows.shape[1]), 0, 0, 0, 0, 0.0, 0.0)
    smallest_winner, largest_loser = winner_loser_extremes(rows, win)
    tied = (win & (rows == smallest_winner[:, None])).sum(dim=1)
    zeros = (~win & blank).sum(dim=1)  # losers that may be winners whose input is all zero (invisible)
    low = counts - (tied - 1).clamp_min(0)
    high = counts + torch.where(largest_loser == 0, zeros, torch.zeros_like(zeros))
    candidates = low.unique()
    covered = ((low[None, :] <= candidates[:, None]) & (candidates[:, None] <= high[None, :])).sum(dim=1)
    best = int(covered.argmax())  # the first on ties
    k, fraction = int(candidates[best]), int(covered[best]) / counts.numel()  # exact: 9 of 10 is 0.9
    if only_constant and not _constant_k(fraction, k, int(rows.shape[1])):
        return None
    return GateFit(
        grouping=grouping, group_size=int(rows.shape[1]), groups=int(rows.shape[0]), k=k,
        k_min=int(counts.min()), k_max=int(counts.max()), k_constant_fraction=fraction,
        ordered_fraction=true_fraction(smallest_winner >= largest_loser),
        magnitude_ordered_fraction=0.0 if statistic else ordered_fraction(rows.abs(), win),
        statistic=statistic,
        smallest_ordered_fraction=0.0 if statistic else ordered_fraction(-rows, win), statistic_ties=ties,
    )


def selection_score(ordered_fraction: float, magnitude_ordered_fraction: float,
                    smallest_ordered_fraction: float = 0.0) -> str:
    """``"magnitude"`` when the winners are the largest by ``|x|`` in at least :data:`MAGNITUDE_ORDERED_FRACTION` of
    the groups and in more groups than by value; ``"smallest"`` when they are the *smallest* values (a bottom-k
    gate, or a parent keeping ``1 - topk_mask``) in that many groups and in more than by value or magnitude — a
    relaxation of the largest values would push its gradient the wrong way; else ``"value"``."""
    if smallest_ordered_fraction >= MAGNITUDE_ORDERED_FRACTION and smallest_ordered_fraction > max(
            ordered_fraction, magnitude_ordered_fraction):
        return "smallest"
    by_magnitude = magnitude_ordered_fraction >= MAGNITUDE_ORDERED_FRACTION
    return "magnitude" if by_magnitude and magnitude_ordered_fraction > ordered_fraction else "value"


def infer_grouping(x: Tensor, out: Tensor, known_gate: bool = False) -> GateFit | None:
    """The grouping whose winner count is constant and whose winners it explains (:func:`_explains_winners`; finest
    first, then the blocks), else the finest with a constant count (a gate on boosted scores), or ``None`` when
    ``out`` is not a top-k selection of ``x`` (shapes differ, not ``x · mask``, nothing zeroed, or no grouping with
    a constant count). Every grouping is tried: on a degenerate batch (one sample, few locations) a grouping that is
    not the gate's can have a constant count by chance — a local top-1 of two channels that wins once in each — and
    the gate's own grouping, later in the order, is the one whose winners are the largest. A first explaining
    grouping that explains its winners in fewer than all its groups gives way to a block grouping that explains
    them in every group: an LWTA of two blocks of two channels keeps a constant 2 of 4 per location, the 2 largest
    of the 4 wherever each block's winner beats the other block's loser (92 % of the locations of a small CNN's
    first layer), and relaxing that local top-2 moves a threshold no block uses. ``known_gate``: see
    :func:`threshold_fit`, tried last."""
    if out.shape != x.shape or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
        return None
    if mask_agreement(x, out) < MIN_MASK_AGREEMENT or not bool(((out == 0) & (x != 0)).any()):
        return None
    return fit_groupings(x, out, known_gate)


def fit_groupings(x: Tensor, out: Tensor, known_gate: bool = False, fit_of: GroupingFit | None = None,
                  threshold: Callable[[Tensor, Tensor, bool], GateFit | None] | None = None) -> GateFit | None:
    """:func:`infer_grouping` past its checks that ``out`` (shaped like ``x`` ``[N, ...]``, ``N >= 1``) is ``x · mask``
    with something zeroed: the groupings in their order (a first one explaining its winners in only some groups
    giving way to a block grouping that explains them in every group), then :func:`threshold_fit`.
    ``fit_of(x, out, grouping)`` and ``threshold``: in place of :func:`gate_fit` (``only_constant``) and
    :func:`threshold_fit`, with their answers (:mod:`attacks.gate_fits_batched`: one host–device synchronisation per
    grouping)."""
    found = partly = None
    for grouping in candidate_groupings(x.ndim) + block_groupings(x.shape):  # an LWTA layer: constant per sample too
        block = block_size(grouping) is not None
        if partly is not None and not block:
            continue
        fit = gate_fit(x, out, grouping, only_constant=True) if fit_of is None else fit_of(x, out, grouping)
        if fit is not None and _explains_winners(fit):
            if partly is None and not block and not _explains_every_group(fit):
                partly = fit
            elif partly is None or _explains_every_group(fit):
                return fit
        elif found is None and not block:
            found = fit
    if partly is not None:
        return partly
    return found if found is not None else (threshold or threshold_fit)(x, out, known_gate)


def threshold_fit(x: Tensor, out: Tensor, known_gate: bool = False) -> GateFit | None:
    """A top-k gate whose count of winners varies by one between groups, read where no grouping has a constant
    count (:func:`infer_grouping` tries this last, so no gate read before reads otherwise): ``k`` the smaller count,
    ``k_spread`` 1. A threshold computed per group by ``torch.quantile(h, 1 - k/S)`` (``h · (h ≥ q)``) keeps ``k``
    or ``k + 1`` winners: at an integer quantile position the float product ``(1 - k/S) · (S - 1)`` lands a hair
    either side of it, and the interpolated threshold then sits just below or just above the ``(k+1)``-th value.

    A grouping (finest first; not ``"whole-channel"`` or the blocks) is accepted only where (1) every group has
    ``c`` or ``c + 1`` winners, both counts present, ``1 <= c`` and ``c + 1`` less than the group's size; (2) in
    every group the winners are exactly the elements above a threshold (the smallest winner strictly above the
    largest loser); and (3) no one threshold serves every group (the largest loser of some group is at or above the
    smallest winner of another): the threshold moves with each group, as a top-k's does. An element-wise threshold
    — a ReLU, ``h · (h > 0.5)`` — satisfies (2) with one constant threshold and fails (3) whatever its counts; a
    gate that does not keep ``x`` or 0 (a hard-tanh, a sign) or changes the shape (a max-pool) never gets here.
    ``known_gate`` drops (3): BPDA re-reads an inline gate the layer probe already read, with (3), on its batch
    (:mod:`attacks.inline_gates`), on an attack's few remaining samples, where one threshold can serve two groups
    by chance — there an unread gate would run masked."""
    for grouping in candidate_groupings(x.ndim):
        if grouping == "whole-channel":
            continue
        rows, win = group_rows(x, grouping), group_rows(out, grouping) != 0
        counts = win.sum(dim=1)
        low, high = int(counts.min()), int(counts.max())
        if high - low != 1 or low < 1 or high >= rows.shape[1]:
            continue
        smallest_winner, largest_loser = winner_loser_extremes(rows, win)
        if not bool((smallest_winner > largest_loser).all()) or (
                not known_gate and float(largest_loser.max()) < float(smallest_winner.min())):
            continue
        return GateFit(grouping=grouping, group_size=int(rows.shape[1]), groups=int(rows.shape[0]), k=low, k_min=low,
                       k_max=high, k_constant_fraction=true_fraction(counts == low), ordered_fraction=1.0,
                       magnitude_ordered_fraction=ordered_fraction(rows.abs(), win),
                       smallest_ordered_fraction=ordered_fraction(-rows, win), k_spread=1)
    return None


def read_gate(x: Tensor, out: Tensor, known_gate: bool = False) -> tuple[GateFit, bool] | None:
    """How the smooth surrogate reads one call of a module it knows nothing about: the fit of ``out`` as a top-k
    gate of ``x`` — or of the gate its 0/1 mask makes (:func:`mask_as_gate`) — and whether ``out`` is that mask;
    ``None`` when it is neither (:func:`infer_grouping`; ``known_gate``: :func:`threshold_fit`)."""
    gated = mask_as_gate(x, out)
    fit = infer_grouping(x, out if gated is None else gated, known_gate)
    return None if fit is None else (fit, gated is not None)


def gated_operand(result: object, operands: Sequence[object], ranked: Sequence[Tensor], known_gate: bool = False,
                  read: GateRead | None = None,
                  relu: bool = False) -> tuple[Tensor, Tensor, tuple[GateFit, bool]] | None:
    """The tensor a result made inside a module's ``forward`` gates, with ``result`` in its shape and
    :func:`read_gate`'s reading: first an operand of the call that made it (``h · (h ≥ t)``, ``torch.where``, a
    scattered mask times ``h``: the gate or its 0/1 mask), then a tensor a selection ranked (``ranked``) of which
    ``result`` is the gate itself, not its mask — the winners' values scattered into zeros
    (``zeros.scatter(1, h.topk(k).indices, values)``) have no operand ``h``. Only a floating-point strided tensor of
    as many elements per sample counts; ``None`` when none is gated. The one reading behind the layer probe's
    inline-gate detection (:mod:`kwta_robust.detect_selections`) and BPDA's relaxation of that gate
    (:mod:`attacks.inline_gates`, ``known_gate``: the probe read it). ``read``: a reader giving :func:`read_gate`'s
    answer wherever the answer is kept, told whether a mask is (``None`` may then stand for a mask;
    :func:`attacks.gate_screen.screened_read` reads with fewer host–device synchronisations). Last, with ``relu``
    (a result of one of :data:`SCATTERS`), a top-k then a ReLU (a TopK sparse autoencoder, Gao et al. 2024:
    ``zeros.scatter(-1, idx, relu(vals))`` of ``vals, idx = h.topk(k)``), which keeps *at most* ``k`` winners per
    group (the positive ones, so its count follows their signs): the top-k gate of ``relu(h)``, its non-positive
    winners 0 like the ties at 0 :func:`gate_fit` allows, returned with ``relu(h)`` as the gated tensor (BPDA's
    relaxation of it then flows through the ReLU's exact gradient)."""
    for x, out, may_be_mask in gate_candidates(result, operands, ranked):
        found = read_gate(x.detach(), out.detach(), known_gate) if read is None else read(
            x.detach(), out.detach(), known_gate, may_be_mask)
        if found is not None and (may_be_mask or not found[1]):
            return x, out, found
    for x, out, _ in gate_candidates(result, (), ranked if relu else ()):
        positive = x.clamp_min(0)
        found = read_gate(positive.detach(), out.detach(), known_gate) if read is None else read(
            positive.detach(), out.detach(), known_gate, False)
        if found is not None and not found[1]:
            return positive, out, found
    return None


def gate_candidates(result: object, operands: Sequence[object],
                    ranked: Sequence[Tensor]) -> Iterator[tuple[Tensor, Tensor, bool]]:
    """The tensors ``result`` may gate, in :func:`gated_operand`'s order, as ``(x, result in x's shape,
    may_be_mask)``: the operands (the gate or its 0/1 mask), then the tensors a selection ranked (the gate itself);
    only floating-point strided tensors of as many elements per sample as a floating-point strided ``result`` of
    at least 2 dims."""
    if not isinstance(result, Tensor) or not result.is_floating_point() or result.ndim < 2 \
            or result.layout != torch.strided:
        return
    for x, may_be_mask in [(x, True) for x in operands] + [(x, False) for x in ranked]:
        if isinstance(x, Tensor) and x is not result and x.is_floating_point() and x.layout == torch.strided \
                and x.shape[:1] == result.shape[:1] and x.numel() == result.numel():
            yield x, result.reshape(x.shape), may_be_mask


def _explains_winners(fit: GateFit) -> bool:
    """Whether ``fit``'s winners are the largest of their groups — by value, magnitude, smallest value or channel
    statistic — in at least :data:`MAGNITUDE_ORDERED_FRACTION` of them."""
    return fit.statistic is not None or max(fit.ordered_fraction, fit.magnitude_ordered_fraction,
                                            fit.smallest_ordered_fraction) >= MAGNITUDE_ORDERED_FRACTION


def _explains_every_group(fit: GateFit) -> bool:
    """Whether ``fit``'s winners are the largest of every group by one score (:func:`_explains_winners`)."""
    return fit.statistic is not None or max(fit.ordered_fraction, fit.magnitude_ordered_fraction,
                                            fit.smallest_ordered_fraction) == 1.0


def relaxed_gate(x: Tensor, out: Tensor, grouping: str, temperature: float, score: str = "value",
                 factors: Tensor | None = None, mask: bool = False) -> Tensor:
    """Smooth surrogate of a top-k gate whose output on ``x`` was ``out``: ``[N, ...] → [N, ...]``.

    Per group: ``x · sigmoid((s - t) / (T · std(s)))`` with ``s`` the score the gate ranks — ``x`` itself
    (``score="value"``; ``"relu"``: ``relu(x)``), ``|x|`` (``"magnitude"``, :func:`selection_score`), ``-x``
    (``"smallest"``: a bottom-k gate) or the boosted ``b_u · x`` (``"boosted"``,
    ``factors`` ``[U]``: one positive factor per unit along dim 1, :func:`attacks.gate_factors.fit_unit_factors`) —
    and ``t`` midway between the smallest winner's score (non-zero output) and the largest loser's (a group without
    losers — a tied gate that kept it all — one ``std`` below its smallest winner, one without winners at its
    largest loser); ``std`` is the population std of ``s`` in the group (for a ``"block-<U>"`` gate in the sample:
    :func:`_relaxed_mask`), so ``T`` does not depend on the activations' scale. Under ``"whole-channel"`` every channel
    is one unit of its sample's group, scored by its :func:`channel_statistic` (``score``, one of
    :data:`CHANNEL_STATISTICS`), and the sigmoid multiplies the whole channel. Differentiable in ``x`` (the threshold's
    gradient flows to the two elements defining it; a ``"max"`` score's to each channel's largest element).
    ``mask=True``: the relaxed mask itself, for a module returning the 0/1 mask (``out``) that its parent applies.
    """
    if score == "relu":  # a top-k then a ReLU (kwta_robust.relu_winners): the top-k gate of relu(x), by value
        return relaxed_gate(x.clamp_min(0), out, grouping, temperature, "value", factors, mask)
    if grouping == "whole-channel":
        kept = (out.detach().flatten(2) != 0).any(dim=2)
        gate = _relaxed_mask(channel_statistic(x, score), kept, temperature).to(x.dtype)
        gate = gate.view(gate.shape + (1,) * (x.ndim - 2))
        return gate.expand(x.shape) if mask else x * gate
    rows, win = group_rows(x, grouping), group_rows(out.detach(), grouping) != 0
    if score == "boosted":
        if factors is None or factors.numel() != x.shape[1]:
            raise ValueError(f"score 'boosted' needs one factor per unit along dim 1 ({x.shape[1]}), got "
                             f"{None if factors is None else factors.numel()}")
        work = torch.promote_types(x.dtype, torch.float32)  # factors far from 1 would overflow half precision
        scores = rows.to(work) * group_rows(per_unit(factors.to(device=x.device, dtype=work), x), grouping)
    else:
        scores = rows.abs() if score == "magnitude" else -rows if score == "smallest" else rows
    per_sample = x.shape[0] if block_size(grouping) else None
    relaxed = _relaxed_mask(scores, win, temperature, per_sample).to(rows.dtype)
    return ungroup_rows(relaxed if mask else rows * relaxed, x, grouping)


def _relaxed_mask(scores: Tensor, win: Tensor, temperature: float, per_sample: int | None = None) -> Tensor:
    """``sigmoid((s - t) / (T · std(s)))`` per row of ``scores`` ``[G, S]`` (:func:`relaxed_gate`), in at least
    float32: in half precision the std of small activations (1e-2) underflows and the gradient turns NaN.
    ``per_sample=N``: the rows are ``N`` samples' blocks (``"block-<U>"``) and ``std`` is each sample's over all its
    blocks — within a block of two it is half the gap that decides it, so every sigmoid would sit at ``±1/T``,
    saturated, and pass no gradient to the loser. A row with no loser gates one ``std`` below its smallest winner
    (its sigmoid there ``sigmoid(1 / T)``), so its hard limit keeps it all."""
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    threshold = midpoint_thresholds(scores, win)
    if per_sample:
        spread = scores.reshape(per_sample, -1).std(dim=1, correction=0)
        spread = spread.repeat_interleave(scores.shape[0] // per_sample)[:, None]
    else:
        spread = scores.std(dim=1, keepdim=True, correction=0)
    # a group that kept every unit (ties at a >= gate's threshold: attacks.tied_gates) gates one spread below its
    # smallest winner, not at it: the hard limit keeps that winner whole, as the gate did
    threshold = torch.where(win.all(dim=1, keepdim=True), threshold - spread, threshold)
    return torch.sigmoid((scores - threshold) / (temperature * spread.clamp_min(1e-12)))
