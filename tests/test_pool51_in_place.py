"""attacks/pool_in_place.py (new): where a call zeroes a max-pool's own input in place (``h.mul_(h == p)``, ``h *= h ==
p``, ``h[h != p] = 0``, ``h.masked_fill_(mask=h != p, value=0.0)``), a copy of that input is taken before the call (one
autograd records) and the gate is read against it as a :class:`~attacks.pool_relax.PoolCall` whose input is that copy;
no copy for a copy of the pool's input (which keeps its values), the 1-D indices of ``nonzero``, ``copy_``, a scalar
``mul_``, or no pool noted. Told from shapes, types and addresses. ``h`` ``[2, 3, 6, 6]``, seeded."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attacks.pool_in_place import own_input_call, pool_input_copy, writes_pool_input, written
from attacks.pool_relax import PoolCall


def test_the_copy_is_taken_only_where_a_zeroing_call_writes_a_pool_input() -> None:
    h = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).requires_grad_(True) * 1.0
    p = F.max_pool2d(h, 3, 1, 1)
    pools = [PoolCall.of("max_pool2d", (h, 3, 1, 1), None, p)]
    mask, g = h == p, h.clone()
    for func, args, kwargs in ((torch.Tensor.mul_, (h, mask), None), (torch.Tensor.__imul__, (h, mask), None),
                               (torch.Tensor.__setitem__, (h, ~mask, 0), None),
                               (torch.Tensor.masked_fill_, (h,), {"mask": ~mask, "value": 0.0})):
        assert writes_pool_input(func, args, kwargs, pools), func
        copy = pool_input_copy(func, args, kwargs, pools)
        assert copy is not None and copy is not h and torch.equal(copy, h) and copy.requires_grad
    assert written(torch.Tensor.__setitem__, (h, ~mask, 0), None, None) is h  # h[m] = 0 returns None
    assert written(torch.mul, (h, mask), None, p) is p
    for func, args in ((torch.Tensor.mul_, (g, mask)),  # a copy: the pool's input keeps its values
                       (torch.Tensor.__setitem__, (h, (~mask).nonzero(as_tuple=True), 0)),  # 1-D indices
                       (torch.Tensor.copy_, (h, h * mask)), (torch.Tensor.mul_, (h, 2.0))):
        assert pool_input_copy(func, args, None, pools) is None, func
    assert pool_input_copy(torch.Tensor.mul_, (h, mask), None, []) is None  # no pool noted

    before = h.clone()
    gated = before.detach() * mask  # the gate as h.mul_(mask) leaves h
    call = own_input_call(gated, (h, mask), before, pools)
    assert call is not None and call.input is before and call.values is p and call.params == pools[0].params
    assert own_input_call(before.detach().clone(), (h, mask), before, pools) is None  # zeroed nothing: no gate
    assert own_input_call(gated, (g, mask), before, pools) is None  # not the pool's input
    assert own_input_call(gated, (h, mask), None, pools) is None
