"""Mutation review (session 46, second pass) of the screened gate read, BPDA's read of a module gate and the global
adaptive max-pool's name: each test kills a mutant of attacks/gate_screen.py, attacks/bpda_wrap.py,
attacks/one_winner.py or kwta_robust/detect_selections.py that today's tests let survive."""

from __future__ import annotations

import torch
from torch import nn

from attacks.bpda_wrap import LayerTarget, ModuleBackward
from attacks.gate_screen import screened_read
from attacks.gates import read_gate
from attacks.one_winner import global_pool
from attacks.pool_gates import MAX_POOLS
from kwta_robust.selection_entries import is_pool_selection


def test_a_threshold_gate_one_threshold_serves_is_read_only_as_a_known_gate() -> None:
    x = torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.1, 0.2, 0.8, 0.9]])  # counts 1 and 2; 0.5 serves both rows
    out = x * (x > 0.5)
    assert screened_read(x, out) is None and read_gate(x, out) is None
    found = screened_read(x, out, known_gate=True)
    assert found is not None and found == read_gate(x, out, True) and found[0].k_spread == 1


def test_a_gate_agreeing_with_its_input_at_exactly_the_minimum_fraction_is_read() -> None:
    x = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0))
    out = x * (x >= x.topk(100).values[:, -1:])
    winner = int(out[0].nonzero()[0])
    out[0, winner] = 2 * x[0, winner]  # 999 of 1000 elements are x or 0: MIN_MASK_AGREEMENT
    found = screened_read(x, out)
    assert found is not None and found == read_gate(x, out) and found[0].k == 100


def test_an_integer_mask_goes_to_the_plain_read() -> None:
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    for dtype in (torch.long, torch.bool):
        mask = (x >= x.topk(2).values[:, -1:]).to(dtype)
        assert read_gate(x, mask) is None and screened_read(x, mask) is None


class _TopMask(nn.Module):
    """A module returning the 0/1 mask of its input's top-2 per row ([N, S] → [N, S]), which a parent applies."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (h >= h.topk(2).values[:, -1:]).to(h.dtype)


def test_bpda_relaxes_the_mask_a_module_returns_as_a_mask() -> None:
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    wrapper = ModuleBackward("m", _TopMask(), LayerTarget("gate"))
    wrapper.backward = "smooth"
    relaxed = wrapper._surrogate(x, _TopMask()(x))
    assert relaxed.keywords["mask"] is True and relaxed.keywords["grouping"] == "dense"


def test_global_pool_reads_an_input_that_is_no_tensor_as_of_unknown_shape() -> None:
    assert global_pool(([[1.0]], 1), None)
    assert global_pool((), {"input": "h", "output_size": (1, 1)})
    assert not global_pool(([[1.0]], None), None)


def test_a_global_adaptive_pool_is_never_a_pool_of_windows() -> None:
    assert not is_pool_selection({"op": "adaptive_max_pool2d(1)"})
    assert is_pool_selection({"op": "adaptive_max_pool2d"})
    assert all(is_pool_selection({"op": name}) for name in set(MAX_POOLS.values()))  # 1d, 2d, 3d
    assert not is_pool_selection({"op": "adaptive_max_pool2d", "gate": "channel"})  # a record before the name
