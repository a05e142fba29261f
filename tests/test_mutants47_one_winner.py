"""Mutation review of attacks/one_winner.py's ``one_winner_read`` on a 0/1 mask (``is_mask``): where the first fit
has another count, the groupings are tried again on the gate the mask makes (:func:`attacks.gates.mask_as_gate`),
not on the mask itself, and the answer keeps ``is_mask``; a block ordered by neither score is no such gate. And
``global_pool`` reads a size of ``None`` by the input, given by position or by name. Inputs ``[4, 6]``, seeded."""

from __future__ import annotations

import torch

from attacks.gates import gate_fit
from attacks.one_winner import global_pool, one_winner_read

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))


def test_a_mask_keeping_each_blocks_smallest_reads_as_one_winner_per_block_of_its_gate() -> None:
    pairs = X.view(4, 3, 2)
    mask = (pairs == pairs.amin(-1, keepdim=True)).to(X.dtype).view(4, 6)  # an LWTA min-pool's 0/1 mask
    first = gate_fit(X, X * mask, "dense")  # 3 of 6 per row: the first grouping's count, not one winner
    assert (first.k, first.k_spread) == (3, 0)
    found = one_winner_read((X, mask, (first, True)))
    assert found is not None and found[1] is mask and found[2][1] is True
    one = found[2][0]
    assert (one.grouping, one.k, one.k_spread, one.smallest_ordered_fraction) == ("block-2", 1, 0, 1.0)


def test_a_mask_reads_as_the_gate_it_makes_where_a_winner_is_zero() -> None:
    h = torch.tensor([[0.0, 2.0, 1.0, 3.0, 0.5, 0.8], [4.0, 0.0, 1.5, 2.5, 0.6, 0.7]])  # ReLU-like, a 0 per row
    pairs = h.view(2, 3, 2)
    mask = (pairs == pairs.amin(-1, keepdim=True)).to(h.dtype).view(2, 6)  # one 1 per block, on the 0 in one
    gate = h * mask  # 2 per row; the block whose smallest is 0 keeps nothing: no one winner in every block
    answers = [one_winner_read((h, out, (gate_fit(h, gate, "dense"), is_mask)))
               for out, is_mask in ((gate, False), (mask, True))]
    assert answers == [None, None]


def test_a_gate_keeping_one_blocks_smallest_and_the_others_largest_is_no_one_winner_gate() -> None:
    pairs = X.view(4, 3, 2)
    keep = pairs == pairs.amax(-1, keepdim=True)
    keep[0, 0] = ~keep[0, 0]  # one block of twelve keeps its smallest: neither score orders every block
    out = (pairs * keep).view(4, 6)
    first = gate_fit(X, out, "dense")
    assert (first.k, first.k_spread) == (3, 0)
    assert one_winner_read((X, out, (first, False))) is None


def test_a_global_pool_reads_its_input_given_by_name_for_a_size_of_none() -> None:
    h = torch.zeros(1, 2, 3, 1)  # output size (1, None): the last axis kept, 1 long, so one winner per channel
    assert global_pool((), {"input": h, "output_size": (1, None)})
    assert global_pool((h, (1, None)), None)
    assert not global_pool((torch.zeros(1, 2, 3, 5), (1, None)), None)  # None keeps an axis 5 long: windows


def test_a_gate_keeping_each_triples_largest_reads_as_one_winner_per_block_of_three() -> None:
    triples = X.view(4, 2, 3)
    out = (triples * (triples == triples.amax(-1, keepdim=True))).view(4, 6)  # block-2 comes first and fails
    found = one_winner_read((X, out, (gate_fit(X, out, "dense"), False)))
    assert found is not None
    one = found[2][0]
    assert (one.grouping, one.k, one.k_spread, one.ordered_fraction) == ("block-3", 1, 0, 1.0)
