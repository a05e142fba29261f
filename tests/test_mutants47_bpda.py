"""Mutation review of attacks/bpda_wrap.py's ``ModuleBackward._check_inline``: a gate built under ``torch.no_grad``
(a duty-cycle statistic, as nupic's KWinners keeps one) beside the readable gate the layer probe counted is no
reason to refuse the call when BPDA relaxed every gate the probe counted — autograd records nothing through it, so
no 0/1 mask of it cuts the gradient. And a call that relaxed no gate because the one it read zeroed nothing (a
ReLU top-k with fewer positive units than ``k``) is still refused when a second gate the probe counted was built
where BPDA cannot read it (in place on a single sample): the fewer-gates check ran only where some gate was relaxed
or a max-pool noted, so that call ran with the second gate's 0/1 mask cutting the gradient unseen. A call whose one
gate zeroed nothing, or that ran no selection, runs with plain gradients. Inputs ``[4, 1, 8, 8]``
(``wild_kwta_models.X``), seeded."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

import wild_kwta_models as wild
from attacks.base import AttackConfigError
from attacks.bpda_protocol import surrogate_backward
from attacks.bpda_wrap import LayerTarget, attached_backward
from kwta_robust.detect import detect_layers
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


class ZeroedNothingThenInPlace(nn.Module):
    """A ReLU top-110 gate (of 256 units; a sample with at most 110 positive zeroes nothing), then a top-k gate
    readable on a batch and written in place on a single sample."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        a = f.relu()
        a = a * (a >= a.topk(110, dim=1).values[:, -1:])
        t = f.topk(K, dim=1).values[:, -1:]
        if f.shape[0] == 1:
            g = f.clone()  # zeroed by the losers' indices: not read (g[f < t] = 0 is: attacks/mask_assign.py)
            g[(f < t).nonzero(as_tuple=True)] = 0
        else:
            g = f * (f >= t)
        return x + (a + g).view_as(x)


def _input_gradient(model: nn.Module, targets: dict[str, LayerTarget], backward: str, x: Tensor = X) -> Tensor:
    x = x.clone().requires_grad_(True)
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


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_a_gate_that_zeroed_nothing_does_not_stand_for_a_second_unread_gate(backward: str) -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ZeroedNothingThenInPlace(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=2)}
    positives = (model[1].c1(model[0](X)).flatten(1) > 0).sum(1)
    assert int(positives[2]) <= 110 < int(positives[0])  # sample 2: the first gate zeroes nothing; sample 0: some
    assert _input_gradient(model, targets, backward, X[:4]).abs().sum() > 0  # both gates read on a batch
    for n in (0, 2):
        with pytest.raises(AttackConfigError) as refused:
            _input_gradient(model, targets, backward, X[n:n + 1])
        assert (f"builds 2 top-k gates in its forward (read by the layer probe: each application of a selection's "
                "0/1 mask is one) but BPDA could read and relax only "
                f"{1 if n == 0 else 0} of them there (on an input of shape (1, 4, 8, 8))") in str(refused.value)


class ReluTopK(nn.Module):
    """One ReLU top-110 gate (of 256 units): a sample with at most 110 positive units keeps them all."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.c1(x).flatten(1).relu()
        return x + (a * (a >= a.topk(110, dim=1).values[:, -1:])).view_as(x)


@pytest.mark.parametrize("backward", ["smooth", "identity"])
def test_the_one_counted_gate_zeroing_nothing_on_a_call_runs_with_plain_gradients(backward: str) -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ReluTopK(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=1)}
    plain = _input_gradient(model, {}, backward, X[2:3])  # sample 2: at most 110 positive, nothing zeroed
    assert torch.equal(_input_gradient(model, targets, backward, X[2:3]), plain)


class GateOnBatchesOnly(nn.Module):
    """A top-k gate on a batch; a single sample passes through with no selection at all."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        f = self.c1(x).flatten(1)
        return x + (f if f.shape[0] == 1 else _gate(f)).view_as(x)


def test_a_call_that_ran_no_selection_builds_no_gate_and_runs() -> None:
    model = wild.seeded(lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), GateOnBatchesOnly(), nn.Flatten(),
                                              nn.Linear(256, 3)))
    targets = detect_layers(model, X, log=False).auto_targets()
    assert targets == {"1": LayerTarget("inline", gates=1)}
    plain = _input_gradient(model, {}, "smooth", X[:1])
    assert torch.equal(_input_gradient(model, targets, "smooth", X[:1]), plain)
