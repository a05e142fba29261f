"""Winner-take-all gates built from a max-pool: each window's largest unit passes, the others are zeroed.

Two ways users write a spatial winner-take-all (a sparse code of local maxima) without torch's top-k operations:

* by equality with a max-pool of stride 1, ``h · (h == F.max_pool2d(h, 3, 1, 1))`` (non-maximum suppression: a
  unit passes where it is the largest of the window around it);
* by the max-pool's indices, ``F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2)`` (the "max-unpool"
  sparse code: one winner per 2 × 2 window).

Both keep ``h`` or 0 (``h · mask``) and their 0/1 mask is piecewise constant in ``h``: a gradient attack meets the
same discontinuous gradients as at a kWTA (Tramèr et al., NeurIPS 2020, §5.5). Their count of winners varies with
the input (the first) or their groups are spatial windows (the second), which no grouping of :mod:`attacks.gates`
reads, so BPDA has no smooth relaxation of them; the layer probe notes them (:mod:`kwta_robust.detect_selections`)
so that the ``selections-outside-layers`` flag names them. Written as a module of its own (a leaf called with the
tensor), the layer probe re-calls it under :class:`PoolCalls` and reads it as such a gate, not as a top-k
(:mod:`kwta_robust.detect`: kind ``max-pool-gate``). This module never imports ``kwta_robust``.

An adaptive max-pool pooling windows (``F.adaptive_max_pool2d(h, 2)``, output size > 1) counts as a max-pool too
(:func:`max_pool_name`); a global one (output size 1) picks one winner per channel, a gate BPDA relaxes
(:mod:`attacks.one_winner`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from attacks.gates import MIN_MASK_AGREEMENT
from attacks.one_winner import ADAPTIVE_MAX_POOLS, global_pool

#: The max-pools (``torch.nn.functional``'s, with or without indices), by the name a record uses (read-only).
MAX_POOLS: Mapping[Callable[..., Any], str] = MappingProxyType({
    getattr(F, f"max_pool{d}d{suffix}"): f"max_pool{d}d" for d in (1, 2, 3) for suffix in ("", "_with_indices")})


def max_pool_name(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> str | None:
    """The name a record uses for a call of ``func`` on ``args``/``kwargs`` that max-pools windows: one of
    :data:`MAX_POOLS`, or an adaptive max-pool whose output is not 1 on every axis (a global one is a one-winner
    operation: :func:`attacks.one_winner.one_winner_op`); else ``None``."""
    if func in ADAPTIVE_MAX_POOLS:
        return None if global_pool(args, kwargs) else ADAPTIVE_MAX_POOLS[func]
    return MAX_POOLS.get(func)


def pooled_values(result: Any) -> Tensor | None:
    """The pooled values a max-pool call returned (``result``, or its first element with indices)."""
    values = result[0] if isinstance(result, tuple) and result else result
    return values if isinstance(values, Tensor) and values.is_floating_point() else None


def agreeing(x: Tensor, out: Tensor) -> Tensor:
    """How many elements of ``out`` equal ``x`` or 0 (:func:`attacks.gates.mask_agreement`'s count, a 0-dim tensor
    left on ``x``'s device: no host read)."""
    return ((out == x) | (out == 0)).sum()


def is_pool_gate(result: Any, operands: Sequence[Any], pools: Sequence[tuple[Tensor, Tensor]], *,
                 known_gated: Tensor | None = None) -> bool:
    """Whether ``result`` is a winner-take-all gate built from one of ``pools`` (``(input, pooled values)`` of the
    max-pools called before it in the same ``forward``): ``x · mask`` of one of its ``operands`` or of a pooled input
    ``x`` (shaped like ``result``), zeroing some of ``x``'s non-zero values, whose kept values are all values a pool
    returned while some value it zeroed is none (a loser, the largest of no window). A ReLU of the pooled values
    (``F.relu(F.max_pool2d(h, 2))``) keeps pooled values too, but zeroes only pooled values. ``known_gated``: an
    operand the caller already found ``result`` to be ``x · mask`` of (its :func:`~attacks.gates.mask_agreement` at
    least :data:`~attacks.gates.MIN_MASK_AGREEMENT`), not computed again."""
    if not isinstance(result, Tensor) or not result.is_floating_point() or result.ndim < 2 \
            or result.layout != torch.strided:
        return False
    if not pools:
        return False
    candidates = [a for a in operands if isinstance(a, Tensor)] + [x for x, _ in pools]
    for x in {id(c): c for c in candidates}.values():  # each tensor once (an operand is often the pool's input too)
        if x is result or x.shape != result.shape or not x.is_floating_point() or x.layout != torch.strided:
            continue
        zeroed, blank = (result == 0) & (x != 0), result == 0
        # two host reads at most per candidate (GPU synchronisations: this runs at every gate call of a BPDA step),
        # with no boolean indexing (a data-dependent shape is a read of its own): first whether it is x · mask at
        # all (most candidates are not: the pooled values' isin is skipped there), then "every kept value is a
        # pooled one", isin(result) or 0 everywhere, and "some loser is no pooled value", isin(x) false somewhere
        # zeroed, for every pool at once
        any_zeroed, agree = torch.stack([zeroed.any(), agreeing(x, result) if x is not known_gated
                                         else zeroed.new_zeros((), dtype=torch.long)]).tolist()
        if not any_zeroed or (x is not known_gated and agree / result.numel() < MIN_MASK_AGREEMENT):
            continue
        pooled = torch.stack([read for _, values in pools for read in (
            (torch.isin(result, values) | blank).all(), (torch.isin(x, values) | ~zeroed).all())]).tolist()
        if any(kept_pooled and not losers_pooled for kept_pooled, losers_pooled in zip(pooled[::2], pooled[1::2])):
            return True
    return False


class PoolCalls(TorchFunctionMode):
    """While active, records each max-pool call (:func:`max_pool_name`) on a floating-point tensor in ``pools``:
    ``(name, input, pooled values)``, the form :func:`is_pool_gate` reads (the layer probe re-calls a leaf module
    under it: :mod:`kwta_robust.detect`). Every call's result is returned unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.pools: list[tuple[str, Tensor, Tensor]] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        result = func(*args, **(kwargs or {}))
        name = max_pool_name(func, args, kwargs)
        if name is not None and args and isinstance(args[0], Tensor) and args[0].is_floating_point():
            values = pooled_values(result)
            if values is not None:
                self.pools.append((name, args[0], values))
        return result
