"""Seeded small noise that breaks ties in a probe batch, so a top-k gate they hide shows its constant count.

A constant image background (MNIST's black pixels) makes hundreds of equal values after a convolution; a top-k
gate written with ``>=`` on the k-th value keeps every unit tied with it, so the counted winners vary per sample
and no grouping shows a constant ``k``. The layer probe repeats such a call on its input moved by
:data:`TIE_JITTER` of its std (:mod:`kwta_robust.detect`), and the selection watch repeats a forward whose
selections built no readable gate on the probe batch so moved (:mod:`kwta_robust.detect_selections`): what a gate
is does not depend on the batch it is probed with.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: A call whose output masks its input without a constant count of winners is probed once more on the input moved
#: by this fraction of its std (ties in the probe batch can hide a gate: ``_LeafProbe._gate_fit`` in
#: :mod:`kwta_robust.detect`; a forward's inline gate, :mod:`kwta_robust.detect_selections`). Large enough that
#: float32 rounding leaves few ties: at 1e-5 of the std, hundreds of equal background values near 1.0 fall on a few
#: hundred representable numbers and still tie (the zoo's nupic CNN on MNIST); small against the ± 1 std shifts
#: that tell a gate from an element-wise threshold.
TIE_JITTER = 1e-2


def spread(x: Tensor) -> float:
    """The std of all of ``x``'s elements (0 for fewer than two)."""
    return float(x.std()) if x.numel() > 1 else 0.0


def nudged(x: Tensor, fraction: float, seed: int) -> Tensor | None:
    """``x`` ``[B, ...]`` moved by ``fraction`` of its std times seeded Gaussian noise (its own generator on ``x``'s
    device: not the probe's stream, so other findings keep theirs); ``None`` when ``x`` has no spread."""
    std = spread(x)
    if not std > 0:
        return None
    own = torch.Generator(device=x.device).manual_seed(seed)
    return x + (fraction * std) * torch.randn(x.shape, generator=own, device=x.device, dtype=x.dtype)
