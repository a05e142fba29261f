"""BPDA through a max-pool winner-take-all gate made in place on the pool's own input (``h.mul_(h == p)``, ``h[h != p]
= 0``, … : tests/test_pool51_detect.py) or by ``g[h != p] = 0`` on a copy: the forward's output bit for bit that of
the model run without BPDA, and BPDA's input gradient that of the out-of-place twin ``h * (h == p)`` under both
surrogates (smooth: the pool gate's relaxation, attacks/pool_relax.py; identity: straight-through), which differs
from the exact gradient (the 0/1 mask's). Before, BPDA refused each such block in one line ("builds 1 gates … relax
only 0 of them"). By the 1-D indices of ``nonzero`` it is still refused. Conv ``[8, 1, 8, 8]`` → block → linear 10,
seeded; the summed logits' gradient."""

from __future__ import annotations

import pytest
import torch

from attacks.base import AttackConfigError
from attacks.bpda_wrap import LayerTarget
from tests.test_inplace51_index_forms import bpda_gradient, exact_gradient
from tests.test_pool51_detect import IN_PLACE, POOLS, X, net

TARGET = LayerTarget("inline")


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_bpda_relaxes_each_in_place_form_as_its_out_of_place_twin(pool: str, backward: str) -> None:
    twin_out, twin_grad = bpda_gradient(net("out", pool), backward, TARGET)
    assert not torch.allclose(twin_grad, exact_gradient(net("out", pool), X), rtol=1e-3, atol=1e-5)
    for how in IN_PLACE:  # before: AttackConfigError, "builds 1 gates ... relax only 0 of them"
        model = net(how, pool)
        with torch.no_grad():
            plain = model(X)
        out, grad = bpda_gradient(model, backward, TARGET)
        assert torch.equal(out, plain) and torch.equal(out, twin_out), how  # the forward bit for bit
        assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), how
        assert grad.abs().sum() > 0, how


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_the_copy_reaches_the_gradient_of_the_values_from_before_the_call_on_one_sample_too(backward: str) -> None:
    one = X[:1]
    _, twin_grad = bpda_gradient(net("out"), backward, TARGET, one)
    for how in ("mul_", "setitem"):
        _, grad = bpda_gradient(net(how), backward, TARGET, one)
        assert torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7), how
    with pytest.raises(AttackConfigError) as caught:  # nonzero's 1-D indices: still refused, in one line
        bpda_gradient(net("nonzero"), backward, TARGET, one)
    assert "\n" not in str(caught.value) and "could read and relax only 0 of them" in str(caught.value)
