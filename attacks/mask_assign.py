"""A top-k gate written as an item assignment: ``h[h < kth] = 0`` (``kth = h.topk(k, dim=1).values[:, -1:]``).

A kWTA is often written in place inside a ``forward``: ``h = h.clone(); h[h < kth] = 0`` (on a copy of the tensor a
selection ranked), or ``h[h < kth] = 0`` on that tensor itself (Xiao, Zhong & Zheng, ICLR 2020, write their
``Sparsify`` modules out of place; the in-place form is a common rewrite). ``Tensor.__setitem__`` returns ``None``,
so the gate shows only in the tensor it wrote, ``args[0]`` after the call: :func:`zeroing_assignment` tells such a
call (a boolean mask shaped like the tensor, the value a Python ``0`` or ``0.0``), which
:func:`attacks.gates.scattered` then hands on as the tensor made, to be read as a gate like ``h.masked_fill_(h <
kth, 0)``'s result. On a copy the gate is of the ranked tensor; on the ranked tensor itself (or a view of its
memory: ``f = h.flatten(1)`` ranked, ``h`` assigned) the values it gates are gone after the call, so
:func:`copy_before` keeps a copy of them made just before it (a copy that autograd records: BPDA's relaxation then
reaches the gradient of the values the gate read). Anything else — a fill other than 0, integer indices, a tensor
of values (:func:`attacks.gates.scattered` reads those as a scatter) — is no such call. This module never imports
``kwta_robust``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor


def zeroing_assignment(func: Callable[..., Any], args: tuple) -> bool:
    """Whether ``func(*args)`` is ``t[mask] = 0``: ``Tensor.__setitem__`` on a floating-point strided ``t`` ``[N,
    ...]`` with a boolean tensor ``mask`` of ``t``'s shape and the Python number ``0`` (or ``0.0``) as the value.
    Told from shapes and types only (no host–device synchronisation)."""
    if func is not Tensor.__setitem__ or len(args) != 3:
        return False
    target, mask, value = args
    return isinstance(target, Tensor) and target.is_floating_point() and target.ndim >= 2 \
        and target.layout == torch.strided \
        and isinstance(mask, Tensor) and mask.dtype == torch.bool \
        and mask.shape == target.shape and type(value) in (int, float) and value == 0


def copy_before(func: Callable[..., Any], args: tuple, ranked: Iterable[Tensor]) -> Tensor | None:
    """A copy of ``args[0]`` made before a :func:`zeroing_assignment` writes it, where its memory is that of a tensor
    a selection ranked (``ranked``: the same storage, the tensor itself or a view of it) — in that tensor's shape
    where both are contiguous views of the same elements (``c[(h < kth).view_as(c)] = 0`` of ``h = c.flatten(1)``:
    read as the gate of ``h``, as ``c.clone().masked_fill_(…)`` is); ``None`` otherwise (on a copy of the ranked
    tensor the gate reads the ranked tensor, which the call leaves as it was)."""
    if not zeroing_assignment(func, args):
        return None
    target = args[0]
    storage = target.untyped_storage().data_ptr()
    shared = [r for r in ranked if isinstance(r, Tensor) and r.layout == torch.strided
              and r.untyped_storage().data_ptr() == storage]
    if not shared:
        return None
    alike = next((r for r in shared if r.data_ptr() == target.data_ptr() and r.numel() == target.numel()
                  and r.is_contiguous() and target.is_contiguous()), None)
    return target.clone() if alike is None else target.clone().view(alike.shape)
