"""Top-k selections that route rather than gate: the ``routes`` of a selection entry
(:mod:`kwta_robust.detect_selections`).

Two top-k forms beyond kWTA activations select something other than units of one tensor, and no BPDA surrogate here
relaxes them (out of scope; README "BPDA on any model"):

* losers set to ``-inf`` (or a large negative) before a softmax — top-k attention (Zhao et al. 2019, "Explicit
  Sparse Transformer": ``scores.masked_fill(scores < kth, -inf).softmax(-1)`` or ``topk`` scattered into a ``-inf``
  tensor, scores ``[B, T, T]``; or filled in place, ``masked_fill_`` / ``scores[mask] = -inf``, read against a
  copy taken only before such a call writes a ranked tensor) and mixture-of-experts noisy top-k gating (Shazeer et
  al. 2017: the top-k of the router's logits ``[B, E]`` scattered back into ``-inf``, then a softmax): ``routes:
  "-inf"``, where a row keeps two or more (its softmax is no ``x · mask`` of its input; with one winner a row it is
  the 0/1 mask of a top-1 gate, read and relaxed as one, as before);
* the winners' indices picking rows of another tensor (``gather`` / ``index_select`` / ``take_along_dim`` or an
  indexing of a tensor not shaped like the one ranked: the chosen experts' outputs ``[B, E, H]``, or their weights,
  a table ``[E, ...]`` the model holds — a parameter or a buffer — picked per sample, ``W[idx]``, or looked up as
  an embedding, ``F.embedding(idx, W)`` or an ``nn.Embedding`` child called with the indices): ``routes:
  "indices"``. An embedding of ids no selection made (token ids, positions) is no routing, nor are rows of a 0/1
  table (``eye(E)[idx]``: a kWTA's mask built from one-hot rows).

A selection whose ``forward`` does either builds no inline gate BPDA relaxes (a gate read there — an expert's ReLU
after a top-2 router — is dropped), so ``bpda_layers: auto`` leaves that module out and ``selections-outside-layers``
names it as routing (:mod:`kwta_robust.selection_text`) rather than advise naming it for BPDA, which would pass the
gradient straight through a softmax or an expert choice. Before, such a module was flagged as an unread top-k with
that advice, or — where the gate reading took an expert's ReLU after it for the gate — BPDA acted on it (``wrapped
inline``) with the routing mask still cutting the gradient and no flag."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

#: ``routes`` of a selection whose losers are set to a large negative before a softmax (attention, MoE gating).
ROUTES_NEG_INF = "-inf"
#: ``routes`` of a selection whose winners' indices pick rows of another tensor (experts).
ROUTES_INDICES = "indices"
#: Largest fill value read as a loser's ``-inf`` (``-1e9``, ``torch.finfo(dtype).min`` and ``-inf`` are all below).
NEG_FILL = -1e4
#: Operations (function or method name) that pick a tensor's elements by an index tensor.
INDEX_OPS: frozenset[str] = frozenset({"gather", "index_select", "take_along_dim", "__getitem__"})
#: Embedding lookups, by the position of (the weight table, the indices) in their arguments: ``F.embedding(idx,
#: W)`` (what ``nn.Embedding`` calls), ``F.embedding_bag(idx, W, …)`` and ``torch.embedding(W, idx)``.
EMBEDDING_OPS: Mapping[Callable[..., Any], tuple[int, int]] = MappingProxyType({
    F.embedding: (1, 0), F.embedding_bag: (1, 0), torch.embedding: (0, 1)})
#: Operations that normalise a row (function or method name): a ``-inf``-filled tensor routes where one reads it.
SOFTMAX_OPS: frozenset[str] = frozenset({"softmax", "log_softmax", "_softmax", "_log_softmax"})
#: Keys of a selection entry that describe an inline gate (dropped from a routing selection's entry).
GATE_KEYS: tuple[str, ...] = ("gate", "k", "group_size", "k_seen", "gates", "own_gates", "ties_broken", "in_place")


def neg_filled(result: Any, ranked: Collection[Tensor]) -> bool:
    """Whether floating-point ``result`` is one of the ``ranked`` tensors (or its elements in another shape:
    heads flattened into the batch, ``[B, H, T, T]`` ranked and ``[B·H, T, T]`` filled) with some, not all, of its
    elements replaced by one value at or below :data:`NEG_FILL` (``masked_fill(s < t, -inf)``,
    ``full(-inf).scatter(…)``, ``torch.where(mask, s, -1e9)``), two or more kept along the last dim somewhere (a
    first dim other than the ranked one's was not read before: such a top-k attention was flagged as an unread
    top-k and advised for BPDA): with one winner per row, its softmax is a 0/1 mask of the top-1, which the gate
    reading takes and BPDA relaxes as any top-1 gate (a leaf module's ``output: mask``). The ranked tensor may hold
    a mask of its own applied before the ranking (a decoder's causal mask, ``-inf`` or ``-1e9``: Zhao et al.'s
    decoder attention): the fill is below every finite value it replaced, and a winner is an element kept above
    :data:`NEG_FILL` (before, such scores, not finite or with the fill at their minimum, were no routing, and the
    module was advised for ``bpda_layers``)."""
    if not isinstance(result, Tensor) or not result.is_floating_point() or result.layout != torch.strided \
            or result.ndim < 1 or result.numel() == 0 or float(result.min()) > NEG_FILL:
        return False
    for r in ranked:
        if r is result or r.numel() != result.numel() or not r.is_floating_point():
            continue
        filled = result.reshape(r.shape)
        ranked_values = r.to(filled.dtype)
        low = filled != ranked_values
        if not bool(low.any()) or bool(low.all()):
            continue
        fill, replaced = filled[low], ranked_values[low]
        replaced = replaced[torch.isfinite(replaced)]  # a mask's -inf set to the fill is no value replaced
        if bool((fill == fill[0]).all()) and float(fill[0]) <= NEG_FILL and replaced.numel() \
                and float(fill[0]) < float(replaced.min()):
            return int((~low & (filled > NEG_FILL)).sum(dim=-1).max()) > 1
    return False


#: Operators that change their first argument in place (``h[mask] = 0``, ``h *= mask``, ``h += bias``): read by
#: :func:`in_place`.
IN_PLACE_DUNDERS: frozenset[str] = frozenset({"__setitem__", "__imul__", "__iand__", "__iadd__", "__isub__",
                                              "__itruediv__"})


def in_place(func: Callable[..., Any]) -> bool:
    """Whether ``func`` changes its first argument in place: ``Tensor.__setitem__``, an in-place operator
    (:data:`IN_PLACE_DUNDERS`) or an operation named with a trailing underscore (``masked_fill_``, ``mul_``); the
    selection watch (:mod:`kwta_robust.detect_selections`) and the routing watch read writes by it alike."""
    name = getattr(func, "__name__", "")
    return name in IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))


def _tensors(arg: Any) -> list[Tensor]:
    parts = arg if isinstance(arg, (list, tuple)) else (arg,)
    return [t for t in parts if isinstance(t, Tensor)]


class RoutingWatch(TorchFunctionMode):
    """Notes, per module stack (``stack``: the names of the modules whose ``forward`` is running, shared with
    :class:`kwta_robust.detect_selections._SelectionWatch`; ``accounted`` as there), the forwards whose selections
    (``selection_ops``) route (module docstring) into ``routed``: stack → :data:`ROUTES_NEG_INF` or
    :data:`ROUTES_INDICES`. Tensors ``[batch, ...]`` only (and parameters, picked by indices). Runs in the layer
    probe's forwards (:func:`kwta_robust.detect_selections.selections_outside`), never in an attack step: its
    reads of values on the host are no per-step syncs."""

    def __init__(self, stack: list[str], accounted: Collection[str], batch: int,
                 selection_ops: Mapping[Callable[..., Any], str], routed: dict[tuple[str, ...], str],
                 tables: Collection[Tensor] = ()) -> None:
        super().__init__()
        self.stack, self.accounted, self.batch, self.ops, self.routed = stack, set(accounted), batch, \
            selection_ops, routed
        # the model's parameters and buffers, by storage: a weight table the experts' indices pick rows of
        self.tables = {t.untyped_storage().data_ptr() for t in tables if t.layout == torch.strided}
        self.ranked: dict[tuple[str, ...], list[Tensor]] = {}
        self.indices: dict[tuple[str, ...], list[Tensor]] = {}  # kept alive: their storages identify their views
        self.filled: dict[tuple[str, ...], list[Tensor]] = {}  # neg_filled tensors (and what carries their fill)

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        stack = tuple(self.stack)
        watched = not self.accounted.intersection(stack) and stack not in self.routed
        with torch._C.DisableTorchFunction():
            before = self._before_in_place(func, args, stack) if watched else None
        result = func(*args, **(kwargs or {}))
        if not watched:
            return result
        with torch._C.DisableTorchFunction():  # what this reads is no operation of the forward the watches note
            if before is not None and neg_filled(args[0], [before]):
                self.filled.setdefault(stack, []).append(args[0])
            else:
                self._note(func, args, kwargs, result, stack)
            if self.filled:
                self._read_filled(func, args, result)
        return result

    def _read_filled(self, func: Callable[..., Any], args: tuple, result: Any) -> None:
        """A softmax (:data:`SOFTMAX_OPS`) of a tensor a selection filled with a large negative (:func:`neg_filled`,
        or a result still holding its fill: ``filled / temperature``) routes that selection's forward, wherever the
        softmax runs (there, in an ``nn.Softmax`` beside it, in its caller). A fill no softmax reads
        (``masked_fill(h < kth, -1e9)`` then a ReLU: a kWTA, whose ``x · mask`` is read as a gate) routes nothing;
        session 49 had marked it, in place."""
        inputs = {t.untyped_storage().data_ptr() for a in args for t in _tensors(a) if t.is_floating_point()}
        for where, tensors in list(self.filled.items()):
            if where in self.routed or not any(t.untyped_storage().data_ptr() in inputs for t in tensors):
                continue
            if getattr(func, "__name__", "") in SOFTMAX_OPS:
                self.routed[where] = ROUTES_NEG_INF
            elif isinstance(result, Tensor) and result.is_floating_point() and result.layout == torch.strided \
                    and result.ndim >= 1 and result.numel() and float(result.min()) <= NEG_FILL:
                tensors.append(result)

    def _before_in_place(self, func: Callable[..., Any], args: tuple, stack: tuple[str, ...]) -> Tensor | None:
        """A copy of the ranked tensor (or a view of it) that in-place ``func`` (:func:`in_place`) is about to
        change: top-k attention written ``scores.masked_fill_(scores < kth, -inf)`` or ``scores[mask] = -inf``
        overwrites the tensor it ranked, so the fill shows only against the values from before the call (before,
        such a module was flagged as an unread top-k and advised for ``bpda_layers``). ``None`` (no copy) for
        every other call: a copy only where an in-place call writes a tensor a selection of ``stack`` ranked."""
        target = args[0] if args else None
        if stack not in self.ranked or not in_place(func) or not isinstance(target, Tensor) \
                or not target.is_floating_point() or target.layout != torch.strided:
            return None
        storage = target.untyped_storage().data_ptr()
        if any(r.untyped_storage().data_ptr() == storage for r in self.ranked[stack]):
            return target.clone()
        return None

    def _note(self, func: Callable[..., Any], args: tuple, kwargs: dict | None, result: Any,
              stack: tuple[str, ...]) -> None:
        if func in self.ops:
            if args and isinstance(args[0], Tensor) and args[0].is_floating_point() and args[0].ndim > 1 \
                    and args[0].shape[0] == self.batch:
                self.ranked.setdefault(stack, []).append(args[0])
                self.indices.setdefault(stack, []).extend(t for t in _tensors(result) if not t.is_floating_point())
        elif stack in self.ranked and neg_filled(result, self.ranked[stack]):
            self.filled.setdefault(stack, []).append(result)
        elif (router := self._picks_other(func, args, kwargs, stack)) is not None:
            self.routed[router] = ROUTES_INDICES

    def _picks_other(self, func: Callable[..., Any], args: tuple, kwargs: dict | None,
                     stack: tuple[str, ...]) -> tuple[str, ...] | None:
        """The forward (``stack`` or one around it: an ``nn.Embedding`` child or an experts module called with
        the indices) whose selection's indices (or a view of them) ``func`` uses to pick elements of a tensor not
        shaped like any it ranked: the experts' outputs ``[B, E, H]``, or a weight table ``[E, ...]`` the model
        holds, parameter or buffer (the experts' weights picked per sample, ``W[idx]`` / ``index_select(W, 0,
        idx)`` / ``F.embedding(idx, W)``: efficient MoE code; before, such a top-k was flagged as unread with the
        advice to move it into a module of its own for BPDA, and before session 50 so was one whose table was a
        buffer or was looked up as an embedding); ``None`` where it picks none."""
        picked = _picked(func, args, kwargs)
        if picked is None:
            return None
        source, index = picked
        if source.ndim < 2:
            return None
        if source.shape[0] != self.batch and func not in EMBEDDING_OPS:  # a table: whole rows of several elements
            index = _row_index(func, args, kwargs) if source.numel() > source.shape[0] else []
        storages = {t.untyped_storage().data_ptr() for t in index if not t.is_floating_point()}
        for end in range(len(stack), 0, -1):  # innermost first
            router = stack[:end]
            if router in self.ranked and router not in self.routed \
                    and not any(r.numel() == source.numel() for r in self.ranked[router]) \
                    and any(t.untyped_storage().data_ptr() in storages for t in self.indices.get(router, ())):
                # the table test reads the whole table: only for a pick by a selection's indices (a model indexing
                # a 50,000-row embedding's weight took seconds per probe forward)
                return router if source.shape[0] == self.batch or self._table(source) else None
        return None

    def _table(self, source: Tensor) -> bool:
        """Whether ``source`` (not ``[batch, ...]``) is a weight table of the model — a parameter, or a parameter's
        or buffer's storage — and no 0/1 table (``eye(E)[idx]`` builds a kWTA's mask, not an expert's weights)."""
        held = isinstance(source, nn.Parameter) or source.untyped_storage().data_ptr() in self.tables
        return held and not bool(((source == 0) | (source == 1)).all())


def _picked(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> tuple[Tensor, list[Tensor]] | None:
    """``(source, index tensors)`` where ``func`` picks elements of ``source`` by index: an :data:`INDEX_OPS`
    operation (its first argument, the other tensors) or an :data:`EMBEDDING_OPS` lookup (its weight table, its
    indices); ``None`` for any other call."""
    if func in EMBEDDING_OPS:
        table, ids, named = *EMBEDDING_OPS[func], kwargs or {}
        source = args[table] if len(args) > table else named.get("weight")
        index = args[ids] if len(args) > ids else named.get("input", named.get("indices"))
        if isinstance(source, Tensor) and isinstance(index, Tensor):
            return source, [index]
        return None
    if getattr(func, "__name__", "") not in INDEX_OPS or not args or not isinstance(args[0], Tensor):
        return None
    return args[0], [t for a in (*args[1:], *(kwargs or {}).values()) for t in _tensors(a)]


def _row_index(func: Callable[..., Any], args: tuple, kwargs: dict | None) -> list[Tensor]:
    """The index tensors with which ``func`` picks whole rows (first-dim slices) of ``args[0]``: ``W[idx]``,
    ``W[idx, ...]``, ``index_select(W, 0, idx)``; none for other picks. A kWTA that reads a per-unit parameter at its
    winners (a gain ``[1, H]`` as ``g[0, idx]``, a scale ``[H, 1]`` as ``s[idx]``: one element per index) still
    gates units (its ``x · mask`` is read and relaxed by BPDA): no routing (session 49 had marked it one)."""
    name = getattr(func, "__name__", "")
    if name == "__getitem__" and len(args) > 1:
        key = args[1][0] if isinstance(args[1], tuple) and args[1] else args[1]
        return _tensors(key)
    if name == "index_select":
        dim = (kwargs or {}).get("dim", args[1] if len(args) > 1 else None)
        if isinstance(dim, int) and dim in (0, -args[0].ndim):
            return _tensors((kwargs or {}).get("index", args[2] if len(args) > 2 else None))
    return []


def route_entries(found: list[dict[str, Any]], routed: Mapping[tuple[str, ...], str]) -> None:
    """Mark the selection entries ``found`` made in a routing ``forward`` (``routed``, :class:`RoutingWatch`) with
    ``routes``, their inline gate keys (:data:`GATE_KEYS`) dropped."""
    for entry in found:
        how = routed.get(tuple(entry.get("modules") or ()))
        if how is not None and entry.get("kind") == "selection":
            for key in GATE_KEYS:
                entry.pop(key, None)
            entry["routes"] = how
