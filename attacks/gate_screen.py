"""A gate read with fewer host–device synchronisations, for BPDA's inline-gate watch (:mod:`attacks.inline_gates`)
and its reading of a module gate (:mod:`attacks.bpda_wrap`).

While a module's ``forward`` runs under BPDA with a selection made (``topk``, ``quantile``, …), every later result is
read as a possible top-k gate of its operands (:func:`attacks.gates.gated_operand`), on every attack step. The plain
read (:func:`attacks.gates.read_gate`) takes each of its verdicts to the host on its own — is ``out`` a 0/1 mask
(four ``bool``), ``x · mask`` (an ``int`` count), something zeroed (a ``bool``) — and on CUDA each such read waits
for the device. :func:`screen` computes those numbers on the device — for ``out`` read as the gate and for the gate
its 0/1 mask would make — takes them to the host in one ``tolist`` and returns what is left to fit: ``None`` for a
result that is no gate, with that one synchronisation. Two readers share it, their fits and one answer apart:

* :func:`screened_read`, :func:`attacks.gates.read_gate`'s answer: the passing gate fitted by
  :func:`attacks.gates.fit_groupings`, as :func:`attacks.gates.infer_grouping` would run it, with one
  synchronisation per grouping tried (:class:`attacks.gate_fits_batched.PairFits`; the whole-channel try and the
  grouping after it one for both); a 0/1 mask where only a gate itself counts (``may_be_mask`` false: a tensor a
  selection ranked) is ``None``, as :func:`attacks.gates.gated_operand` drops that answer (``barred_mask="none"``);
* :func:`attacks.tied_gates.screened_tied_read`, :func:`attacks.tied_gates.tied_operand`'s plain reading: the gate
  fitted by the ties that explain its count; there a 0/1 tensor where only a gate counts is read as that gate
  itself, since the plain reading makes no mask of it (``barred_mask="as-gate"``).

One watched result is read by both in turn (the plain reading, then, where it finds no gate, the tied one) on the
same candidates: a :class:`ScreenMemo` keeps each pair's numbers, so a pair screened again reads nothing, and the
fits behind a reading, which :func:`attacks.one_winner.one_winner_read` looks up rather than making again. A
candidate that is its operand's own memory in its shape (``g.view_as(h)`` of a gate ``g`` read already, against
``g``) zeroes nothing and is screened out with no read (:func:`same_tensor`).

Two answers the screen gives without a fit are exact too: a result with no non-zero element (every grouping then
counts ``k = 0`` winners, below the ``1 <= k`` a gate needs, :func:`attacks.gates.threshold_fit` needs a count of at
least one, and :func:`attacks.tied_gates.tied_fit` something kept), and a 0/1 mask barred as above. This module
never imports ``kwta_robust``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from attacks.gate_fits_batched import PairFits, batched_threshold_fit
from attacks.gates import MIN_MASK_AGREEMENT, GateFit, fit_groupings, read_gate

#: What :func:`screen` does with a 0/1 mask where ``may_be_mask`` is false: no gate (``"none"``), or ``out`` read
#: as a gate itself (``"as-gate"``).
BARRED_MASKS: tuple[str, ...] = ("none", "as-gate")
#: ``fit(x, gated)``: the fit of a gate that passed :func:`screen` (``[N, ...]`` both), or ``None``.
ScreenedFit = Callable[[Tensor, Tensor], "GateFit | None"]
#: A reading :func:`screen` returns: the fit, and whether ``out`` was the 0/1 mask of the gate fitted.
Reading = tuple[GateFit, bool]


def same_tensor(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same values because they are the same memory — one storage, offset, sizes
    and strides (``Tensor.is_set_to``), one dtype and version (nothing written since) — told without reading a value
    (no host–device synchronisation). ``False`` for inference tensors, which keep no version, and for other layouts
    than strided."""
    return a.dtype == b.dtype and a.device == b.device and a.layout == b.layout == torch.strided \
        and not a.is_inference() and not b.is_inference() and a._version == b._version and a.is_set_to(b)


class ScreenMemo:
    """What the readings of one result took to the host, kept for its later readings (one call of
    :class:`attacks.inline_gates.InlineGates`' watch, not longer): :func:`screen`'s numbers per pair ``(x, out)``
    — the plain reading (:func:`screened_read`) and then the tied one (:func:`attacks.tied_gates.screened_tied_read`)
    screen the same candidates, the second time with no read — and, per reading :func:`screened_read` returned, the
    fit of each grouping it tried, which :func:`attacks.one_winner.one_winner_read` looks up instead of fitting
    again. A pair is found again by :func:`same_tensor` and by the versions both had when read (a view kept here
    shares its tensor's version, so :func:`same_tensor` alone cannot tell a write since: a pair written in place
    is read again; inference tensors, with no version, are not kept); the memo holds its tensors, so their memory
    is not reused by other tensors while it lives."""

    def __init__(self) -> None:
        self._numbers: list[tuple[Tensor, Tensor, tuple[int, int], list[int]]] = []
        self._fits: list[tuple[Reading, dict[str, GateFit | None]]] = []

    def numbers(self, x: Tensor, out: Tensor, read: Callable[[], list[int]]) -> list[int]:
        """The numbers ``read()`` gives for ``(x, out)``, read once per pair."""
        for seen_x, seen_out, versions, numbers in self._numbers:
            if same_tensor(seen_x, x) and same_tensor(seen_out, out) and versions == (x._version, out._version):
                return numbers
        numbers = read()
        if not x.is_inference() and not out.is_inference():  # no version to tell a later write by
            self._numbers.append((x, out, (x._version, out._version), numbers))
        return numbers

    def keep_fits(self, reading: Reading, fits: dict[str, GateFit | None]) -> None:
        """Keep the fits by grouping (:class:`attacks.gate_fits_batched.PairFits`) behind ``reading``."""
        self._fits.append((reading, fits))

    def fits_of(self, reading: object) -> dict[str, GateFit | None]:
        """The fits by grouping behind ``reading`` (the very object :func:`screened_read` returned), else none."""
        return next((fits for kept, fits in self._fits if kept is reading), {})


def screen(x: Tensor, out: Tensor, fit: ScreenedFit, may_be_mask: bool = True, barred_mask: str = "none",
           memo: ScreenMemo | None = None) -> Reading | None:
    """``fit`` of ``out`` on ``x`` (both floating point, ``[N, ...]``, the same shape) — or of the gate its 0/1 mask
    makes (:func:`attacks.gates.mask_as_gate`: all 0/1, ones and zeros both present, not ones only where ``x`` is
    1) — with whether it was the mask; ``None`` where one host read of stacked numbers says it is no ``x · mask``
    (:data:`attacks.gates.MIN_MASK_AGREEMENT`) zeroing something and keeping something, or ``x`` has fewer than 2
    dims or no element. ``may_be_mask`` false: a mask is no gate (``barred_mask="none"``) or ``out`` read as one
    itself (``"as-gate"``). ``out`` that is ``x``'s own memory (:func:`same_tensor`: a view of ``x`` in its shape)
    zeroes nothing: ``None`` with no read. ``memo``: the numbers read once per pair (:class:`ScreenMemo`)."""
    if barred_mask not in BARRED_MASKS:
        raise ValueError(f"barred_mask {barred_mask!r} is unknown; use one of {', '.join(BARRED_MASKS)}")
    if x.ndim < 2 or x.numel() == 0 or same_tensor(out, x):
        return None
    numbers = _numbers(x, out) if memo is None else memo.numbers(x, out, lambda: _numbers(x, out))
    binary, n_ones, ones_on_ones, agree, zeroed, kept, mask_agree, mask_zeroed, mask_kept = numbers
    mask = bool(binary and 0 < n_ones < x.numel() and ones_on_ones < n_ones)
    if mask and not may_be_mask:
        if barred_mask == "none":
            return None
        mask = False
    if mask:
        agree, zeroed, kept = mask_agree, mask_zeroed, mask_kept
    if agree / x.numel() < MIN_MASK_AGREEMENT or not zeroed or not kept:
        return None
    found = fit(x, torch.where(out == 1, x, torch.zeros_like(x)) if mask else out)
    return None if found is None else (found, mask)


def _numbers(x: Tensor, out: Tensor) -> list[int]:
    """:func:`screen`'s numbers, in one host read: mask_as_gate's tests (all 0/1; how many ones, how many of them on
    ones of x); then, of out as the gate and of the gate torch.where(ones, x, 0) its mask makes (x or NaN at the
    ones, 0 elsewhere): mask_agreement's count, how many non-zero elements of x it zeroes and how many it keeps."""
    ones, zero, nonzero_x = out == 1, out == 0, x != 0
    return torch.stack([
        (ones | zero).all(), ones.sum(), (ones & (x == 1)).sum(), ((out == x) | zero).sum(), (zero & nonzero_x).sum(),
        (~zero).sum(), ((x == x) | ~ones).sum(), (~ones & nonzero_x).sum(), (ones & nonzero_x).sum()]).tolist()


def screened_read(x: Tensor, out: Tensor, known_gate: bool = False, may_be_mask: bool = True,
                  memo: ScreenMemo | None = None) -> Reading | None:
    """:func:`attacks.gates.read_gate` of ``out`` (a gate's output, or its 0/1 mask) on ``x`` (both ``[N, ...]``,
    the same shape) with one host–device synchronisation before :func:`attacks.gates.fit_groupings` (:func:`screen`;
    none where the shapes say no, or ``memo`` holds the pair's numbers); ``None`` also for a 0/1 mask when not
    ``may_be_mask``. Inputs the plain read would handle in a way not mirrored here (shapes or dtypes that differ) go
    to it unchanged. ``memo`` (:class:`ScreenMemo`) also keeps the fit of each grouping tried behind the reading."""
    if out.shape != x.shape or not x.is_floating_point() or not out.is_floating_point():
        found = read_gate(x, out, known_gate)
        return None if found is not None and found[1] and not may_be_mask else found
    pairs: list[PairFits] = []

    def fit(x: Tensor, gated: Tensor) -> GateFit | None:
        pairs.append(PairFits(x, gated))
        return fit_groupings(x, gated, known_gate, pairs[-1].fit_of, batched_threshold_fit)

    reading = screen(x, out, fit, may_be_mask, memo=memo)
    if memo is not None and reading is not None:
        memo.keep_fits(reading, pairs[-1].fits)
    return reading
