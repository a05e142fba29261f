"""BPDA for a top-k gate written inline in a module's ``forward`` (``x + kwta(conv(x))`` with ``kwta`` a function).

BPDA replaces the backward pass of modules (:mod:`attacks.bpda_wrap`; Athalye, Carlini & Wagner, ICML 2018, §4.1).
A kWTA written as a function call inside a module's ``forward`` — ``h · (h ≥ h.topk(k).values[:, -1:])``,
``torch.where(h ≥ h.kthvalue(…).values, h, 0)``, ``h · zeros.scatter(1, h.topk(k).indices, 1)`` in a residual block
— is no module, and replacing the whole block by the identity would skip its convolution. :class:`InlineGates` is a
:class:`~torch.overrides.TorchFunctionMode` that runs while such a module's own ``forward`` runs with gradients
(:class:`attacks.bpda_wrap.ModuleBackward` for a ``LayerTarget`` of kind ``"inline"``): after a call of a selection
operation made in that ``forward`` itself (not in a child module, which ``active`` tells), the first later result that
is a top-k gate of one of its operands (:func:`attacks.gates.read_gate`) — or the gate itself of a tensor a
selection ranked: ``zeros.scatter(1, h.topk(k).indices, values)``, in place or not — is returned bit for bit with
the surrogate's backward in place of its own (after an ``argmax``/``argmin`` alone, or a ``max``/``amax`` along a
dimension, a gate of one winner per group only: a one-hot ``F.one_hot(h.argmax(1), C)`` times ``h``, an LWTA's
``h · (v == v.amax(2, keepdim=True)).view_as(h)``: :mod:`attacks.one_winner`), which the gate's 0/1 mask cuts: the
smooth relaxation of that gate (:func:`attacks.gates.relaxed_gate`) or, for the identity surrogate,
straight-through. A max-pool winner-take-all gate built in that ``forward`` (``h · (h == F.max_pool2d(h, 3, 1, 1))``,
``F.max_unpool2d`` of a max-pool's indices; the call of a max-pool child counts as the ``forward``'s own) is found
after its max-pool (:class:`attacks.pool_relax.PoolWatch`) and replaced the same way, by its own relaxation
(:func:`attacks.pool_relax.pool_gate_relaxation`). Everything else in the ``forward`` keeps its own gradient.
``relaxed`` counts the gates so replaced; ``selections`` the selection operations (and one-winner operations) its own
``forward`` ran; ``unrecorded`` counts the gates made while autograd records nothing — inside a custom
``torch.autograd.Function``'s ``forward`` (whose own backward then runs, a masked one cutting the gradient) or under
``torch.no_grad`` — which cannot be replaced: a call that relaxed none of its gates but made such a one is refused by
:class:`attacks.bpda_wrap.ModuleBackward`, not run masked; so is a call that ran a selection but relaxed no gate (the
gate read on the layer probe's inputs is built on this call in a form no result shows — ``h[(h < t).nonzero(as_tuple=
True)] = 0`` on the tensor it ranked — or on another branch): its 0/1 mask would cut the gradient unseen; and so is a
call that relaxed fewer gates than the layer probe counted in one call of that ``forward`` (``LayerTarget.gates``: a
second gate made in place, or on another branch, beside a readable one). A gate that on this call zeroed only elements
already 0 (``x · mask`` equal to ``x``: an LWTA on ReLU outputs whose every block has one non-zero unit at most, a top-k
of ReLU outputs with fewer non-zero units than ``k``) reads as none and is not refused
(:meth:`InlineGates.zeroed_nothing`): its mask cuts the gradient only where ``x`` is exactly 0. A top-k then a ReLU (a
TopK sparse autoencoder's ``zeros.scatter(-1, idx, relu(vals))``: at most ``k`` winners, the positive ones) is read on a
scatter's result as the top-k gate of ``relu(h)`` (:func:`attacks.gates.gated_operand`) and relaxed through the ReLU's
exact gradient; a call on which it kept every positive unit (the ReLU's mask) is not refused either. An item assignment
``h[h < kth] = 0``, which returns ``None``, is read in the tensor it wrote, against the ranked tensor or, where it
overwrote that tensor's own memory, against a copy of its values made just before the call (:mod:`attacks.mask_assign`;
in the ranked tensor's shape only while it still holds the values ranked, :func:`_still_ranked`), and relaxed in
place as ``h.masked_fill_(h < kth, 0)`` is; so are ``h.mul_(h >= kth)``, ``h *= h >= kth`` and
``h.masked_fill_(h < kth, 0)`` on the ranked tensor itself, the losers zeroed by indices (``h[rows, idx] = 0``,
``h.scatter_(1, idx, 0)``), keyword forms (``h.masked_fill_(mask=m, value=0.0)``) and a channel-wise mask ``[B, C,
1, 1]`` over ``[B, C, H, W]`` (read against the copy made before the call). A max-pool gate made in place on a copy
of the pool's input (``g = h.clone(); g.mul_(h == p)``, ``g[h != p] = 0``) takes its relaxation in place too
(:meth:`_relaxed_pool`), and so does one made in place on the pool's own input (``h.mul_(h == p)``, ``h[h != p] =
0``), read against a copy of that input taken before the call (:mod:`attacks.pool_in_place`): one copy where a top-k
selection is pending too, and none of a tensor autograd does not record (a frozen model's forward with gradients on).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from attacks.gate_screen import ScreenMemo, screened_read
from attacks.gates import gated_operand, relaxed_gate, scattered
from attacks.mask_assign import copy_before
from attacks.one_winner import one_winner_op, one_winner_read
from attacks.pool_in_place import own_input_call, pool_input_copy, written
from attacks.pool_relax import MAX_UNPOOLS, PoolCall, PoolWatch, pool_gate_relaxation
from attacks.tied_gates import tied_operand

#: The selection operations (function and method forms) after which a gate is looked for.
SELECTIONS = frozenset(fn for name in ("topk", "kthvalue", "sort", "argsort", "msort", "quantile", "nanquantile")
                       for fn in (getattr(torch, name), getattr(Tensor, name)))
#: Calls that only lay out their operand's own values anew (``g.flatten(1)``, ``g.view_as(h)``): no gate is read on
#: one whose operand is a gate already relaxed (``made``) — its view (``g = h · (h == p)``, then ``g.flatten(1)``)
#: read as a gate of a ranked tensor (``hf = h.flatten(1)``) took the top-k's reading, and the mask applied next cut
#: the gradient unseen. A view of a product read as no gate is still read (``(v · m).view_as(h)``, an LWTA's blocks).
#: Other calls that only move or copy a relaxed gate's values (``g.clone()``, ``g.permute(…)``, ``g[:, :]``,
#: ``g.double().float()``) are told after they read as a gate, by their autograd history and values (:func:`_laid_out`).
LAYOUTS = frozenset(getattr(owner, name) for owner in (torch, Tensor)
                    for name in ("flatten", "unflatten", "reshape", "squeeze", "unsqueeze", "contiguous", "view",
                                 "view_as", "reshape_as") if hasattr(owner, name))
#: ``wrap(x, out, surrogate)``: ``out`` (a gate of ``x``) bit for bit, with the VJP of ``surrogate`` at ``x`` as its
#: backward (``None``: straight-through).
Wrap = Callable[[Tensor, Tensor, Callable[[Tensor], Tensor] | None], Tensor]


class InlineGates(TorchFunctionMode):
    """See the module docstring; ``backward`` is ``"smooth"`` or ``"identity"``. Each result is read through
    :func:`attacks.gate_screen.screened_read` (one host–device synchronisation for a result that is no gate, a 0/1
    mask that may stand for its gate included);
    ``full_check``: through :func:`attacks.gates.read_gate` itself (the same answers, more synchronisations)."""

    def __init__(self, active: Callable[[], bool], wrap: Wrap, backward: str, temperature: float,
                 full_check: bool = False) -> None:
        super().__init__()
        self.active, self.wrap, self.backward, self.temperature = active, wrap, backward, temperature
        self.full_check = full_check
        self.armed = self.one_winner = False  # after a selection; after an argmax or argmin only
        # ranked since the last gate; with gradients recorded? its version counter then (_still_ranked)
        self.selected: list[tuple[Tensor, bool, int | None]] = []
        self.relaxed = self.unrecorded = self.selections = 0
        # results after a selection that read as no gate, with the tensors ranked before them (zeroed_nothing)
        self.unread: list[tuple[tuple, Tensor, tuple[Tensor, ...]]] = []
        self.pools = PoolWatch()  # max-pools, then a max-pool winner-take-all gate (attacks/pool_relax.py)
        # the gates relaxed, and their views (LAYOUTS), with their version counters then (_laid_out)
        self.made: list[tuple[Tensor, int | None]] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        if not self.active():  # a child module runs: nothing is read or copied, the call passes through
            return func(*args, **(kwargs or {}))
        with _idle_watches_off():  # this call and its reading unseen by the watches of enclosing modules (idle)
            return self._watched(func, args, kwargs)

    def _watched(self, func: Callable[..., Any], args: tuple, kwargs: dict | None) -> Any:
        """``func(*args, **kwargs)`` made in the watched ``forward`` itself, its result read (module docstring)."""
        # h[h < kth] = 0, h.mul_(h >= kth), h.masked_fill_(h < kth, 0) on the tensor a selection ranked: its values
        # from before the call (attacks/mask_assign.py)
        # a copy only where it is read: of a tensor autograd records (a gate of one it does not is none BPDA relaxes),
        # or where autograd records nothing at all (the gate is read there to be counted: ``unrecorded``)
        read = not torch.is_grad_enabled() or (bool(args) and isinstance(args[0], Tensor) and args[0].requires_grad)
        # viewed in a ranked tensor's shape only while it holds the values ranked: once a gate (h.mul_(h == p)) wrote
        # them in place, the copy keeps the written tensor's shape, as its out-of-place twin's operand has
        before = copy_before(func, args, [x for x, _, v in self.selected if _still_ranked(x, v)], kwargs) \
            if self.armed and read else None  # the ranked tensors listed only after a selection
        # h.mul_(h == p), h[h != p] = 0 on the pool's own input: its values from before (attacks/pool_in_place.py),
        # the copy just made where there is one (a top-k armed too), not a second one
        pooled = pool_input_copy(func, args, kwargs, self.pools.pools, before) \
            if self.pools.pools and torch.is_grad_enabled() and read else None
        result = func(*args, **(kwargs or {}))
        gated = args if before is None else (*args, before)  # the operands the gate may be read of
        if self.pools.note(func, args, kwargs, result):
            return result
        if self.pools.pools and torch.is_grad_enabled():
            made = written(func, args, kwargs, result)  # h[h != p] = 0 returns None: the tensor it wrote
            own = own_input_call(made, args, pooled, self.pools.pools)
            call = self.pools.gate_of(func, args, made) if own is None else self.pools.took(own)
            if call is not None:  # made in place (g.mul_(mask), h[h != p] = 0): relaxed in place (its value unused)
                relaxed = self._relaxed_pool(func, made, call, in_place=bool(args) and made is args[0])
                return relaxed if made is result else result
            if any(isinstance(made, Tensor) and made.shape == c.input.shape for c in self.pools.pools):
                # a pool gate that zeroed nothing on this call? (zeroed_nothing)
                self._unread(args if pooled is None else (pooled, *args[1:]), made)
        if func in SELECTIONS:
            self.armed = True
            self.selections += 1
            if args and isinstance(args[0], Tensor):
                self.selected.append((args[0], torch.is_grad_enabled(), _version(args[0])))
        elif one_winner_op(func, args, kwargs) is not None:  # then only a gate of k = 1 is looked for (_found)
            self.one_winner = True
            self.selections += 1
        elif func in LAYOUTS and args and any(args[0] is m for m, _ in self.made):  # a relaxed gate's view (LAYOUTS)
            self._made(result)
            return result
        elif (self.armed or self.one_winner) and not torch.is_grad_enabled():
            made, wrote = scattered(func, args, result)  # out[rows, idx] = relu(vals): the tensor it changed in place
            self.unrecorded += self._found(gated, made, recorded=False, relu=wrote) is not None
        elif self.armed or self.one_winner:
            made, wrote = scattered(func, args, result)
            relaxed = self._relaxed(gated, made, relu=wrote)
            return relaxed if made is result else result  # out[rows, idx] = …: relaxed in place, returns None
        return result

    def _unread(self, args: tuple, result: Any, ranked: tuple[Tensor, ...] = ()) -> None:
        """Keep ``result`` (read as no gate after a selection or a max-pool; ``ranked``: the tensors the selections
        before it ranked) for :meth:`zeroed_nothing`, which reads it on the host only where BPDA would refuse the
        call."""
        if isinstance(result, Tensor) and result.is_floating_point() and result.layout == torch.strided:
            self.unread.append((args, result, ranked))

    def zeroed_nothing(self) -> int:
        """How many results after a selection or a max-pool, read as no gate, are a gate that zeroed only elements
        already 0 on this call (:func:`_zeroes_nothing`; a window-max gate on ReLU outputs with one non-zero unit per
        window; a top-k then ReLU, ``zeros.scatter(-1, idx, relu(vals))``, that kept every positive unit: the ReLU of
        a tensor ranked before it, :func:`_relu_of_ranked`): :class:`attacks.bpda_wrap.ModuleBackward` runs such a
        call as it is."""
        return sum(_zeroes_nothing(args, result) or _relu_of_ranked(result, ranked)
                   for args, result, ranked in self.unread)

    def _relaxed_pool(self, func: Callable[..., Any], result: Tensor, call: PoolCall, in_place: bool = False) -> Tensor:
        """``result``, a max-pool winner-take-all gate of ``call``'s input (:class:`attacks.pool_relax.PoolWatch`),
        bit for bit with the backward of its relaxation (:func:`attacks.pool_relax.pool_gate_relaxation`; identity:
        straight-through). ``in_place``: ``result`` is the tensor the call wrote (``g.mul_(mask)``, ``h[h != p] = 0``
        on the pool's input or a copy of it), which the forward goes on using: it takes the relaxed copy in place, as
        a top-k gate made in place does (:meth:`_relaxed`)."""
        self.relaxed += 1
        surrogate = None if self.backward == "identity" else pool_gate_relaxation(
            call, func in MAX_UNPOOLS, self.temperature)
        relaxed = self.wrap(call.input, result, surrogate) if not in_place else _written_back(
            result, self.wrap(call.input, result.detach().clone(), surrogate))
        self._made(relaxed)
        return relaxed

    def _gated_operand(self, args: tuple, result: Any, recorded: bool, selected: list[tuple[Tensor, bool, Any]],
                       relu: bool = False, memo: ScreenMemo | None = None) -> tuple[Tensor, Tensor, Any] | None:
        """:func:`attacks.gates.gated_operand` of ``result`` among ``args`` and the tensors a selection ranked
        (``selected``) — or, where ties at the gate's threshold make its count vary on this call's inputs (a black
        image background), :func:`attacks.tied_gates.tied_operand`'s reading. With ``recorded``, only tensors
        autograd records, and of the ranked ones only those ranked while it recorded: a later view of a gate made
        inside a custom ``torch.autograd.Function`` is that Function's output, whose own backward (refused where it
        cuts the gradient) is not BPDA's to bypass. ``relu``: a scatter's result, read also as a top-k then a ReLU
        (:func:`attacks.gates.gated_operand`). ``memo`` (:class:`attacks.gate_screen.ScreenMemo`, not with
        ``full_check``): each candidate screened once for both readings, the fits behind the reading kept."""
        eligible = [x for x in args if not recorded or (isinstance(x, Tensor) and x.requires_grad)]
        ranked = [x for x, ranked_recorded, _ in selected if not recorded or (ranked_recorded and x.requires_grad)]
        read = None if memo is None else functools.partial(screened_read, memo=memo)
        # the layer probe read it here
        found = gated_operand(result, eligible, ranked, known_gate=True, read=read, relu=relu)
        return found if found is not None else tied_operand(result, eligible, ranked, screened=read is not None,
                                                            memo=memo)

    def _found(self, args: tuple, result: Any, recorded: bool, relu: bool = False) -> tuple[Tensor, Tensor, Any] | None:
        """:meth:`_gated_operand`, where only an ``argmax``/``argmin`` came before: a gate of one winner per group
        (:func:`attacks.one_winner.one_winner_read`, given the fits the reading made)."""
        memo = None if self.full_check else ScreenMemo()
        found = self._gated_operand(args, result, recorded, self.selected, relu, memo)
        if self.armed:
            return found
        return one_winner_read(found, None if memo is None or found is None else memo.fits_of(found[2]))

    def _relaxed(self, args: tuple, result: Any, relu: bool = False) -> Any:
        """``result`` with the surrogate's backward where it is a gate (:meth:`_gated_operand`). A gate made in place
        (``zeros.scatter_(…)``, whose tensor the forward may go on using rather than the value returned) takes the
        relaxed copy in place (``copy_``: the same values, its backward that of the copy; a tensor that is no view is
        detached first, so no backward of the call it replaces runs: ``scatter_reduce_``'s needs the values the copy
        overwrote); its surrogate reads the winners from a copy of it, which later in-place changes do not reach.
        ``relu``: a scatter's result (:meth:`_gated_operand`)."""
        found = self._found(args, result, recorded=True, relu=relu)
        if found is not None and self.made and _laid_out(result, args, self.made):
            self._made(result)  # a relaxed gate's values moved or copied (g.clone().flatten(1)): no gate
            return result
        if found is None:
            self._unread(args, result, tuple(x for x, _, _ in self.selected) if relu else ())
            return result
        x, out, (fit, mask) = found
        self.armed, self.one_winner, self.selected = False, False, []
        self.relaxed += 1
        in_place = any(result is a for a in args)
        winners = out.detach().clone() if in_place else out.detach()
        surrogate = None if self.backward == "identity" else functools.partial(
            relaxed_gate, out=winners, grouping=fit.grouping, temperature=self.temperature, score=fit.score,
            mask=mask)
        relaxed = self.wrap(x, winners if in_place else out, surrogate).reshape(result.shape)
        return self._made(_written_back(result, relaxed) if in_place else relaxed)

    def _made(self, gate: Tensor) -> Tensor:
        """``gate`` (a gate relaxed, or a view of one) kept in ``made`` with its version counter now; returned."""
        self.made.append((gate, _version(gate)))
        return gate


#: torch's own (private) calls on the torch-function mode stack that :func:`_idle_watches_off` uses; where a torch
#: lacks one, the idle watches stay on (the same results, the cost of before).
_MODE_STACK_CALLS = ("_len_torch_function_stack", "_get_function_stack_at", "_pop_torch_function_stack",
                     "_push_on_torch_function_stack")


@contextlib.contextmanager
def _idle_watches_off() -> Iterator[None]:
    """The :class:`InlineGates` of enclosing modules off the torch-function mode stack while it runs where they are
    idle (``active`` false: this module is one of their children), the other modes kept in their order: an idle
    watch passes each call through unchanged, so it changes nothing but the cost — one Python dispatch per call,
    every call of a reading (its tensor attributes included) — of a nested target (a block of a model whose own
    ``forward`` is a target too)."""
    if not all(hasattr(torch._C, name) for name in _MODE_STACK_CALLS):  # torch's private calls: none, nothing off
        yield
        return
    depth = torch._C._len_torch_function_stack()
    idle = [i for i in range(depth) if _idle(torch._C._get_function_stack_at(i))]
    if not idle:
        yield
        return
    popped = [torch._C._pop_torch_function_stack() for _ in range(depth - idle[0])][::-1]  # bottom first
    kept = [mode for i, mode in enumerate(popped, idle[0]) if i not in idle]
    for mode in kept:
        torch._C._push_on_torch_function_stack(mode)
    try:
        yield
    finally:
        for _ in kept:
            torch._C._pop_torch_function_stack()
        for mode in popped:
            torch._C._push_on_torch_function_stack(mode)


def _idle(mode: object) -> bool:
    """Whether ``mode`` is an :class:`InlineGates` whose module's own ``forward`` is not running now."""
    return isinstance(mode, InlineGates) and not mode.active()


def _version(x: Tensor) -> int | None:
    """``x``'s version counter (bumped by every in-place write of its memory, through any view); ``None`` for an
    inference tensor, which keeps none."""
    return None if x.is_inference() else x._version


def _still_ranked(x: Tensor, version: int | None) -> bool:
    """Whether ``x``, ranked by a selection when its version counter read ``version`` (:func:`_version`), holds the
    values it held then: no in-place call wrote its memory since (``h.mul_(h == p)`` of ``h`` whose view ``x =
    h.flatten(1)`` a top-k ranked, a pool gate made in place before the top-k's mask is applied). An inference tensor
    (no counter) counts as unchanged, as before."""
    return version is None or _version(x) == version


#: Autograd nodes of one input that may gate it (``g.masked_fill(m, 0)``, ``g.index_fill(1, idx, 0)``): no layout.
_MASKING = ("MaskedFill", "IndexFill", "Scatter", "Put", "MaskedScatter")


def _laid_out(result: Any, args: tuple, made: list[tuple[Tensor, int | None]], depth: int = 16) -> bool:
    """Whether ``result``, read as a gate, only holds the values of a gate already relaxed (``made``, unchanged since:
    its version counter), moved or copied: its autograd history reaches that gate through calls of one input each
    (``clone``, ``permute``, ``transpose``, indexing, ``to``; at most ``depth``; not a product, nor a fill or scatter
    by a mask, which may be a gate that zeroed only zeros of it), and its values are that gate's in its dtype, as a
    multiset (``g.clone().flatten(1)`` of ``g = h · (h == p)``, read as a gate of a ranked ``hf = h.flatten(1)``; its
    real mask, applied next, is the gate). Out of place only; one host–device synchronisation where the history
    reaches such a gate."""
    if not isinstance(result, Tensor) or any(result is a for a in args) or result.grad_fn is None:
        return False
    # each gate's node object held while the history is walked, so that ``is`` compares the same wrappers
    nodes = [(m.grad_fn, m) for m, version in made if m.grad_fn is not None and _version(m) == version
             and m.numel() == result.numel() and m.device == result.device]
    node = result.grad_fn
    for _ in range(depth):
        gate = next((m for n, m in nodes if n is node), None)
        if gate is not None:
            values = gate.detach().flatten().to(result.dtype).sort().values  # g.double(): in the result's dtype
            return bool(torch.equal(result.detach().flatten().sort().values, values))
        if len(node.next_functions) != 1 or any(word in node.name() for word in _MASKING) \
                or node.next_functions[0][0] is None:
            return False
        node = node.next_functions[0][0]
    return False


def _written_back(result: Tensor, relaxed: Tensor) -> Tensor:
    """``result``, a gate made in place, holding ``relaxed`` (the same values) by ``copy_``, so its backward is the
    relaxation's; a tensor that is no view is detached first, so no backward of the call it replaces runs
    (``scatter_reduce_``'s needs the values the copy overwrote; a 0/1 mask's would cut the gradient)."""
    if result._base is None:
        result.detach_()
    return result.copy_(relaxed)


def _zeroes_nothing(args: tuple, result: Any) -> bool:
    """Whether ``result`` is a floating-point operand of its call bit for bit, another operand a 0/1 mask
    (``x · mask``, ``torch.where(mask, x, 0)``, ``x.masked_fill(~mask, 0)``): a gate that on this call zeroed only
    elements already 0 (an LWTA on ReLU outputs whose every block has one non-zero unit at most; a top-k of ReLU
    outputs with fewer non-zero units than ``k``, its threshold 0), which no grouping reads and whose mask cuts the
    gradient only where ``x`` is exactly 0."""
    tensors = [a for a in args if isinstance(a, Tensor) and a is not result]
    kept = next((a for a in tensors if a.is_floating_point() and a.shape == result.shape and torch.equal(a, result)),
                None)
    masks = [a for a in tensors if a is not kept and (a.dtype == torch.bool or a.is_floating_point())]
    return kept is not None and any(bool(((m == 0) | (m == 1)).all()) for m in masks)


def _relu_of_ranked(result: Tensor, ranked: tuple[Tensor, ...]) -> bool:
    """Whether ``result`` is ``relu(x)`` bit for bit for a tensor ``x`` of as many elements that a selection ranked:
    a top-k then ReLU (a TopK sparse autoencoder's ``zeros.scatter(-1, idx, relu(vals))``, a scatter's result:
    at most ``k`` winners, the positive ones; read as the top-k gate of ``relu(x)``,
    :func:`attacks.gates.gated_operand`; ``x`` with a negative element: not a tensor gated in place) on a call where
    no group had more than ``k`` positive units, so it zeroed only what the ReLU zeroes: its mask is the ReLU's,
    whose exact gradient is no masking."""
    return any(x.numel() == result.numel() and x.dtype == result.dtype and bool((x < 0).any())
               and torch.equal(result.reshape(x.shape), x.detach().clamp_min(0)) for x in ranked)


def scripted_call(module: torch.nn.Module) -> str | None:
    """The name of a TorchScript function (``@torch.jit.script def kwta(h, k)``) that the ``forward`` of ``module``'s
    class calls by a global or closure name (nested functions and lambdas of that ``forward`` included), else
    ``None``. Its operations run in TorchScript's interpreter, which no :class:`~torch.overrides.TorchFunctionMode`
    sees: a gate inside it, called from a block between its child modules, is no inline gate :class:`InlineGates`
    (or the layer probe) can read, so its 0/1 mask would cut the gradient unseen."""
    forward = getattr(type(module), "forward", None)
    code = getattr(forward, "__code__", None)
    if code is None:
        return None
    names, todo = set(), [code]
    while todo:
        current = todo.pop()
        names.update(current.co_names + current.co_freevars)
        todo.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    scope = dict(getattr(forward, "__globals__", {}))
    scope.update(zip(code.co_freevars, (c.cell_contents for c in forward.__closure__ or ())))
    return next((n for n in sorted(names) if isinstance(scope.get(n), torch.jit.ScriptFunction)), None)
