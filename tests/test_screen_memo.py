"""Fewer host–device synchronisations in BPDA's inline-gate watch with the same answers (issue 13): each pair
``(x, out)`` screened once per watched result (:class:`attacks.gate_screen.ScreenMemo`, shared by the plain reading
and the tied one), a candidate that is its operand's own memory screened out with no read
(:func:`attacks.gate_screen.same_tensor`), the fits behind a reading reused by
:func:`attacks.one_winner.one_winner_read`, which also makes a 0/1 mask's gate with no read; and
:func:`attacks.gates.scattered` saying what a call made and whether it wrote values at indices. Reads are counted on
the CPU (:mod:`tests.host_syncs`); small seeded tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.gate_fits_batched import PairFits
from attacks.gate_screen import ScreenMemo, same_tensor, screened_read
from attacks.gates import block_groupings, candidate_groupings, fit_groupings, gate_fit, gated_operand, scattered
from attacks.one_winner import one_winner_read
from attacks.tied_gates import screened_tied_read
from tests.host_syncs import HostSyncs
from tests.test_inline_syncs_gpusync import CASES


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _lwta_view(h: torch.Tensor) -> torch.Tensor:
    """An LWTA's product on its blocks' view ``[B, C / 2, 2, H, W]`` (tests/fuzz46_wild.py's ``lwta``)."""
    v = h.view(h.shape[0], h.shape[1] // 2, 2, *h.shape[2:])
    return v * (v == v.amax(2, keepdim=True)).to(v.dtype)


def test_scattered_says_what_a_call_made_and_whether_it_wrote_values_at_indices() -> None:
    h = _x(3, 8)
    vals, idx = h.topk(2, dim=1)
    written = torch.zeros_like(h).scatter(1, idx, vals.relu())
    assert scattered(torch.Tensor.scatter, (torch.zeros_like(h), 1, idx, vals), written) == (written, True)
    out = torch.zeros_like(h)
    rows = torch.arange(3).unsqueeze(1).expand_as(idx)
    made, wrote = scattered(torch.Tensor.__setitem__, (out, (rows, idx), vals.relu()), None)
    assert made is out and wrote  # out[rows, idx] = relu(vals): the tensor it changed in place
    assert scattered(torch.Tensor.__setitem__, (out, h < 0, 1.0), None) == (None, False)  # a scalar: no values
    made, wrote = scattered(torch.Tensor.__setitem__, (out, h < 0, 0.0), None)
    assert made is out and not wrote  # h[h < t] = 0 (attacks/mask_assign.py): the tensor it gated in place
    product = h * 2
    made, wrote = scattered(torch.mul, (h, 2), product)
    assert made is product and not wrote


def test_same_tensor_is_the_same_memory_layout_dtype_and_version() -> None:
    x = _x(4, 6)
    assert same_tensor(x.view(2, 12).view_as(x), x) and same_tensor(x.detach(), x)
    assert not same_tensor(x.clone(), x) and not same_tensor(x.t().t().contiguous().view(4, 6) + 0, x)
    assert not same_tensor(x.t(), x.t().contiguous())  # other strides
    half = x.half()
    assert not same_tensor(half.view(torch.bfloat16), half)  # same memory, another dtype
    view = x.view_as(x)
    x.mul_(1.0)
    assert same_tensor(view, x)  # views share the version: written together
    with torch.inference_mode():
        frozen = torch.ones(2, 3)
    assert not same_tensor(frozen, frozen)


def test_a_pair_is_screened_once_per_memo_with_the_answers_read_without_one() -> None:
    x = _x(6, 16)
    gate = x * (x >= x.topk(4, dim=1).values[:, -1:])
    mask = (x >= x.topk(4, dim=1).values[:, -1:]).to(x.dtype)
    for out in (gate, mask, torch.relu(x), _x(6, 16)):
        for may_be_mask in (True, False):
            memo = ScreenMemo()
            with HostSyncs() as first:
                read = screened_read(x, out, True, may_be_mask, memo=memo)
            assert read == screened_read(x, out, True, may_be_mask) and first.total >= 1
            with HostSyncs() as again:  # the tied reading of the same pair: its screen reads nothing
                tied = screened_tied_read(x.detach(), out.detach(), may_be_mask, memo=memo)
            with HostSyncs() as alone:
                assert screened_tied_read(x, out, may_be_mask) == tied
            assert again.total == alone.total - 1, (again.counts, alone.counts)


def test_an_operand_viewed_again_in_its_shape_is_no_gate_and_reads_nothing() -> None:
    product = _lwta_view(_x(3, 4, 5, 5))
    for out in (product.view(3, 4, 5, 5).view_as(product), product.detach()):
        with HostSyncs() as syncs:
            assert screened_read(product, out) is None
            assert screened_tied_read(product, out, True) is None
        assert syncs.total == 0
    with HostSyncs() as syncs:  # a copy of it is read: the same answer, by its numbers
        assert screened_read(product, product.clone()) is None
    assert syncs.total == 1


def test_one_winner_read_takes_the_fits_made_and_answers_as_fitting_again() -> None:
    h = _x(4, 4, 5, 5)
    v = h.view(4, 2, 2, 5, 5)
    mask = (v == v.amax(2, keepdim=True)).to(v.dtype)
    product = v * mask
    # the LWTA's product on the blocks' view (no gate of one winner: fitted in full), then viewed as h
    for result, operands in ((product, [v, mask]), (product.view_as(h), [product, h])):
        memo = ScreenMemo()
        found = gated_operand(result, operands, (), known_gate=True,
                              read=lambda x, out, known, may: screened_read(x, out, known, may, memo=memo))
        assert found is not None
        fits = memo.fits_of(found[2])
        assert fits  # the groupings fit_groupings tried
        with HostSyncs() as given:
            one = one_winner_read(found, fits)
        assert one == one_winner_read(found) and given.total == 0, given.counts  # every grouping fitted already
    assert one is not None and one[2][0].grouping == "block-2" and one[2][0].k == 1


def test_one_winner_read_of_a_mask_makes_its_gate_with_no_read() -> None:
    """An LWTA's 0/1 mask (one winner per block of 2 channels, by ``argmax``) on sparse ReLU outputs, read as the
    gate ``h · mask``: first as a local top-2 (most blocks all zero), then, searched again, as ``"block-2"``."""
    h = torch.relu(torch.randn(2, 4, 3, 8, generator=torch.Generator().manual_seed(0)) - 0.8)
    winners = h.view(2, 2, 2, 3, 8).argmax(2)
    mask = F.one_hot(winners, 2).movedim(-1, 2).reshape(h.shape).to(h.dtype)
    found = gated_operand(mask, [h], (), known_gate=True)
    assert found is not None and found[2][1] and (found[2][0].grouping, found[2][0].k) == ("local", 2)
    with HostSyncs() as syncs:
        one = one_winner_read(found)
    assert one is not None and (one[2][0].grouping, one[2][0].k) == ("block-2", 1)
    assert set(syncs.counts) <= {"tolist", "item"}, syncs.counts  # no bool, no boolean-mask index


def test_pair_fits_are_the_plain_fits_field_for_field_in_every_order() -> None:
    """On every third of the gates, masks and non-gates of tests/test_inline_syncs_gpusync.py: each grouping's fit
    as :func:`attacks.gates.gate_fit` makes it, asked in ``fit_groupings``' order (the next count read with the
    whole-channel try; a grouping asked alone is :func:`attacks.gate_fits_batched.batched_gate_fit`'s fit, compared
    there), and ``fit_groupings`` answers alike."""
    read_ahead = 0
    for x, out in CASES[::3]:
        if not x.is_floating_point() or x.ndim < 2:
            continue
        pair = PairFits(x, out)
        for grouping in candidate_groupings(x.ndim) + block_groupings(x.shape):
            assert pair.fit_of(x, out, grouping) == gate_fit(x, out, grouping, only_constant=True), grouping
        read_ahead += x.ndim > 2 and x.shape[2:].numel() > 1
        assert fit_groupings(x, out, False, PairFits(x, out).fit_of) == fit_groupings(x, out)
    assert read_ahead > 50


def test_the_whole_channel_try_and_the_next_grouping_read_the_host_once() -> None:
    """A per-channel top-3 of ``[4, 6, 5, 5]``: the whole-channel try (a channel kept in part) and the ``"row"``
    count in one read, the ``"row"`` fit then none (no constant count per row), the ``"channel"`` count and its
    orderings two: three (four with a read per grouping)."""
    x = _x(4, 6, 5, 5)
    flat = x.flatten(2)
    out = (flat * (flat >= flat.topk(3, dim=2).values[..., -1:])).view_as(x)
    pair = PairFits(x, out)
    with HostSyncs() as syncs:
        fit = fit_groupings(x, out, False, pair.fit_of)
    assert fit is not None and (fit.grouping, fit.k) == ("channel", 3) and syncs.total == 3, syncs.counts
    assert list(pair.fits) == ["whole-channel", "row", "channel"] and pair.fits["row"] is None
