"""A :class:`attacks.gate_screen.ScreenMemo` finds a pair again by :func:`attacks.gate_screen.same_tensor`, whose
version check compares the two tensors' versions: a view the memo kept shares its tensor's version counter, so a
write in place after the screen went unseen and the memo gave the numbers of the values before it (session 49's
review). Now the versions at the read are kept too, and an inference tensor (no version) is not kept."""

from __future__ import annotations

import torch

from attacks.gate_screen import ScreenMemo, screen


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(0)) + 0.1
    return x, x * (x >= x.topk(3, dim=1).values[:, -1:])  # a top-3 gate: zeroes some, keeps some


def test_a_pair_written_in_place_after_its_screen_is_screened_again() -> None:
    x, out = _pair()
    memo = ScreenMemo()
    found = screen(x, out, lambda x, gated: "a gate", memo=memo)
    assert found == ("a gate", False)
    out.copy_(x)  # now it zeroes nothing: no gate
    assert screen(x, out, lambda x, gated: "a gate") is None  # without the memo
    assert screen(x, out, lambda x, gated: "a gate", memo=memo) is None


def test_the_memo_reads_a_pair_once_until_either_tensor_is_written() -> None:
    x, out = _pair()
    memo, reads = ScreenMemo(), []

    def read() -> list[int]:
        reads.append(len(reads))
        return [len(reads)]

    assert memo.numbers(x, out, read) == [1] and memo.numbers(x.detach(), out.view_as(out), read) == [1]
    x.add_(0.0)  # a write in place, even of the same values, is a write: read again
    assert memo.numbers(x, out, read) == [2] and memo.numbers(x, out, read) == [2]
    with torch.inference_mode():
        frozen_x, frozen_out = _pair()
    assert memo.numbers(frozen_x, frozen_out, read) == [3] and memo.numbers(frozen_x, frozen_out, read) == [4]
