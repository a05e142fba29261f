"""The constant-count watch of the selections' forward (:func:`kwta_robust.detect_selections.selections_outside`): a
top-k written without torch's selection operations (an ``argmax`` loop with ``masked_fill(-inf)``, a threshold
search, numpy's ``argpartition``) leaves no call to note, but its output holds the same number ``k`` of non-zero
values in every sample (``0 < k < size``) at positions that differ between samples — a top-k's mark, which no ReLU,
pruning mask or padding leaves. :class:`SparsityWatch` notes such tensors passed between modules (``[B, ...]``, at
least :data:`MIN_SPARSITY_BATCH` samples), less a found gate's output and what only moves, copies, scales or joins it
(:data:`CARRYING_OPS`)."""

from __future__ import annotations

from typing import Any, Collection

import torch
from torch import Tensor

#: Fewest samples on which a constant count of non-zero values is taken for a top-k (fewer may agree by chance).
MIN_SPARSITY_BATCH = 4
#: Operations (function or method name) that only move, pad, repeat or join their inputs' values: their result
#: carries a found gate's output along (``F.pad``, ``F.interpolate`` / ``nn.Upsample``, ``torch.cat`` with another
#: tensor), so it is no hidden top-k of its own (:class:`SparsityWatch`).
CARRYING_OPS: frozenset[str] = frozenset({
    "pad", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "cat", "concat", "concatenate",
    "stack", "hstack", "vstack", "dstack", "flatten", "unflatten", "reshape", "view", "view_as", "permute",
    "transpose", "contiguous", "clone", "to", "flip", "roll", "unsqueeze", "squeeze", "narrow", "repeat",
    "repeat_interleave", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
})
JOINING_OPS: frozenset[str] = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"})


def constant_count(t: Any, batch: int) -> tuple[int, int] | None:
    """``(k, size)`` where floating-point ``t`` ``[batch, ...]`` holds ``k`` non-zero values of ``size`` in every
    sample, ``0 < k < size``, not at the same positions in every sample; else ``None``."""
    if not isinstance(t, Tensor) or t.layout != torch.strided or not t.is_floating_point() or t.ndim < 2 \
            or t.shape[0] != batch or batch < MIN_SPARSITY_BATCH or t.numel() == 0:
        return None
    nonzero = (t != 0).reshape(batch, -1)
    counts = nonzero.sum(dim=1)
    k, size = int(counts[0]), nonzero.shape[1]
    if not 0 < k < size or not bool((counts == k).all()) or bool((nonzero == nonzero[0]).all()):
        return None
    return k, size


def _winners(t: Tensor) -> tuple[Tensor, Tensor]:
    """The non-zero mask ``[B, size]`` (logical order) of ``t`` ``[B, ...]``, and the sum and the sum of squares of
    its non-zero magnitudes divided by the sample's largest ``[B, 2]`` (kept by a permutation or a scaling; no
    selection operation, which the watch would note)."""
    flat = t.reshape(len(t), -1)
    magnitudes = flat.abs().to(torch.float64)  # a cast copy of a gate's output compares with it
    ratio = magnitudes / magnitudes.amax(dim=1, keepdim=True)
    return flat != 0, torch.stack([ratio.sum(dim=1), ratio.square().sum(dim=1)], dim=1)


class SparsityWatch:
    """Tensors passed between modules with a constant count of non-zero values (:func:`constant_count`), one entry
    per storage, where first seen; storages in ``skip`` (the model's input) are not noted. A tensor made inside a
    module of ``gates`` (a gate the probe found, a BPDA-capable module) is a found gate's output: neither it nor a
    view, copy, scaling or permutation of it (the same count, and the same winners or the same winning values up to
    a factor, to 1%: a copy in half precision) is noted, nor what an operation of :data:`CARRYING_OPS` makes of it
    (``carried``: padded, upsampled, or joined with tensors that hold no top-k of their own — a join with a hidden
    gate's output is still noted). The noted and carried tensors are kept alive until the forward ends, so that no
    later tensor reuses their memory and reads as one of them."""

    def __init__(self, batch: int, skip: Collection[int], gates: Collection[str]) -> None:
        self.batch, self.skip, self.gates = batch, set(skip), set(gates)
        self.found: dict[int, dict[str, Any]] = {}
        self.gate_winners: list[tuple[tuple[int, int], Tensor, Tensor]] = []
        self.kept: list[Tensor] = []
        self.carried: set[int] = set()

    def gate_output(self, t: Any) -> None:
        """Note ``t``, the output of a found gate, as carrying that gate's winners (whatever its count)."""
        if isinstance(t, Tensor) and t.layout == torch.strided:
            self.carried.add(t.untyped_storage().data_ptr())
            self.kept.append(t)

    def _is_carried(self, t: Tensor) -> bool:
        return t.layout == torch.strided and t.untyped_storage().data_ptr() in self.carried

    def carry(self, op: str, args: tuple, result: Any) -> None:
        """Note ``result`` of operation ``op`` on ``args`` as carried where ``op`` only moves, pads or joins values
        (:data:`CARRYING_OPS`) and one of its tensors is carried; a join, only where each other part is carried
        too or holds no constant count of non-zero values (:func:`constant_count`: dense, ReLU-like)."""
        if op not in CARRYING_OPS or not isinstance(result, Tensor) or not result.is_floating_point() \
                or result.layout != torch.strided:
            return
        parts = [t for a in args for t in (a if isinstance(a, (list, tuple)) else (a,)) if isinstance(t, Tensor)]
        if not any(self._is_carried(t) for t in parts):
            return
        if op in JOINING_OPS and any(not self._is_carried(t) and constant_count(t, self.batch) is not None
                                     for t in parts):
            return  # joined with a hidden gate's output: the join is noted
        self.carried.add(result.untyped_storage().data_ptr())
        self.kept.append(result)

    def _of_a_gate(self, t: Tensor, count: tuple[int, int]) -> bool:
        if not any(count == c for c, _, _ in self.gate_winners):  # no found gate of this count: nothing to compare
            return False
        mask, magnitudes = _winners(t)
        return any(count == c and (torch.equal(mask, m) or torch.allclose(magnitudes, v, rtol=1e-2, atol=0.0))
                   for c, m, v in self.gate_winners)

    def note(self, t: Any, role: str, name: str, modules: list[str]) -> None:
        count = constant_count(t, self.batch)
        ptr = t.untyped_storage().data_ptr() if count is not None else None
        if ptr is None or ptr in self.skip or ptr in self.found or ptr in self.carried:
            return
        self.kept.append(t)
        if self.gates.intersection(modules):  # the output of a found gate (or made inside one)
            self.skip.add(ptr)
            self.gate_winners.append((count, *_winners(t)))
        elif self._of_a_gate(t, count):
            self.skip.add(ptr)
        else:
            self.found[ptr] = {"op": "constant-count", "kind": "sparsity", "modules": list(modules), "calls": 1,
                               "k": count[0], "size": count[1], "tensor": f"{role} of {name or 'the model'}"}

    def entries(self, output: Any) -> list[dict[str, Any]]:
        """What was noted, less the model's ``output`` (a one-hot decision is no hidden gate)."""
        last = output.untyped_storage().data_ptr() if isinstance(output, Tensor) else None
        return [entry for ptr, entry in self.found.items() if ptr != last]
