"""A top-k gate written in place: ``h[h < kth] = 0`` (``kth = h.topk(k, dim=1).values[:, -1:]``), ``h[rows, idx] = 0``.

A kWTA is often written in place inside a ``forward``: ``h = h.clone(); h[h < kth] = 0`` (on a copy of the tensor a
selection ranked), or ``h[h < kth] = 0`` on that tensor itself (Xiao, Zhong & Zheng, ICLR 2020, write their
``Sparsify`` modules out of place; the in-place form is a common rewrite). ``Tensor.__setitem__`` returns ``None``,
so the gate shows only in the tensor it wrote, ``args[0]`` after the call: :func:`zeroing_assignment` tells such a
call (a boolean mask shaped like the tensor, or integer index tensors ``rows`` ``[B, 1]`` and ``idx`` ``[B, N - k]``
— the losers of ``h.topk(N - k, dim=1, largest=False)`` or ``h.argsort(1)[:, :N - k]`` — the value a Python ``0``,
``0.0`` or ``False``), which :func:`attacks.gates.scattered` then hands on as the tensor made, to be read as a gate
like ``h.masked_fill_(h < kth, 0)``'s result. The values it gates are gone after the call on the ranked tensor itself
(or a view of its memory: ``f = h.flatten(1)`` ranked, ``h`` assigned), and on a tensor no selection ranked (a
channel-wise top-k ranks a statistic ``s`` ``[B, C]`` and zeroes ``h`` ``[B, C, H, W]`` by ``(s >= kth)[:, :, None,
None]``), so :func:`copy_before` keeps a copy of them made just before it (a copy that autograd records: BPDA's
relaxation then reaches the gradient of the values the gate read). Anything else — a fill other than 0, a single
index tensor or indices of one dimension (``h[(h < kth).nonzero(as_tuple=True)] = 0``, still read as ``in_place``
by :mod:`kwta_robust.detect_selections`), a tensor of values (:func:`attacks.gates.scattered` reads those as a
scatter) — is no such call. This module never imports ``kwta_robust``. :func:`zeroing_in_place` tells the other
in-place forms read the same way against such a copy: ``h.mul_(mask)``, ``h *= mask``, ``h.masked_fill_(~mask, 0)``
(keywords too: ``h.masked_fill_(mask=~m, value=0.0)``; ``mask`` of ``h``'s shape or broadcast per sample, ``[B, C,
1, 1]``) and ``h.scatter_(1, idx, 0)`` (each returns ``h``, so BPDA's inline watch relaxes it in place as it relaxes
the item assignment: :mod:`attacks.inline_gates`). ``torch.mul(h, mask, out=h)`` and other calls with ``out=`` are
none: autograd records no such call (its forward raises where the input requires a gradient), so no gradient attack,
BPDA's included, runs through it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

#: In-place calls that zero a tensor by a mask (:func:`zeroing_in_place`), besides ``Tensor.__setitem__``, with the
#: names of their arguments after the tensor (a call with keywords, ``h.masked_fill_(mask=m, value=0.0)``, is read
#: as its positional form).
_ZEROING_METHODS: dict[Callable[..., Any], tuple[str, ...]] = {
    Tensor.mul_: ("other",), Tensor.__imul__: ("other",), Tensor.masked_fill_: ("mask", "value"),
    Tensor.scatter_: ("dim", "index", "value")}


def _zero(value: Any) -> bool:
    """Whether ``value`` is the Python number 0 or ``False`` (``h.masked_fill_(h < kth, False)``, ``h[m] = False``
    write 0 into a floating-point ``h`` as 0 does; :mod:`kwta_robust.mask_uses` reads such a fill alike)."""
    return type(value) in (int, float, bool) and value == 0


def _rows_index(index: Any, target: Tensor) -> bool:
    """Whether ``index`` is a tuple of two or more integer index tensors, the first indexing ``target``'s samples one
    row each (``rows = torch.arange(B)[:, None]``, ``[B, 1]`` or ``[B, n]``: ``t[rows, idx]``, per sample; the 1-D
    indices of ``nonzero(as_tuple=True)`` are none)."""
    return isinstance(index, tuple) and len(index) >= 2 \
        and all(isinstance(i, Tensor) and not i.is_floating_point() and i.dtype != torch.bool for i in index) \
        and index[0].ndim >= 2 and index[0].shape[0] == target.shape[0]


def _zeroable(target: Any) -> bool:
    return isinstance(target, Tensor) and target.is_floating_point() and target.ndim >= 2 \
        and target.layout == torch.strided


def zeroing_assignment(func: Callable[..., Any], args: tuple) -> bool:
    """Whether ``func(*args)`` is ``t[mask] = 0`` — ``Tensor.__setitem__`` on a floating-point strided ``t`` ``[N,
    ...]`` with a boolean tensor ``mask`` of ``t``'s shape and the Python number ``0`` (or ``0.0``) as the value — or
    ``t[rows, idx] = 0`` (integer index tensors, ``rows`` ``[N, 1]`` indexing each sample: the losers of
    ``h.topk(N - k, dim=1, largest=False)`` or ``h.argsort(1)[:, :N - k]`` zeroed). Told from shapes and types only
    (no host–device synchronisation)."""
    if func is not Tensor.__setitem__ or len(args) != 3 or not _zeroable(args[0]) or not _zero(args[2]):
        return False
    target, mask = args[0], args[1]
    return (isinstance(mask, Tensor) and mask.dtype == torch.bool and mask.shape == target.shape) \
        or _rows_index(mask, target)


def _broadcasts(mask: Any, target: Tensor) -> bool:
    """Whether tensor ``mask`` has ``target``'s dims, each its size or 1, the samples' one each: ``[B, C, 1, 1]`` over
    ``[B, C, H, W]`` (a channel-wise top-k's mask, Xiao et al.'s ``Sparsify2D_all`` style) or ``target``'s shape."""
    return isinstance(mask, Tensor) and mask.ndim == target.ndim and mask.shape[0] == target.shape[0] \
        and all(m in (1, t) for m, t in zip(mask.shape, target.shape))


def positional(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> tuple | None:
    """``args`` with the keyword arguments of a :data:`_ZEROING_METHODS` call after them in order
    (``h.masked_fill_(mask=m, value=0.0)`` → ``(h, m, 0.0)``); ``args`` where there are none; ``None`` where a keyword
    is not one of its arguments' names or comes before a positional one left out."""
    if not kwargs:
        return args
    names = _ZEROING_METHODS.get(func, ())
    if not args or set(kwargs) - set(names[len(args) - 1:]):
        return None
    rest = names[len(args) - 1:]
    taken = [n for n in rest if n in kwargs]
    if taken != list(rest[:len(taken)]):
        return None
    return (*args, *(kwargs[n] for n in taken))


def zeroing_in_place(func: Callable[..., Any], args: tuple, kwargs: dict | None = None) -> bool:
    """Whether ``func(*args, **kwargs)`` zeroes elements of ``args[0]`` in place by a mask or at indices: a
    :func:`zeroing_assignment` (``t[mask] = 0``, ``t[rows, idx] = 0``), ``t.masked_fill_(mask, 0)`` (a boolean
    ``mask``, the Python number ``0`` or ``False``), ``t.mul_(mask)`` / ``t *= mask`` (a boolean or floating-point
    ``mask``: ``h.mul_(h >= kth)``) — each ``mask`` of ``t``'s shape or broadcast over it per sample
    (:func:`_broadcasts`: ``[B, C, 1, 1]`` over ``[B, C, H, W]``) — or ``t.scatter_(dim, idx, 0)`` (integer
    ``idx`` ``[B, ...]``: the losers' indices), ``t`` a floating-point strided tensor ``[N, ...]``; keyword
    arguments as their positional form (:func:`positional`). Told from shapes and types only (no host–device
    synchronisation); whether it is a top-k gate is read after the call."""
    if zeroing_assignment(func, args):
        return True
    args = positional(func, args, kwargs) if func in _ZEROING_METHODS else None
    if args is None or len(args) < 2 or not _zeroable(args[0]):
        return False
    target, mask = args[0], args[1]
    if func is Tensor.scatter_:
        return len(args) == 4 and isinstance(args[2], Tensor) and args[2].dtype in (torch.int64, torch.int32) \
            and args[2].ndim == target.ndim and args[2].shape[0] == target.shape[0] and _zero(args[3])
    if not _broadcasts(mask, target):
        return False
    if func is Tensor.masked_fill_:
        return len(args) == 3 and mask.dtype == torch.bool and _zero(args[2])
    return len(args) == 2 and (mask.dtype == torch.bool or mask.is_floating_point())


def copy_before(func: Callable[..., Any], args: tuple, ranked: Iterable[Tensor],
                kwargs: dict | None = None) -> Tensor | None:
    """A copy of ``args[0]`` made before a :func:`zeroing_in_place` call writes it (``None`` for any other call): the
    gate is read against it, as the gate ``h * mask`` of ``h`` is. Where the memory is that of a tensor a selection
    ranked (``ranked``: the same storage, the tensor itself or a view of it) and both are contiguous views of the
    same elements, in that tensor's shape (``c[(h < kth).view_as(c)] = 0`` of ``h = c.flatten(1)``: read as the gate
    of ``h``, as ``c.clone().masked_fill_(…)`` is). A tensor no selection ranked is copied too: a channel-wise top-k
    ranks a channel statistic ``s`` ``[B, C]`` and zeroes ``h`` by ``(s >= kth)[:, :, None, None]``."""
    if not zeroing_in_place(func, args, kwargs):
        return None
    target = args[0]
    storage = target.untyped_storage().data_ptr()
    alike = next((r for r in ranked if isinstance(r, Tensor) and r.layout == torch.strided
                  and r.untyped_storage().data_ptr() == storage and r.data_ptr() == target.data_ptr()
                  and r.numel() == target.numel() and r.is_contiguous() and target.is_contiguous()), None)
    return target.clone() if alike is None else target.clone().view(alike.shape)
