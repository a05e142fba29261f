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
``kwta_robust``. :func:`zeroing_in_place` tells the other in-place forms read the same way against such a copy:
``h.mul_(h >= kth)``, ``h *= h >= kth``, ``h.masked_fill_(h < kth, 0)`` on the ranked tensor (each returns it, so
BPDA's inline watch relaxes it in place as it relaxes the item assignment: :mod:`attacks.inline_gates`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

#: In-place calls that zero a tensor by a mask (:func:`zeroing_in_place`), besides ``Tensor.__setitem__``.
_ZEROING_METHODS = frozenset({Tensor.mul_, Tensor.__imul__, Tensor.masked_fill_})


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


def zeroing_in_place(func: Callable[..., Any], args: tuple, kwargs: dict | None = None) -> bool:
    """Whether ``func(*args)`` zeroes elements of ``args[0]`` in place by a mask of its shape: a
    :func:`zeroing_assignment` ``t[mask] = 0``, ``t.masked_fill_(mask, 0)`` (a boolean ``mask``, the Python number
    ``0``), or ``t.mul_(mask)`` / ``t *= mask`` (a boolean or floating-point ``mask``: ``h.mul_(h >= kth)``), ``t``
    a floating-point strided tensor ``[N, ...]``. Told from shapes and types only (no host–device
    synchronisation); whether the mask is a top-k gate is read after the call."""
    if zeroing_assignment(func, args):
        return True
    if kwargs or len(args) < 2 or func not in _ZEROING_METHODS:
        return False
    target, mask = args[0], args[1]
    if not (isinstance(target, Tensor) and target.is_floating_point() and target.ndim >= 2
            and target.layout == torch.strided and isinstance(mask, Tensor) and mask.shape == target.shape):
        return False
    if func is Tensor.masked_fill_:
        return len(args) == 3 and mask.dtype == torch.bool and type(args[2]) in (int, float) and args[2] == 0
    return len(args) == 2 and (mask.dtype == torch.bool or mask.is_floating_point())


def copy_before(func: Callable[..., Any], args: tuple, ranked: Iterable[Tensor],
                kwargs: dict | None = None) -> Tensor | None:
    """A copy of ``args[0]`` made before a :func:`zeroing_in_place` call writes it, where its memory is that of a tensor
    a selection ranked (``ranked``: the same storage, the tensor itself or a view of it) — in that tensor's shape
    where both are contiguous views of the same elements (``c[(h < kth).view_as(c)] = 0`` of ``h = c.flatten(1)``:
    read as the gate of ``h``, as ``c.clone().masked_fill_(…)`` is); ``None`` otherwise (on a copy of the ranked
    tensor the gate reads the ranked tensor, which the call leaves as it was)."""
    if not zeroing_in_place(func, args, kwargs):
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
