"""Tests that kill hand-made mutants of last session's gate-side code which its tests let survive: an adaptive
max-pool's output size read with ``None`` (keep that axis: global only where the axis is 1 long), on an unbatched
input, with the input as a keyword, with no keywords (``kwargs`` ``None``) or an empty size (``global_pool``); the
input :class:`~attacks.pool_gates.PoolCalls` records for a max-pool called with its window as positional arguments;
``tied_fit`` of an integer tensor.
Where a pool is called, the expected answer is what torch's own output shape says (every pooled axis 1 long)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks.one_winner import global_pool, one_winner_op
from attacks.pool_gates import PoolCalls, max_pool_name
from attacks.tied_gates import tied_fit

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


def test_pool_calls_records_the_pooled_input_of_a_call_with_positional_window() -> None:
    h = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with PoolCalls() as calls:
        pooled = F.max_pool2d(h, 3, 1, 1)
        F.adaptive_max_pool2d(h, 2)
    assert [name for name, _, _ in calls.pools] == ["max_pool2d", "adaptive_max_pool2d"]
    assert all(x is h for _, x, _ in calls.pools)
    assert torch.equal(calls.pools[0][2], pooled)


def test_a_tied_top_k_of_integers_is_no_tied_gate() -> None:
    """The same ``>=`` top-3 with a tie at its threshold is read on floats, not on integers (no gradient to relax)."""
    x = torch.tensor([[3, 0, 5, 1, 3, 4, 1, 2], [2, 6, 0, 1, 5, 2, 4, 0]])
    out = x * (x >= x.topk(3, dim=1).values[:, -1:])
    fit = tied_fit(x.float(), out.float())
    assert fit is not None and (fit.k, fit.k_min, fit.k_max) == (3, 3, 4)
    assert tied_fit(x, out) is None
