"""Mutation review of attacks/bpda_wrap.py's ``ModuleBackward._check_inline``: a gate built under ``torch.no_grad``
(a duty-cycle statistic, as nupic's KWinners keeps one) beside the readable gate the layer probe counted is no
reason to refuse the call when BPDA relaxed every gate the probe counted — autograd records nothing through it, so
no 0/1 mask of it cuts the gradient. Inputs ``[4, 1, 8, 8]`` (``wild_kwta_models.X``), seeded."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from test_wild_models import T

X = wild.X
K = int(wild.RATIO * 256)


def _gate(f: Tensor) -> Tensor:
    return f * (f >= f.topk(K, dim=1).values[:, -1:])


class GateWithStatistic(nn.Module):
    """One readable top-k gate; under ``torch.no_grad`` a second one, whose winners update a duty-cycle buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.register_buffer("duty", torch.zeros(256))

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        with torch.no_grad():
            self.duty.mul_(0.9).add_(0.1 * (_gate(f) != 0).float().mean(0))
        return x + _gate(f).view_as(x)


def _input_gradient(model: nn.Module, targets: dict[str, LayerTarget], backward: str) -> Tensor:
    x = X.clone().requires_grad_(True)
    with contextlib.ExitStack() as stack:
        if targets:
            controllers = stack.enter_context(attached_backward(model, targets))
            stack.enter_context(surrogate_backward(model, backward, T, controllers))
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_gate_under_no_grad_beside_every_counted_gate_relaxed_is_not_refused(backward: str) -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), GateWithStatistic(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    plain = _input_gradient(model, {}, backward)
    relaxed = _input_gradient(model, {"1": LayerTarget("inline", gates=1)}, backward)
    assert torch.isfinite(relaxed).all() and (relaxed - plain).abs().max() > 1e-4  # the counted gate relaxed
