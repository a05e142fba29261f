"""A max-pool winner-take-all gate written in place on the pool's own input: ``h.mul_(h == F.max_pool2d(h, 3, 1, 1))``.

The out-of-place gate ``h · (h == F.max_pool2d(h, 3, 1, 1))`` (:mod:`attacks.pool_gates`) keeps ``h`` where a unit is
the largest of its window; BPDA (Athalye, Carlini & Wagner, ICML 2018, §4.1) differentiates its smooth relaxation
(:mod:`attacks.pool_relax`). Users also write it in place — ``p = F.max_pool2d(h, 3, 1, 1)``, then ``h.mul_(h == p)``,
``h *= h == p``, ``h[h != p] = 0`` or ``h.masked_fill_(h != p, 0)`` (the in-place calls of
:func:`attacks.mask_assign.zeroing_in_place`) — on ``h``, the pool's input itself. After such a call no tensor holds
the values it gated: :func:`pool_input_copy` keeps a copy of them made just before it (a copy autograd records, so the
relaxation's gradient reaches ``h``'s values from before the call), and :func:`own_input_call` reads the call as the
pool's gate against that copy, the :class:`~attacks.pool_relax.PoolCall` then naming the copy as its input. On a copy
of the pool's input (``g = h.clone(); g[h != p] = 0``) the pool's input keeps its values and is read as it is;
:func:`written` is the tensor either form made (``Tensor.__setitem__`` returns ``None``). BPDA's inline watch
(:class:`attacks.inline_gates.InlineGates`) relaxes the gate in place, as a top-k gate made in place: forward values
bit for bit, the gradient of the out-of-place twin's relaxation (``[B, C, *S]`` throughout). Threat model: the inner
attack's (nothing here touches the inputs). This module never imports ``kwta_robust``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from torch import Tensor

from attacks.mask_assign import zeroing_in_place
from attacks.pool_gates import is_pool_gate
from attacks.pool_relax import PoolCall


def _same_memory(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` are the same elements of the same memory (the tensor itself, or a view alike)."""
    return a is b or (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
                      and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride())


def writes_pool_input(func: Callable[..., Any], args: tuple, kwargs: dict | None, pools: Sequence[PoolCall]) -> bool:
    """Whether ``func(*args, **kwargs)`` zeroes in place (:func:`attacks.mask_assign.zeroing_in_place`) the input of
    one of ``pools`` (its own memory, not a copy). Told from shapes, types and addresses (no host read)."""
    return bool(pools) and zeroing_in_place(func, args, kwargs) \
        and any(_same_memory(call.input, args[0]) for call in pools)


def pool_input_copy(func: Callable[..., Any], args: tuple, kwargs: dict | None, pools: Sequence[PoolCall],
                    made: Tensor | None = None) -> Tensor | None:
    """A copy of ``args[0]`` ``[B, C, *S]`` made before ``func`` zeroes that pool input in place
    (:func:`writes_pool_input`); ``None`` for any other call. ``made``: a copy of ``args[0]`` made already for this
    call (:func:`attacks.mask_assign.copy_before`'s, where a top-k selection is pending; perhaps in the ranked
    tensor's shape), viewed in ``args[0]``'s shape, not copied again."""
    if not writes_pool_input(func, args, kwargs, pools):
        return None
    return args[0].clone() if made is None else made.view(args[0].shape)


def written(func: Callable[..., Any], args: tuple, kwargs: dict | None, result: Any) -> Any:
    """The tensor a call made: ``args[0]`` for a :func:`~attacks.mask_assign.zeroing_in_place` call (whose result is
    ``args[0]`` or, for ``h[m] = 0``, ``None``), ``result`` for any other."""
    return args[0] if args and zeroing_in_place(func, args, kwargs) else result


def own_input_call(made: Any, args: tuple, before: Tensor | None, pools: Sequence[PoolCall]) -> PoolCall | None:
    """The pool of ``pools`` (latest first) whose input ``args[0]`` was, read as the winner-take-all gate ``made`` of
    ``before`` (its copy from before the call: :func:`pool_input_copy`; :func:`attacks.pool_gates.is_pool_gate`), as
    a :class:`~attacks.pool_relax.PoolCall` with ``before`` as its input; ``None`` where ``before`` is ``None`` or
    ``made`` reads as no such gate."""
    if before is None or not isinstance(made, Tensor) or not before.requires_grad:
        return None
    for call in reversed(pools):
        if _same_memory(call.input, args[0]) and is_pool_gate(
                made, [before], [(before, call.values.detach().flatten())]):
            return dataclasses.replace(call, input=before)
    return None
