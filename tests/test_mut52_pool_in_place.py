"""Mutation review 52 of attacks/pool_in_place.py: "the pool's own input" is the same elements of the same memory
(itself or a view alike; not another slice of one storage, a transposed view, a shorter view of the same start), the
gate is read as the call really leaves it (``h`` itself gated in place, against the copy from before), a copy
autograd does not record is no relaxation input, and of two pools of one input the latest is the gate's.
``h`` ``[2, 3, 6, 6]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.pool_in_place import own_input_call, pool_input_copy, writes_pool_input
from attacks.pool_relax import PoolCall


def pre_activation() -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3)).requires_grad_(True) * 1.0


def test_only_the_same_elements_of_the_same_memory_are_the_pools_input() -> None:
    both = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    h, other = both[:2], both[2:]  # one storage, same shape and strides, other elements
    pools = [PoolCall.of("max_pool2d", (h, 3, 1, 1), None, F.max_pool2d(h, 3, 1, 1))]
    mask = h == pools[0].values
    for same in (h, h[:], h.view_as(h)):  # the tensor itself, or a view alike
        assert writes_pool_input(torch.Tensor.mul_, (same, mask), None, pools)
    for view in (other, h.transpose(2, 3), h[:1]):  # other offset; other strides; other shape
        assert not writes_pool_input(torch.Tensor.mul_, (view, mask[:len(view)]), None, pools), view.shape


def test_the_gate_made_in_place_on_the_pools_input_is_read_against_the_copy() -> None:
    h = pre_activation()
    p = F.max_pool2d(h, 3, 1, 1)
    pools = [PoolCall.of("max_pool2d", (h, 3, 1, 1), None, p)]
    mask = h == p
    before = pool_input_copy(torch.Tensor.mul_, (h, mask), None, pools)
    h.mul_(mask)  # the call itself: h now holds the gate's values
    call = own_input_call(h, (h, mask), before, pools)
    assert call is not None and call.input is before and call.values is p
    assert own_input_call(h, (h, mask), before.detach(), pools) is None  # no gradient would reach h


def test_of_two_pools_of_one_input_the_latest_is_the_gates() -> None:
    h = pre_activation()
    first, latest = F.max_pool2d(h, 3, 1, 1), F.max_pool2d(h, 3, 1, 1)
    pools = [PoolCall.of("max_pool2d", (h, 3, 1, 1), None, first),
             PoolCall.of("max_pool2d", (h, 3, 1, 1), None, latest)]
    before = h.clone()
    call = own_input_call(before.detach() * (h == latest), (h, h == latest), before, pools)
    assert call is not None and call.values is latest
