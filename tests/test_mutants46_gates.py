"""Tests that kill hand-made mutants of last session's gate-side code which its tests let survive: an adaptive
max-pool's output size read with ``None`` (keep that axis: global only where the axis is 1 long), on an unbatched
input, with the input as a keyword, with no keywords (``kwargs`` ``None``) or an empty size (``global_pool``); the
input :class:`~attacks.pool_gates.PoolCalls` records for a max-pool called with its window as positional arguments
and the pooled values it reads (``pooled_values``: floating-point tensors only); ``is_pool_gate`` past an operand it
does not gate, and not of an integer operand;
``tied_fit`` of an integer tensor; ``tied_operand``'s screened read against its plain one; the
spread of one and of two elements and the seeded nudge (``kwta_robust.tie_break``); whole channels kept by no
channel statistic (``batched_gate_fit`` reads none, as the plain fit).
Where a pool is called, the expected answer is what torch's own output shape says (every pooled axis 1 long)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attacks.gate_fits_batched import batched_gate_fit, batched_threshold_fit
from attacks.gates import gate_fit, threshold_fit
from attacks.one_winner import global_pool, one_winner_op
from attacks.pool_gates import PoolCalls, is_pool_gate, max_pool_name, pooled_values
from attacks.tied_gates import screened_tied_read, tied_fit, tied_operand
from kwta_robust.tie_break import nudged, spread
from test_detect import tied

# (input shape, output size) of F.adaptive_max_pool2d: None keeps that axis's input size
NONE_SIZES = [((2, 1, 4), (None, 1)), ((2, 4, 1), (None, 1)), ((3, 2, 1, 4), (1, None)), ((3, 2, 4, 1), (1, None)),
              ((3, 2, 1, 1), (None, None)), ((3, 2, 4, 4), (None, None))]


@pytest.mark.parametrize("shape, size", NONE_SIZES)
def test_an_output_size_of_none_is_global_only_where_that_axis_is_one_long(shape, size) -> None:
    h = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    pooled_axes = F.adaptive_max_pool2d(h, size).shape[-2:]
    expected = all(n == 1 for n in pooled_axes)
    assert global_pool((h, size), {}) is expected
    assert global_pool((), {"input": h, "output_size": size}) is expected  # the input given by keyword
    assert (one_winner_op(F.adaptive_max_pool2d, (h, size), None) is None) is not expected
    assert (max_pool_name(F.adaptive_max_pool2d, (h, size), None) is None) is expected


def test_a_size_of_as_many_axes_as_the_input_reads_every_axis_and_of_more_reads_none() -> None:
    """``len(size) == x.ndim``: every axis of ``x`` is a pooled one (read by the function; torch needs a batch);
    ``len(size) > x.ndim``: no axis is read, so a ``None`` size is not known to be 1."""
    assert global_pool((torch.zeros(1, 1), (None, None)), {}) is True
    assert global_pool((torch.zeros(1, 2), (None, None)), {}) is False
    assert global_pool((torch.zeros(1), (None, 1)), {}) is False  # more axes than the input: none read as 1 long


def test_keyword_input_no_keywords_and_an_empty_size() -> None:
    h = torch.zeros(2, 3, 4, 4)
    assert global_pool((), {"input": h, "output_size": 1}) is True
    assert global_pool((h,), None) is False  # no size given: nothing says it is global
    assert global_pool((h, ()), {}) is False  # no axis at all: no winner per channel
    assert global_pool((), None) is False  # neither input nor size
    assert [one_winner_op(torch.amax, (h,), None), one_winner_op(torch.Tensor.max, (h,), None)] == [None, None]


def test_pool_calls_records_the_pooled_input_of_a_call_with_positional_window() -> None:
    h = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with PoolCalls() as calls:
        pooled = F.max_pool2d(h, 3, 1, 1)
        F.adaptive_max_pool2d(h, 2)
    assert [name for name, _, _ in calls.pools] == ["max_pool2d", "adaptive_max_pool2d"]
    assert all(x is h for _, x, _ in calls.pools)
    assert torch.equal(calls.pools[0][2], pooled)
    values, indices = F.max_pool2d(h, 2, return_indices=True)
    assert pooled_values((values, indices)) is values and pooled_values(pooled) is pooled
    assert [pooled_values(indices), pooled_values(()), pooled_values((None,)), pooled_values(None)] == [None] * 4


def test_a_tied_top_k_of_integers_is_no_tied_gate() -> None:
    """The same ``>=`` top-3 with a tie at its threshold is read on floats, not on integers (no gradient to relax)."""
    x = torch.tensor([[3, 0, 5, 1, 3, 4, 1, 2], [2, 6, 0, 1, 5, 2, 4, 0]])
    out = x * (x >= x.topk(3, dim=1).values[:, -1:])
    fit = tied_fit(x.float(), out.float())
    assert fit is not None and (fit.k, fit.k_min, fit.k_max, fit.groups, fit.group_size) == (3, 3, 4, *x.shape)
    assert tied_fit(x, out) is None


def _tied_cases() -> list[tuple[str, Tensor, Tensor]]:
    """``(name, x, result)``: a ``>=`` top-k with ties per row and per channel, their 0/1 masks, a mask on 0/1
    inputs (a gate of them, not a mask), a ReLU, nothing zeroed, everything zeroed, a mask of all ones, and a gate
    whose winners are all 1 (its output 0/1 too: a gate, not a mask)."""
    rows = torch.tensor([[3, 0, 5, 1, 3, 4, 1, 2], [2, 6, 0, 1, 5, 2, 4, 0]], dtype=torch.float32)
    row_gate = rows * (rows >= rows.topk(3, dim=1).values[:, -1:])
    h = tied()
    s = h.abs().flatten(2)
    channel_gate = h * (s >= s.topk(10, dim=-1).values[..., -1:]).reshape(h.shape)
    binary = (rows > 2).float()
    top_ones = torch.tensor([[1, 0.2, 1, 0.5, 1, 1, 0.1, 0.3], [1, 1, 0.4, 1, 0.2, 0.6, 0.1, 0]])
    return [("row gate", rows, row_gate), ("row mask", rows, (row_gate != 0).float()),
            ("channel gate", h, channel_gate), ("channel mask", h, (channel_gate != 0).float()),
            ("0/1 input", binary, binary * (rows >= 4)), ("relu", rows - 2.5, torch.relu(rows - 2.5)),
            ("nothing zeroed", rows, rows.clone()), ("all zeroed", rows, torch.zeros_like(rows)),
            ("all ones", rows, torch.ones_like(rows)),
            ("0/1 gate", top_ones, top_ones * (top_ones >= top_ones.topk(3, dim=1).values[:, -1:]))]


@pytest.mark.parametrize("case", range(10))
def test_the_screened_tied_read_answers_as_the_plain_one(case: int) -> None:
    """``tied_operand(..., screened=True)`` (one host read) finds what the plain read finds, mask or gate."""
    name, x, result = _tied_cases()[case]
    plain = tied_operand(result, [x], [])
    screened = tied_operand(result, [x], [], screened=True)
    if name != "relu":  # on these 8 values a ReLU's count varies by a tie only: either answer, as long as both agree
        assert (plain is not None) is (name in ("row gate", "row mask", "channel gate", "channel mask", "0/1 gate"))
    assert (screened is None) is (plain is None)
    if plain is not None and screened is not None:
        assert screened[0] is plain[0] is x and screened[2] == plain[2]
        assert plain[2][1] is name.endswith("mask")


def test_the_spread_of_one_element_is_zero_and_of_two_their_std() -> None:
    assert spread(torch.tensor([3.0])) == 0.0 and spread(torch.tensor([])) == 0.0
    pair = torch.tensor([1.0, 4.0])
    assert spread(pair) == float(pair.std()) > 0
    assert nudged(torch.tensor([3.0]), 0.5, seed=0) is None and nudged(torch.full((2, 3), 7.0), 0.5, seed=0) is None


def test_the_nudge_is_seeded_own_stream_and_scaled_by_the_fraction_of_the_std() -> None:
    x = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    torch.manual_seed(5)
    before = torch.rand(1)
    moved = nudged(x, 0.25, seed=3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before)  # draws from its own generator, not the global stream
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    assert moved is not None and moved.dtype == x.dtype and torch.equal(moved, x + 0.25 * float(x.std()) * noise)
    assert torch.equal(nudged(x, 0.25, seed=3), moved) and not torch.equal(nudged(x, 0.25, seed=4), moved)
    small = x * 1e-3  # a std under 1 is moved too
    assert torch.equal(nudged(small, 0.25, seed=3), small + 0.25 * float(small.std()) * noise)


def test_the_screened_tied_read_of_operands_it_cannot_read_is_none() -> None:
    """Called directly (``tied_operand`` passes it only same-shaped floats): another shape, integers, no elements."""
    x = torch.tensor([[3, 0, 5, 1, 3, 4, 1, 2], [2, 6, 0, 1, 5, 2, 4, 0]], dtype=torch.float32)
    out = x * (x >= x.topk(3, dim=1).values[:, -1:])
    assert screened_tied_read(x, out, True) is not None
    assert screened_tied_read(x, out.reshape(4, 4), True) is None
    assert screened_tied_read(x, out.long(), True) is None and screened_tied_read(x.long(), out, True) is None
    assert screened_tied_read(x[:, :0], out[:, :0], True) is None


def test_whole_channels_that_no_statistic_orders_are_no_batched_fit() -> None:
    """A fixed channel mask, and two channels drawn per sample: whole channels, a constant count, no ranking."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 3, 3, generator=gen)
    fixed = torch.zeros(1, 5, 1, 1)
    fixed[0, [0, 2]] = 1
    drawn = torch.zeros(8, 5)
    for i in range(8):
        drawn[i, torch.randperm(5, generator=gen)[:2]] = 1
    for out in (x * fixed, x * drawn[:, :, None, None]):
        plain = gate_fit(x, out, "whole-channel", only_constant=True)
        assert plain is None and batched_gate_fit(x, out, "whole-channel") is None


def test_a_count_varying_up_to_the_whole_group_is_no_batched_threshold_fit() -> None:
    """Top 3 of 4 in half the rows, all 4 in the others: a group with no loser is no threshold's (as the plain fit)."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    keep = x >= x.topk(3, dim=1).values[:, -1:]
    keep[::2] = True
    for known_gate in (False, True):
        assert threshold_fit(x, x * keep, known_gate) is None
        assert batched_threshold_fit(x, x * keep, known_gate) is None


def test_a_pool_gate_is_read_past_an_operand_it_does_not_gate_and_never_of_integers() -> None:
    """The max-unpool gate of ``h`` (16 distinct values): found after another operand, not on ``h`` as integers.
    The pool's input here is its own values (another shape: no candidate), so only the operands are tried."""
    h = torch.randperm(16, generator=torch.Generator().manual_seed(0)).float().add(1).reshape(1, 1, 4, 4)
    values, indices = F.max_pool2d(h, 2, return_indices=True)
    gate = F.max_unpool2d(values, indices, 2)
    other = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    pools = [(values, values)]
    assert is_pool_gate(gate, [h], pools) and is_pool_gate(gate, [other, h], pools)
    assert not is_pool_gate(gate, [other], pools) and not is_pool_gate(gate, [h.long()], pools)
