"""Top-k selections the layer probe cannot see: calls of torch's selection operations outside every probed gate.

The layer probe (:mod:`kwta_robust.detect`) classifies leaf modules called with one tensor. A kWTA written as a
function call inside a parent's ``forward`` (``h = kwta(conv(x))``), inside a module that has children, or in a
module called with keyword arguments is invisible to it — and then BPDA replaces nothing and a plain gradient
attack meets kWTA's discontinuous gradients (gradient masking; Athalye, Carlini & Wagner, ICML 2018, §3; Tramèr et
al., NeurIPS 2020, §5.5) with no flag to say so. :func:`selections_outside` runs the model once more under a
:class:`~torch.overrides.TorchFunctionMode` that notes every call of a selection operation (``topk``,
``kthvalue``, ``sort``, ``argsort``, ``msort``, ``quantile``, ``nanquantile``) — and of a step function
(``round``, ``floor``, ``ceil``, ``trunc``, ``sign``, ``heaviside``: input quantization written inline) on the
batch — with the stack of modules whose ``forward`` is running; calls made inside a module the probe found to be
a gate or piecewise constant, or that implements the surrogate protocol, are accounted for and left out. A result
made later in the same ``forward`` that is a top-k gate of one of its operands (``h · (h ≥ t)``, ``torch.where``,
a scattered mask: :func:`attacks.gates.read_gate`), or of the tensor a selection ranked (its winners' values
scattered into zeros), marks the selections before it as an inline gate (``gate``: its grouping; ``k`` and
``group_size``: its winners per group, read as a module gate's k/N; ``k_seen``: each k/N its gates showed where they
differ, a block called on two widths), which BPDA can relax where it acts on that module (:mod:`attacks.inline_gates`);
an ``argmax`` or ``argmin`` on the batch, a ``max``/``amax`` along a dimension (an LWTA's ``v == v.amax(2,
keepdim=True)``), or a global adaptive max-pool (``h · (h == F.adaptive_max_pool2d(h, 1))``, one winner per channel),
is noted only where such a gate of one winner per group follows (:mod:`attacks.one_winner`), and a max-pool on the
batch only where a later result of the same ``forward`` is a winner-take-all gate built from it (``h · (h ==
F.max_pool2d(h, 3, 1, 1))``, ``F.max_unpool2d`` of its indices: :mod:`attacks.pool_gates`), with ``gate:
max-pool`` (BPDA relaxes it: :mod:`attacks.pool_relax`) — such a gate is its max-pool's alone, never read as the gate
of a top-k selection pending before it (a whole-channel top-k of channel maxima, then ``h.mul_(h == p)``, then
``h.mul_(keep)``: the top-k's entry names its own gate, ``whole-channel``, k=4/8, not the window gate's 16/64, as
BPDA pairs them); the max-pool or max-unpool of a pooling child
(:data:`POOLING_CHILDREN`: ``h · (h == self.pool(h))``) counts as one of the ``forward`` that called the child, where
its output is used.
A selection's tensor gated in place (``h[(h < t).nonzero(as_tuple=True)] = 0``: :func:`in_place`), which no result shows
and BPDA cannot relax, is read on a copy made before the call (so is a max-pool's input gated in place, ``h.mul_(h ==
F.max_pool2d(h, 3, 1, 1))``; ``h[h < t] = 0``, ``h[rows, idx] = 0``, ``h.mul_(mask)``, ``h.masked_fill_(~mask, 0)`` —
keywords or a mask ``[B, C, 1, 1]`` too — are read there as a gate BPDA relaxes, :mod:`attacks.mask_assign`); a forward
that builds two gates or more, in either form, top-k or max-pool gates, gives each of its gate entries ``gates`` — the
fewest gates one call of it built — so that BPDA refuses a call that relaxed fewer
(:class:`attacks.bpda_wrap.LayerTarget`) rather than let the other's mask cut the gradient unseen; each application
of a selection's 0/1 mask read as no gate (both selections first, then both gates; one mask applied twice or to two
tensors) is one gate more (:mod:`kwta_robust.mask_uses`). Where ties at a
gate's threshold hide it on the batch (the count varies: ``h · (|h| ≥ |h|.topk(k).values[:, -1:])`` on MNIST's black
background), the forward runs once more on the batch moved by small seeded noise and the gate is read there
(``ties_broken`` in its entries: :func:`_tie_broken_gates`). The diagnostics flag the selections that remain
(``selections-outside-layers``) unless a BPDA attack acted on a module around them, and name where the step functions
are called when the input gradient vanishes (``zero-gradients``).

A top-k written without any of those operations (an ``argmax`` loop with ``masked_fill(-inf)``, a threshold search,
numpy's ``argpartition``) leaves no call to note. Where the forward called no selection operation outside the
accounted modules, the same forward notes every tensor passed between modules that holds the same number ``k`` of
non-zero values in every sample (``0 < k < size``) at positions that differ between samples — a top-k's mark,
which no ReLU, pruning mask or padding leaves — as a selection of ``kind: sparsity`` (``op: constant-count``, with
``k``, ``size`` and ``tensor``: ``output of NAME`` or ``input of NAME``), made in the forward of the module that
returned it (the modules around the one it was passed to). The model's own input and output (a one-hot decision)
are not noted, nor is anything on fewer than :data:`~kwta_robust.hidden_sparsity.MIN_SPARSITY_BATCH` samples,
nor a found gate's output and its views, copies, scalings and permutations (a hidden gate next to found ones is still
noted: :mod:`kwta_robust.hidden_sparsity`). The same forward counts the ReLUs applied outside the gates (the probe's
``relu_calls``, ``relus``: :mod:`kwta_robust.relu_calls`), so the probe runs no forward of its own for them.
"""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType
from typing import Any, Callable, Collection, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attacks.base import eval_mode, rng_scope
from attacks.gates import GateFit, gated_operand, read_gate, scattered, zeroes_some
from attacks.inline_gates import LAYOUTS
from attacks.mask_assign import copy_before, zeroing_in_place
from attacks.one_winner import ADAPTIVE_POOLING_CHILDREN, one_winner_op, one_winner_read
from attacks.pool_gates import is_pool_gate, max_pool_name, pooled_values
from attacks.pool_in_place import written
from attacks.pool_relax import POOL_GATE_MARK
from kwta_robust.hidden_sparsity import SparsityWatch
from kwta_robust.mask_uses import MaskUses, Use
from kwta_robust.routed_selections import RoutingWatch, in_place, route_entries
from kwta_robust.selection_entries import gate_counts, gate_entry, split_by_call
from kwta_robust.tie_break import TIE_JITTER, nudged
from kwta_robust.unread_winners import unread_winners

#: Selection operations (function and method forms) by the name the record uses (read-only).
SELECTION_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name
    for name in ("topk", "kthvalue", "sort", "argsort", "msort", "quantile", "nanquantile")
    for fn in (getattr(torch, name), getattr(Tensor, name))
})
#: The names :data:`SELECTION_OPS` records.
SELECTION_NAMES: frozenset[str] = frozenset(SELECTION_OPS.values())
#: Step functions (zero gradient almost everywhere: input quantization, binarization; Athalye et al. 2018 §4.1,
#: shattered gradients), noted when called on a floating-point batch; recorded with ``"kind": "step"``.
STEP_OPS: Mapping[Callable[..., Any], str] = MappingProxyType({
    fn: name
    for name in ("round", "floor", "ceil", "trunc", "sign", "heaviside")
    for fn in (getattr(torch, name), getattr(Tensor, name))
})


#: Pooling modules whose ``forward`` is one max-pool, adaptive max-pool or max-unpool call: the call counts as one
#: of the ``forward`` that called the module (``h · (h == self.pool(h))`` with ``self.pool = nn.MaxPool2d(3, 1,
#: 1)``, or ``nn.AdaptiveMaxPool2d(1)``: a one-winner operation), as if inline.
POOLING_CHILDREN: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.MaxUnpool1d,
                                                 nn.MaxUnpool2d, nn.MaxUnpool3d, *ADAPTIVE_POOLING_CHILDREN)


def masks_one(result: Any, tensors: Iterable[Any]) -> bool:
    """Whether floating-point ``result`` is ``x · mask`` of one of ``tensors`` (as many elements per sample, every
    element ``x`` or 0), some non-zero element zeroed and some kept (:func:`attacks.gates.zeroes_some`)."""
    if not isinstance(result, Tensor) or not result.is_floating_point() or result.layout != torch.strided:
        return False
    for x in tensors:
        if isinstance(x, Tensor) and x is not result and x.is_floating_point() and x.layout == torch.strided \
                and x.ndim > 0 and x.shape[:1] == result.shape[:1] and x.numel() == result.numel():
            if zeroes_some(x, result.reshape(x.shape)):
                return True
    return False


class _SelectionWatch(TorchFunctionMode):
    """Counts selection calls by (operation, module stack) while ``stack`` holds no module of ``accounted``; after
    one, reads each later result made in the same module's ``forward`` as a top-k gate of one of its operands
    (:func:`attacks.gates.read_gate`: ``h · (h ≥ t)``, ``torch.where(h ≥ t, h, 0)``, ``h · mask.scatter(…)``) or
    of the tensor a selection ranked (``zeros.scatter(1, idx, values)``: :meth:`_read_gate`), and keeps the fit
    (grouping, k) of the first gate read after the selections of that forward (``gates``), each ``(k, group_size)``
    read (``k_seen``); ``per_call``: the fewest gates one call of each forward built (:meth:`_read_in_place`).
    ``relus``, where given, is called with each call and its module stack (``func, args, kwargs, stack``), whatever
    module runs: the ReLU count (:class:`kwta_robust.relu_calls.ReluCount`), made in this forward, not in one more."""

    def __init__(self, stack: list[str], accounted: Collection[str], batch: int, sparse: SparsityWatch,
                 pooling: Collection[str] = (), relus: Callable[..., None] | None = None) -> None:
        super().__init__()
        self.relus = relus
        self.stack, self.accounted, self.batch, self.sparse = stack, set(accounted), batch, sparse
        self.pooling = set(pooling)  # pooling children (POOLING_CHILDREN): their calls are their caller's
        self.calls: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
        self.pending: dict[tuple[str, ...], list[tuple[str, str, tuple[str, ...]]]] = {}
        self.selected: dict[tuple[str, ...], list[Tensor]] = {}  # per forward: what its pending selections ranked
        self.one_winner: dict[tuple[str, ...], list[tuple[str, str, tuple[str, ...]]]] = {}  # argmax calls, per forward
        self.gates: dict[tuple[str, str, tuple[str, ...]], GateFit | str] = {}  # str: POOL_GATE_MARK
        self.k_seen: dict[tuple[str, str, tuple[str, ...]], list[tuple[int, int]]] = {}  # per key: (k, N) of its gates
        self.built: Counter[tuple[str, ...]] = Counter()  # gates built by the running call of each forward
        self.made_in_place: dict[tuple[str, ...], list[Tensor]] = {}  # the tensors it gated in place
        self.made: dict[tuple[str, ...], list[Tensor]] = {}  # gates read, and their views (LAYOUTS), as BPDA's made
        self.per_call: dict[tuple[str, ...], int] = {}
        self.built_by: Counter[tuple[str, str, tuple[str, ...]]] = Counter()  # per selection: gates of the running call
        self.per_call_by: dict[tuple[str, str, tuple[str, ...]], int] = {}  # per selection: the fewest one call built
        self.pools: dict[tuple[str, ...], list[tuple[str, Tensor, Tensor]]] = {}  # max-pools, per forward
        self.masked: set[tuple[str, ...]] = set()  # forwards that masked a tensor after a selection, unread as a gate
        self.routed: dict[tuple[str, ...], str] = {}  # forwards whose selections route (kwta_robust.routed_selections)
        self.gated_in_place: set[tuple[str, str, tuple[str, ...]]] = set()  # selections a gate made in place used
        self.masks = MaskUses(batch)  # each application of a selection's mask (kwta_robust.mask_uses)
        self.by_call: dict[tuple[str, str, tuple[str, ...]], dict[int, GateFit]] = {}  # per selection: n-th call's fit

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        stack = tuple(self.stack)
        if self.relus is not None:
            self.relus(func, args, kwargs, stack)
        counted = not self.accounted.intersection(stack)
        if counted:
            if func in SELECTION_OPS:
                key = ("selection", SELECTION_OPS[func], stack)
                self.calls[key] += 1
                self.pending.setdefault(stack, []).append(key)
                if args and isinstance(args[0], Tensor):
                    self.selected.setdefault(stack, []).append(args[0])
            elif (op := one_winner_op(func, args, kwargs)) is not None and args and isinstance(args[0], Tensor) \
                    and args[0].is_floating_point() and args[0].ndim > 1 and args[0].shape[0] == self.batch:
                caller = self._caller(stack)  # a global pool's gate is built by the pooling child's caller
                self.one_winner.setdefault(caller, []).append(("selection", op, caller))
            elif func in STEP_OPS and args and isinstance(args[0], Tensor) and args[0].is_floating_point() \
                    and args[0].ndim > 0 and args[0].shape[0] == self.batch:  # on the batch, not on a size or index
                self.calls[("step", STEP_OPS[func], stack)] += 1
        ranked_copy = copy_before(func, args, self.selected.get(stack, ()), kwargs) \
            if counted and self.pending.get(stack) else None  # h[h < t] = 0, h[rows, idx] = 0: attacks/mask_assign.py
        before = self._before_in_place(func, args, stack) if counted and ranked_copy is None else ranked_copy
        pooled = self._before_pool_in_place(func, args, stack) if counted else None
        built = sum(self.built.values())
        result = func(*args, **(kwargs or {}))
        self.sparse.carry(getattr(func, "__name__", ""), args, result)
        # a max-pool gate is its pools' own (gate: max-pool), as BPDA reads it first: no top-k pending reads it
        pool_gate = counted and self._watch_pools(func, args, kwargs, result, stack, pooled)
        # a layout call (g.flatten(1)) of a gate read is that gate, no new one: as BPDA reads it (attacks.inline_gates)
        laid_out = counted and func in LAYOUTS and bool(args) and any(args[0] is m for m in self.made.get(stack, ()))
        if pool_gate or laid_out:
            self.made.setdefault(stack, []).append(result if laid_out else written(func, args, kwargs, result))
        selection = ("selection", SELECTION_OPS[func], stack) if counted and func in SELECTION_OPS else None
        use = self.masks.note(func, args, kwargs, result, stack, selection) if counted else None
        if counted and not pool_gate and not laid_out and (self.pending.get(stack) or self.one_winner.get(stack)) \
                and func not in SELECTION_OPS and one_winner_op(func, args, kwargs) is None:
            made, wrote = scattered(func, args, result)  # out[rows, idx] = relu(vals): the tensor it changed in place
            # h[h < kth] = 0, h.mul_(m), h.scatter_(1, idx, 0): read against its values from before too, as BPDA
            self._read_gate(args if ranked_copy is None else (*args, ranked_copy), made, stack, relu=wrote, use=use)
            if before is not None:
                self._read_in_place(args[0], before, stack)
        if counted:
            if sum(self.built.values()) > built:
                self.masks.credit(stack, result)  # a mask read as its gate: its first application is that gate's
            elif use is not None and not self.masks.spend(use):  # read as no gate: one gate more (mask_uses)
                self._unread_use(stack, use)
        return result

    def _unread_use(self, stack: tuple[str, ...], use: Use) -> None:
        """A mask of a selection applied where no gate was read (both selections first, then both gates; one mask
        applied twice, or to two tensors: :mod:`kwta_robust.mask_uses`): one gate more of this call; where that
        selection built a gate read before, the fit of the mask on the tensor it ranked is noted (``k_seen``)."""
        (key, ranked, _, nth), mask = use
        self.built[stack] += 1
        self.built_by[key] += 1
        if isinstance(self.gates.get(key), GateFit) and ranked is not None and ranked.numel() == mask.numel() \
                and ranked.is_floating_point():
            read = read_gate(ranked, mask.reshape(ranked.shape).to(ranked.dtype))
            if read is not None:
                self._note_gate(key, read[0])
                self.by_call.setdefault(key, {}).setdefault(nth, read[0])

    def _before_in_place(self, func: Callable[..., Any], args: tuple, stack: tuple[str, ...]) -> Tensor | None:
        """A copy of the tensor ``func`` is about to change in place (:func:`in_place`) where it holds the values a
        pending selection of ``stack`` ranked (that tensor, or a copy of it: ``g = h.clone(); g[h < t] = 0``);
        ``None`` otherwise (no copy: most in-place calls of a forward change nothing a selection ranked)."""
        target = args[0] if args else None
        if not self.pending.get(stack) or not in_place(func) or not isinstance(target, Tensor) \
                or not target.is_floating_point() or target.layout != torch.strided or target.ndim < 2 \
                or target.shape[0] != self.batch:
            return None
        ranked = self.selected.get(stack, ())
        if any(r is target or (r.shape[:1] == target.shape[:1] and r.numel() == target.numel()
                               and r.dtype == target.dtype and torch.equal(r.reshape(target.shape), target))
               for r in ranked):
            return target.clone()
        return None

    def _read_in_place(self, target: Tensor, before: Tensor, stack: tuple[str, ...]) -> None:
        """Count a gate made in place — ``target``, changed by the call, a top-k gate of ``before``, its copy from
        before the call (:func:`attacks.gates.gated_operand`) — where no result of the call was read as one (the
        selections stay pending: the gate entries are marked by readable gates only, which BPDA relaxes)."""
        if self.pending.get(stack) and gated_operand(target, [before], ()) is not None:
            self.built[stack] += 1
            self.built_by.update(dict.fromkeys(self.pending[stack], 1))  # the selections it gated by
            self.gated_in_place.update(self.pending[stack])
            self.made_in_place.setdefault(stack, []).append(target)
            self.selected[stack] = [r for r in self.selected.get(stack, ()) if r is not target]

    def call_ended(self, stack: tuple[str, ...]) -> None:
        """A call of the forward of ``stack``'s innermost module returned: keep the fewest gates one call built."""
        built = self.built.pop(stack, 0)
        self.made_in_place.pop(stack, None)
        self.made.pop(stack, None)
        self.masks.ended(stack)
        self.per_call[stack] = min(self.per_call.get(stack, built), built)
        for key in [k for k in self.gates if k[2] == stack]:  # each selection's own count (``own_gates``)
            own = self.built_by.pop(key, 0)
            self.per_call_by[key] = min(self.per_call_by.get(key, own), own)

    def _read_gate(self, args: tuple, result: Any, stack: tuple[str, ...], relu: bool = False,
                   use: Use | None = None) -> None:
        """Whether ``result`` (made on the batch) gates one of the tensors in ``args`` or one a pending selection
        ranked (:func:`attacks.gates.gated_operand`, the reading BPDA relaxes it by); if so, the selections of
        ``stack`` that came before it built an inline gate of that grouping. Where only one-winner operations
        (``argmax``, ``amax``: :mod:`attacks.one_winner`) are pending, only a gate of one winner per group counts, as
        in BPDA's reading (:mod:`attacks.inline_gates`): the mask of an LWTA applied to its blocks' view ``[B, C / g,
        g, H, W]`` reads there as a gate of no count of one, and the gate of ``h`` comes after it. A gate after another
        of this forward that applies a selection's mask (``use``: :meth:`MaskUses.note`) is read by that mask on the
        values the selection ranked where it reads there (:meth:`MaskUses.own_fit`): the operand holds the first
        gate's zeros too (a window gate's, ``h · (h == p)``: ``block-2, k=1/2`` where the top-k keeps 200 of 512)."""
        if not isinstance(result, Tensor) or result.ndim < 1 or result.shape[0] != self.batch:
            return
        found = gated_operand(result, args, self.selected.get(stack, ()), relu=relu)
        if found is None and self.pending.get(stack) and masks_one(result, [*args, *self.selected.get(stack, ())]):
            self.masked.add(stack)  # a gate whose count ties hide? (_tie_broken_gates)
        found = found if found is None or self.pending.get(stack) else one_winner_read(found)
        if found is not None:
            out = found[1]  # a view or copy of a gate made in place (``g[h < t] = 0; g.view(…)``) is that gate
            again = any(t.numel() == out.numel() and torch.equal(t.reshape(out.shape), out)
                        for t in self.made_in_place.get(stack, ()))
            own = self.masks.own_fit(use, result) if use is not None and self.built.get(stack) else None
            fit = found[2][0] if own is None else own
            if use is not None and use[0][0] in self.pending.get(stack, ()):  # the n-th call's gate (by_call)
                self.by_call.setdefault(use[0][0], {}).setdefault(use[0][3], fit)
            self._mark(stack, fit, new=not again)
            self.made.setdefault(stack, []).append(result)

    def _before_pool_in_place(self, func: Callable[..., Any], args: tuple, stack: tuple[str, ...]) -> Tensor | None:
        """A copy of the input of a max-pool of ``stack``'s ``forward`` (or of a tensor equal to it) that ``func`` is
        about to change in place (a gate made in place: ``h.mul_(h == F.max_pool2d(h, 3, 1, 1))``, ``g = h.clone();
        g[h != F.max_pool2d(h, 3, 1, 1)] = 0``); ``None`` otherwise."""
        target, pools = (args[0] if args else None), self.pools.get(self._caller(stack))
        if not pools or not in_place(func) or not isinstance(target, Tensor) or not target.is_floating_point():
            return None
        if any(x is target or (x.shape == target.shape and x.dtype == target.dtype and torch.equal(x, target))
               for _, x, _ in pools):
            return target.clone()
        return None

    def _watch_pools(self, func: Callable[..., Any], args: tuple, kwargs: dict | None, result: Any,
                     stack: tuple[str, ...], before: Tensor | None = None) -> bool:
        """Note a max-pool on the batch; the max-pools of ``stack``'s ``forward`` before a result that is a
        winner-take-all gate built from them (:func:`attacks.pool_gates.is_pool_gate`) are counted as selections
        of ``gate`` :data:`POOL_GATE_MARK`: BPDA relaxes that gate where it acts on the module
        (:mod:`attacks.pool_relax`), and ``selections-outside-layers`` names it where none did. A call in the
        ``forward`` of a pooling child (``self.pool(h)``, ``self.unpool(…)``: ``pooling``) is one of its caller's.
        Each gate counts in ``built`` (``gates``); one made in place on a pool's input or a copy (``before``: its
        copy from before the call) by a form BPDA reads there (:mod:`attacks.pool_in_place`: ``h.mul_(h == p)``, ``h[h
        != p] = 0``) is such a gate too; by another (``nonzero`` indices) its max-pools have no ``gate``: refused.
        Whether ``result`` (or the tensor the call wrote) is such a gate: then it is no top-k selection's gate."""
        stack = self._caller(stack)
        name = max_pool_name(func, args, kwargs)
        if name is not None:
            values = pooled_values(result)
            if values is not None and args and isinstance(args[0], Tensor) and args[0].shape[:1] == (self.batch,):
                self.pools.setdefault(stack, []).append((name, args[0], values))
            return False
        if (before is not None and is_pool_gate(args[0], [before], [(before, v) for _, _, v in self.pools[stack]])) \
                or (self.pools.get(stack) and is_pool_gate(result, args, [(x, v) for _, x, v in self.pools[stack]])):
            self.built[stack] += 1
            read = before is None or zeroing_in_place(func, args, kwargs)  # relaxed by BPDA (attacks/pool_relax.py)
            for name, _, _ in self.pools.pop(stack):  # a selection all the same: selections-outside-layers names it
                self.calls[("selection", name, stack)] += 1
                if read:
                    self.gates.setdefault(("selection", name, stack), POOL_GATE_MARK)
            return True
        return False

    def _caller(self, stack: tuple[str, ...]) -> tuple[str, ...]:
        """``stack`` less a pooling child (:data:`POOLING_CHILDREN`) running innermost: its call is its caller's."""
        return stack[:-1] if len(stack) > 1 and stack[-1] in self.pooling else stack

    def _note_gate(self, key: tuple[str, str, tuple[str, ...]], fit: GateFit) -> None:
        """The selection ``key`` built a gate of ``fit``: the first fit is kept (``gates``), each new k/N noted."""
        self.gates.setdefault(key, fit)
        seen = self.k_seen.setdefault(key, [])
        if (int(fit.k), int(fit.group_size)) not in seen:
            seen.append((int(fit.k), int(fit.group_size)))

    def _mark(self, stack: tuple[str, ...], fit: GateFit, new: bool = True) -> None:
        """The selections pending in ``stack`` built a gate of ``fit`` (``new``: not one counted when made in place);
        its ``argmax``/``argmin`` calls did only for a gate of one winner per group, and are then counted as
        selections."""
        pending = self.pending.pop(stack, ())
        for key in pending:
            self._note_gate(key, fit)
        self.selected.pop(stack, None)
        one_winner = self.one_winner.pop(stack, ())
        one = (fit.k, fit.k_spread) == (1, 0)
        if one:
            for key in one_winner:
                self.calls[key] += 1
                self._note_gate(key, fit)
        self.built[stack] += new and bool(pending or (one and one_winner))  # as BPDA relaxes: attacks.inline_gates
        self.built_by.update(dict.fromkeys([*pending, *(one_winner if one else ())], int(new)))  # own_gates


def selections_outside(model: nn.Module, x: Tensor, accounted: Collection[str], seed: int = 0,
                       probed: Mapping[str, bool] = MappingProxyType({}), unread: list | None = None,
                       relus: Callable[..., None] | None = None) -> list[dict]:
    """Selection and step-function calls of one forward of ``model`` on ``x`` ``[B, ...]`` (eval mode, no
    gradients, seeded RNG restored after) made outside the modules named in ``accounted``: ``{"op", "kind",
    "modules", "calls", "probed"}`` each (``kind``: ``"selection"`` or ``"step"``), with ``modules`` the stack of
    modules whose ``forward`` made the call, outermost first (``""`` is the model itself), and ``probed`` whether
    the innermost of them is in ``probed`` (the modules the layer probe classified from their calls and found no
    gate in, each mapped to whether its outputs were shaped like its inputs: ``keeps_shape`` in the entry); a
    selection that built an inline gate has its grouping (``gate``), its first gate's winners per group and the
    group's size (``k``, ``group_size``), each pair its gates showed where they differ (``k_seen``:
    :func:`~kwta_robust.selection_entries.gate_entry`) and the gates one call built (``gates``, ``own_gates``:
    :func:`~kwta_robust.selection_entries.gate_counts`); one whose gate ties at its threshold hid on ``x`` was read
    on ``x`` moved by seeded noise (``ties_broken``: its scale, :func:`_tie_broken_gates`); one in a forward that
    routes (a top-k attention's or an expert router's ``-inf`` before a softmax, expert outputs picked by its
    indices) has ``routes`` and no gate (:mod:`kwta_robust.routed_selections`); one whose only gate was made in
    place on the tensor it ranked or a copy by integer indices (``h[(h < t).nonzero(as_tuple=True)] = 0``, which
    no result shows and BPDA's inline relaxation cannot replace) has ``in_place`` and no gate. ``unread`` gets the
    one-winner calls no gate followed (:mod:`kwta_robust.unread_winners`); ``relus`` is called with each call of that
    forward (not of a tie-broken one) and its module stack (:class:`_SelectionWatch`): the probe's ReLU count
    (:mod:`kwta_robust.relu_calls`). Every hook is removed after; the model is left as it was."""
    watch, sparse, output = _watched_forward(model, x, accounted, seed, relus)
    tied = _tie_broken_gates(model, x, accounted, seed, watch)
    found = [{"op": op, "kind": kind, "modules": list(modules), "calls": n}
             | (gate_entry(watch.gates[(kind, op, modules)], watch.k_seen.get((kind, op, modules), ()))
                if (kind, op, modules) in watch.gates else {})
             | gate_counts((kind, op, modules), watch.gates, watch.per_call, watch.per_call_by)
             | ({"ties_broken": TIE_JITTER} if (kind, op, modules) in tied else {})
             | ({"in_place": True} if (kind, op, modules) in watch.gated_in_place - watch.gates.keys() else {})
             for (kind, op, modules), n in sorted(watch.calls.items())]
    found = split_by_call(found, watch.by_call, watch.masks.calls)
    route_entries(found, watch.routed)
    if not any(entry["kind"] == "selection" for entry in found):
        found += sparse.entries(output)
    (unread if unread is not None else []).extend(unread_winners(watch.one_winner, watch.gates))
    for entry in found:
        entry["probed"] = bool(entry["modules"]) and entry["modules"][-1] in probed
        if entry["probed"]:
            entry["keeps_shape"] = bool(probed[entry["modules"][-1]])
    return found


def _watched_forward(model: nn.Module, x: Tensor, accounted: Collection[str], seed: int,
                     relus: Callable[..., None] | None = None) -> tuple[_SelectionWatch, SparsityWatch, Any]:
    """One forward of ``model`` on ``x`` (eval mode, no gradients, seeded RNG restored after) under the watches
    (:class:`_SelectionWatch`, given ``relus``, :class:`SparsityWatch`), and its output; every hook is removed
    after."""
    named = list(model.named_modules())
    stack: list[str] = []
    handles = []
    sparse = SparsityWatch(len(x), [x.untyped_storage().data_ptr()], accounted)

    def enter(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple) -> None:
            if args:
                sparse.note(args[0], "input", name, stack)
            stack.append(name)
        return hook

    def leave(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            sparse.note(output, "output", name, stack)
            if name in sparse.gates:
                sparse.gate_output(output)
            watch.call_ended(tuple(stack))
            stack.pop()
        return hook

    try:
        for name, module in named:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave(name)))
        pooling = [name for name, module in named if isinstance(module, POOLING_CHILDREN)]
        watch = _SelectionWatch(stack, accounted, len(x), sparse, pooling, relus)
        routing = RoutingWatch(stack, accounted, len(x), SELECTION_OPS, watch.routed,
                               [*model.parameters(), *model.buffers()])
        with eval_mode(model), rng_scope(seed), torch.no_grad(), watch, routing:
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return watch, sparse, output


def _tie_broken_gates(model: nn.Module, x: Tensor, accounted: Collection[str], seed: int,
                      watch: _SelectionWatch) -> set[tuple[str, str, tuple[str, ...]]]:
    """Where a selection of :data:`SELECTION_OPS` built no readable gate on ``x`` but a later result of its
    ``forward`` masked a tensor (:func:`masks_one`) — ties at a gate's threshold (a black MNIST background:
    ``h · (|h| ≥ |h|.topk(k).values[:, -1:])`` keeps 156 to 166 of 784) make the count vary, so no grouping shows
    a constant ``k`` — the forward runs once more on ``x`` moved by
    :data:`~kwta_robust.tie_break.TIE_JITTER` of its std (seeded noise, as the layer probe re-reads a module gate:
    :mod:`kwta_robust.tie_break`), and a gate read there marks that selection in ``watch`` (its grouping, and the
    fewest gates one call of that forward built there); the selections so marked."""
    hidden = [key for key in watch.calls if key[0] == "selection" and key[1] in SELECTION_NAMES
              and key not in watch.gates and key[2] in watch.masked]
    moved = nudged(x, TIE_JITTER, seed=0) if hidden and x.is_floating_point() else None
    if moved is None:
        return set()
    again = _watched_forward(model, moved, accounted, seed)[0]
    tied = {key for key in hidden if key in again.gates}
    for key in tied:
        watch.gates[key] = again.gates[key]
        watch.k_seen[key] = again.k_seen.get(key, [])
        watch.per_call[key[2]] = max(watch.per_call.get(key[2], 0), again.per_call.get(key[2], 0))
        watch.per_call_by[key] = again.per_call_by.get(key, 0)
    return tied
