"""Mutation review of kwta_robust/model_checks.py's ``check_runs_with_gradients`` backward check: a backward that
runs out of memory is the run's own error (the batch settings to lower), raised as it is, not a forward to mend;
a forward whose output does not require a gradient (the graph cut: the ``zero-gradients`` flag's business) passes
without a backward tried. Inputs ``[2, 4]``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError
from kwta_robust.model_checks import check_runs_with_gradients

X = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))


class _OutOfMemoryBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x * 2

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OutOfMemory(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _OutOfMemoryBackward.apply(x)


class Cut(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.detach() * 2


def test_a_backward_out_of_memory_is_raised_as_it_is() -> None:
    with pytest.raises(torch.OutOfMemoryError, match="out of memory"):
        check_runs_with_gradients(OutOfMemory(), X, "model")


def test_a_forward_that_cuts_the_graph_passes() -> None:
    check_runs_with_gradients(Cut(), X, "model")  # no ConfigError: the zero-gradients flag locates the cut
    with pytest.raises(ConfigError, match="backward raises"):
        check_runs_with_gradients(nn.Sequential(nn.ReLU(), _InPlaceAfterRelu()), X, "model")


class _InPlaceAfterRelu(nn.Module):
    def forward(self, h: Tensor) -> Tensor:
        h = torch.sigmoid(h)
        h[h < 0.5] = 0  # changes a tensor autograd saved
        return h
