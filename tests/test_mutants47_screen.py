"""Mutation review of attacks/gate_screen.py's ``screen``: a 0/1 mask whose gate zeroes nothing (``x`` already 0
wherever the mask is) is no gate, for both readers, as for the plain readings (``read_gate``, ``tied_operand``'s
``mask_as_gate`` then ``tied_fit``); nor is one whose gate is NaN where it keeps ``x`` (NaN != NaN lowers its
agreement below :data:`attacks.gates.MIN_MASK_AGREEMENT`). Inputs ``[2, 8]``, seeded."""

from __future__ import annotations

import torch

from attacks.gate_screen import screened_read
from attacks.gates import mask_as_gate, read_gate
from attacks.tied_gates import screened_tied_read, tied_fit


def test_a_mask_whose_gate_zeroes_nothing_is_no_gate_screened_or_plain() -> None:
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(3)).relu()  # ReLU outputs: some exact zeros
    mask = (x > 0).to(x.dtype)  # ones on every non-zero unit: its gate is x itself
    assert 0 < int(mask.sum()) < mask.numel() and torch.equal(mask_as_gate(x, mask), x)
    assert read_gate(x, mask) is None and tied_fit(x, x) is None
    assert screened_read(x, mask) is None
    assert screened_tied_read(x, mask, may_be_mask=True) is None


def test_a_mask_on_nans_agrees_with_its_input_only_where_x_is_a_number() -> None:
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    mask = (x >= x.topk(3, dim=1).values[:, -1:]).to(x.dtype)
    x[0, int(x[0].argmax())] = float("nan")  # a winner NaN: its gate disagrees with x there (NaN != NaN)
    assert read_gate(x, mask) is None
    assert screened_read(x, mask) is None
