"""Mutation review of attacks/pool_relax.py, second round (BPDA's relaxations of the max-pool winner-take-all gates):
the windows read from the max-pool call against the max-pool itself (padding, stride given as ``()``, dilation,
``ceil_mode``, per-axis tuples, adaptive windows), the exact formulas at a given ``T`` (the per-sample population
std, detached), which units get a gradient and its sign on hand-made windows, the overlapping-window union
``1 - Π (1 - p)``, float64 kept in float64, half precision returned in its own dtype, channels-last inputs, and the
watch counting only floating-point max-pools. Each test killed a mutant the older tests let through."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.bpda_wrap import LayerTarget, attached_backward
from attacks.pool_relax import PoolCall, PoolWatch, own_window_gate, pool_gate_relaxation, window_softmax_gate


def pool_call(name: str, h: Tensor, *args, **kwargs) -> PoolCall:
    """The :class:`PoolCall` of ``F.<name>(h, *args, **kwargs)``."""
    values = getattr(F, name)(h, *args, **kwargs)
    return PoolCall.of(name, (h, *args), kwargs, values[0] if isinstance(values, tuple) else values)


WINDOWS = {  # max-pool, spatial shape, positional args after the input, keyword args
    "padding": ("max_pool2d", (5, 6), (3, 2, 1), {}),
    "stride ()": ("max_pool2d", (5, 6), (2, ()), {}),
    "padding ceil": ("max_pool2d", (5, 6), (3, 2, 1), {"ceil_mode": True}),
    "per-axis all": ("max_pool2d", (6, 7), ((3, 2), (1, 2), (1, 0), (2, 1)), {"ceil_mode": True}),
    "1d dilated padded": ("max_pool1d", (9,), (3, 2, 1, 2), {}),
    "3d": ("max_pool3d", (3, 4, 3), (2, 1, 1), {}),
    "adaptive uneven": ("adaptive_max_pool2d", (7, 5), ((4, 3),), {}),  # windows of 2 and 3 units
}


@pytest.mark.parametrize("name", list(WINDOWS))
def test_each_window_holds_exactly_the_units_the_max_pool_reads(name: str) -> None:
    func, spatial, args, kwargs = WINDOWS[name]
    n = math.prod(spatial)
    call = pool_call(func, torch.zeros(1, 1, *spatial), *args, **kwargs)
    index = call.windows().flatten(0, -2)  # [W, K]
    one_hot = torch.eye(n).view(n, 1, *spatial)  # unit i alone at 1: the windows whose max is 1 are those reading i
    reads = getattr(F, func)(one_hot, *args, **kwargs).flatten(1) == 1  # [N, W]
    for w in range(index.shape[0]):
        members = index[w][index[w] >= 0]
        assert len(set(members.tolist())) == len(members)  # no unit twice, padding -1 only
        assert sorted(members.tolist()) == reads[:, w].nonzero().flatten().tolist(), w


H = torch.tensor([[[0.2, 1.0, 0.8, -0.5, 0.1]], [[3.0, -1.0, 2.0, 2.5, 0.0]]], dtype=torch.float64)  # [B=2, C=1, 5]
H2C = torch.cat([H, 10 * H.flip(-1)], dim=1)  # [2, 2, 5]: channels with unlike std (the std is per sample)


def spread(h: Tensor, temperature: float) -> Tensor:
    """``T`` times the population std of each sample, ``[B, 1, 1]``."""
    return temperature * h.flatten(1).std(dim=1, correction=0).view(-1, 1, 1)


@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_the_own_window_relaxation_at_a_given_temperature_is_its_formula(temperature: float) -> None:
    h = H2C.clone().requires_grad_(True)
    call = pool_call("max_pool1d", H2C, 3, 1, 1)
    padded = F.pad(h, (1, 1), value=-math.inf)
    window = torch.stack([padded[..., :-2], padded[..., 2:]], dim=-1)  # the two neighbours: no ties in H2C
    expected = h * torch.sigmoid((h - window.amax(-1)) / spread(H2C, temperature))  # the std: a constant
    relaxed = own_window_gate(h, call, temperature)
    assert torch.allclose(relaxed, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(H2C.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    grads = [torch.autograd.grad((y * weights).sum(), h)[0] for y in (relaxed, expected)]
    assert torch.allclose(*grads, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_the_window_softmax_relaxation_at_a_given_temperature_is_its_formula(temperature: float) -> None:
    h = H2C[..., :4].clone().requires_grad_(True)  # windows (0, 1) and (2, 3), no overlap
    call = pool_call("max_pool1d", h.detach(), 2, return_indices=True)
    p = torch.softmax(h.unflatten(-1, (2, 2)) / spread(h.detach(), temperature).unsqueeze(-1), dim=-1).flatten(-2)
    relaxed = window_softmax_gate(h, call, temperature)
    assert torch.allclose(relaxed, h * p, rtol=1e-12, atol=1e-12)
    weights = torch.randn(h.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    grads = [torch.autograd.grad((y * weights).sum(), h)[0] for y in (relaxed, h * p)]
    assert torch.allclose(*grads, rtol=1e-10, atol=1e-12)


def test_overlapping_windows_keep_a_unit_by_the_chance_some_window_picks_it() -> None:
    h = H[:1, :, :3]  # windows (pad, 0, 1), (0, 1, 2), (1, 2, pad): 0.2, 1.0, 0.8
    call = pool_call("max_pool1d", h, 3, 1, 1, return_indices=True)
    s = spread(h, 1.0)[0, 0, 0]
    p = [torch.softmax(h[0, 0, w] / s, dim=0) for w in ([0, 1], [0, 1, 2], [1, 2])]
    kept = torch.stack([1 - (1 - p[0][0]) * (1 - p[1][0]),
                        1 - (1 - p[0][1]) * (1 - p[1][1]) * (1 - p[2][0]),
                        1 - (1 - p[1][2]) * (1 - p[2][1])])
    out = window_softmax_gate(h, call, 1.0)
    assert torch.allclose(out[0, 0], h[0, 0] * kept, rtol=1e-5, atol=1e-7)
    assert (out[0, 0].abs() <= h[0, 0].abs()).all()


def test_overlapping_windows_give_a_finite_gradient_when_sharp() -> None:
    h = H[:1].clone().requires_grad_(True)
    call = pool_call("max_pool1d", h.detach(), 3, 1, 1, return_indices=True)
    (grad,) = torch.autograd.grad(window_softmax_gate(h, call, 1e-3).sum(), h)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_a_loser_and_its_strongest_rival_alone_get_its_gradient_with_opposite_signs() -> None:
    h = H[:1].clone().requires_grad_(True)  # 0.2, 1.0, 0.8, -0.5, 0.1: window of 3 around each unit
    call = pool_call("max_pool1d", h.detach(), 3, 1, 1)
    out = own_window_gate(h, call, 0.5)[0, 0]
    (loser,) = torch.autograd.grad(out[2], h, retain_graph=True)  # 0.8 loses to 1.0; -0.5 is no rival
    assert loser[0, 0, 2] > 0 and loser[0, 0, 1] < 0
    assert loser[0, 0, [0, 3, 4]].tolist() == [0.0, 0.0, 0.0]  # the std is a scale: it passes no gradient
    (winner,) = torch.autograd.grad(out[1], h)  # 1.0 wins; its strongest rival is 0.8, not 0.2
    assert winner[0, 0, 1] > 0 and winner[0, 0, 2] < 0
    assert winner[0, 0, [0, 3, 4]].tolist() == [0.0, 0.0, 0.0]


def test_in_a_pooling_window_the_gradient_stays_in_the_window() -> None:
    h = H[:1, :, :4].clone().requires_grad_(True)  # windows (0.2, 1.0) and (0.8, -0.5)
    call = pool_call("max_pool1d", h.detach(), 2, return_indices=True)
    (grad,) = torch.autograd.grad(window_softmax_gate(h, call, 0.5)[0, 0, 0], h)  # the loser 0.2
    assert grad[0, 0, 0] > 0 and grad[0, 0, 1] < 0 and grad[0, 0, 2:].tolist() == [0.0, 0.0]


def test_float64_is_relaxed_in_float64() -> None:
    h = torch.tensor([[[1.0, 1.0 + 1e-12, 0.0, -1.0]]], dtype=torch.float64)  # float32 would tie 1 and 1 + 1e-12
    own = own_window_gate(h, pool_call("max_pool1d", h, 3, 1, 1), 1.0)
    s = spread(h, 1.0)[0, 0, 0]
    assert own.dtype == torch.float64
    assert torch.allclose(own[0, 0, :2], h[0, 0, :2] * torch.sigmoid(torch.tensor([-1e-12, 1e-12]).double() / s),
                          rtol=1e-15, atol=0)
    soft = window_softmax_gate(h, pool_call("max_pool1d", h, 2, return_indices=True), 1e-13)
    assert soft.dtype == torch.float64 and soft[0, 0, 0] < 0.5  # 1 + 1e-12 wins its window, 1 loses


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_comes_back_in_its_own_dtype(dtype: torch.dtype) -> None:
    h = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5)).to(dtype)
    assert own_window_gate(h, pool_call("max_pool2d", h, 3, 1, 1), 0.5).dtype == dtype
    assert window_softmax_gate(h, pool_call("max_pool2d", h, 2, return_indices=True), 0.5).dtype == dtype


def test_a_channels_last_input_relaxes_as_a_contiguous_one() -> None:
    h = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(6))
    last = h.to(memory_format=torch.channels_last)
    for relax, args in ((own_window_gate, (3, 1, 1)), (window_softmax_gate, (3, 2, 1))):
        assert torch.allclose(relax(last, pool_call("max_pool2d", last, *args), 0.5),
                              relax(h, pool_call("max_pool2d", h, *args), 0.5), rtol=1e-6, atol=1e-7)


def test_with_ceil_mode_and_no_overlap_the_sharp_relaxation_is_the_max_unpool_bit_for_bit() -> None:
    h = torch.randperm(2 * 7 * 9, generator=torch.Generator().manual_seed(7)).float().view(2, 1, 7, 9)
    call = pool_call("max_pool2d", h, 2, ceil_mode=True, return_indices=True)  # the last row and column: padding
    hard = F.max_unpool2d(*F.max_pool2d(h, 2, ceil_mode=True, return_indices=True), 2, output_size=h.shape[-2:])
    assert torch.equal(window_softmax_gate(h, call, 1e-4), hard)


def test_the_watch_counts_only_floating_point_max_pools() -> None:
    watch, ints = PoolWatch(), torch.arange(16).view(1, 1, 4, 4)
    assert watch.note(F.max_pool2d, (ints, 2), None, F.max_pool2d(ints, 2)) is True  # a max-pool, not a gate's
    assert watch.noted == 0 and watch.pools == []


class Upsampled(torch.nn.Module):
    """A window-max gate comparing with the pooled values upsampled: ``h · (h == nearest(F.max_pool2d(h, 2)))``,
    which keeps every tied maximum of a window (a blank background's), unlike the max-unpool."""

    def forward(self, h: Tensor) -> Tensor:
        return h * (h == F.interpolate(F.max_pool2d(h, 2), scale_factor=2, mode="nearest"))


TIED = torch.tensor([[[[0.5, 0.5, 1.0, 0.2], [0.5, 0.5, 0.3, 0.1]], [[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 2.0]]]])


def test_a_gate_comparing_with_the_pooled_values_keeps_its_tied_maxima_in_the_relaxation_too() -> None:
    h = TIED.clone().requires_grad_(True)
    watch, values = PoolWatch(), F.max_pool2d(h, 2)
    watch.note(F.max_pool2d, (h, 2), None, values)
    mask = h == F.interpolate(values, scale_factor=2, mode="nearest")
    call = watch.gate_of(torch.mul, (h, mask), h * mask)
    assert call is not None
    relaxed = pool_gate_relaxation(call, False, 1e-4)(h)
    assert torch.equal(relaxed, h * mask)  # the sharp limit is the hard gate, ties included
    (grad,) = torch.autograd.grad(relaxed.sum(), h)
    assert torch.equal(grad, mask.float())  # and so is its gradient: 1 at every kept unit, 0 elsewhere
    (soft,) = torch.autograd.grad(pool_gate_relaxation(call, False, 0.5)(h).sum(), h)
    assert torch.isfinite(soft).all()  # all-tied windows (the zeros) have no rival: no NaN from an empty logsumexp


def test_bpda_smooth_on_such_a_gate_passes_every_tied_winner_its_gradient() -> None:
    model = torch.nn.Sequential(Upsampled())
    h = TIED.clone().requires_grad_(True)
    with attached_backward(model, {"0": LayerTarget("inline")}) as controllers:
        controllers["0"].set_backward("smooth", 1e-4)
        out = model(h)
        (grad,) = torch.autograd.grad(out.sum(), h)
    (exact,) = torch.autograd.grad(model(h).sum(), h)
    assert torch.equal(out, model(h)) and torch.equal(grad, exact)


@pytest.mark.parametrize("args", [(2, None, 0, 1, True), (3, 1, 1), (3, 2, 1)])
def test_without_ties_keeping_ties_changes_nothing_padding_included(args: tuple) -> None:
    h = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(10), dtype=torch.float64).requires_grad_(True)
    call = pool_call("max_pool2d", h.detach(), *args)
    weights = torch.randn(h.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    outs = [window_softmax_gate(h, call, 0.5, keep_ties=keep) for keep in (False, True)]
    assert torch.allclose(*outs, rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad((out * weights).sum(), h)[0] for out in outs]
    assert torch.allclose(*grads, rtol=1e-9, atol=1e-12)


def test_the_watch_takes_the_latest_pool_of_the_gates_input_itself() -> None:
    # three pools whose values would all explain a 4 × 4 window-max gate of h: the 2 × 2 pool of h (its kept values
    # are 2 × 2 maxima too), its 4 × 4 pool, and a 4 × 4 pool of h padded (another shape): the gate's is the second
    h = (torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(12)) + 0.1).requires_grad_(True)
    watch = PoolWatch()
    noted = [F.max_pool2d(h, 2), F.max_pool2d(h, 4)]
    for values, kernel in zip(noted, (2, 4)):
        watch.note(F.max_pool2d, (h, kernel), None, values)
    padded = F.pad(h, (0, 4, 0, 4))
    watch.note(F.max_pool2d, (padded, 4), None, F.max_pool2d(padded, 4))
    mask = h == F.interpolate(noted[1], scale_factor=4, mode="nearest")
    call = watch.gate_of(torch.mul, (h, mask), h * mask)
    assert call is not None and call.input is h and call.params["kernel_size"] == 4
