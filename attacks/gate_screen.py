"""A gate read with fewer host–device synchronisations, for BPDA's inline-gate watch (:mod:`attacks.inline_gates`).

While a module's ``forward`` runs under BPDA with a selection made (``topk``, ``quantile``, …), every later result is
read as a possible top-k gate of its operands (:func:`attacks.gates.gated_operand`), on every attack step. The plain
read (:func:`attacks.gates.read_gate`) takes each of its verdicts to the host on its own — is ``out`` a 0/1 mask
(four ``bool``), ``x · mask`` (an ``int`` count), something zeroed (a ``bool``) — and on CUDA each such read waits
for the device. :func:`screened_read` computes those numbers on the device, takes them to the host in one
``tolist`` and returns the same answer: ``None`` for a result that is no gate, with that one synchronisation (a 0/1
mask read where it may stand for its gate: a second, for the numbers of that gate); for a
result that passes, :func:`attacks.gates.fit_groupings`, as :func:`attacks.gates.infer_grouping` would run it, with
one synchronisation per grouping tried (:mod:`attacks.gate_fits_batched`).
Two answers it skips are exact too: a result with no non-zero element (every grouping then counts ``k = 0``
winners, below the ``1 <= k`` a gate needs, and :func:`attacks.gates.threshold_fit` needs a count of at least one),
and a 0/1 mask where only a gate itself counts (``may_be_mask`` false: a tensor a selection ranked,
:func:`attacks.gates.gated_operand` drops that answer). This module never imports ``kwta_robust``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attacks.gate_fits_batched import batched_gate_fit, batched_threshold_fit
from attacks.gates import MIN_MASK_AGREEMENT, GateFit, fit_groupings, read_gate


def screened_read(x: Tensor, out: Tensor, known_gate: bool = False,
                  may_be_mask: bool = True) -> tuple[GateFit, bool] | None:
    """:func:`attacks.gates.read_gate` of ``out`` (a gate's output, or its 0/1 mask) on ``x`` (both ``[N, ...]``,
    the same shape) with one host–device synchronisation before :func:`attacks.gates.fit_groupings` (none where the
    shapes say no, two for a 0/1 mask read as its gate); ``None`` also for a 0/1 mask when not ``may_be_mask``.
    Inputs the plain read would handle in a way not mirrored here (shapes or dtypes that differ) go to it
    unchanged."""
    if out.shape != x.shape or not x.is_floating_point() or not out.is_floating_point():
        found = read_gate(x, out, known_gate)
        return None if found is not None and found[1] and not may_be_mask else found
    if x.ndim < 2 or x.numel() == 0:  # infer_grouping: None, whatever out is
        return None
    ones, zero, nonzero_x = out == 1, out == 0, x != 0
    # mask_as_gate's tests (all 0/1; how many ones, how many of them on ones of x), then mask_agreement's count,
    # whether something is zeroed and whether all is
    binary, n_ones, ones_on_ones, agreeing, zeroed, all_zero = torch.stack([
        (ones | zero).all(), ones.sum(), (ones & (x == 1)).sum(), ((out == x) | zero).sum(), (zero & nonzero_x).any(),
        zero.all()]).tolist()  # the one host read
    mask = bool(binary and 0 < n_ones < x.numel() and ones_on_ones < n_ones)
    if mask and not may_be_mask:
        return None
    if mask:  # of the gate the mask makes, torch.where(ones, x, 0): x or 0 at the ones, 0 elsewhere (a second read)
        agreeing, zeroed, nonzero = torch.stack([((x == x) | ~ones).sum(), (~ones & nonzero_x).any(),
                                                 (ones & nonzero_x).any()]).tolist()
    else:
        nonzero = not all_zero
    if agreeing / x.numel() < MIN_MASK_AGREEMENT or not zeroed or not nonzero:
        return None
    gated = torch.where(ones, x, torch.zeros_like(x)) if mask else out  # attacks.gates.mask_as_gate's gate
    fit = fit_groupings(x, gated, known_gate, batched_gate_fit, batched_threshold_fit)
    return None if fit is None else (fit, mask)
