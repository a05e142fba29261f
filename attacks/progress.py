"""Per-sample progress of an iterative attack, kept without waiting for the device.

The iterative attacks (PGD, APGD, CW-L2) stop computing a sample once it is broken: they keep its first
misclassified iterate and drop it from the batch. Dropping it means reading on the host which samples are broken,
and every such read waits until the device has run every queued kernel. On the CPU that wait is free and the
loops read after every step, so no broken sample is computed again. On an accelerator a small model's step is a
few dozen short kernels, its time mostly the host launching them (launch-bound), and a read every step stalls
that pipeline once or more per step. There the loops read every :data:`ACCELERATOR_CHECK_STEPS` steps; in
between the broken samples stay in the batch (their iterates keep moving, and are computed and counted as
queries) while :func:`record_first` keeps each one's first misclassified iterate on the device.

Each sample's trajectory is its own (the models are evaluated per sample: eval-mode BatchNorm, per-sample
kWTA), so the interval changes which rows share a batch, not what any sample's attack does; only the arithmetic of
a batched kernel, which may round differently for another batch size, can differ (as it does between devices).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Steps between two reads of the per-sample progress on an accelerator (1 on the CPU).
ACCELERATOR_CHECK_STEPS: int = 8


def check_interval(device: torch.device) -> int:
    """Steps between two host reads of which samples are broken: 1 on the CPU, :data:`ACCELERATOR_CHECK_STEPS`
    on any other device (CUDA, MPS, XPU)."""
    return 1 if device.type == "cpu" else ACCELERATOR_CHECK_STEPS


def record_first(out: Tensor, taken: Tensor, rows: Tensor, hit: Tensor, candidate: Tensor) -> None:
    """Keep each row's first hit: ``out[rows[i]] = candidate[i]`` where ``hit[i]`` and ``taken[rows[i]]`` is still
    false, then mark the hit rows taken; in place, without a host synchronisation (gathers, ``torch.where`` and
    scatters by index, no boolean indexing).

    Shapes: ``out`` ``[N, ...]`` and ``taken`` ``[N]`` (bool) over every sample; ``rows`` ``[A]`` (int64, distinct),
    ``hit`` ``[A]`` (bool) and ``candidate`` ``[A, ...]`` over the samples in the batch.
    """
    new = hit & ~taken[rows]
    out[rows] = torch.where(new.view(-1, *([1] * (candidate.ndim - 1))), candidate.to(out.dtype), out[rows])
    taken[rows] = taken[rows] | hit
