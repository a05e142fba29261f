"""The copies BPDA's inline watch (:class:`attacks.inline_gates.InlineGates`) makes of a tensor a gate overwrites in
place: the values from before the call, read so the relaxation's gradient reaches them
(:func:`attacks.mask_assign.copy_before`, :func:`attacks.pool_in_place.pool_input_copy`). A block that ranks channel
maxima (``s = h.amax((2, 3))``, a top-k of ``s``: a selection pending), then gates ``h`` in place by its 2 × 2 window
maxima (``h.mul_(h == p)``, ``p`` the upsampled ``F.max_pool2d(h, 2, 2)``), then keeps the top channels in place
(``h.mul_(keep)``): on the pool gate's call both copied ``h``, the same values twice; now one copy serves both. A
forward run with gradients on but on a tensor autograd does not record (a frozen model, an input without
``requires_grad``) copied too, for nothing to read; now it copies nothing. Under ``torch.no_grad`` the watch is not
entered (nothing copied, before and after), and inside a ``forward``'s own ``no_grad`` region the copy is still made:
the gate is read there to be refused by name. Conv ``[N, 1, 8, 8]`` → 8 channels → block → linear 10, seeded."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attacks.inline_gates as inline_gates
from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from tests.inplace_blocks import net as topk_net
from tests.test_inplace51_index_forms import bpda_gradient

X = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
TWO = LayerTarget("inline", gates=2)


class Block(nn.Module):
    """``x + channel_topk(window_max_gate(conv(x)))``, both gates out of place (``"out"``) or in place on ``h``
    (``"mul_"``); ``"no_grad"``: the in-place channel top-k inside ``torch.no_grad``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.conv, self.how = nn.Conv2d(8, 8, 3, padding=1), how

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        s = h.amax(dim=(2, 3))  # the window gate keeps each channel's maximum: s ranks the gated channels too
        keep = (s >= s.topk(4, dim=1).values[:, -1:])[:, :, None, None]
        p = F.interpolate(F.max_pool2d(h, 2, 2), scale_factor=2.0, mode="nearest")
        if self.how == "out":
            return x + h * (h == p) * keep
        h.mul_(h == p)
        with torch.no_grad() if self.how == "no_grad" else contextlib.nullcontext():
            h.mul_(keep)
        return x + h


def net(how: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), Block(how), nn.Flatten(), nn.Linear(512, 10)).eval()


@contextlib.contextmanager
def watched_copies() -> Iterator[list[tuple[str, Tensor]]]:
    """The copies the inline watch made, in order, named by the function that made them."""
    made: list[tuple[str, Tensor]] = []

    def spy(name: str, real: Callable[..., Tensor | None]) -> Callable[..., Tensor | None]:
        def call(*args, **kwargs):
            copy = real(*args, **kwargs)
            if copy is not None and not any(copy is c for _, c in made):
                made.append((name, copy))
            return copy
        return call

    with mock.patch.object(inline_gates, "copy_before", spy("copy_before", inline_gates.copy_before)), \
            mock.patch.object(inline_gates, "pool_input_copy", spy("pool_input_copy", inline_gates.pool_input_copy)):
        yield made


def clones(run: Callable[[], object]) -> int:
    """How many ``Tensor.clone`` calls ``run`` makes (the model's own, the watch's)."""
    real, count = Tensor.clone, [0]

    def counted(self: Tensor, *args, **kwargs) -> Tensor:
        count[0] += 1
        return real(self, *args, **kwargs)

    with mock.patch.object(Tensor, "clone", counted):
        run()
    return count[0]


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_the_pool_gate_made_in_place_while_a_topk_is_pending_is_copied_once(backward: str) -> None:
    twin_out, twin_grad = bpda_gradient(net("out"), backward, TWO, X)
    with watched_copies() as made:
        out, grad = bpda_gradient(net("mul_"), backward, TWO, X)
    # the pool gate's call: one copy, viewed by both (before: copy_before's and pool_input_copy's, two storages)
    storages = {c.untyped_storage().data_ptr() for _, c in made}
    assert [name for name, _ in made] == ["copy_before", "pool_input_copy", "copy_before"]
    assert made[1][1].untyped_storage().data_ptr() == made[0][1].untyped_storage().data_ptr() and len(storages) == 2
    assert torch.equal(out, twin_out) and torch.allclose(grad, twin_grad, rtol=1e-5, atol=1e-7)
    assert grad.abs().sum() > 0
    # measured as clones in the whole forward and backward: one fewer than before (8, now 7)
    assert clones(lambda: bpda_gradient(net("mul_"), backward, TWO, X)) == 7


def _forward_with_bpda(model: nn.Module, target: LayerTarget, x: Tensor) -> Tensor:
    with contextlib.ExitStack() as stack:
        controllers = stack.enter_context(attached_backward(model, {"1": target}))
        stack.enter_context(surrogate_backward(model, "smooth", 0.1, controllers))
        return model(x)


@pytest.mark.parametrize("build, target", [(lambda: net("mul_"), TWO), (lambda: topk_net("mul_", 128),
                                                                         LayerTarget("inline"))])
def test_a_forward_autograd_does_not_record_copies_nothing(build: Callable[[], nn.Module],
                                                           target: LayerTarget) -> None:
    model = build().requires_grad_(False)  # a frozen model, an input without requires_grad: no graph
    plain = clones(lambda: model(X))
    with watched_copies() as made:
        assert clones(lambda: _forward_with_bpda(model, target, X)) == plain  # before: one more per in-place gate
    assert made == []
    with torch.no_grad():
        want = model(X)
    assert torch.equal(_forward_with_bpda(model, target, X), want)  # gradients on, nothing copied: the same bits
    with torch.no_grad():
        assert torch.equal(_forward_with_bpda(model, target, X), model(X))
    with torch.no_grad(), watched_copies() as made:  # the runner's plain passes: the watch never runs (as before)
        assert clones(lambda: _forward_with_bpda(model, target, X)) == plain
    assert made == []


def test_a_gate_made_in_place_where_autograd_records_nothing_is_still_read_and_refused_by_name() -> None:
    with watched_copies() as made, pytest.raises(AttackConfigError, match="where autograd records nothing"):
        bpda_gradient(net("no_grad"), "smooth", TWO, X)
    assert [name for name, _ in made] == ["copy_before", "pool_input_copy", "copy_before"]
