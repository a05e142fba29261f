"""Mutation review of attacks/inline_gates.py's ``_zeroes_nothing`` (a result after a selection, read as no gate,
that is a gate zeroing only elements already 0): it needs an operand equal to the result bit for bit — not merely
shaped like it, not the result itself (an in-place ``x.mul_(mask)`` returns ``x``) — and another operand, a 0/1
mask of bools or floats (an integer index tensor of 0s and 1s is none)."""

from __future__ import annotations

import torch

from attacks.inline_gates import _zeroes_nothing

X = torch.tensor([[0.0, 1.5, 0.0, 2.0]])
MASK = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # zeroes only X's zeros


def test_a_mask_zeroing_only_zeros_counts() -> None:
    assert _zeroes_nothing((X, MASK), X * MASK)
    assert _zeroes_nothing((MASK.bool(), X), torch.where(MASK.bool(), X, 0.0))


def test_a_gate_that_zeroed_a_non_zero_unit_does_not_count() -> None:
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert not _zeroes_nothing((X, mask), X * mask)


def test_an_in_place_gate_returning_its_operand_does_not_count() -> None:
    x = X.clone()
    result = x.mul_(torch.tensor([[1.0, 0.0, 1.0, 1.0]]))  # result is x: no operand left to compare it with
    assert not _zeroes_nothing((x, torch.tensor([[1.0, 0.0, 1.0, 1.0]])), result)


def test_an_integer_index_or_the_kept_operand_alone_is_no_mask() -> None:
    index = torch.tensor([[0, 1, 1, 1]])
    assert not _zeroes_nothing((X, 1, index), X.clone())  # a gather-like call whose index is 0s and 1s
    assert not _zeroes_nothing((MASK,), MASK.clone())  # a 0/1 tensor copied: no other operand masks it
