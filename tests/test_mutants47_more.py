"""Mutation review, second round, of mutants an earlier review listed but did not run (attacks/tied_gates.py,
gate_screen.py, inline_gates.py, bpda_wrap.py, gates.py, pool_gates.py): each test killed a mutant the older tests
let through."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.gate_screen import screened_read
from attacks.gates import mask_agreement, read_gate, relaxed_gate
from attacks.inline_gates import InlineGates, _zeroes_nothing
from attacks.pool_gates import is_pool_gate
from attacks.tied_gates import tied_fit


def test_a_tied_fit_is_read_only_under_the_score_it_reports() -> None:
    # the smallest value of each row kept: -x orders winners strictly above losers, but |x| orders them too (5 ties
    # -5), and GateFit.score then says "magnitude": a fit whose score is not the one that explains it is no fit
    x = torch.tensor([[-5.0, -1.0, 5.0], [-4.0, 2.0, 4.0]])
    assert tied_fit(x, x * torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])) is None


def test_a_gate_with_one_stray_one_is_read_as_a_gate_not_as_a_mask_by_the_screen_too() -> None:
    # a top-32 gate of [8, 256] with one kept value replaced by 1 (agreement 2047 / 2048, above 0.999): not only 0s
    # and 1s, so no 0/1 mask, and the screened read answers as the plain one
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    out = x * (x >= x.topk(32, dim=1).values[:, -1:])
    out[0, int(x[0].argmax())] = 1.0
    plain = read_gate(x, out)
    assert plain is not None and plain[0].k == 32 and plain[1] is False
    assert screened_read(x, out) == plain


def test_an_operand_known_to_be_gated_is_not_tested_for_agreement_again() -> None:
    # known_gated: the caller already read result as x · mask, and is_pool_gate does not compute the agreement again
    # (one host read less); here the two windows' maxima are swapped, so the agreement itself is 12 / 16
    x = torch.arange(16.0).view(1, 1, 4, 4)
    values, indices = F.max_pool2d(x, 2, return_indices=True)
    result = F.max_unpool2d(values.flip(-1), indices, 2)
    assert mask_agreement(x, result) < 0.999
    pools = [(x, values.flatten())]
    assert is_pool_gate(result, [x], pools, known_gated=x)
    assert not is_pool_gate(result, [x], pools)


def test_each_gate_of_a_call_that_zeroed_only_zeros_is_counted() -> None:
    # two top-k gates of ReLU outputs with fewer non-zero units than k (threshold 0, every unit kept): BPDA counts
    # both against the layer probe's gates (attacks.bpda_wrap: relaxed + zeroed), not one
    h = torch.tensor([[1.0, -1.0, 2.0, -3.0, 0.5, -1.0], [-1.0, 2.0, -2.0, -0.5, -1.0, 4.0]], requires_grad=True)
    with InlineGates(lambda: True, lambda x, o, s: o, "smooth", 0.5) as mode:
        r = torch.relu(h)
        first = r * (r >= r.topk(4, dim=1).values[:, -1:])
        second = first * (first >= first.topk(5, dim=1).values[:, -1:])
    assert torch.equal(second, torch.relu(h))
    assert (mode.selections, mode.relaxed, mode.zeroed_nothing()) == (2, 0, 2)


def test_a_scale_that_leaves_its_operand_unchanged_is_no_mask() -> None:
    x = torch.tensor([[0.0, 1.5, 0.0, 2.0]])
    scale = torch.tensor([[0.0, 1.0, 0.5, 1.0]])  # 0.5 lands on a zero of x: x · scale == x, but no 0/1 mask
    assert torch.equal(x * scale, x)
    assert not _zeroes_nothing((x, scale), x * scale)


def test_a_group_that_kept_every_unit_is_relaxed_one_std_below_its_smallest_winner() -> None:
    x = torch.tensor([[1.0, 2.0, 4.0, 5.0], [3.0, -1.0, 0.0, 2.0]])
    out = x * torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]])  # row 0 keeps all (ties at a >= gate)
    soft = relaxed_gate(x, out, "dense", 0.5, mask=True)
    std = x[0].std(correction=0)
    expected = torch.sigmoid((x[0] - (1.0 - std)) / (0.5 * std))
    assert torch.allclose(soft[0], expected, rtol=1e-6) and torch.isclose(soft[0, 0], torch.sigmoid(torch.tensor(2.0)))


def test_an_integer_operand_equal_to_the_result_is_no_kept_activation() -> None:
    ints = torch.tensor([[0, 3, 0, 2]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # zeroes only zeros of ints; torch.equal(ints, ints * mask) holds
    assert torch.equal(ints, ints * mask)
    assert not _zeroes_nothing((ints, mask), ints * mask)
