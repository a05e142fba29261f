""":func:`attacks.gates.gate_fit` (``only_constant``) and :func:`attacks.gates.threshold_fit` with their numbers taken
to the host in one read per grouping, for BPDA's inline-gate watch (:mod:`attacks.gate_screen`).

The plain fits read each number on its own — the candidate counts (``unique``), the best one (``argmax``, ``int``),
the smallest and largest counts, three ordered fractions — and on CUDA every such read waits for the device. Here
they are computed on the device, stacked, and read in one ``tolist``; the :class:`attacks.gates.GateFit` built from
them is the plain fit's, field for field. The best ``k`` needs no ``unique``: the coverage of a count ``v`` — the
groups whose interval ``[low, high]`` holds it — is ``#{low <= v} - #{high < v}`` (each ``low <= high``), read off
the histograms of the bounds (counts lie in ``0 … S``); the plain fit's first maximum over the sorted distinct
``low`` is the smallest ``low`` of maximal coverage. A grouping whose count is constant reads a second time, for
its orderings (which the plain fit measures there only); a ``"whole-channel"`` fit reads first whether the channels
are kept whole, then how each channel statistic orders them. :class:`PairFits` fits one pair grouping by grouping
as :func:`attacks.gates.fit_groupings` asks, reading the next grouping's count with that first whole-channel read.
This module never imports ``kwta_robust``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from attacks.channel_stats import ranking_statistic
from attacks.gates import (CHANNEL_STATISTICS, CONSTANT_K_FRACTION, GateFit, candidate_groupings, channel_statistic,
                           group_rows, winner_loser_extremes)


def _ordered(rows: Tensor, win: Tensor) -> Tensor:
    """On the device: the count of rows whose smallest winner is ``>=`` their largest loser
    (:func:`attacks.gates.ordered_fraction`'s numerator)."""
    smallest_winner, largest_loser = winner_loser_extremes(rows, win)
    return (smallest_winner >= largest_loser).sum()


def _best_count(low: Tensor, high: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """On the device: the count ``v`` in most intervals ``[low_g, high_g]`` (``[G]`` each, ``0 <= low <= high <=
    size``) among the values ``low`` takes — the smallest on ties — and how many intervals hold it:
    ``#{low <= v} - #{high < v}`` from the histograms of the bounds (a ``scatter_add``: ``bincount`` reads its
    input's largest value on the host)."""
    ones = torch.ones_like(low)
    at_low = torch.zeros(size + 1, dtype=low.dtype, device=low.device).scatter_add_(0, low, ones)
    at_high = torch.zeros(size + 1, dtype=low.dtype, device=low.device).scatter_add_(0, high, ones)
    covered = (at_low - at_high).cumsum(0) + at_high  # #{low <= v} - #{high <= v} + #{high == v}
    covered = torch.where(at_low > 0, covered, -1)  # counts no low takes: never chosen
    k = covered.argmax()  # the first maximum: the smallest count
    return k, covered[k]


#: What :func:`_count` leaves for the rest of a fit: per row the smallest winner and the largest loser (``[G]``
#: each, on the device), and ``k``, its coverage, ``k_min`` and ``k_max`` read on the host.
Counted = tuple[Tensor, Tensor, list[int]]


#: Per row of one grouping, from a pair's elements in their own layout (:meth:`PairFits.grouped`): the smallest
#: winner, the largest loser and how many losers are 0 in the input (``[G]`` each).
Shared = tuple[Tensor, Tensor, Tensor]


def _count(rows: Tensor, win: Tensor, blank: Tensor, shared: Shared | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """On the device, for ``rows``/``win``/``blank`` ``[G, S]`` (``G >= 1``): per row the smallest winner and the
    largest loser, and ``[k, covered, k_min, k_max]`` stacked, to read (:func:`_counted_fit`'s first read).
    ``shared``: those extremes and zero losers already reduced (the same numbers)."""
    counts = win.sum(dim=1)
    smallest_winner, largest_loser = winner_loser_extremes(rows, win) if shared is None else shared[:2]
    tied = (win & (rows == smallest_winner[:, None])).sum(dim=1)
    zeros = (~win & blank).sum(dim=1) if shared is None else shared[2]
    low = counts - (tied - 1).clamp_min(0)
    high = counts + torch.where(largest_loser == 0, zeros, torch.zeros_like(zeros))
    k, best = _best_count(low, high, int(rows.shape[1]))
    return smallest_winner, largest_loser, torch.stack([k, best, *counts.aminmax()])


def _counted_fit(grouping: str, rows: Tensor, win: Tensor, blank: Tensor | None, statistic: str | None,
                 counted: Counted | None = None, shared: Shared | None = None) -> GateFit | None:
    """The body of :func:`attacks.gates.gate_fit` on ``rows``/``win``/``blank`` ``[G, S]``: one host read for the
    count of winners (none where ``counted``, read already, is given: :class:`PairFits`), a second for the
    orderings where the count is constant (the plain fit measures them there only; measured always, they made a
    BPDA step on the CPU slower than the plain fits' reads)."""
    groups, size = int(rows.shape[0]), int(rows.shape[1])
    if groups == 0:
        return None
    if counted is None:
        smallest_winner, largest_loser, numbers = _count(rows, win, rows == 0 if blank is None else blank, shared)
        counted = smallest_winner, largest_loser, numbers.tolist()  # the first host read
    smallest_winner, largest_loser, (k, best, k_min, k_max) = counted
    fit = GateFit(grouping=grouping, group_size=size, groups=groups, k=k, k_min=k_min, k_max=k_max,
                  k_constant_fraction=best / groups, ordered_fraction=0.0, statistic=statistic)
    if not fit.constant_k:
        return None
    numbers = [(smallest_winner >= largest_loser).sum()]
    if statistic is None:
        numbers += [_ordered(rows.abs(), win), _ordered(-rows, win)]
    values = torch.stack(numbers).tolist()  # the second
    return dataclasses.replace(fit, ordered_fraction=values[0] / groups,
                               magnitude_ordered_fraction=0.0 if statistic else values[1] / groups,
                               smallest_ordered_fraction=0.0 if statistic else values[2] / groups)


def batched_gate_fit(x: Tensor, out: Tensor, grouping: str) -> GateFit | None:
    """:func:`attacks.gates.gate_fit` of ``out`` on ``x`` (``[N, ...]``, the same shape) under ``grouping`` with
    ``only_constant``: one host–device synchronisation, two where the count is constant; under ``"whole-channel"``
    one where a channel is kept in part, two more before those where none is (none for a channel of one element)."""
    if grouping != "whole-channel":
        rows = group_rows(x, grouping)
        return _counted_fit(grouping, rows, group_rows(out, grouping) != 0, rows == 0, None)
    flat_x, flat_out = x.flatten(2), out.flatten(2)  # attacks.gates._whole_channels
    if flat_x.shape[2] < 2:
        return None
    kept, blank = (flat_out != 0).any(dim=2), (flat_x == 0).all(dim=2)
    if _kept_in_part(flat_x, flat_out, kept).item():  # a channel kept in part: no whole ones
        return None
    return _whole_channel_fit(x, kept, blank)


def _kept_in_part(flat_x: Tensor, flat_out: Tensor, kept: Tensor) -> Tensor:
    """On the device: whether ``flat_out`` ``[N, C, L]`` zeroes a non-zero element of ``flat_x`` in a channel it
    keeps (then it keeps no whole channels)."""
    return ((flat_out == 0) & (flat_x != 0) & kept[..., None]).any()


def _whole_channel_fit(x: Tensor, kept: Tensor, blank: Tensor) -> GateFit | None:
    """:func:`batched_gate_fit` under ``"whole-channel"`` past its test that no channel is kept in part: one read of
    how each channel statistic orders the kept channels, then the count of the best ordering one."""
    values = torch.stack([_ordered(channel_statistic(x, name), kept) for name in CHANNEL_STATISTICS]).tolist()
    ordered = dict(zip(CHANNEL_STATISTICS, (v / kept.shape[0] for v in values)))
    statistic, ties = ranking_statistic(ordered)  # the first on ties
    if ordered[statistic] < CONSTANT_K_FRACTION:
        return None
    fit = _counted_fit("whole-channel", channel_statistic(x, statistic), kept, blank, statistic)
    return fit if fit is None or not ties else dataclasses.replace(fit, statistic_ties=ties)


class PairFits:
    """:func:`batched_gate_fit` of one pair ``x``/``out`` (``[N, ...]``, the same shape, ``N >= 1``) by grouping,
    each made once and kept in ``fits`` (:func:`attacks.gates.fit_groupings`' ``fit_of``; then
    :func:`attacks.one_winner.one_winner_read` looks them up). The ``"whole-channel"`` try reads, with its test of
    a channel kept in part, the count of the grouping :func:`attacks.gates.candidate_groupings` puts after it
    (``"row"``, ``"channel"`` under 3 dims), which :func:`attacks.gates.fit_groupings` tries next wherever a channel
    is kept in part — every gate but one of whole channels: one read for both. Its fits are
    :func:`batched_gate_fit`'s, field for field."""

    def __init__(self, x: Tensor, out: Tensor) -> None:
        self.x, self.out = x, out
        self.fits: dict[str, GateFit | None] = {}
        self._counted: dict[str, tuple[Tensor, Tensor, Counted]] = {}  # read with the whole-channel try
        self._elements: tuple[Tensor, ...] | None = None  # see grouped

    def grouped(self, grouping: str) -> tuple[Tensor, Tensor, Tensor, Shared]:
        """``rows``, ``win``, ``blank`` of ``grouping`` (not ``"whole-channel"``) and their :data:`Shared` numbers.
        The element-wise masks behind them — the winners, the zeros of ``x``, the winners' values else ``inf``, the
        losers' else ``-inf``, the losers that are 0 — are made once per pair in its own layout and regrouped
        (reshapes, transposes), not made again for every grouping tried: the same elements in each row, so the
        same minima, maxima and counts, bit for bit, for a fraction of the element-wise work."""
        if self._elements is None:
            inf, win, blank = float("inf"), self.out != 0, self.x == 0
            self._elements = (win, blank, torch.where(win, self.x, inf), torch.where(win, -inf, self.x), ~win & blank)
        win, blank, winners, losers, zero_losers = (group_rows(t, grouping) for t in self._elements)
        return group_rows(self.x, grouping), win, blank, (winners.amin(dim=1), losers.amax(dim=1),
                                                          zero_losers.sum(dim=1))

    def fit_of(self, x: Tensor, out: Tensor, grouping: str) -> GateFit | None:
        """The fit under ``grouping`` (``x``/``out``: this pair, as ``fit_groupings`` passes them)."""
        if grouping not in self.fits:
            self.fits[grouping] = self._fit(grouping)
        return self.fits[grouping]

    def _fit(self, grouping: str) -> GateFit | None:
        x, out = self.x, self.out
        if grouping in self._counted:
            rows, win, counted = self._counted.pop(grouping)
            return _counted_fit(grouping, rows, win, None, None, counted)
        if grouping != "whole-channel" and x.numel():
            rows, win, blank, shared = self.grouped(grouping)
            return _counted_fit(grouping, rows, win, blank, None, shared=shared)
        following = candidate_groupings(x.ndim)[1:2]  # "row" or "channel", from 3 dims
        if not following or following[0] in self.fits or x.numel() == 0 or x.flatten(2).shape[2] < 2:
            return batched_gate_fit(x, out, grouping)
        after = following[0]
        flat_x, flat_out = x.flatten(2), out.flatten(2)
        kept, blank = (flat_out != 0).any(dim=2), (flat_x == 0).all(dim=2)
        rows, win, after_blank, shared = self.grouped(after)
        smallest_winner, largest_loser, numbers = _count(rows, win, after_blank, shared)
        values = torch.cat([_kept_in_part(flat_x, flat_out, kept).long()[None], numbers]).tolist()  # one read
        self._counted[after] = rows, win, (smallest_winner, largest_loser, values[1:])
        return None if values[0] else _whole_channel_fit(x, kept, blank)


def batched_threshold_fit(x: Tensor, out: Tensor, known_gate: bool = False) -> GateFit | None:
    """:func:`attacks.gates.threshold_fit` of ``out`` on ``x``: one host–device synchronisation for the smallest and
    largest count of winners under every grouping it tries, then one per grouping whose counts pass."""
    groupings = [grouping for grouping in candidate_groupings(x.ndim) if grouping != "whole-channel"]
    split = [(group_rows(x, grouping), group_rows(out, grouping) != 0) for grouping in groupings]
    counts = [win.sum(dim=1) for _, win in split]
    bounds = torch.stack([c for per_group in counts for c in (per_group.min(), per_group.max())]).tolist()
    for i, (grouping, (rows, win)) in enumerate(zip(groupings, split)):
        low, high = bounds[2 * i], bounds[2 * i + 1]
        if high - low != 1 or low < 1 or high >= rows.shape[1]:
            continue
        smallest_winner, largest_loser = winner_loser_extremes(rows, win)
        separated, one_threshold, at_low, magnitude, smallest = torch.stack([
            (smallest_winner > largest_loser).all().long(), (largest_loser.max() < smallest_winner.min()).long(),
            (counts[i] == low).sum(), _ordered(rows.abs(), win), _ordered(-rows, win)]).tolist()  # the second read
        if not separated or (not known_gate and one_threshold):
            continue
        groups = int(rows.shape[0])
        return GateFit(grouping=grouping, group_size=int(rows.shape[1]), groups=groups, k=low, k_min=low,
                       k_max=high, k_constant_fraction=at_low / groups, ordered_fraction=1.0,
                       magnitude_ordered_fraction=magnitude / groups, smallest_ordered_fraction=smallest / groups,
                       k_spread=1)
    return None
