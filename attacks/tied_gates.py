"""Reading a top-k gate whose ties at its threshold make the count of winners vary, where it is known to be one.

A top-k written with ``>=`` on the k-th score (``h · (|h| ≥ |h|.topk(k).values[:, -1:])``, Xiao et al.'s
``Sparsify*``) keeps every unit tied with the k-th: on a batch with a constant background (MNIST's black pixels
after a convolution) it keeps 156 to 166 of 784, and :func:`attacks.gates.infer_grouping` (a constant ``k``) and
:func:`attacks.gates.threshold_fit` (``k`` or ``k + 1``) read no gate. The layer probe reads such a gate inline on
its batch moved by small seeded noise (:mod:`kwta_robust.detect_selections`); BPDA then meets the ties again on
the real inputs of an attack step (:mod:`attacks.inline_gates`), and reads the gate there by :func:`tied_operand`,
which accepts only what ties explain exactly: a grouping (finest first, as :func:`attacks.gates.candidate_groupings`;
not ``"whole-channel"``) and a score (the value, ``|x|``, ``-x``) under which, in every group,

1. the winners (non-zero outputs) are exactly the elements whose score is above a threshold (the smallest winner's
   score strictly above the largest loser's: ``>=`` keeps every tied unit), with a winner and a loser in each;
2. one ``k >= 1`` lies between the count less the winners tied at the smallest winning score, plus one, and the
   count: the count varies only by the ties.

Where no grouping and score pass so, a second pass reads a gate on a quantized score (``h · (q >= t)`` with ``q =
round(2h) / 2`` and ``t`` a quantile or the k-th of ``q``: the ties are in ``q``, not in ``h``, and where all of a
group's ``q`` tie at ``t`` it keeps every unit): rule 1 holds, but a group may have no loser, a group all 0 no
winner, and rule 2 may be met by the ties of a tensor a selection ranked (``q``) rather than the score's own — one
``k`` whose k-th largest ``q`` in every group is at most the smallest winner's and above the largest loser's (an
element of ``h`` equal to 0 is then neither: kept or not, its output is 0). That pass runs after the strict one,
so every gate the strict pass reads keeps its reading.

Its relaxation (:func:`attacks.gates.relaxed_gate`) puts each group's threshold midway between the smallest winner
and the largest loser of the gate's own output (one spread below the smallest winner in a group with no loser),
so its hard limit is the selection that call made, ties included.
Not used by the layer probe: on a tied batch it can read a per-channel gate as a finer grouping (a ``"row"`` top-3),
and the probe's reading decides what BPDA acts on. This module never imports ``kwta_robust``.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from attacks.gate_screen import ScreenMemo, screen
from attacks.gates import (GateFit, candidate_groupings, gate_candidates, group_rows, mask_as_gate, ordered_fraction,
                           true_fraction, winner_loser_extremes, zeroes_some)

#: The scores tried, in order, by the name :attr:`attacks.gates.GateFit.score` gives them.
SCORES: tuple[str, ...] = ("value", "magnitude", "smallest")


def _scored(rows: Tensor, score: str) -> Tensor:
    return rows.abs() if score == "magnitude" else -rows if score == "smallest" else rows


def tied_fit(x: Tensor, out: Tensor, ties: Sequence[Tensor] = ()) -> GateFit | None:
    """The fit of ``out`` (``x · mask``, ``[N, ...]`` like ``x``) as a top-k gate of ``x`` whose count varies only
    by ties at its threshold (see the module docstring), ``k`` the smallest count the ties allow in every group;
    ``None`` where no grouping and score explain it so. ``ties``: tensors shaped like ``x`` that a selection ranked
    (a quantized score ``round(2h) / 2``), whose ties may explain the count where ``x`` has none."""
    if not x.is_floating_point() or x.ndim < 2 or not zeroes_some(x, out):  # all zero: no group has a winner
        return None
    return _tied_groupings(x, out, ties)


def screened_tied_read(x: Tensor, out: Tensor, may_be_mask: bool, ties: Sequence[Tensor] = (),
                       memo: ScreenMemo | None = None) -> tuple[GateFit, bool] | None:
    """:func:`tied_fit` of ``out`` on ``x`` — or, where ``may_be_mask``, of the gate its 0/1 mask makes
    (:func:`attacks.gates.mask_as_gate`) — with whether it was the mask, as :func:`tied_operand` reads one operand,
    with one host read before the groupings (:func:`attacks.gate_screen.screen`, mask_as_gate's and tied_fit's tests
    stacked; they took up to six). Where not ``may_be_mask`` a 0/1 ``out`` is read as a gate itself, as the plain
    reading does (``barred_mask="as-gate"``). ``memo``: the screen's numbers of a pair the plain reading screened
    already, with no read (:class:`attacks.gate_screen.ScreenMemo`)."""
    if out.shape != x.shape or not x.is_floating_point() or not out.is_floating_point():
        return None
    return screen(x, out, lambda x, gated: _tied_groupings(x, gated, ties), may_be_mask, barred_mask="as-gate",
                  memo=memo)


def _tied_groupings(x: Tensor, out: Tensor, ties: Sequence[Tensor] = ()) -> GateFit | None:
    """:func:`tied_fit` past its tests that ``out`` is ``x · mask`` with something zeroed and something kept: first
    with a winner and a loser in every group and the ties of the score itself (rule 2 of the module docstring), then
    as :func:`_tied_k` allows (groups that keep everything, all-zero groups, the ties of a ranked tensor)."""
    for keep_all in (False, True):
        for grouping in candidate_groupings(x.ndim):
            if grouping == "whole-channel":
                continue
            rows, win = group_rows(x, grouping), group_rows(out, grouping) != 0
            counts = win.sum(dim=1)
            if not keep_all and (int(counts.min()) < 1 or int(counts.max()) >= rows.shape[1]):
                continue
            tie_rows = [group_rows(t.detach(), grouping) for t in ties if t.shape == x.shape] if keep_all else []
            for score in SCORES:
                scores = _scored(rows, score)
                smallest_winner, largest_loser = winner_loser_extremes(scores, win)
                if not bool((smallest_winner > largest_loser).all()):
                    continue
                if keep_all:
                    found = _tied_k(rows, win, [(scores, False)] + [(_scored(t, score), True) for t in tie_rows])
                    if found is None:
                        continue
                    k, counts = found
                else:
                    tied = (win & (scores == smallest_winner[:, None])).sum(dim=1)
                    k = int((counts - tied + 1).max())
                    if k > int(counts.min()):
                        continue
                fit = GateFit(grouping=grouping, group_size=int(rows.shape[1]), groups=int(rows.shape[0]), k=k,
                              k_min=int(counts.min()), k_max=int(counts.max()),
                              k_constant_fraction=true_fraction(counts == k),
                              ordered_fraction=ordered_fraction(rows, win),
                              magnitude_ordered_fraction=ordered_fraction(rows.abs(), win),
                              smallest_ordered_fraction=ordered_fraction(-rows, win))
                if fit.score == score:
                    return fit
    return None


def _tied_k(rows: Tensor, win: Tensor, tie_scores: Sequence[tuple[Tensor, bool]]) -> tuple[int, Tensor] | None:
    """``k`` and the groups' counts of winners (``[G]``, groups with a winner) where one of ``tie_scores``
    (``[G, S]`` like ``rows``: the ranked score itself, then each ranked tensor) explains ``win`` as a ``>=`` top-k
    by its ties: one ``k`` whose k-th largest tie score in every group is at most the smallest winner's and above
    the largest loser's — the gate keeps every unit tied with its k-th, all of a group where all tie (``k`` up to
    the group size: a group with no loser). A group with no winner must be all 0 (it shows nothing). Each tie score
    comes with whether a unit of ``x`` equal to 0 is neither winner nor loser (0 whether kept or not): so under a
    ranked tensor, whose ties the zeros of ``x`` do not share; under the score itself they are losers, or a ReLU of
    a tensor with zeros would read as a top-k whose k-th ties at 0."""
    live = win.any(dim=1)
    if not bool(live.any()) or bool((rows[~live] != 0).any()):
        return None
    rows, win = rows[live], win[live]
    for ts, zeros_unknown in tie_scores:
        ts = ts[live]
        smallest_winner = winner_loser_extremes(ts, win)[0]
        largest_loser = winner_loser_extremes(ts, win | (rows == 0) if zeros_unknown else win)[1]
        if not bool((smallest_winner > largest_loser).all()):
            continue
        k = int((ts > smallest_winner[:, None]).sum(dim=1).max()) + 1
        if k <= int((ts > largest_loser[:, None]).sum(dim=1).min()):
            return k, win.sum(dim=1)
    return None


def tied_operand(result: object, operands: Sequence[object], ranked: Sequence[Tensor], screened: bool = False,
                 memo: ScreenMemo | None = None) -> tuple[Tensor, Tensor, tuple[GateFit, bool]] | None:
    """As :func:`attacks.gates.gated_operand`, read by :func:`tied_fit`: the tensor ``result`` gates — an operand of
    the call that made it (the gate or its 0/1 mask: :func:`attacks.gates.mask_as_gate`), then a tensor a selection
    ranked (``ranked``, the gate itself) — with ``result`` in its shape, the fit and whether ``result`` is the
    mask; ``None`` when none is gated so. ``screened``: each operand read by :func:`screened_tied_read` (the same
    answers, one host read where the plain tests took up to six: BPDA's watch, :mod:`attacks.gate_screen`). The
    ranked tensors shaped like an operand are its ``ties`` (:func:`tied_fit`). ``memo``: see
    :func:`screened_tied_read`."""
    for x, shaped, may_be_mask in gate_candidates(result, operands, ranked):
        out = shaped.detach()
        ties = [r.detach() for r in ranked if r is not x and r.shape == x.shape and r.is_floating_point()]
        if screened:
            found = screened_tied_read(x.detach(), out, may_be_mask, ties, memo)
            if found is not None:
                return x, shaped, found
            continue
        gated = mask_as_gate(x.detach(), out) if may_be_mask else None
        fit = tied_fit(x.detach(), out if gated is None else gated, ties)
        if fit is not None:
            return x, shaped, (fit, gated is not None)
    return None
