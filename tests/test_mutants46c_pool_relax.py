"""Mutation review of attacks/pool_relax.py (the smooth relaxations of the max-pool winner-take-all gates): the
window geometry read from the max-pool call (dilation, per-axis kernels, adaptive windows of uneven length), ties
(a blank background's equal units) following the hard gate, the exact no-overlap path, a constant ``h``, the choice
of relaxation, and :class:`PoolWatch`'s bookkeeping (latest pool first, pools forgotten once a gate is found, only a
pool input autograd records). Each test killed a mutant the older tests let through."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.pool_relax import PoolCall, PoolWatch, own_window_gate, pool_gate_relaxation, window_softmax_gate

H = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))


def pool_call(name: str, h: Tensor, *args, **kwargs) -> PoolCall:
    """The :class:`PoolCall` of ``F.<name>(h, *args, **kwargs)``."""
    values = getattr(F, name)(h, *args, **kwargs)
    return PoolCall.of(name, (h, *args), kwargs, values[0] if isinstance(values, tuple) else values)


CALLS = {  # name, positional args after the input, keyword args
    "dilated": ("max_pool2d", (3, 1, 1), {"dilation": 2}),
    "per-axis kernel": ("max_pool2d", ((1, 3), (2, 1), (0, 1)), {}),
    "per-axis dilation ceil": ("max_pool2d", ((2, 3), 2, (1, 0)), {"dilation": (2, 1), "ceil_mode": True}),
    "adaptive uneven": ("adaptive_max_pool2d", ((4, 3),), {}),
    "adaptive keyword": ("adaptive_max_pool2d", (), {"output_size": (5, 4), "return_indices": True}),
    "adaptive 1d uneven": ("adaptive_max_pool1d", (4,), {}),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_the_windows_max_is_what_the_pool_returned(name: str) -> None:
    func, args, kwargs = CALLS[name]
    h = H[..., 0, :] if func.endswith("1d") else H
    call = pool_call(func, h, *args, **kwargs)
    index = call.windows()  # [*O, K]
    assert tuple(index.shape[:-1]) == tuple(call.values.shape[-call.dims:])
    flat = h.flatten(-call.dims)
    picked = flat[..., index.clamp(min=0)]
    maxima = torch.where(index >= 0, picked, torch.full_like(picked, -math.inf)).amax(-1)
    assert torch.equal(maxima, call.values)


def test_tied_maxima_of_a_blank_window_are_kept_whole_as_the_hard_gate_keeps_them() -> None:
    h = torch.zeros(1, 1, 6, 6)
    h[..., 1:3, 1:3] = 0.5  # a plateau of four equal maxima on a blank background
    h[..., 4, 4] = 1.0
    call = pool_call("max_pool2d", h, 3, 1, 1)
    hard = h * (h == F.max_pool2d(h, 3, 1, 1))
    assert torch.allclose(own_window_gate(h, call, 1e-4), hard, atol=1e-6)


def test_only_the_first_of_a_windows_tied_maxima_competes_as_in_the_max_unpool() -> None:
    h = torch.ones(1, 1, 4, 4)  # every window all tied: the max-unpool keeps its first element only
    h[..., 3, 3] = 2.0
    call = pool_call("max_pool2d", h, 2, return_indices=True)
    hard = F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2)
    assert torch.allclose(window_softmax_gate(h, call, 1e-4), hard, atol=1e-6)


def test_without_overlap_the_sharp_relaxation_is_the_max_unpool_bit_for_bit() -> None:
    h = torch.randperm(2 * 9 * 11, generator=torch.Generator().manual_seed(4)).float().view(2, 1, 9, 11)  # no near-tie
    call = pool_call("max_pool2d", h, 2, return_indices=True)
    hard = F.max_unpool2d(*F.max_pool2d(h, 2, return_indices=True), 2, output_size=h.shape[-2:])
    assert torch.equal(window_softmax_gate(h, call, 1e-4), hard)


def test_a_constant_activation_gives_finite_relaxations() -> None:
    h = torch.full((2, 1, 4, 4), 0.3)
    assert torch.isfinite(window_softmax_gate(h, pool_call("max_pool2d", h, 2), 0.5)).all()
    assert torch.equal(own_window_gate(h, pool_call("max_pool2d", h, 3, 1, 1), 0.5), h)


def test_the_relaxation_follows_the_pool_shape_and_the_unpool() -> None:
    same = pool_call("max_pool2d", H, 3, 1, 1)
    other = pool_call("max_pool2d", H, 2)
    assert torch.equal(pool_gate_relaxation(same, False, 0.3)(H), own_window_gate(H, same, 0.3))
    assert torch.equal(pool_gate_relaxation(same, True, 0.3)(H), window_softmax_gate(H, same, 0.3))
    assert torch.equal(pool_gate_relaxation(other, False, 0.3)(H), window_softmax_gate(H, other, 0.3, keep_ties=True))


def noted(watch: PoolWatch, h: Tensor, *args) -> Tensor:
    values = F.max_pool2d(h, *args)
    assert watch.note(F.max_pool2d, (h, *args), None, values) is True
    return values


def test_the_watch_reads_the_latest_pool_then_forgets_the_pools() -> None:
    watch = PoolWatch()
    assert watch.note(torch.add, (H, H), None, H + H) is False and watch.pools == []
    h = H.clone().requires_grad_(True)
    noted(watch, h, 2)
    noted(watch, h, 3, 1, 1)
    gate = h * (h == F.max_pool2d(h, 3, 1, 1))
    call = watch.gate_of(torch.mul, (h, h == F.max_pool2d(h, 3, 1, 1)), gate)
    assert call is not None and call.params["kernel_size"] == 3  # the latest pool, whose gate it is
    assert watch.pools == [] and watch.relaxed == 1
    assert watch.gate_of(torch.mul, (h,), gate) is None  # forgotten: the next gate needs its own pool


def test_the_watch_needs_a_pool_input_autograd_records() -> None:
    watch, h = PoolWatch(), H.clone()
    noted(watch, h, 3, 1, 1)
    gate = h * (h == F.max_pool2d(h, 3, 1, 1))
    assert watch.gate_of(torch.mul, (h, h == F.max_pool2d(h, 3, 1, 1)), gate) is None
