"""The kWTA threshold's introselect partitions the entries' bits read as integers (issue 13: NumPy's integer
partition is faster than its float one), and selects exactly what ``torch.topk`` selects: rows whose k-th largest is
``<= -0`` take the float partition, rows holding a NaN of either sign give NaN, ties, infinities, signed zeros and
subnormals keep their values, any axis and strides, float16/32/64; the kWTA layer's output and gradient are those of
``torch.topk`` with a float mask, bit for bit. From ``k >= n / 2`` (zero-mean rows' k-th largest mostly negative) the
float partition runs alone, not after a wasted integer pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kwta_robust.layers as layers
from kwta_robust.layers import kwta
from kwta_robust.selection import introselect_kth_largest

SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-40, -1e-40, 1.0, -1.0, 2.5, -2.5]


@pytest.fixture
def partitions(monkeypatch) -> list[tuple[np.dtype, tuple[int, ...]]]:
    """The dtype and shape of every array ``np.partition`` is given while the test runs."""
    seen: list[tuple[np.dtype, tuple[int, ...]]] = []
    partition = np.partition
    monkeypatch.setattr(np, "partition", lambda a, *args, **kw: seen.append((a.dtype, a.shape)) or partition(a, *args,
                                                                                                              **kw))
    return seen


def topk_reference(values: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``topk(k).values.amin()`` along ``axis`` (kept), computed in float64 (exact for float16/32 values)."""
    wide = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    return wide.topk(k, dim=axis).values.amin(dim=axis, keepdim=True).numpy().astype(values.dtype)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and values (NaN where NaN; ``-0 == +0`` as for the mask ``x >= t``)."""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype, int_type", [(np.float16, np.int16), (np.float32, np.int32),
                                             (np.float64, np.int64)])
def test_nonnegative_thresholds_come_from_the_integer_partition(dtype: type, int_type: type, partitions) -> None:
    values = np.random.default_rng(0).standard_normal((6, 50)).astype(dtype)
    values[:, :30] = np.abs(values[:, :30])  # at least 30 entries >= +0 a row: the 10th largest is one of them
    assert same(introselect_kth_largest(values, 10, 1), topk_reference(values, 10, 1))
    assert partitions == [(np.dtype(int_type), (6, 50))]


def test_rows_whose_kth_is_negative_alone_take_the_float_partition(partitions) -> None:
    values = np.abs(np.random.default_rng(1).standard_normal((5, 40))).astype(np.float32)
    values[[1, 3]] *= -1  # all negative
    values[4, :] = -0.0  # the k-th largest is -0: its integer reads negative
    out = introselect_kth_largest(values, 7, -1)
    assert same(out, topk_reference(values, 7, 1))
    assert partitions == [(np.dtype(np.int32), (5, 40)), (np.dtype(np.float32), (3, 40))]


def test_from_half_the_row_the_float_partition_runs_alone(partitions) -> None:
    values = np.random.default_rng(5).standard_normal((8, 40)).astype(np.float32)  # zero-mean, as pre-activations
    for k in (20, 21, 36):
        assert same(introselect_kth_largest(values, k, 1), topk_reference(values, k, 1))
    assert partitions == [(np.dtype(np.float32), (8, 40))] * 3  # one pass each, no integer pass before it
    partitions.clear()
    assert same(introselect_kth_largest(values, 19, 1), topk_reference(values, 19, 1))
    assert partitions[0] == (np.dtype(np.int32), (8, 40))  # below half: the integer pass first


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_k_and_axis_on_ties_and_special_values(dtype: type, partitions) -> None:
    rng = np.random.default_rng(2)
    for trial in range(30):
        values = rng.choice(np.array(SPECIALS[:4] + SPECIALS[6:] if trial % 3 else SPECIALS), size=(3, 4, 5))
        if trial % 2:
            values = np.abs(values)  # mostly the integer path
        values = values.astype(dtype)
        if trial % 4 == 1:
            values = values.transpose(2, 0, 1)  # not C-contiguous
        for axis in range(-3, 3):
            for k in range(1, values.shape[axis] + 1):
                assert same(introselect_kth_largest(values, k, axis), topk_reference(values, k, axis)), (trial, k)
    assert any(seen_dtype.kind == "i" for seen_dtype, _ in partitions)


def test_a_nan_of_either_sign_gives_its_row_nan(partitions) -> None:
    values = np.abs(np.random.default_rng(3).standard_normal((4, 30))).astype(np.float32)
    values[1, 5] = np.nan
    values[2, 7] = np.nan
    values.view(np.int32)[2, 7] |= np.int32(-2**31)  # a NaN with the sign bit set: its integer reads negative
    assert np.signbit(values[2, 7]) and not np.signbit(values[1, 5])
    out = introselect_kth_largest(values, 3, 1)[:, 0]
    assert np.isnan(out).tolist() == [False, True, True, False]
    assert same(out[[0, 3]], topk_reference(values, 3, 1)[[0, 3], 0])
    assert partitions == [(np.dtype(np.int32), (4, 30))]  # the NaN rows too: found by one global max


@pytest.mark.parametrize("mode, shape", [("volume", (8, 4, 6, 6)), ("dense", (8, 90)), ("channel", (8, 4, 6, 6)),
                                         ("local", (8, 12, 3, 3))])
def test_layer_output_and_gradient_are_topks_bit_for_bit(mode: str, shape: tuple[int, ...], partitions) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the host selection's condition
    try:
        gen = torch.Generator().manual_seed(4)
        x = torch.randn(shape, generator=gen).round(decimals=1)  # ties
        grad_out = torch.randn(shape, generator=gen)
        for k in (2, 5, 11):
            leaf = x.clone().requires_grad_(True)
            out = kwta(leaf, k, mode)
            grad = torch.autograd.grad(out, leaf, grad_out)[0]
            flat, dim = layers._grouped(x, mode)
            thr = layers._broadcast_threshold(flat.topk(k, dim=dim).values.amin(dim=dim, keepdim=True), x, mode)
            mask = (x >= thr).to(x.dtype)
            assert torch.equal(out, x * mask) and torch.equal(grad, mask * grad_out)
    finally:
        torch.set_num_threads(threads)
    assert any(seen_dtype == np.dtype(np.int32) for seen_dtype, _ in partitions)
