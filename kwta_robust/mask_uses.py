"""Each application of a selection's 0/1 mask in a module's ``forward``: a gate BPDA must relax.

The selection watch of the layer probe (:mod:`kwta_robust.detect_selections`) reads a gate as the first result after
the selections of a ``forward`` that is a top-k gate of an operand (:func:`attacks.gates.gated_operand`), as BPDA's
inline watch reads and relaxes it (:mod:`attacks.inline_gates`); both then wait for the next selection. A gate built
after that one from a selection made before it is read by neither: both selections first, then both gates (``t1 =
f.topk(k1).values[:, -1:]; t2 = h.topk(k2, dim=1).values[:, -1:]; g = f * (f >= t1); g * (h >= t2)``), one mask
applied twice (``g = f * m; g * m``, ``f.mul_(m)`` twice) or to two tensors (``h * m`` and ``x * m``). BPDA relaxes
one and the other's exact 0/1 mask cuts the gradient (Athalye, Carlini & Wagner, ICML 2018, §4.1: BPDA must replace
every non-differentiable step) with no refusal, where the probe counted one gate. :class:`MaskUses` follows what a
``forward``'s selections made: their outputs (values, indices), what is computed from them alone (a threshold
``values[:, -1:]``, its views) and every boolean, integer or 0/1 tensor made from them (``h >= t``, ``~m``,
``m.float()``, ``zeros.scatter(1, idx, 1.0)``); a call that applies such a mask to a floating-point tensor ``[B, ...]``
of other values — ``x * m``, ``x.mul_(m)``, ``torch.where(m, x, 0)``, ``x.masked_fill(~m, 0)``, ``x[~m] = 0``, or
zeroes it at indices they made (``x[rows, idx] = 0``, ``x[(h < t).nonzero(as_tuple=True)] = 0``) — is one
application (:meth:`MaskUses.note`), whose result is a gated tensor, no mask. The selection watch counts each
application it read as no gate as one gate more of that ``forward`` (``gates``: BPDA refuses a call that relaxed
fewer, :class:`attacks.bpda_wrap.LayerTarget`) — but for the first application of a mask the watch read as the
gate itself (``(f >= t).float()``, a mask a custom ``torch.autograd.Function`` or a parent applies:
:func:`attacks.gates.mask_as_gate`; BPDA relaxes that mask), which is that gate's (:meth:`MaskUses.spend`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from attacks.gates import GateFit, read_gate

#: Multiplications (function, method and operator forms) that apply a mask operand to the other.
_MULTIPLY = frozenset({torch.mul, Tensor.mul, Tensor.mul_, Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__})
#: Masked fills (``x.masked_fill(~m, 0)``): the mask is the second operand, the value the third.
_FILL = frozenset({torch.masked_fill, Tensor.masked_fill, Tensor.masked_fill_})
#: Operations whose second operand gives a shape only (``t.expand_as(h)``): not values the result holds.
_SHAPE_ONLY = frozenset({"expand_as", "view_as", "reshape_as", "type_as"})
#: A selection key, as the selection watch counts calls: ``(kind, op, module stack)``.
Key = tuple[str, str, tuple[str, ...]]
#: What a followed tensor came from: its selection's key, the tensor that selection ranked, the gates read on its
#: masks themselves (a one-element list shared by everything made from one selection call: :meth:`MaskUses.credit`)
#: and which call of that selection it was in its ``forward``'s call (1, 2, …: :attr:`MaskUses.calls`).
Origin = tuple[Key, "Tensor | None", list[int], int]
#: One application (:meth:`MaskUses.note`): its mask's origin and the mask.
Use = tuple[Origin, Tensor]


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in ``value`` (a tensor, or lists, tuples and dicts of them: ``topk``'s values and indices)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for part in value:
            yield from _tensors(part)
    elif isinstance(value, dict):
        for part in value.values():
            yield from _tensors(part)


def _zero_one(t: Tensor) -> bool:
    """Whether ``t`` holds only 0 and 1 (boolean, or integer or floating-point 0/1 values: a mask)."""
    if t.dtype == torch.bool:
        return True
    if t.layout != torch.strided or t.is_complex() or t.numel() == 0:
        return False
    return bool(((t == 0) | (t == 1)).all())


def _zero(value: Any) -> bool:
    """Whether ``value`` is the number 0, ``False`` (``x.masked_fill(~m, False)`` and ``torch.where(m, x, False)``
    write 0 into a floating-point ``x``, as :func:`attacks.mask_assign.zeroing_in_place` reads an in-place fill of
    ``False``) or a tensor of zeros or ``False`` (the losers' value of a gate)."""
    if isinstance(value, Tensor):
        return value.numel() > 0 and not bool(value.any())
    return isinstance(value, (int, float)) and value == 0


class MaskUses:
    """Per module stack (one running ``forward``), the tensors its selections made (``derived``: each with its
    :data:`Origin`) in a batch of ``batch`` samples; :meth:`note` reads each call."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.derived: dict[tuple[str, ...], dict[int, tuple[Tensor, Origin]]] = {}
        self.running: dict[tuple[str, ...], Counter[Key]] = {}  # per running forward: each selection's calls so far
        self.calls: Counter[tuple[Key, int]] = Counter()  # (selection, n): the calls that were its n-th in a forward

    def note(self, func: Callable[..., Any], args: tuple, kwargs: dict | None, result: Any, stack: tuple[str, ...],
             key: Key | None) -> Use | None:
        """Read one call made in ``stack``'s ``forward`` (``key``: the selection it is, if one). Returns, where it
        applies a mask its selections made to a floating-point tensor ``[B, ...]`` of other values, that mask's
        origin and the mask; else notes what the call made from them."""
        if key is not None:
            ranked = args[0].clone() if args and isinstance(args[0], Tensor) else None  # as ranked (own_fit)
            nth = self.running.setdefault(stack, Counter())
            nth[key] += 1
            self.calls[(key, nth[key])] += 1
            self._add(stack, result, (key, ranked, [0], nth[key]))
            return None
        made = self.derived.get(stack)
        if not made:
            return None
        operands = list(_tensors(args if getattr(func, "__name__", "") not in _SHAPE_ONLY else args[:1]))
        operands += list(_tensors(kwargs or {}))
        origin = next((made[id(t)][1] for t in operands if id(t) in made and made[id(t)][0] is t), None)
        if origin is None:
            return None
        mask = self._applied(func, args, kwargs or {}, made)
        if mask is not None:
            return made[id(mask)][1], mask
        if all(id(t) in made or not t.is_floating_point() or t.shape[:1] != (self.batch,) for t in operands):
            self._add(stack, result, origin)  # a threshold or index made from the selections alone
        else:
            for t in _tensors(result):
                if t.layout == torch.strided and _zero_one(t):  # h >= t, zeros.scatter(1, idx, 1.0)
                    self._add(stack, t, origin)
        return None

    def credit(self, stack: tuple[str, ...], result: Any) -> None:
        """The watch read ``result`` itself as a gate (a 0/1 mask made from a selection): the next application of a
        mask of its selection call is that gate's, no gate more."""
        made = self.derived.get(stack, {})
        for t in _tensors(result):
            if id(t) in made and made[id(t)][0] is t:
                made[id(t)][1][2][0] += 1
                return

    @staticmethod
    def own_fit(use: Use, gated: Any) -> GateFit | None:
        """The fit of the application ``use`` read on the values its selection ranked, where its mask holds one 0/1
        value per element of them and of ``gated``, the tensor it made (:func:`attacks.gates.read_gate`); else
        ``None`` (a channel mask ``[B, C, 1, 1]`` over ``[B, C, H, W]``: read on the gated tensor)."""
        (_, ranked, _, _), mask = use
        if ranked is None or not isinstance(gated, Tensor) or not ranked.is_floating_point() \
                or not ranked.numel() == mask.numel() == gated.numel():
            return None
        read = read_gate(ranked, mask.reshape(ranked.shape).to(ranked.dtype))
        return None if read is None else read[0]

    @staticmethod
    def spend(use: Use) -> bool:
        """Whether the application ``use`` is that of a mask read as its gate before (:meth:`credit`), now spent."""
        credit = use[0][2]
        if credit[0] > 0:
            credit[0] -= 1
            return True
        return False

    def ended(self, stack: tuple[str, ...]) -> None:
        """The call of ``stack``'s ``forward`` returned: its tensors are no longer followed."""
        self.derived.pop(stack, None)
        self.running.pop(stack, None)

    def _add(self, stack: tuple[str, ...], result: Any, origin: Origin) -> None:
        made = self.derived.setdefault(stack, {})
        for t in _tensors(result):
            made[id(t)] = (t, origin)

    def _applied(self, func: Callable[..., Any], args: tuple, kwargs: dict,
                 made: dict[int, tuple[Tensor, Origin]]) -> Tensor | None:
        """The mask made by the selections (in ``made``) that the call applies to a tensor of other values, else
        ``None``: ``x * m`` (either order, in place too), ``torch.where(m, x, 0)`` (or ``(m, 0, x)``),
        ``x.where(m, 0)``, ``x.masked_fill(m, 0)``, ``x[m] = 0``."""
        if func in _MULTIPLY and len(args) == 2:
            pairs = [(args[0], args[1]), (args[1], args[0])]
        elif func is torch.where and len(args) == 3:
            pairs = [(args[0], x) for x, other in ((args[1], args[2]), (args[2], args[1])) if _zero(other)]
        elif func is Tensor.where and len(args) == 3:  # x.where(m, 0)
            pairs = [(args[1], args[0])] if _zero(args[2]) else []
        elif func in _FILL and len(args) >= 2:
            value = args[2] if len(args) > 2 else kwargs.get("value")
            pairs = [(args[1] if len(args) > 1 else kwargs.get("mask"), args[0])] if _zero(value) else []
        elif func is Tensor.__setitem__ and len(args) == 3 and _zero(args[2]):
            if isinstance(args[1], (tuple, list)):  # h[rows, idx] = 0, h[(h < t).nonzero(as_tuple=True)] = 0
                return self._indexed(args[0], tuple(args[1]), made)
            pairs = [(args[1], args[0])]
        else:
            return None
        for mask, x in pairs:
            if isinstance(mask, Tensor) and id(mask) in made and made[id(mask)][0] is mask and _zero_one(mask) \
                    and self._values(x, made):
                return mask
        return None

    def _indexed(self, x: Any, index: tuple, made: dict[int, tuple[Tensor, Origin]]) -> Tensor | None:
        """Where ``x[index] = 0`` zeroes values ``x`` of other tensors at indices its selections made (``idx`` of
        ``h.topk(n - k, largest=False).indices``, the ``nonzero`` of a mask they made), the keep mask it applies, shaped
        like ``x``, as one more tensor made from that selection call; else ``None``."""
        tensors = [t for t in index if isinstance(t, Tensor)]
        origin = next((made[id(t)][1] for t in tensors if id(t) in made and made[id(t)][0] is t), None)
        if origin is None or not self._values(x, made) or any(t.is_floating_point() for t in tensors) \
                or not all(isinstance(t, (Tensor, slice)) or t is None or t is Ellipsis for t in index):
            return None
        keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        keep[index] = False
        made[id(keep)] = (keep, origin)
        return keep

    def _values(self, x: Any, made: dict[int, tuple[Tensor, Origin]]) -> bool:
        """Whether ``x`` is a floating-point tensor ``[B, ...]`` of values the selections did not make and not a
        0/1 mask itself (two masks multiplied make one mask)."""
        return isinstance(x, Tensor) and x.is_floating_point() and x.ndim > 0 and x.shape[0] == self.batch \
            and not (id(x) in made and made[id(x)][0] is x) and not _zero_one(x)
