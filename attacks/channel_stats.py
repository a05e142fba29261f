"""The channel statistics a whole-channel top-k ranks, and which of them a gate's kept channels are read as ranked by.

A channel-wise kWTA keeps, per sample, the ``k`` of ``C`` channels with the largest score (Xiao, Zhong & Zheng, ICLR
2020, ``Sparsify2D_all``: each channel's max; users also rank by the mean, the mean of ``|h|`` or the L2 norm over
the spatial axes). :func:`channel_statistic` computes each score ``[N, C, ...] → [N, C]``; :func:`ranking_statistic`
names the one a gate ranks by, from how many samples each orders (kept channels above the others). On few samples
more than one can order them all — an L2-norm gate on 16 images of a conv with 8 channels is ordered by the
abs-mean too (signed maps), or by the mean (ReLU maps) — and the first of :data:`CHANNEL_STATISTICS` is taken, the
others returned as ties so that the probe's note can say so. (Measured on 5 seeds × 3 sizes × 4 statistics × signed
and ReLU maps: taking the tie with the largest margin between the k-th and (k+1)-th channel instead, by mean, median
or least margin over the samples, read the true statistic less often on one of the two kinds of maps; the relaxed
gradients of the tied statistics have a cosine of 0.98 to the true one's.) This module never imports ``kwta_robust``.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

#: What a ``"whole-channel"`` gate ranks channels by (``Sparsify2D_all``: ``amax``; ``h.abs().mean``, ``h.norm``
#: over H, W), in the order ties are read (``"mean"`` for ``"abs-mean"`` on ReLU outputs).
CHANNEL_STATISTICS: tuple[str, ...] = ("max", "mean", "abs-mean", "l2-norm")


def channel_statistic(x: Tensor, statistic: str) -> Tensor:
    """``[N, C, ...] → [N, C]``: each channel's largest element (``"max"``), mean, mean of ``|x|`` or L2 norm."""
    if statistic not in CHANNEL_STATISTICS:
        raise ValueError(f"unknown channel statistic {statistic!r}; use one of {', '.join(CHANNEL_STATISTICS)}")
    flat = x.flatten(2).abs() if statistic == "abs-mean" else x.flatten(2)
    return flat.amax(dim=2) if statistic == "max" else flat.norm(p=2, dim=2) if statistic == "l2-norm" \
        else flat.mean(dim=2)


def ranking_statistic(ordered: Mapping[str, float]) -> tuple[str, tuple[str, ...]]:
    """The statistic of :data:`CHANNEL_STATISTICS` ordering the kept channels in the largest fraction of samples
    (``ordered``: that fraction per statistic), the first on ties, and the others tied with it (in that order)."""
    statistic = max(CHANNEL_STATISTICS, key=ordered.__getitem__)
    return statistic, tuple(s for s in CHANNEL_STATISTICS if s != statistic and ordered[s] == ordered[statistic])
