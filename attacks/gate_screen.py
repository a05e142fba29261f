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
  synchronisation per grouping tried (:mod:`attacks.gate_fits_batched`); a 0/1 mask where only a gate itself
  counts (``may_be_mask`` false: a tensor a selection ranked) is ``None``, as :func:`attacks.gates.gated_operand`
  drops that answer (``barred_mask="none"``);
* :func:`attacks.tied_gates.screened_tied_read`, :func:`attacks.tied_gates.tied_operand`'s plain reading: the gate
  fitted by the ties that explain its count; there a 0/1 tensor where only a gate counts is read as that gate
  itself, since the plain reading makes no mask of it (``barred_mask="as-gate"``).

Two answers the screen gives without a fit are exact too: a result with no non-zero element (every grouping then
counts ``k = 0`` winners, below the ``1 <= k`` a gate needs, :func:`attacks.gates.threshold_fit` needs a count of at
least one, and :func:`attacks.tied_gates.tied_fit` something kept), and a 0/1 mask barred as above. This module
never imports ``kwta_robust``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from attacks.gate_fits_batched import batched_gate_fit, batched_threshold_fit
from attacks.gates import MIN_MASK_AGREEMENT, GateFit, fit_groupings, read_gate

#: What :func:`screen` does with a 0/1 mask where ``may_be_mask`` is false: no gate (``"none"``), or ``out`` read
#: as a gate itself (``"as-gate"``).
BARRED_MASKS: tuple[str, ...] = ("none", "as-gate")
#: ``fit(x, gated)``: the fit of a gate that passed :func:`screen` (``[N, ...]`` both), or ``None``.
ScreenedFit = Callable[[Tensor, Tensor], "GateFit | None"]


def screen(x: Tensor, out: Tensor, fit: ScreenedFit, may_be_mask: bool = True,
           barred_mask: str = "none") -> tuple[GateFit, bool] | None:
    """``fit`` of ``out`` on ``x`` (both floating point, ``[N, ...]``, the same shape) — or of the gate its 0/1 mask
    makes (:func:`attacks.gates.mask_as_gate`: all 0/1, ones and zeros both present, not ones only where ``x`` is
    1) — with whether it was the mask; ``None`` where one host read of stacked numbers says it is no ``x · mask``
    (:data:`attacks.gates.MIN_MASK_AGREEMENT`) zeroing something and keeping something, or ``x`` has fewer than 2
    dims or no element. ``may_be_mask`` false: a mask is no gate (``barred_mask="none"``) or ``out`` read as one
    itself (``"as-gate"``)."""
    if barred_mask not in BARRED_MASKS:
        raise ValueError(f"barred_mask {barred_mask!r} is unknown; use one of {', '.join(BARRED_MASKS)}")
    if x.ndim < 2 or x.numel() == 0:
        return None
    ones, zero, nonzero_x = out == 1, out == 0, x != 0
    # mask_as_gate's tests (all 0/1; how many ones, how many of them on ones of x); then, of out as the gate and of
    # the gate torch.where(ones, x, 0) its mask makes (x or NaN at the ones, 0 elsewhere): mask_agreement's count,
    # how many non-zero elements of x it zeroes and how many it keeps
    binary, n_ones, ones_on_ones, agree, zeroed, kept, mask_agree, mask_zeroed, mask_kept = torch.stack([
        (ones | zero).all(), ones.sum(), (ones & (x == 1)).sum(), ((out == x) | zero).sum(), (zero & nonzero_x).sum(),
        (~zero).sum(), ((x == x) | ~ones).sum(), (~ones & nonzero_x).sum(), (ones & nonzero_x).sum()]).tolist()
    mask = bool(binary and 0 < n_ones < x.numel() and ones_on_ones < n_ones)
    if mask and not may_be_mask:
        if barred_mask == "none":
            return None
        mask = False
    if mask:
        agree, zeroed, kept = mask_agree, mask_zeroed, mask_kept
    if agree / x.numel() < MIN_MASK_AGREEMENT or not zeroed or not kept:
        return None
    found = fit(x, torch.where(ones, x, torch.zeros_like(x)) if mask else out)
    return None if found is None else (found, mask)


def screened_read(x: Tensor, out: Tensor, known_gate: bool = False,
                  may_be_mask: bool = True) -> tuple[GateFit, bool] | None:
    """:func:`attacks.gates.read_gate` of ``out`` (a gate's output, or its 0/1 mask) on ``x`` (both ``[N, ...]``,
    the same shape) with one host–device synchronisation before :func:`attacks.gates.fit_groupings` (:func:`screen`;
    none where the shapes say no); ``None`` also for a 0/1 mask when not ``may_be_mask``. Inputs the plain read
    would handle in a way not mirrored here (shapes or dtypes that differ) go to it unchanged."""
    if out.shape != x.shape or not x.is_floating_point() or not out.is_floating_point():
        found = read_gate(x, out, known_gate)
        return None if found is not None and found[1] and not may_be_mask else found
    return screen(x, out, lambda x, gated: fit_groupings(x, gated, known_gate, batched_gate_fit,
                                                          batched_threshold_fit), may_be_mask)
