"""Mutation review (mut51) of :mod:`attacks.mask_assign`, read directly: which calls are a zeroing by a mask of the
tensor's shape (``t[mask] = 0``, ``t.masked_fill_(mask, 0)``, ``t.mul_(mask)``, ``t *= mask``), and which copy
:func:`copy_before` makes (none on a copy of the ranked tensor; the ranked tensor's shape only for a contiguous view of
the very same elements). The end-to-end tests (BPDA through in-place kWTA forwards) let these mutants through."""

from __future__ import annotations

import torch
from torch import Tensor

from attacks.mask_assign import copy_before, zeroing_assignment, zeroing_in_place

SET, MUL, IMUL, FILL = Tensor.__setitem__, Tensor.mul_, Tensor.__imul__, Tensor.masked_fill_


def _h() -> Tensor:
    return torch.rand(2, 6, generator=torch.Generator().manual_seed(0))


def test_zeroing_assignment_is_a_zero_by_a_boolean_mask_of_the_shape() -> None:
    h = _h()
    mask = h < 0.5
    assert zeroing_assignment(SET, (h, mask, 0)) and zeroing_assignment(SET, (h, mask, 0.0))
    assert not zeroing_assignment(SET, (h, mask, 1))  # another fill
    assert not zeroing_assignment(SET, (h, mask, torch.tensor(0.0)))  # a tensor of values: a scatter
    assert not zeroing_assignment(SET, (h, mask.float(), 0))  # no boolean mask
    assert not zeroing_assignment(SET, (h, mask[:, :1].expand(2, 1), 0))  # not the tensor's shape
    assert not zeroing_assignment(SET, (h[0], mask[0], 0))  # no [N, ...] batch
    assert not zeroing_assignment(SET, (h, mask))
    assert not zeroing_assignment(SET, ((h * 10).long(), mask, 0))  # integer tensor


def test_zeroing_in_place_forms() -> None:
    h = _h()
    mask = h >= 0.5
    assert zeroing_in_place(MUL, (h, mask)) and zeroing_in_place(IMUL, (h, mask))
    assert zeroing_in_place(MUL, (h, mask.float()))  # h.mul_((h >= kth).float())
    assert not zeroing_in_place(MUL, (h, mask.long()))  # neither boolean nor floating-point
    assert zeroing_in_place(MUL, (h, mask[:, :1]))  # a mask per sample, broadcast over it (inplace51)
    assert not zeroing_in_place(MUL, (h, mask[:1]))  # one sample's mask over the batch: no per-sample mask
    assert not zeroing_in_place(MUL, (h, mask[:, :2]))  # neither the tensor's size nor 1
    assert not zeroing_in_place(MUL, ((h * 10).long(), mask))  # integer tensor
    assert zeroing_in_place(FILL, (h, ~mask, 0)) and zeroing_in_place(FILL, (h, ~mask, 0.0))
    assert not zeroing_in_place(FILL, (h, ~mask, 1))
    assert not zeroing_in_place(FILL, (h, (~mask).float(), 0))
    assert not zeroing_in_place(MUL, (h, mask), {"out": h})


def test_copy_before_only_where_the_ranked_memory_is_written() -> None:
    h = _h()
    mask = h >= 0.5
    copy = h.clone()  # a copy, or a tensor no selection ranked (a channel-wise top-k's): its own values kept
    kept = copy_before(MUL, (copy, mask), [h])
    assert kept is not None and kept.shape == copy.shape and kept.data_ptr() != copy.data_ptr()
    assert copy_before(FILL, (h, ~mask, 1), [h]) is None  # no zeroing call: nothing copied
    same = copy_before(MUL, (h, mask), [h])
    assert same is not None and same.shape == h.shape and torch.equal(same, h) and same.data_ptr() != h.data_ptr()
    c = h.view(2, 2, 3)  # c[(h < kth).view_as(c)] = 0 of h = c.flatten(1): read in h's shape
    assert copy_before(SET, (c, (h < 0.5).view_as(c), 0), [h]).shape == h.shape


def test_copy_before_keeps_the_target_shape_for_other_elements() -> None:
    big = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    first = big[:1]  # same start, fewer elements
    assert copy_before(MUL, (first, first >= 0.5), [big]).shape == (1, 6)
    ranked, target = big[:2], big[2:].view(2, 2, 3)  # same storage and size, other elements
    assert copy_before(MUL, (target, target >= 0.5), [ranked]).shape == (2, 2, 3)
    wide = torch.rand(2, 6, generator=torch.Generator().manual_seed(2))
    t = wide.t()  # the same elements, not contiguous
    out = copy_before(MUL, (t, t >= 0.5), [wide])
    assert out.shape == t.shape and torch.equal(out, t)
