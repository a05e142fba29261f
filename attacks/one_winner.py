"""Operations that pick one winner per group, after which a gate of one winner per group is looked for.

A gate keeping one winner per group is written without torch's top-k operations in two common ways:

* a one-hot of an ``argmax`` (or ``argmin``) times the input: ``F.one_hot(h.argmax(1), C).permute(0, 3, 1, 2) · h``;
* local winner-take-all (LWTA; Srivastava et al., NeurIPS 2013; Panousis et al., NeurIPS 2021, "Local competition
  and stochasticity for adversarial robustness"): the input ``h`` ``[B, C, H, W]`` viewed as blocks of ``g``
  channels, ``v = h.view(B, C // g, g, H, W)``, and each block's largest unit kept, ``h · (v == v.amax(2,
  keepdim=True)).view_as(h)`` — or the same with ``torch.max(v, 2)`` (values and indices), ``v.max(2)``, or a mask
  scattered at the indices. Its gate reads as ``"block-<g>"`` with ``k = 1`` (:mod:`attacks.gates`).

``max`` and ``amax`` count only as reductions along a dimension named in the call (``torch.max(v, 2)``,
``v.amax(dim=2)``): ``torch.max(a, b)`` is an element-wise maximum and ``h.max()`` the largest element of the batch,
neither a choice of winners. A global adaptive max-pool (``F.adaptive_max_pool2d(h, 1)``, output size 1 on every
axis, with or without indices; the call of an ``nn.AdaptiveMaxPool2d(1)`` child counts as its caller's) is
``h.amax(dim=(2, 3), keepdim=True)``: one winner per channel, its gate ``h · (h == pooled)`` a ``"channel"`` gate
of ``k = 1``, named in a record with its output size, ``adaptive_max_pool2d(1)`` (:func:`one_winner_op`); with a
larger output size it pools windows, a max-pool of :mod:`attacks.pool_gates`, named ``adaptive_max_pool2d``: a
``forward`` calling both builds two gates of different kinds, which a record keeps apart. The layer
probe (:mod:`kwta_robust.detect_selections`) notes such a call as a selection only where a gate of one winner per
group follows it in the same ``forward``, and BPDA (:mod:`attacks.inline_gates`) relaxes only such a gate after it.
This module never imports ``kwta_robust``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.gate_groupings import block_groupings, candidate_groupings
from attacks.gate_fits_batched import batched_gate_fit
from attacks.gates import GateFit

#: Operations that may pick one winner per group (function and method forms), by the name a record uses (read-only).
ONE_WINNER_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name for name in ("argmax", "argmin", "amax", "max") for fn in (getattr(torch, name), getattr(Tensor, name))})
#: Of those, the ones that pick winners only when reducing along a named dimension (:func:`one_winner_op`).
REDUCING_ALONG_A_DIM: frozenset[str] = frozenset({"amax", "max"})
#: The adaptive max-pools (with or without indices), by the name a record uses for one of windows (read-only): a
#: max-pool (:func:`attacks.pool_gates.max_pool_name`); a global one (:func:`global_pool`) is a one-winner operation
#: whose name adds :data:`GLOBAL_POOL_SUFFIX` (:func:`one_winner_op`).
ADAPTIVE_MAX_POOLS: Mapping[Callable[..., Any], str] = MappingProxyType({
    getattr(F, f"adaptive_max_pool{d}d{suffix}"): f"adaptive_max_pool{d}d"
    for d in (1, 2, 3) for suffix in ("", "_with_indices")})
#: What the name of a global adaptive max-pool adds to :data:`ADAPTIVE_MAX_POOLS`'s (``adaptive_max_pool2d(1)``): the
#: two kinds in one ``forward`` are two selections (records before it named both ``adaptive_max_pool2d``, the global
#: one's entry with a ``gate``: :func:`kwta_robust.selection_entries.is_pool_selection` reads them so).
GLOBAL_POOL_SUFFIX = "(1)"
#: Modules whose ``forward`` is one adaptive max-pool call: the call counts as one of their caller's ``forward``.
ADAPTIVE_POOLING_CHILDREN: tuple[type[nn.Module], ...] = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                                                          nn.AdaptiveMaxPool3d)


def global_pool(args: tuple, kwargs: dict | None) -> bool:
    """Whether an adaptive max-pool called with ``args``/``kwargs`` has output size 1 on every axis (``1``,
    ``(1, 1)``): one winner per channel. ``None`` in a size keeps that axis's input size, so it counts as 1 only
    where that axis is 1 long. (Under a ``TorchFunctionMode`` torch passes the input and size positionally; a direct
    call may name them, ``input=`` and ``output_size=``, and reads alike.)"""
    size = args[1] if len(args) > 1 else (kwargs or {}).get("output_size")
    sizes = size if isinstance(size, (tuple, list)) else (size,)
    x = args[0] if args else (kwargs or {}).get("input")
    x = x if isinstance(x, Tensor) else None
    axes = x.shape[-len(sizes):] if x is not None and len(sizes) <= x.ndim else (None,) * len(sizes)
    return bool(sizes) and all((s == 1 and not isinstance(s, bool)) or (s is None and axis == 1)
                               for s, axis in zip(sizes, axes))


def one_winner_op(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> str | None:
    """The name (:data:`ONE_WINNER_OPS`) of a call of ``func`` on ``args``/``kwargs`` that may pick one winner per
    group, else ``None``: ``argmax``/``argmin`` always; ``max``/``amax`` only along a dimension given as an int or a
    non-empty tuple (not ``torch.max(a, b)``, not ``h.max()``); an adaptive max-pool only where global
    (:func:`global_pool`), named apart from one of windows: ``adaptive_max_pool2d(1)``. (Which tensor it ranks is the
    caller's to check.)"""
    if func in ADAPTIVE_MAX_POOLS:
        return ADAPTIVE_MAX_POOLS[func] + GLOBAL_POOL_SUFFIX if global_pool(args, kwargs) else None
    name = ONE_WINNER_OPS.get(func)
    if name in REDUCING_ALONG_A_DIM:
        dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim")
        if not isinstance(dim, (int, tuple, list)) or isinstance(dim, bool) or dim in ((), []):
            return None
    return name


def one_winner_read(found: tuple[Tensor, Tensor, tuple[GateFit, bool]] | None,
                    fits: Mapping[str, GateFit | None] | None = None,
                    ) -> tuple[Tensor, Tensor, tuple[GateFit, bool]] | None:
    """``found`` (:func:`attacks.gates.gated_operand`'s ``(x, out, (fit, is_mask))``) read as a gate of one winner
    per group (``k = 1``, a constant count, the winners the largest — or smallest — of every group), else ``None``.
    Where its fit has another count, the groupings (:func:`attacks.gates.fit_groupings`' order) are tried again for
    one of ``k = 1``: on ReLU outputs, an LWTA (``[B, C, H, W]``, blocks of 2 channels) whose blocks are mostly all
    zero keeps a constant 6 of 8 along most rows, the first grouping read, and its ``"block-2"`` fit comes later.
    ``fits``: fits of that gate by grouping made already (:meth:`attacks.gate_screen.ScreenMemo.fits_of`: those
    :func:`attacks.gates.fit_groupings` tried for ``found``), not made again. A 0/1 mask read as one (``found``'s
    ``is_mask``: where :func:`attacks.gates.mask_as_gate` is not ``None``, for every reader) makes its gate with no
    host read."""
    if found is None:
        return None
    x, out, (fit, is_mask) = found
    if (fit.k, fit.k_spread) == (1, 0):
        return found
    xd, od = x.detach(), out.detach()
    if od.shape != xd.shape:
        return None
    gate = torch.where(od == 1, xd, torch.zeros_like(xd)) if is_mask else od  # mask_as_gate's, its tests passed
    fits = fits or {}
    for grouping in candidate_groupings(xd.ndim) + block_groupings(xd.shape):
        # the plain gate_fit field for field, in one host read (two where the count is constant) instead of about
        # eight: this runs at every call of an LWTA-like gate, every BPDA step
        one = None if grouping == "whole-channel" else fits[grouping] if grouping in fits else batched_gate_fit(
            xd, gate, grouping)
        if one is not None and (one.k, one.k_spread) == (1, 0) and max(
                one.ordered_fraction, one.smallest_ordered_fraction) == 1.0:
            return x, out, (one, is_mask)
    return None
