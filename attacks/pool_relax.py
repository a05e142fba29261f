"""Smooth relaxations of the max-pool winner-take-all gates of :mod:`attacks.pool_gates`, for BPDA's smooth surrogate.

BPDA (Athalye, Carlini & Wagner, ICML 2018, §4.1) keeps a gate's forward exact and differentiates a smooth
approximation of it in the backward pass; Tramèr et al. (NeurIPS 2020, §5.5) broke kWTA so, with
``x · sigmoid((x - t_k) / T)`` in place of its 0/1 mask (:func:`attacks.gates.relaxed_gate`). The max-pool gates
keep ``h`` where a unit is the largest of a window; their relaxations, ``[B, C, *S] → [B, C, *S]`` (``S`` the 1 to 3
spatial axes the max-pool reads), are soft indicators of that, sharpening to the hard mask as ``T → 0``:

* **own window** (``h · (h == F.max_pool2d(h, 3, 1, 1))``: the pool's output has ``h``'s shape, unit ``o`` compared
  with the max of the window at ``o``, non-maximum suppression) — ``h · sigmoid((h - m) / (T · std))`` with ``m``
  the max over that window *without the unit itself* and without units equal to it (the hard gate keeps every tied
  maximum): the sign of ``h - m`` is the hard decision, and both the unit and its strongest rival get a gradient
  (against the max including the unit, ``h - max ≤ 0`` would be 0 at every winner and pass it no gradient);
* **pooling windows** (the max-unpool sparse code ``F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2)``,
  or any gate whose pool output has another shape) — ``h · p`` with ``p`` the softmax of ``h / (T · std)`` over
  each window (its limit the one-hot of the window's argmax, the max-unpool's mask); a unit in several windows
  (overlapping windows) is kept with ``1 - Π (1 - p)``, the chance that some window picks it. Of a window's equal
  maxima only the first (the max-pool's index) competes under a max-unpool, as in its hard gate; a gate comparing
  with the pooled values (``h · (h == F.interpolate(F.max_pool2d(h, 2), scale_factor=2))``) keeps them all, and
  there a unit competes with the units of its window not equal to it (``p = e^{h / s} / (e^{h / s} + Σ_{h' ≠ h}
  e^{h' / s})``, ``s = T · std``).

Ties matter: a blank image background makes whole windows of equal activations, where a relaxation that let tied
units compete would sit at ``sigmoid(0)`` and pass them gradients of ``h / (4 T std)``, growing as ``T → 0``, that
the hard gate has no trace of (on a max-unpool CNN on MNIST half the positive windows tie: its gradient's cosine to
the exact one fell from 0.66 at ``T = 1`` to 0.20 at ``T = 0.001`` before ties followed the hard gate).

``std`` is the population std of ``h`` per sample, so ``T`` means what it means for the top-k relaxation and the
temperature schedule of :mod:`attacks.bpda_temperature` applies unchanged. Windows (kernel, stride, padding,
dilation, ``ceil_mode``; an adaptive max-pool's) are read from the max-pool call itself (:class:`PoolCall`).
Threat model: the inner attack's (nothing here touches the inputs). This module never imports ``kwta_robust``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pool_gates import is_pool_gate, max_pool_name, pooled_values

#: Modules whose ``forward`` is one max-pool or max-unpool call: the call counts as their caller's
#: (``h · (h == self.pool(h))``), as in the layer probe (``kwta_robust.detect_selections.POOLING_CHILDREN``).
POOL_CHILDREN: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.MaxUnpool1d,
                                              nn.MaxUnpool2d, nn.MaxUnpool3d)
#: The ``gate`` of a layer probe's selection entry for a max-pool winner-take-all gate this module relaxes.
POOL_GATE_MARK = "max-pool"
#: The max-unpools: a gate they return picks each pooling window's argmax.
MAX_UNPOOLS: frozenset[Callable[..., Any]] = frozenset(getattr(F, f"max_unpool{d}d") for d in (1, 2, 3))
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ADAPTIVE_ARGS = ("input", "output_size", "return_indices")


@dataclass(frozen=True)
class PoolCall:
    """One max-pool call: ``name`` (``max_pool2d``, ``adaptive_max_pool2d`` …), its ``input`` ``[B, C, *S]`` and
    pooled ``values`` ``[B, C, *O]``, and its arguments (the windows)."""

    name: str
    input: Tensor
    values: Tensor
    params: dict

    @classmethod
    def of(cls, name: str, args: tuple, kwargs: dict | None, values: Tensor) -> "PoolCall":
        names = _ADAPTIVE_ARGS if name.startswith("adaptive") else _POOL_ARGS
        params = dict(zip(names, args)) | dict(kwargs or {})
        return cls(name, params.pop("input"), values, params)

    @property
    def dims(self) -> int:
        return int(self.name[-2])

    def windows(self) -> Tensor:
        """``[*O, K]``: the flat spatial index (over ``S``) of each window's ``K`` elements, ``-1`` for padding."""
        spatial, out = self.input.shape[-self.dims:], self.values.shape[-self.dims:]
        tables = [_axis_table(self, axis, int(length), int(o)) for axis, (length, o) in enumerate(zip(spatial, out))]
        index = torch.zeros((), dtype=torch.long, device=self.input.device)
        valid = torch.ones((), dtype=torch.bool, device=self.input.device)
        for axis, table in enumerate(tables):  # [O_a, K_a] → broadcast into [O_1, …, O_n, K_1, …, K_n]
            shape = [1] * (2 * self.dims)
            shape[axis], shape[self.dims + axis] = table.shape
            index = index * int(spatial[axis]) + table.clamp(min=0).view(shape)
            valid = valid & (table >= 0).view(shape)
        index = torch.where(valid, index, torch.full_like(index, -1))
        return index.reshape(*out, -1)


def _axis(value: Any, axis: int, dims: int, default: int) -> int:
    """One axis's entry of a max-pool argument given as an int or a tuple (``None``: ``default``)."""
    if value is None:
        return default
    if isinstance(value, (tuple, list)):
        return int(value[axis] if len(value) == dims else value[0])
    return int(value)


def _axis_table(call: PoolCall, axis: int, length: int, out: int) -> Tensor:
    """``[O, K]``: the input positions along one spatial axis of each window (``-1``: padding or past the end)."""
    device = call.input.device
    if call.name.startswith("adaptive"):
        starts = [math.floor(o * length / out) for o in range(out)]
        ends = [math.ceil((o + 1) * length / out) for o in range(out)]
        size = max(e - s for s, e in zip(starts, ends))
        rows = [[s + j if s + j < e else -1 for j in range(size)] for s, e in zip(starts, ends)]
        return torch.tensor(rows, dtype=torch.long, device=device)
    p = call.params
    kernel = _axis(p.get("kernel_size"), axis, call.dims, 1)
    stride = _axis(p.get("stride") or p.get("kernel_size"), axis, call.dims, kernel)
    padding, dilation = _axis(p.get("padding"), axis, call.dims, 0), _axis(p.get("dilation"), axis, call.dims, 1)
    start = torch.arange(out, device=device).unsqueeze(1) * stride - padding
    positions = start + torch.arange(kernel, device=device).unsqueeze(0) * dilation
    return torch.where((positions >= 0) & (positions < length), positions, torch.full_like(positions, -1))


def _spread(h: Tensor, temperature: float) -> Tensor:
    """``T · std`` per sample (population std; 1 where ``h`` is constant), shaped to broadcast over ``h``; detached:
    the scale sets the temperature, and passes no gradient of its own to every unit of the sample."""
    std = h.detach().flatten(1).std(dim=1, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (temperature * std).view(-1, *[1] * (h.ndim - 1))


def own_window_gate(h: Tensor, call: PoolCall, temperature: float) -> Tensor:
    """``h · sigmoid((h - m) / (T · std))``, ``m`` the max of unit ``o``'s window without ``o`` itself (see the module
    docstring); ``h`` ``[B, C, *S]``, the pool's output ``[B, C, *S]`` too."""
    work = h.to(torch.promote_types(h.dtype, torch.float32))
    index = call.windows()  # [*S, K]
    own = torch.arange(index.shape[:-1].numel(), device=h.device).view(*index.shape[:-1], 1)
    flat = work.flatten(-call.dims)  # [B, C, N]
    picked = flat.index_select(-1, index.clamp(min=0).flatten()).view(*flat.shape[:-1], *index.shape)
    # a unit equal to the unit's own value is no rival: the hard gate keeps every tied maximum (``h == max``)
    rival = (index >= 0) & (index != own) & (picked.detach() != work.detach().unsqueeze(-1))
    others = torch.where(rival, picked, torch.full_like(picked, -math.inf)).amax(-1)
    return (work * torch.sigmoid((work - others) / _spread(work, temperature))).to(h.dtype)


def window_softmax_gate(h: Tensor, call: PoolCall, temperature: float, keep_ties: bool = False) -> Tensor:
    """``h · p``, ``p`` the softmax of ``h / (T · std)`` over each pooling window (a unit in several windows: ``1 - Π
    (1 - p)``); ``h`` ``[B, C, *S]``, the pool's output ``[B, C, *O]``. Ties: a window's first maximum competes, its
    other maxima get ``p = 0`` (the max-unpool); ``keep_ties``: no unit competes with units equal to it (a gate
    comparing with the pooled values keeps every tied maximum)."""
    work = h.to(torch.promote_types(h.dtype, torch.float32))
    index = call.windows()
    index = index.reshape(-1, index.shape[-1])  # [W, K]
    flat = work.flatten(-call.dims)  # [B, C, N]
    picked = flat.index_select(-1, index.clamp(min=0).flatten()).view(*flat.shape[:-1], *index.shape)
    spread = _spread(work, temperature).view(-1, *[1] * (picked.ndim - 1))
    if keep_ties:  # p_i = sigmoid(z_i - logsumexp of the z_j ≠ z_i): e^{z_i} / (e^{z_i} + Σ e^{z_j}), z = h / s
        z, seen = picked / spread, picked.detach()
        rivals = (index >= 0).unsqueeze(-2) & (seen.unsqueeze(-1) != seen.unsqueeze(-2))  # [B, C, W, K, K]
        others = torch.where(rivals, z.unsqueeze(-2), torch.full_like(rivals, -math.inf, dtype=z.dtype))
        p = torch.where(index >= 0, torch.sigmoid(z - others.logsumexp(-1)), torch.zeros_like(z))
    else:
        valid = torch.where(index >= 0, picked.detach(), torch.full_like(picked, -math.inf))
        # ties go as in the hard gate: only the first of a window's equal maxima (the max-pool's index) competes
        first = F.one_hot(valid.argmax(-1), valid.shape[-1]).bool()
        valid = (index >= 0) & (first | (picked.detach() != valid.amax(-1, keepdim=True)))
        p = torch.softmax(torch.where(valid, picked / spread, torch.full_like(picked, -math.inf)), dim=-1)
    slot = torch.where(index >= 0, index, torch.full_like(index, flat.shape[-1])).flatten()  # padding: a spare slot
    zeros = flat.new_zeros(*flat.shape[:-1], flat.shape[-1] + 1)
    if int(torch.bincount(slot[slot < flat.shape[-1]]).max()) <= 1:  # no overlap: each unit's own window's p
        kept = zeros.index_add(-1, slot, p.flatten(-2))
    else:
        kept = 1 - torch.exp(zeros.index_add(-1, slot, torch.log1p(-p.clamp(max=1 - 1e-6)).flatten(-2)))
    return (work * kept[..., :-1].reshape(work.shape)).to(h.dtype)


def pool_gate_relaxation(call: PoolCall, unpooled: bool, temperature: float) -> Callable[[Tensor], Tensor]:
    """The smooth surrogate ``h ↦ relaxed gate`` of a gate built from ``call`` (``unpooled``: returned by a
    max-unpool): :func:`own_window_gate` where the pool kept ``h``'s shape and no max-unpool picked, else
    :func:`window_softmax_gate`, keeping every tied maximum as the hard gate does unless a max-unpool picked."""
    same = call.values.shape[-call.dims:] == call.input.shape[-call.dims:]
    if same and not unpooled:
        return lambda h: own_window_gate(h, call, temperature)
    return lambda h: window_softmax_gate(h, call, temperature, keep_ties=not unpooled)


class PoolWatch:
    """The max-pools of one running ``forward`` and the first later result that is a gate built from them: fed every
    call by :class:`attacks.inline_gates.InlineGates` (while BPDA acts on the module building the gate); ``noted``
    counts the max-pools, ``relaxed`` the gates found (:class:`attacks.bpda_wrap.ModuleBackward` refuses a call that
    max-pooled and relaxed fewer gates than the layer probe counted in one call: ``LayerTarget.gates``)."""

    def __init__(self) -> None:
        self.pools: list[PoolCall] = []
        self.noted = self.relaxed = 0

    def note(self, func: Callable[..., Any], args: tuple, kwargs: dict | None, result: Any) -> bool:
        """Record a max-pool call (:func:`attacks.pool_gates.max_pool_name`) on a floating-point tensor; whether it
        was one."""
        name = max_pool_name(func, args, kwargs)
        if name is None:
            return False
        values = pooled_values(result)
        if values is not None and args and isinstance(args[0], Tensor) and args[0].is_floating_point():
            self.pools.append(PoolCall.of(name, args, kwargs, values))
            self.noted += 1
        return True

    def gate_of(self, func: Callable[..., Any], args: Sequence[Any], result: Any) -> PoolCall | None:
        """The recorded pool ``result`` is a winner-take-all gate of (:func:`attacks.pool_gates.is_pool_gate`, on a
        pool input autograd records, shaped like ``result``), latest first; the pools are then forgotten. (The values
        are flattened for ``torch.isin``, which cannot view an adaptive max-pool's non-contiguous output.)"""
        if not self.pools or not isinstance(result, Tensor):
            return None
        for call in reversed(self.pools):
            if call.input.shape == result.shape and call.input.requires_grad \
                    and is_pool_gate(result, list(args), [(call.input, call.values.detach().flatten())]):
                return self.took(call)
        return None

    def took(self, call: PoolCall) -> PoolCall:
        """``call``, whose gate was found (by :meth:`gate_of`, or on a copy of its input made before the gate
        overwrote it in place: :func:`attacks.pool_in_place.own_input_call`): counted, and the pools forgotten."""
        self.pools, self.relaxed = [], self.relaxed + 1
        return call
