"""Mutation review of attacks/one_winner.py's ``one_winner_read``: a fit of ``k = 1`` whose count varies (a
``threshold_fit`` of 1 or 2 winners per group) is no one-winner gate; a block gate keeping each block's smallest
unit is one (a min-pool LWTA), one keeping a block's middle unit is none. Inputs ``[4, 6]``."""

from __future__ import annotations

import torch

from attacks.gates import gate_fit, threshold_fit
from attacks.one_winner import one_winner_read

X = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))


def test_a_fit_of_one_or_two_winners_per_group_is_not_read_as_one_winner() -> None:
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    kth = x.sort(dim=1, descending=True).values[:, :2].gather(1, torch.tensor([[0], [1]]).repeat(4, 1))
    out = x * (x >= kth)  # rows keep 1, 2, 1, 2, … of their largest
    fit = threshold_fit(x, out, known_gate=True)
    assert fit is not None and (fit.k, fit.k_spread) == (1, 1)
    assert one_winner_read((x, out, (fit, False))) is None


def test_a_gate_keeping_each_blocks_smallest_reads_as_one_winner_per_block() -> None:
    pairs = X.view(4, 3, 2)
    out = (pairs * (pairs == pairs.amin(-1, keepdim=True))).view(4, 6)
    found = one_winner_read((X, out, (gate_fit(X, out, "dense"), False)))
    assert found is not None
    one = found[2][0]
    assert (one.grouping, one.k, one.k_spread, one.smallest_ordered_fraction) == ("block-2", 1, 0, 1.0)


def test_a_gate_keeping_each_blocks_middle_unit_is_no_one_winner_gate() -> None:
    triples = X.view(4, 2, 3)
    middle = triples.sort(-1).values[..., 1:2]
    out = (triples * (triples == middle)).view(4, 6)
    assert one_winner_read((X, out, (gate_fit(X, out, "dense"), False))) is None
